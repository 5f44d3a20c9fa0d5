"""`python -m tunejury_align` runs `align`."""

import sys

from .cli import main

sys.exit(main())
