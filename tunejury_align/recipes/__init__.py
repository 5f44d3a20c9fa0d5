"""The recipes: best-of-N (early-pruned for MusicGen), particle steering (SMC), DITTO, expert iteration (each a
library function plus its resumable run folder), and the compute record every run keeps."""
