"""Best-of-N time split (generation vs scoring) and the reward's overhead over its bare encoders.

A MusicGen-small-sized generator (T5-base text encoder, EnCodec 32 kHz with 4 codebooks of 2048, 24-layer
1024-d decoder; random weights, ``musicgen_small_model``) and the full-size reward (HTSAT-base +
RoBERTa-base CLAP, MERT-v1-330M shapes; random weights, ``fullsize_reward``): compute does not depend on
weight values. ``best_of_n`` runs unmodified with N=32 candidates per prompt in units of 8, through thin
timing wrappers around the generator and the reward (the reward wrapper also keeps the clips it scored).

* scoring_fraction = time inside ``reward(...)`` / best-of-N wall time.
* scoring_overhead = time inside ``reward(...)`` during best-of-N (right after each unit's generation) / time
  of the bare computation on the same clips in the same batches: ``clap.embed_audio(window)``,
  ``mert(wave24)`` and ``head(cat([clap, mert, text]))`` under ``torch.inference_mode``, with the 48 kHz
  windows, the 24 kHz waves and the text embeddings prepared outside the timing.
* scoring_overhead_warm = the same ``reward(...)`` calls on the same batches, each right after another
  scoring instead of after a generation, / the bare computation: the reward's own overhead. The two differ
  by what a generation leaves behind (caches, allocator state) and by the text embeddings' cache misses.

All paths are warmed up first on batches of the same shape. Pairing: right after each reward() call inside
best-of-N, the same batch is scored again by reward() and by the bare path (alternating which goes first
between repeats), so the three timings of a unit are seconds apart: on a shared 2-core machine the speed
drifts by 10-15 % over minutes, and timing whole passes minutes apart measured that drift (an earlier version
of this benchmark reported 1.23 on one day and 0.89 on another). The paired calls are left out of best-of-N's
wall time. Per unit the best of ``--repeats`` runs is kept for each path; ``--repeats 1`` gives the plain
numbers. The steps of ``TuneJuryReward.forward`` outside the encoders are then timed one by one on the same
batches (check_audio, to float32 + mono, resample to 48 kHz + window + int16, resample to 24 kHz, text
embeddings cached and not), so the gap between reward() and bare is accounted for. Ends with one
``RESULT ...`` line.

On a quiet 2-core CPU the defaults take about 9 minutes (MusicGen-small decoding is ~3/4 of
it; a loaded machine can take several times longer); use ``--prompts 1 --repeats 1`` or a shorter
``--duration`` for a quicker look (scoring cost barely depends on the duration: CLAP always sees a 10 s
window).

    HF_HUB_OFFLINE=1 python benchmarks/best_of_n_overhead.py        # 2 prompts x N=32, 1 s, best of 2, CPU
    HF_HUB_OFFLINE=1 python benchmarks/best_of_n_overhead.py --prompts 1 --repeats 1 --duration 0.5
    HF_HUB_OFFLINE=1 python benchmarks/best_of_n_overhead.py --device cuda --repeats 3
"""

from __future__ import annotations

import argparse
import resource
import statistics
import time
import warnings

import numpy as np
import torch
from cpu import describe_machine

from tunejury_align.generators.musicgen import MusicGenGenerator, musicgen_small_model
from tunejury_align.recipes.best_of_n import BestOfNConfig, best_of_n
from tunejury_align.reward.audio import check_audio, resample, to_mono
from tunejury_align.reward.fullsize import fullsize_reward
from tunejury_align.reward.mert import MertEncoder

warnings.filterwarnings("ignore", message=r"torch\.meshgrid")
PROMPTS = ["lofi hip hop beat with warm piano chords", "epic orchestral soundtrack with brass and drums",
           "jazz trio with double bass", "calm acoustic guitar melody with soft strings"]


def sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def minor_faults() -> int:
    return resource.getrusage(resource.RUSAGE_SELF).ru_minflt


class Clock:
    """Wall and process CPU seconds of a block (CPU seconds: all threads of this process) and the minor page
    faults it took (memory the allocator got fresh from the OS: each page zeroed by the kernel)."""

    def __init__(self, device: torch.device):
        self.device = device

    def __enter__(self):
        sync(self.device)
        self.wall, self.cpu, self.faults = time.perf_counter(), time.process_time(), minor_faults()
        return self

    def __exit__(self, *exc):
        sync(self.device)
        self.wall, self.cpu = time.perf_counter() - self.wall, time.process_time() - self.cpu
        self.faults = minor_faults() - self.faults


class TimedGenerator:
    """Delegates to a generator adapter; records the seconds of each ``generate`` call."""

    def __init__(self, inner, device: torch.device):
        self.inner, self.device = inner, device
        self.sample_rate, self.name, self.is_debug = inner.sample_rate, inner.name, inner.is_debug
        self.calls: list[Clock] = []

    def generate(self, prompts, seeds, **options):
        with Clock(self.device) as clock:
            audio = self.inner.generate(prompts, seeds, **options)
        self.calls.append(clock)
        return audio

    def info(self) -> dict:
        return self.inner.info()


class TimedReward:
    """Delegates to a reward and records the seconds of each call (right after a generation, inside best-of-N).
    Then, still inside the unit but outside best-of-N's accounting (``extra_seconds``), the same batch is scored
    twice more: by ``reward(...)`` again (after a scoring: ``warm``) and by the bare encoders + head (inputs
    prepared untimed: ``bare``), in alternating order (warm first in even repeats, bare first in odd ones), so
    the three timings of a unit are taken within seconds of each other."""

    def __init__(self, inner, device: torch.device, repeat: int, label: str = "", generator=None):
        self.inner, self.device, self.repeat, self.label, self.generator = inner, device, repeat, label, generator
        self.calls: list[Clock] = []
        self.warm: list[Clock] = []
        self.bare: list[Clock] = []
        self.bare_scores: list[torch.Tensor] = []
        self.batches: list[tuple[torch.Tensor, int, list[str], torch.Tensor]] = []
        self.extra_seconds = 0.0

    def __call__(self, audio, sample_rate, prompts):
        with Clock(self.device) as clock:
            scores = self.inner(audio, sample_rate, prompts)
        self.calls.append(clock)
        begun = time.perf_counter()
        kept = (audio.detach().clone(), sample_rate, list(prompts), scores.detach().float().cpu())
        self.batches.append(kept)
        prepared = prepare_bare(self.inner, [kept], self.device)
        for kind in ("warm", "bare") if self.repeat % 2 == 0 else ("bare", "warm"):
            if kind == "warm":
                self.warm += time_reward_warm(self.inner, [kept], self.device)
            else:
                clocks, out = time_bare(self.inner, prepared, self.device)
                self.bare += clocks
                self.bare_scores += out
        self.extra_seconds += time.perf_counter() - begun
        if self.label:  # progress: this unit's generation and scoring seconds
            generated = f"generate {self.generator.calls[-1].wall:.1f} s, " if self.generator else ""
            print(f"  {self.label} unit {len(self.calls) - 1}: {generated}reward {clock.wall:.2f} s, again after a "
                  f"scoring {self.warm[-1].wall:.2f} s, bare {self.bare[-1].wall:.2f} s", flush=True)
        return scores


def prepare_bare(reward, batches, device):
    """Per batch: (48 kHz windows, 24 kHz waves, text embeddings), computed outside any timing."""
    prepared = []
    with torch.inference_mode():
        for audio, sample_rate, prompts, _ in batches:
            mono = to_mono(audio.to(device, torch.float32))
            prepared.append((reward.clap_window(mono, sample_rate), resample(mono, sample_rate, MertEncoder.sample_rate),
                             reward.text_embeddings(prompts)))
    sync(device)
    return prepared


def bare_scores(reward, window, wave24, text) -> torch.Tensor:
    clap = reward.clap.embed_audio(window).float()
    mert = reward.mert(wave24).float()
    return reward.head(torch.cat([clap, mert, text], dim=-1))


def time_bare(reward, prepared, device) -> tuple[list[Clock], list[torch.Tensor]]:
    clocks, scores = [], []
    with torch.inference_mode():
        for window, wave24, text in prepared:
            with Clock(device) as clock:
                out = bare_scores(reward, window, wave24, text)
            clocks.append(clock)
            scores.append(out.float().cpu())
    return clocks, scores


def time_reward_warm(reward, batches, device) -> list[Clock]:
    """``reward(...)`` on the stored batches back to back, as best-of-N calls it (inference mode) but each right
    after another scoring instead of after a generation."""
    clocks = []
    with torch.inference_mode():
        for audio, sample_rate, prompts, _ in batches:
            with Clock(device) as clock:
                reward(audio, sample_rate, prompts)
            clocks.append(clock)
    return clocks


def time_forward_extras(reward, batches, device) -> dict[str, float]:
    """Seconds (summed over the batches) of each step of ``TuneJuryReward.forward`` outside the encoders."""
    totals = dict.fromkeys(["check_audio", "to float32 + mono", "resample 48k + window + int16",
                            "resample 24k", "text embeddings (cached)"], 0.0)
    with torch.inference_mode():  # as best_of_n's run_unit calls the reward
        for audio, sample_rate, prompts, _ in batches:
            steps = [
                ("check_audio", lambda a=audio, sr=sample_rate: check_audio(a, sr)),
                ("to float32 + mono", lambda a=audio: to_mono(a.to(device, torch.float32))),
            ]
            mono = to_mono(audio.to(device, torch.float32))
            steps += [
                ("resample 48k + window + int16", lambda m=mono, sr=sample_rate: reward.clap_window(m, sr)),
                ("resample 24k", lambda m=mono, sr=sample_rate: resample(m, sr, MertEncoder.sample_rate)),
                ("text embeddings (cached)", lambda p=prompts: reward.text_embeddings(p)),
            ]
            for name, fn in steps:
                fn()  # warm
                with Clock(device) as clock:
                    fn()
                totals[name] += clock.wall
    return totals


def time_text_miss(reward, prompts, device) -> float:
    """Seconds to embed the prompts with an empty cache (what the first unit of each prompt pays)."""
    saved = dict(reward._text_cache)
    reward._text_cache.clear()
    with torch.no_grad(), Clock(device) as clock:
        reward.text_embeddings(prompts)
    reward._text_cache.update(saved)
    return clock.wall


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--prompts", type=int, default=2, help=f"number of prompts (at most {len(PROMPTS)})")
    parser.add_argument("--n", type=int, default=32, help="candidates per prompt")
    parser.add_argument("--batch", type=int, default=8, help="candidates generated and scored together")
    parser.add_argument("--duration", type=float, default=1.0, help="seconds of audio per candidate")
    parser.add_argument("--repeats", type=int, default=2,
                        help="best-of-N runs and bare passes, alternated (the same number of each; per unit, the "
                             "best of the repeats is kept for both)")
    parser.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    args = parser.parse_args()
    if not 1 <= args.prompts <= len(PROMPTS) or args.repeats < 1:
        parser.error(f"--prompts must be in 1..{len(PROMPTS)} and --repeats >= 1")
    device = torch.device(args.device)
    prompts = PROMPTS[:args.prompts]
    start_all = time.perf_counter()

    model, tokenizer = musicgen_small_model(seed=0)
    adapter = MusicGenGenerator(model, tokenizer, name="musicgen-small-random", is_debug=True).to(device)
    reward = fullsize_reward(seed=0, device=device)
    config = BestOfNConfig(n=args.n, candidates_per_batch=args.batch, bootstrap=200, generation={"duration": args.duration})
    print(describe_machine(device))
    print(f"device={device} threads={torch.get_num_threads()} prompts={args.prompts} x N={args.n} "
          f"batch={args.batch} duration={args.duration} s repeats={args.repeats}; "
          f"models built in {time.perf_counter() - start_all:.0f} s", flush=True)

    # warm-up, outside the timings: the generator on a short draw of the same batch size, then the reward and
    # the bare path on a batch of the real clip shape (noise), with a prompt the timed runs do not use.
    with Clock(device) as warm:
        adapter.generate([prompts[0]] * args.batch, list(range(args.batch)), duration=0.1)
        noise = 0.1 * torch.randn(args.batch, 1, int(round(args.duration * adapter.frame_rate)) * (adapter.sample_rate // adapter.frame_rate))
        with torch.inference_mode():
            reward(noise, adapter.sample_rate, ["warm-up"] * args.batch)
        time_bare(reward, prepare_bare(reward, [(noise, adapter.sample_rate, ["warm-up"] * args.batch, None)],
                                       device), device)
    print(f"warm-up: {warm.wall:.0f} s", flush=True)

    # R best-of-N runs; in each unit the reward() call is followed by its paired warm and bare timings
    runs = []
    for repeat in range(args.repeats):
        reward._text_cache.clear()  # each run pays for its prompts' text embeddings, as a fresh run would
        generator = TimedGenerator(adapter, device)
        timed_reward = TimedReward(reward, device, repeat, label=f"run {repeat + 1}", generator=generator)
        with Clock(device) as wall:
            result = best_of_n(generator, timed_reward, prompts, config=config)
        runs.append(dict(wall=wall.wall - timed_reward.extra_seconds, gen=generator.calls, score=timed_reward.calls,
                         warm=timed_reward.warm, bare=timed_reward.bare, scores=result.scores))
        print(f"best-of-N run {repeat + 1}: {runs[-1]['wall']:.0f} s (+{timed_reward.extra_seconds:.0f} s of paired "
              "timings)", flush=True)
        if repeat == 0:
            batches = timed_reward.batches
            reference = torch.cat([scores for *_, scores in batches])
            max_delta = float((torch.cat(timed_reward.bare_scores) - reference).abs().max())
    same_scores = all(np.array_equal(r["scores"], runs[0]["scores"]) for r in runs)
    bare_passes, warm_passes = [r["bare"] for r in runs], [r["warm"] for r in runs]

    # best of R per unit, for both paths alike (R = 1: the plain measurements)
    def best(clock_lists):
        return [min(cs, key=lambda c: c.wall) for cs in zip(*clock_lists)]

    gen_best = best([r["gen"] for r in runs])
    score_best, bare_best, warm_best = best([r["score"] for r in runs]), best(bare_passes), best(warm_passes)
    gen_s, score_s, bare_s, warm_s = (sum(c.wall for c in cs) for cs in (gen_best, score_best, bare_best, warm_best))
    other_s = min(r["wall"] - sum(c.wall for c in r["gen"]) - sum(c.wall for c in r["score"]) for r in runs)
    wall_s = gen_s + score_s + other_s
    score_cpu, bare_cpu = sum(c.cpu for c in score_best), sum(c.cpu for c in bare_best)
    scoring_fraction, overhead, overhead_warm = score_s / wall_s, score_s / bare_s, warm_s / bare_s

    units_per_prompt = -(-args.n // args.batch)
    cols = lambda label: " ".join(f"{label + str(r + 1):>6}" for r in range(args.repeats))  # noqa: E731
    print(f"\nseconds per unit of {args.batch} candidates: reward() inside best-of-N (after a generation), reward() "
          f"after another scoring, and the bare encoders + head; each repeat, then the best one's ratio to bare; "
          f"faults: minor page faults (thousands) of the best repeat")
    print(f"{'unit':>4} {'prompt':>6} {'generate':>8} | in-run {cols('r')} | warm {cols('w')} | bare {cols('b')} | "
          f"{'run/b':>6} {'warm/b':>6} | faults run/warm/bare")
    for i in range(len(score_best)):
        row = lambda clocks, i=i: " ".join(f"{cs[i].wall:>6.2f}" for cs in clocks)  # noqa: E731
        print(f"{i:>4} {i // units_per_prompt:>6} {gen_best[i].wall:>8.2f} |        {row([r['score'] for r in runs])} |"
              f"      {row(warm_passes)} |      {row(bare_passes)} | {score_best[i].wall / bare_best[i].wall:>6.3f} "
              f"{warm_best[i].wall / bare_best[i].wall:>6.3f} | {score_best[i].faults // 1000}/"
              f"{warm_best[i].faults // 1000}/{bare_best[i].faults // 1000}")
    ratios = [s.wall / b.wall for s, b in zip(score_best, bare_best)]
    print(f"{'all':>4} {'':>6} {gen_s:>8.2f} | best {score_s:.2f} | best {warm_s:.2f} | best {bare_s:.2f} | "
          f"{overhead:>6.3f} {overhead_warm:>6.3f}")
    print("per run: " + "; ".join(
        f"run {k + 1} wall {r['wall']:.1f} s, generation {sum(c.wall for c in r['gen']):.1f} s, "
        f"scoring {sum(c.wall for c in r['score']):.1f} s, again after a scoring {sum(c.wall for c in r['warm']):.1f} s, "
        f"bare {sum(c.wall for c in r['bare']):.1f} s" for k, r in enumerate(runs)))

    print(f"\nbest-of-N wall {wall_s:.1f} s = generation {gen_s:.1f} s ({gen_s / wall_s:.1%}) + scoring {score_s:.1f} s "
          f"({scoring_fraction:.1%}) + other {other_s:.2f} s; {len(batches) * args.batch} candidates"
          + (" (best of the runs per unit)" if args.repeats > 1 else ""))
    print(f"scoring overhead {overhead:.3f} (per-unit ratios: median {statistics.median(ratios):.3f}, "
          f"min {min(ratios):.3f}, max {max(ratios):.3f}); after another scoring {overhead_warm:.3f}; CPU-time "
          f"overhead {score_cpu / bare_cpu:.3f}; bare vs best-of-N scores max |delta| {max_delta:.2e}; "
          f"runs agree: {same_scores}")

    extras = time_forward_extras(reward, batches, device)
    text_miss = time_text_miss(reward, prompts, device)
    steps = sum(extras.values())
    print("\nwhere reward()'s seconds inside best-of-N go (summed over the units; best repeat per unit):")
    print(f"  {'bare encoders + head':<44} {bare_s:8.2f}")
    for name, seconds in extras.items():
        print(f"  {'  forward() step: ' + name:<44} {seconds:8.2f}")
    residual = warm_s - bare_s - steps
    print(f"  {'  unaccounted (reward() after scoring - bare - steps)':<44} {residual:+8.2f}")
    print(f"  {'text embeddings, cache miss (once per prompt)':<44} {text_miss:8.2f}")
    after_generation = score_s - warm_s - text_miss
    print(f"  {'after a generation instead of a scoring':<44} {after_generation:+8.2f}")
    print(f"  {'= reward() inside best-of-N':<44} {score_s:8.2f}   (unaccounted: {abs(residual) / score_s:.1%} of it)")
    print(f"total benchmark time {time.perf_counter() - start_all:.0f} s")
    print(f"RESULT scoring_fraction={scoring_fraction:.3f} scoring_overhead={overhead:.3f} "
          f"scoring_overhead_warm={overhead_warm:.3f}")


if __name__ == "__main__":
    main()
