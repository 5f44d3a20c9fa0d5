"""Peak memory of loading the LAION-CLAP music checkpoint: our loader vs a plain full ``torch.load``.

The released ``music_audioset_epoch_15_esc_90.14.pt`` (2.35 GB) is a training checkpoint: the model
(~0.8 GB) plus Adam state (``exp_avg``, ``exp_avg_sq``: twice the model). This script writes a file of
the same size and layout: a full-size random CLAP (HTSAT-base + RoBERTa-base, ``fullsize.HTSAT_BASE``)
saved by ``laion_training_checkpoint`` the way LAION-CLAP's training does (``{"epoch", "name",
"state_dict": "module.*", "optimizer": Adam state_dict}`` with numpy float64 learning rates), into a
temporary folder (``--dir``; deleted afterwards). Then each measurement runs in a fresh Python process
and reports its peak RSS (Linux ``VmHWM``, which counts the pages of a mapped file the process has
touched as well as its own memory):

* ``ours``: ``ClapEncoder.from_file`` (what ``from_pretrained`` runs once the file is found):
  ``torch.load(weights_only=True, mmap=True)`` with the numpy float64 allowance, ``state_dict``
  only, adopted by the encoder; then every tensor of the encoder is read once, so the mapped pages
  the model needs are counted.
* ``full``: a plain ``torch.load(weights_only=True)`` of the whole file (same allowance, no mmap):
  the least any loader that reads the file whole pays.
* ``full+copy``: that, then a ``ClapEncoder`` built and the weights copied in (what a loader that
  reads the file whole and copies into the model needs).

``baseline`` is each process's RSS just before loading (Python, torch, transformers, laion-clap's
modules, the tokenizer); ``model`` is the sum of the encoder's parameter bytes. The table also splits
what the process holds at the end, over its baseline, into anonymous memory (its own allocations,
including what malloc keeps after a free) and pages of mapped files. Ends with one line
``RESULT peak_rss_mb=... model_mb=... ratio=... full_load_peak_rss_mb=... baseline_rss_mb=...``:
``peak_rss_mb`` = peak RSS of ``ours``, ``ratio`` = (that peak - its baseline) / model,
``full_load_peak_rss_mb`` = peak RSS of ``full``. Needs ~4.5 GB of memory to write the file and
~2.4 GB of free disk; takes 2-4 minutes on 2 cores.

    HF_HUB_OFFLINE=1 python benchmarks/clap_checkpoint_memory.py
    HF_HUB_OFFLINE=1 python benchmarks/clap_checkpoint_memory.py --dir /mnt/scratch
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import subprocess
import sys
import tempfile
import time
import warnings

MB = 2**20


def proc_status() -> dict[str, int]:
    """VmHWM, VmRSS, RssAnon, RssFile of this process, in bytes (Linux)."""
    out = {}
    with open("/proc/self/status") as f:
        for line in f:
            key, _, value = line.partition(":")
            if key in ("VmHWM", "VmRSS", "RssAnon", "RssFile"):
                out[key] = int(value.split()[0]) * 1024
    return out


def text_side():
    from transformers import RobertaConfig

    from tunejury_align.reward.clap import clap_module
    from tunejury_align.reward.tiny import tiny_roberta_tokenizer

    clap_module()  # import laion-clap's modules before the baseline
    return RobertaConfig(), tiny_roberta_tokenizer()


def child_build(path: str) -> dict:
    import torch

    from tunejury_align.reward.clap import ClapEncoder, laion_training_checkpoint
    from tunejury_align.reward.fullsize import HTSAT_BASE
    from tunejury_align.reward.tiny import seeded

    config, tokenizer = text_side()
    with seeded(0):
        encoder = ClapEncoder(HTSAT_BASE, config, tokenizer).eval()
    model_bytes = sum(p.numel() * p.element_size() for p in encoder.parameters())
    buffer_bytes = sum(b.numel() * b.element_size() for b in encoder.buffers())
    checkpoint = laion_training_checkpoint(encoder)
    torch.save(checkpoint, path)
    return {"model_bytes": model_bytes, "buffer_bytes": buffer_bytes, "file_bytes": os.path.getsize(path),
            "params": sum(p.numel() for p in encoder.parameters()),
            "optimizer_tensors": sum(len(s) for s in checkpoint["optimizer"]["state"].values())}


def child_measure(mode: str, path: str) -> dict:
    import torch

    from tunejury_align.reward.clap import ClapEncoder
    from tunejury_align.reward.head import numpy_float64_globals

    config, tokenizer = text_side()
    baseline = proc_status()
    start = time.perf_counter()
    if mode == "ours":
        encoder = ClapEncoder.from_file(path, config, tokenizer)
    else:
        with torch.serialization.safe_globals(numpy_float64_globals()):
            checkpoint = torch.load(path, map_location="cpu", weights_only=True, mmap=False)
        if mode == "full+copy":
            state = {k.removeprefix("module."): v for k, v in checkpoint["state_dict"].items()}
            encoder = ClapEncoder.from_state_dict(state, config, tokenizer, assign=False)
            del state, checkpoint
    seconds = time.perf_counter() - start
    if mode != "full":
        with torch.no_grad():  # read every tensor the encoder holds once
            checksum = sum(float(t.float().sum()) for t in encoder.state_dict().values())
        assert checksum == checksum, "NaN in the loaded weights"
    after = proc_status()
    return {"baseline": baseline["VmRSS"], "peak": after["VmHWM"], "rss": after["VmRSS"],
            "anon": after["RssAnon"] - baseline["RssAnon"], "file": after["RssFile"] - baseline["RssFile"],
            "seconds": seconds}


def run_child(*args: str) -> dict:
    proc = subprocess.run([sys.executable, os.path.abspath(__file__), "--child", *args],
                          capture_output=True, text=True)
    lines = [line for line in proc.stdout.splitlines() if line.startswith("CHILD ")]
    if proc.returncode or not lines:
        sys.stderr.write(proc.stderr[-4000:])
        raise SystemExit(f"child {args[0]} failed (exit {proc.returncode})")
    return json.loads(lines[-1][len("CHILD "):])


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--dir", default=None, help="folder for the temporary 2.4 GB checkpoint")
    parser.add_argument("--child", nargs=2, metavar=("MODE", "PATH"), help=argparse.SUPPRESS)
    args = parser.parse_args()
    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    warnings.filterwarnings("ignore")
    if args.child:
        mode, path = args.child
        result = child_build(path) if mode == "build" else child_measure(mode, path)
        print("CHILD " + json.dumps(result), flush=True)
        return 0

    import numpy
    import torch

    print(f"machine: {os.cpu_count()} CPUs, torch {torch.__version__} (CPU capability "
          f"{torch.backends.cpu.get_cpu_capability()}), numpy {numpy.__version__}, Python {sys.version.split()[0]}")
    folder = tempfile.mkdtemp(prefix="clap-ckpt-bench-", dir=args.dir)
    path = os.path.join(folder, "music_audioset_epoch_15_esc_90.14.pt")
    try:
        start = time.perf_counter()
        built = run_child("build", path)
        model_mb = built["model_bytes"] / MB
        print(f"file: {built['file_bytes'] / MB:.0f} MB ({built['params'] / 1e6:.1f}M parameters = {model_mb:.0f} MB, "
              f"buffers {built['buffer_bytes'] / MB:.0f} MB, {built['optimizer_tensors']} Adam state tensors), "
              f"written in {time.perf_counter() - start:.0f} s")
        results = {mode: run_child(mode, path) for mode in ("ours", "full", "full+copy")}
    finally:
        shutil.rmtree(folder, ignore_errors=True)
    print(f"{'load':<10} {'baseline MB':>11} {'peak MB':>8} {'peak-base':>9} {'x model':>8} "
          f"{'at end: +anon +file MB':>23} {'load s':>7}")
    for mode, r in results.items():
        growth = (r["peak"] - r["baseline"]) / MB
        end = f"+{r['anon'] / MB:.0f} +{r['file'] / MB:.0f}"
        print(f"{mode:<10} {r['baseline'] / MB:>11.0f} {r['peak'] / MB:>8.0f} {growth:>9.0f} "
              f"{growth / model_mb:>8.2f} {end:>23} {r['seconds']:>7.1f}")
    ours, full = results["ours"], results["full"]
    ratio = (ours["peak"] - ours["baseline"]) / MB / model_mb
    print(f"RESULT peak_rss_mb={ours['peak'] / MB:.0f} model_mb={model_mb:.0f} ratio={ratio:.2f} "
          f"full_load_peak_rss_mb={full['peak'] / MB:.0f} baseline_rss_mb={ours['baseline'] / MB:.0f}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
