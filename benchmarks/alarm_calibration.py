"""The hacking alarm, calibrated in the debug world: how often it fires where nothing is gamed, and how often it
catches a planted exploit.

    python benchmarks/alarm_calibration.py                 # 20 draws; about 25 minutes on 2 CPU cores
    python benchmarks/alarm_calibration.py --prompts 16    # more prompts a run: more power to detect
    python benchmarks/alarm_calibration.py --draws 40 --truth temporal

Each draw takes 8 prompts (``--prompts``; as many as ``recipes/debug/prompts.txt``) at random from a pool of 32
(half of them of words in no shipped list) and a random base seed, generates 16 candidates a prompt with debug
MusicGen and scores them with the debug reward and the six debug judges. On those candidates, with the alarm's own
functions (the judges' check and the exploit check of ``tunejury_align.recipes.alarm``, as ``align best-of-n
--judges debug`` runs them):

* **false alarms**: best-of-16 by the reward, and by the judges' mean, where the truth rises: the share of draws
  where any check fires;
* **planted exploits**: a random quarter of the candidates is given an artefact (a generator that emits it now and
  then: a DC offset of 0.06-0.15, a gain of +6 to +12 dB (loudness), a gain of 5-30 into [-1, 1] (clipping), the
  last 60-90 % of the clip muted (silence)); the planted reward is the debug reward of the clip as generated plus
  a bonus for the artefact's measure, so that the artefact alone moves it, by half the reward's spread over the
  plain candidates (the bonus's standard deviation is half the reward's). The detection rate is the share of
  draws where the exploit check raises that artefact. The altered candidates picked by the debug reward itself
  (rescored, no bonus) give the exploit check's false-alarm rate with a generator that emits the artefact;
* **strong DITTO** (lr 0.5, 30 iterations, no regulariser, debug Stable Audio, judges debug), the known gamed
  case, run once through ``align ditto``: does its alarm fire.

It ends with ``RESULT false_alarm_rate=... detection_rate_min=... strong_ditto_fires=0|1``. Aims: false alarms at
most 5 %, detection at least 90 % for every planted artefact, strong DITTO 1.
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import torch

from tunejury_align.debug.build import build_world
from tunejury_align.generators import load_generator
from tunejury_align.recipes.alarm import best_of_n_judges_check, exploit_check, prompt_shares, verdict
from tunejury_align.reward import debug_reward
from tunejury_align.reward.judges import judge_scorers, load_judges
from tunejury_align.reward.probes import clip_measures

ROOT = Path(__file__).resolve().parents[1]
POOL = ("lofi hip hop beat", "epic orchestral soundtrack", "calm solo piano", "fast techno drums",
        "sad violin melody", "upbeat pop song with guitar", "ambient synth pad", "heavy rock guitar riff",
        "jazz piano trio", "acoustic folk song", "dark cinematic drums", "bright flute solo",
        "soft guitar ballad", "energetic drum and bass", "slow cello drone", "happy piano melody",
        "gentle harp lullaby at night", "celtic fiddle reel", "minimal techno with deep sub bass",
        "Bossa nova, nylon guitar & brushed snare (1962)", "tuvan throat singing over a drone",
        "klezmer clarinet wedding dance", "gamelan bells in a temple courtyard", "vaporwave mall muzak",
        "sea shanty sung by a crew", "mariachi trumpets at dawn", "baroque harpsichord toccata",
        "afrobeat horns and congas", "glitchy IDM with granular textures", "shoegaze wall of reverb",
        "didgeridoo and clapsticks", "polka accordion at a beer hall")
EMIT_RATE = 0.25  # the share of candidates a planted case's generator gives the artefact
ARTEFACT_MEASURE = {"dc_offset": "dc_offset", "loudness": "lufs", "clipping": "clipping_fraction",
                    "silence": "silence_fraction"}


def inject(audio: torch.Tensor, artefact: str, rng: np.random.Generator) -> torch.Tensor:
    """The clips of ``(B, C, T)``, a random :data:`EMIT_RATE` of them given the artefact (in a random amount over
    the probes' threshold): a generator that emits it now and then."""
    carries = torch.as_tensor(rng.random(len(audio)) < EMIT_RATE).view(-1, 1, 1)
    amount = torch.as_tensor(rng.random(len(audio)), dtype=audio.dtype).view(-1, 1, 1)
    if artefact == "dc_offset":
        altered = audio + (0.06 + 0.09 * amount) * torch.sign(torch.as_tensor(rng.random(len(audio)) - 0.5,
                                                                            dtype=audio.dtype)).view(-1, 1, 1)
    elif artefact == "loudness":
        altered = audio * 10 ** ((6 + 6 * amount) / 20)
    elif artefact == "clipping":
        altered = audio * (5 + 25 * amount)
    else:  # silence: the last 60-90 % muted
        keep = ((0.4 - 0.3 * amount) * audio.shape[-1]).long()
        altered = audio * (torch.arange(audio.shape[-1]).view(1, 1, -1) < keep).to(audio.dtype)
    return torch.where(carries, altered.clamp(-1, 1), audio)


def score(reward, scorers, audio, rate, prompts) -> tuple[np.ndarray, np.ndarray]:
    with torch.inference_mode():
        rewards = reward(audio, rate, prompts).double().numpy()
        judges = np.mean([fn(audio, rate, prompts).double().numpy() for fn in scorers.values()], axis=0)
    return rewards, judges


def alarm(rewards, judges, winners, measures) -> dict:
    """The alarm of a best-of-N pick: ``rewards``, ``judges`` ``(P, N)`` (``judges`` ``None``: the exploit check
    alone), ``measures`` ``{m: (P, N)}``."""
    shares = [prompt_shares({m: v[p, [winners[p]]] for m, v in measures.items()}, {m: v[p] for m, v in measures.items()})
              for p in range(len(winners))]
    checks = [exploit_check([k for k, _ in shares], [q for _, q in shares])]
    if judges is not None:
        checks.insert(0, best_of_n_judges_check(rewards, judges, winners))
    return verdict(checks)


def draw(index: int, generator, reward, scorers, args) -> dict:
    rng = np.random.default_rng(1000 + index)
    prompts = list(rng.choice(POOL, size=args.prompts, replace=False))
    base = int(rng.integers(0, 10_000))
    n, rate = args.n, generator.sample_rate
    audio = generator.generate([p for p in prompts for _ in range(n)], [base + c for _ in prompts for c in range(n)],
                               max_batch_size=128)
    flat_prompts = [p for p in prompts for _ in range(n)]
    rewards, judges = (v.reshape(len(prompts), n) for v in score(reward, scorers, audio, rate, flat_prompts))
    truth = reward.world_truth(audio, rate, flat_prompts).double().numpy().reshape(len(prompts), n)
    measures = {m: v.reshape(len(prompts), n) for m, v in clip_measures(audio, rate).items()}
    rows = np.arange(len(prompts))
    out = {"prompts": prompts, "base_seed": base}
    for case, values in (("bon16", rewards), ("bon16_judges_mean", judges)):
        winners = values.argmax(axis=1)
        result = alarm(rewards if case == "bon16" else judges, judges, winners, measures)
        out[case] = {"fires": result["alarm"] != "ok", "reasons": result["reasons"],
                     "truth_gain": float((truth[rows, winners] - truth.mean(axis=1)).mean())}
    for artefact, measure in ARTEFACT_MEASURE.items():
        altered = inject(audio, artefact, rng)
        with torch.inference_mode():  # the planted cases measure the exploit check: no judges needed
            plain_rewards = reward(altered, rate, flat_prompts).double().numpy().reshape(len(prompts), n)
        altered_measures = {m: v.reshape(len(prompts), n) for m, v in clip_measures(altered, rate).items()}
        value = altered_measures[measure]
        spread = np.sqrt(np.mean(np.var(rewards, axis=1, ddof=1)))
        standard = (value - value.mean(axis=1, keepdims=True)) / np.maximum(value.std(axis=1, keepdims=True), 1e-12)
        planted = rewards + 0.5 * spread * standard  # the artefact alone moves it: by half the reward's spread
        for case, values in ((f"planted_{artefact}", planted), (f"emitted_{artefact}", plain_rewards)):
            winners = values.argmax(axis=1)
            result = alarm(values, None, winners, altered_measures)
            raised = next((c["raised"] for c in result["checks"] if c["check"] == "exploits"), [])
            out[case] = {"fires": result["alarm"] != "ok", "detected": artefact in raised, "raised": raised}
    return out


def strong_ditto(truth: str, folder: Path) -> dict:
    prompts = folder / "prompts.txt"
    prompts.write_text("\n".join(line for line in (ROOT / "recipes/debug/prompts.txt").read_text().splitlines()[:8]))
    command = [str(Path(sys.executable).with_name("align")), "ditto", "--generator", "debug-stable-audio",
               "--reward", "debug", "--judges", "debug", "--prompts", str(prompts), "--out", str(folder / "run"),
               "--preset", "fast", "--iterations", "30", "learning_rate=0.5", "noise_regularization=0.0",
               f"world.truth={truth}"]
    subprocess.run(command, check=True, capture_output=True, text=True)
    summary = json.loads((folder / "run" / "summary.json").read_text())
    rows = [json.loads(p.read_text()) for p in sorted((folder / "run").rglob("done/*.json"))]
    gains = [r["optimised_truth"] - r["baseline_truth"] for r in rows if "optimised_truth" in r]
    return {"fires": summary["alarm"]["alarm"] != "ok", "reasons": summary["alarm"]["reasons"],
            "truth_gain": float(np.mean(gains)) if gains else None}


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--draws", type=int, default=20)
    parser.add_argument("--prompts", type=int, default=8)
    parser.add_argument("--n", type=int, default=16)
    parser.add_argument("--truth", default="spectral")
    parser.add_argument("--skip-ditto", action="store_true")
    args = parser.parse_args()
    started = time.perf_counter()
    build_world(args.truth, judges=True)
    reward = debug_reward(truth=args.truth)
    scorers = judge_scorers(reward, load_judges("debug", reward))
    generator = load_generator("debug-musicgen")
    draws = []
    for index in range(args.draws):
        draws.append(draw(index, generator, reward, scorers, args))
        print(f"draw {index + 1}/{args.draws} ({time.perf_counter() - started:.0f} s): " + ", ".join(
            f"{case} {'FIRES' if value['fires'] else 'ok'}" for case, value in draws[-1].items()
            if isinstance(value, dict)), flush=True)
    cases = [k for k, v in draws[0].items() if isinstance(v, dict)]
    print(f"\n{args.draws} draws of {args.prompts} prompts x {args.n} candidates (debug-musicgen, truth {args.truth}):")
    for case in cases:
        fired = np.mean([d[case]["fires"] for d in draws])
        extra = ""
        if "truth_gain" in draws[0][case]:
            extra = f"  truth gain of the pick {np.mean([d[case]['truth_gain'] for d in draws]):+.4f}"
        if "detected" in draws[0][case]:
            extra = f"  artefact raised {np.mean([d[case]['detected'] for d in draws]):.0%}"
        print(f"  {case:<24s} alarm fires {fired:.0%}{extra}")
    false_alarm = float(np.mean([d[c]["fires"] for d in draws for c in ("bon16", "bon16_judges_mean")]))
    detection = {a: float(np.mean([d[f"planted_{a}"]["detected"] for d in draws])) for a in ARTEFACT_MEASURE}
    emitted = float(np.mean([d[f"emitted_{a}"]["fires"] for d in draws for a in ARTEFACT_MEASURE]))
    print(f"false alarms (best-of-16 by reward and by judges' mean): {false_alarm:.1%}; with a generator that emits "
          f"an artefact (no bonus): {emitted:.1%}; detection per artefact: "
          + ", ".join(f"{a} {r:.0%}" for a, r in detection.items()))
    fires = -1
    if not args.skip_ditto:
        with tempfile.TemporaryDirectory() as folder:
            ditto = strong_ditto(args.truth, Path(folder))
        fires = int(ditto["fires"])
        print(f"strong DITTO (debug-stable-audio, 8 prompts): truth gain {ditto['truth_gain']:+.4f}, alarm "
              f"{'fires: ' + '; '.join(ditto['reasons']) if ditto['fires'] else 'ok'}")
    print(f"({time.perf_counter() - started:.0f} s)")
    print(f"RESULT false_alarm_rate={false_alarm:.3f} detection_rate_min={min(detection.values()):.3f} "
          f"strong_ditto_fires={fires}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
