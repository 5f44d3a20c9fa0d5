"""Do the debug generators hear the prompt? The hearing criteria of ``tunejury_align.debug.hearing`` per family.

    python benchmarks/debug_hearing.py          # about 20 s on 2 CPU cores

Over 8 prompts (4 of words in no shipped list) x 8 seeds: the mean Pearson correlation of the waveforms (mono
mix) of one seed's clips across prompts and of one prompt's clips across seeds, the share of same-seed pairs of
prompts giving identical audio, the share of plain clips raising an exploit flag (DC offset, clipping, silence on
the probes' own thresholds), and the median level. Ends with ``RESULT`` and the families that miss a criterion.
"""

from __future__ import annotations

import time

from tunejury_align.debug.hearing import measure_hearing
from tunejury_align.generators import load_generator

BATCH = {"debug-musicgen": 64, "debug-stable-audio": 8, "debug-audioldm2": 16}


def main() -> int:
    print(f"{'family':<20s} {'cross-prompt':>12s} {'cross-seed':>10s} {'identical':>9s} {'flagged':>8s} "
          f"{'DC':>6s} {'clip':>6s} {'silent':>6s} {'median dBFS':>11s}  s")
    failing = []
    for name, batch in BATCH.items():
        started = time.perf_counter()
        table = measure_hearing(load_generator(name), batch=batch)
        print(f"{name:<20s} {table['cross_prompt']:>12.3f} {table['cross_seed']:>10.3f} {table['identical_share']:>9.1%} "
              f"{table['flagged_share']:>8.1%} {table['dc_offset_share']:>6.1%} {table['clipping_share']:>6.1%} "
              f"{table['silence_share']:>6.1%} {table['rms_dbfs_median']:>11.1f}  {time.perf_counter() - started:.0f}")
        for failure in table["failures"]:
            print(f"  misses: {failure}")
        if table["failures"]:
            failing.append(name)
    print(f"RESULT families={len(BATCH)} failing={','.join(failing) or 'none'}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
