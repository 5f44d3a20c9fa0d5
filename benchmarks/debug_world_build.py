"""How long the debug world takes to build, against the job it is built for.

    python benchmarks/debug_world_build.py            # about 2-3 minutes on 2 CPU cores

In one run, on this machine:

1. ``build``: a fresh process builds the debug reward and all six debug judges
   (``load_judges("debug", debug_reward())``) from an empty cache folder: the clips, every encoder set's
   features and the seven heads, as a first use (or a cold test run) does;
2. ``bon16``: a fresh process runs the README's first command, ``align best-of-n --n 16 --generator debug
   --reward debug --prompts recipes/debug/prompts.txt --out DIR``, with that cache now warm (the job as a
   user runs it every time after the first).

Both are wall times of whole processes (interpreter start and imports included). It ends with
``RESULT build_seconds=... bon16_seconds=... build_vs_bon16=...``; the aim is ``build_vs_bon16 <= 4``.
"""

from __future__ import annotations

import argparse
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "benchmarks"))

from cpu import describe_machine  # noqa: E402

#: what `align ... --reward debug --judges debug` does on first use: one pass builds the reward and the six judges
#: (each clip generated once), then both load from the cache
BUILD = ("from tunejury_align.debug.build import build_world\n"
         "from tunejury_align.reward import debug_reward\n"
         "from tunejury_align.reward.judges import load_judges\n"
         "build_world(judges=True)\n"
         "judges = load_judges('debug', debug_reward())\n"
         "print(len(judges), 'judges')\n")


def timed(command: list[str], env: dict, log: Path) -> float:
    started = time.perf_counter()
    with open(log, "w") as handle:
        done = subprocess.run(command, cwd=ROOT, env=env, stdout=handle, stderr=subprocess.STDOUT)
    seconds = time.perf_counter() - started
    if done.returncode != 0:
        sys.stdout.write(log.read_text()[-4000:])
        raise SystemExit(f"{' '.join(command[:3])} ... failed with exit code {done.returncode} (log above)")
    return seconds


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--keep", help="keep the cache and the logs in this folder (default: a temporary one)")
    args = parser.parse_args()
    print(describe_machine("cpu"), flush=True)
    folder = Path(args.keep) if args.keep else Path(tempfile.mkdtemp(prefix="tunejury-world-build-"))
    folder.mkdir(parents=True, exist_ok=True)
    cache = folder / "cache"
    if cache.exists() and any(cache.iterdir()):
        raise SystemExit(f"{cache} is not empty: the build must start cold (give another --keep folder)")
    env = {**os.environ, "TUNEJURY_ALIGN_CACHE": str(cache), "HF_HUB_OFFLINE": "1"}

    build = timed([sys.executable, "-c", BUILD], env, folder / "build.log")
    print(f"build (reward + 6 judges, cold cache): {build:.1f} s", flush=True)
    bon16 = timed([sys.executable, "-m", "tunejury_align", "best-of-n", "--n", "16", "--generator", "debug",
                   "--reward", "debug", "--prompts", "recipes/debug/prompts.txt", "--out", str(folder / "bon16")],
                  env, folder / "bon16.log")
    print(f"best-of-16 job (README's first command, warm cache): {bon16:.1f} s", flush=True)
    print(f"logs and cache in {folder}")
    print(f"RESULT build_seconds={build:.1f} bon16_seconds={bon16:.1f} build_vs_bon16={build / bon16:.2f}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
