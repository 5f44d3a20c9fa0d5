"""Scoring throughput: our batched TuneJuryReward vs a reference-style per-clip loop.

Full-size CLAP (HTSAT-base + RoBERTa-base) and MERT-v1-330M shapes with random weights (compute does
not depend on weight values), 32 varied synthetic 10 s clips (tones, chords, noise at several levels),
same process, same machine:

* reference loop (how the published scripts score): per clip, read the file for CLAP, resample to
  48 kHz, int16-round, CLAP audio; read the file again, resample to 24 kHz, MERT as the stock
  ``HubertModel`` forward over the whole clip (one segment, group norm over all of it) with all hidden
  states kept; re-encode the prompt; head. Batch size 1.
* ours: read each file once, ``reward(batch (B, C, T), sr, prompts)`` (text encoded once per prompt,
  MERT's conv stack in time chunks on CPU), fp32; then the same with the encoders in bf16 -- on CUDA and on
  CPUs with avx512_bf16 / amx_bf16 only (elsewhere bf16 is emulated: skipped with a note, ``--force-bf16``).

Both run under ``torch.inference_mode``. Before timing, both score the first ``--check-clips`` clips
and must agree (fp32, ``--atol``); ``loop_max_abs_delta`` is the largest |ours - loop| over the
timed loop clips. (Random weights give scores within ~0.005 of each other; on the first 2 clips ours
differs from the loop by 6e-9, while chunk-local group-norm statistics, the bug this check guards
against, gave 6.7e-4.)

flop_fraction = (encoder FLOPs per clip x clips/s) / (torch fp32 matmul FLOP/s measured in this
process). Ends with one ``RESULT ...`` line.

    python benchmarks/score_throughput.py                     # 32 clips, batch 8, CPU
    python benchmarks/score_throughput.py --clips 2           # a quick end-to-end check
    python benchmarks/score_throughput.py --device cuda --batch 16
"""

from __future__ import annotations

import argparse
import tempfile
import time
import warnings
from pathlib import Path

import numpy as np
import soundfile as sf
import torch
from cpu import bf16_accelerated, describe_machine
from torch.utils.flop_counter import FlopCounterMode

from tunejury_align.reward.audio import centre_window, read_audio, resample, to_mono
from tunejury_align.reward.clap import CLAP_WINDOW
from tunejury_align.reward.fullsize import fullsize_reward
from tunejury_align.reward.metrics import spearman

warnings.filterwarnings("ignore", message=r"torch\.meshgrid")
SAMPLE_RATE = 44_100
PROMPTS = ["lofi hip hop beat with warm piano chords", "epic orchestral soundtrack", "", "jazz trio"]


def synthetic_clips(count: int, seconds: float = 10.0) -> list[np.ndarray]:
    """Tones, chords and noise at several levels, ``(T, 2)`` float32."""
    rng = np.random.default_rng(0)
    t = np.arange(int(seconds * SAMPLE_RATE)) / SAMPLE_RATE
    clips = []
    for i in range(count):
        kind, level = i % 3, [0.05, 0.1, 0.2, 0.4][(i // 3) % 4]
        if kind == 0:
            wave = np.sin(2 * np.pi * rng.uniform(110, 880) * t)
        elif kind == 1:
            root = rng.uniform(110, 440)
            wave = sum(np.sin(2 * np.pi * root * r * t) for r in (1.0, 1.26, 1.5)) / 3
        else:
            wave = rng.standard_normal(t.size)
        wave = level * wave * (0.6 + 0.4 * np.sin(2 * np.pi * rng.uniform(0.2, 3.0) * t))
        clips.append(np.stack([wave, wave * 0.9], axis=1).astype(np.float32))
    return clips


def sync(device):
    if device.type == "cuda":
        torch.cuda.synchronize(device)


@torch.inference_mode()
def reference_loop(reward, files, prompts, device) -> np.ndarray:
    scores = []
    for path, prompt in zip(files, prompts):
        wave, sr = read_audio(path)  # read 1: CLAP
        mono = to_mono(wave[None].to(device))
        clap_in = resample(mono, sr, 48_000)
        clap_in = torch.trunc(clap_in.clamp(-1, 1) * 32767.0) / 32767.0
        clap_audio = reward.clap.embed_audio(centre_window(clap_in, CLAP_WINDOW))
        wave, sr = read_audio(path)  # read 2: MERT
        mert_in = resample(to_mono(wave[None].to(device)), sr, 24_000)
        if reward.mert.do_normalize:  # Wav2Vec2FeatureExtractor's zero-mean unit-variance
            mert_in = (mert_in - mert_in.mean()) / torch.sqrt(mert_in.var(unbiased=False) + 1e-7)
        mert_in = mert_in.to(next(reward.mert.model.parameters()).dtype)
        outputs = reward.mert.model(mert_in, output_hidden_states=True)  # whole clip; all hidden states kept
        mert = outputs.last_hidden_state.mean(dim=1)
        text = reward.clap.embed_text([prompt]) if prompt else torch.zeros(1, 512, device=device)  # re-encoded
        scores.append(float(reward.head(torch.cat([clap_audio, mert, text], dim=-1).float())[0]))
    return np.array(scores)


@torch.inference_mode()
def batched(reward, files, prompts, batch: int, device) -> np.ndarray:
    waves = [read_audio(path) for path in files]  # read once
    scores = []
    for start in range(0, len(waves), batch):
        chunk = waves[start:start + batch]
        audio = torch.stack([w for w, _ in chunk]).to(device)
        scores.append(reward(audio, chunk[0][1], prompts[start:start + batch]).cpu())
    return torch.cat(scores).numpy()


def timed(fn, device):
    sync(device)
    start = time.perf_counter()
    result = fn()
    sync(device)
    return result, time.perf_counter() - start


def matmul_flops(device, dtype=torch.float32, size=2048, seconds=3.0) -> float:
    a = torch.randn(size, size, device=device, dtype=dtype)
    b = torch.randn(size, size, device=device, dtype=dtype)
    for _ in range(3):
        a @ b
    sync(device)
    count, start = 0, time.perf_counter()
    while time.perf_counter() - start < seconds:
        a @ b
        count += 1
    sync(device)
    return 2 * size**3 * count / (time.perf_counter() - start)


@torch.inference_mode()
def encoder_flops_per_clip(reward, clip, device) -> float:
    audio = torch.from_numpy(clip.T.copy())[None].to(device)
    with FlopCounterMode(display=False) as counter:
        reward(audio, SAMPLE_RATE, [""])
    return float(counter.get_total_flops())


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--clips", type=int, default=32)
    parser.add_argument("--batch", type=int, default=8)
    parser.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    parser.add_argument("--loop-clips", type=int, default=None,
                        help="time the reference loop on this many clips only (default: all)")
    parser.add_argument("--check-clips", type=int, default=2,
                        help="clips scored by both paths before timing, which must agree (default: 2)")
    parser.add_argument("--force-bf16", action="store_true",
                        help="run the bf16 comparison even where the CPU would emulate bf16 (no avx512_bf16 / amx_bf16)")
    parser.add_argument("--atol", type=float, default=1e-5,
                        help="largest |ours - loop| fp32 score difference accepted (default: 1e-5)")
    args = parser.parse_args()
    device = torch.device(args.device)
    clips = synthetic_clips(args.clips)
    prompts = [PROMPTS[i % len(PROMPTS)] for i in range(args.clips)]
    folder = Path(tempfile.mkdtemp(prefix="score-bench-"))
    files = []
    for i, clip in enumerate(clips):
        files.append(folder / f"clip{i:02d}.wav")
        sf.write(files[-1], clip, SAMPLE_RATE, subtype="FLOAT")

    print(describe_machine(device))
    print(f"device={device} threads={torch.get_num_threads()} clips={args.clips} x 10 s batch={args.batch}")
    reward = fullsize_reward(seed=0, device=device)
    peak = matmul_flops(device)
    flops = encoder_flops_per_clip(reward, clips[0], device)
    print(f"torch fp32 matmul: {peak / 1e9:.1f} GFLOP/s; encoders: {flops / 1e9:.1f} GFLOP per 10 s clip")

    # both paths must give the same scores (also warms up the allocator and oneDNN primitives)
    n_check = max(1, min(args.check_clips, args.clips))
    check_loop = reference_loop(reward, files[:n_check], prompts[:n_check], device)
    check_ours = batched(reward, files[:n_check], prompts[:n_check], args.batch, device)
    check_delta = float(np.abs(check_ours - check_loop).max())
    print(f"check on {n_check} clips: loop {' '.join(f'{x:.5f}' for x in check_loop)}, "
          f"ours {' '.join(f'{x:.5f}' for x in check_ours)}, max |delta| {check_delta:.2e}")
    if not check_delta <= args.atol:
        raise SystemExit(f"ours and the reference loop disagree: max |delta| {check_delta:.3e} > {args.atol:g}")

    n_loop = args.loop_clips or args.clips
    loop_scores, loop_s = timed(lambda: reference_loop(reward, files[:n_loop], prompts[:n_loop], device), device)
    loop_rate = n_loop / loop_s
    print(f"reference loop : {loop_rate:.3f} clips/s ({loop_s / n_loop:.2f} s/clip)")

    reward._text_cache.clear()
    fp32_scores, ours_s = timed(lambda: batched(reward, files, prompts, args.batch, device), device)
    ours_rate = args.clips / ours_s
    flop_fraction = flops * ours_rate / peak
    loop_delta = float(np.abs(fp32_scores[:n_loop] - loop_scores).max())
    print(f"ours fp32      : {ours_rate:.3f} clips/s ({ours_s / args.clips:.2f} s/clip), "
          f"{ours_rate / loop_rate:.2f}x the loop, flop_fraction {flop_fraction:.2f}, "
          f"max |ours - loop| {loop_delta:.2e} over {n_loop} clips")
    if not loop_delta <= args.atol:
        raise SystemExit(f"ours and the reference loop disagree: max |delta| {loop_delta:.3e} > {args.atol:g}")

    bf16 = "bf16_speedup=skipped"
    if bf16_accelerated(device) or args.force_bf16:
        reward_bf16 = fullsize_reward(seed=0, device=device, dtype=torch.bfloat16)
        batched(reward_bf16, files[:1], prompts[:1], 1, device)
        reward_bf16._text_cache.clear()
        bf16_scores, bf16_s = timed(lambda: batched(reward_bf16, files, prompts, args.batch, device), device)
        bf16_rate = args.clips / bf16_s
        rho = spearman(fp32_scores, bf16_scores)
        max_delta = float(np.abs(fp32_scores - bf16_scores).max())
        print(f"ours bf16      : {bf16_rate:.3f} clips/s, {bf16_rate / ours_rate:.2f}x fp32, Spearman {rho:.4f}, "
              f"max |delta| {max_delta:.4f} (fp32 score std {fp32_scores.std():.4f})")
        bf16 = f"bf16_speedup={bf16_rate / ours_rate:.3f} bf16_spearman={rho:.4f} bf16_max_abs_delta={max_delta:.4f}"
    else:
        print("ours bf16      : skipped: this CPU has no avx512_bf16 / amx_bf16, bf16 would be emulated (several "
              "times slower than fp32); --force-bf16 runs it anyway")
    print(f"RESULT speedup={ours_rate / loop_rate:.3f} flop_fraction={flop_fraction:.3f} "
          f"loop_max_abs_delta={loop_delta:.2e} {bf16}")


if __name__ == "__main__":
    main()
