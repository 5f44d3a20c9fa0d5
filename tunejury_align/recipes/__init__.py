"""The recipes: best-of-N, DITTO, expert iteration (each a library function plus its resumable run folder)."""
