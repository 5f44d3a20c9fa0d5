"""tunejury-align: align text-to-music generators with the TuneJury reward at generation time."""

__version__ = "0.1.0"
