"""``align calibrate``, ``align extract-features``, ``align train-head``, ``align eval``.

"""

from __future__ import annotations

import argparse
import json
import sys
import warnings
from pathlib import Path

from ..config import describe
from ..reward.training import HeadTrainingConfig
from .common import (
    EXIT_OK,
    EXIT_SOME_FAILED,
    UsageError,
    add_reward_options,
    check_output_dir,
    check_output_file,
    display_width,
    load_reward,
    pad,
    printable,
    resolve_device,
)
from .progress import Progress, say


def add_parser(commands) -> None:
    """Add the ``calibrate``, ``extract-features``, ``train-head`` and ``eval`` subcommands."""

    # 1. align calibrate
    cal = commands.add_parser(
        "calibrate", help="fit per-system score biases from anchor preference pairs",
        description="Anchor calibration: fit one additive bias per generator system from K human preference "
                    "pairs (P(A wins) = sigmoid((r_A - b_A) - (r_B - b_B)), L2 penalty on the summed NLL). "
                    "Pairs: CSV or JSONL with score_a, score_b (or audio_a, audio_b, prompt, scored with the "
                    "reward), system_a, system_b, winner (A, B or tie; model_a/model_b accepted). With --sweep, "
                    "runs the published K-sweep instead.")
    cal.add_argument("--pairs", required=True, help="CSV or JSONL file of anchor pairs")
    cal.add_argument("--out", help="calibration JSON to write (required without --sweep; with --sweep, the "
                                   "sweep results)")
    cal.add_argument("--l2", type=float, default=1.0, help="L2 penalty on the summed NLL (default: %(default)s)")
    cal.add_argument("--pin", metavar="SYSTEM", help="hold this system's bias at 0")
    cal.add_argument("--sweep", metavar="K,K,...", help="K-sweep: anchor budgets, e.g. 0,3,10,30,100,250")
    cal.add_argument("--seeds", type=int, default=5, help="K-sweep: seeds 0..seeds-1 (default: %(default)s)")
    cal.add_argument("--pool", type=int, default=299, help="K-sweep: anchor-pool rows (default: %(default)s)")
    cal.add_argument("--test", type=int, default=299, help="K-sweep: test rows after the pool (default: %(default)s)")
    cal.add_argument("--json", action="store_true", help="print the result as JSON")
    add_reward_options(cal)
    cal.set_defaults(handler=cmd_calibrate)

    # 2. align extract-features
    ext = commands.add_parser(
        "extract-features", help="extract the reward's features for audio pairs (head training input)",
        description="Compute CLAP audio, MERT and CLAP text features of the audio pairs (audio_a, audio_b, "
                    "prompt, winner[, system_a, system_b]) into one features file. A cache keyed by each file's "
                    "SHA-256 makes reruns resume where a previous run stopped.")
    ext.add_argument("--pairs", required=True, help="CSV or JSONL file of audio pairs")
    ext.add_argument("--out", required=True, help="features file to write (.pt)")
    ext.add_argument("--cache", help="cache folder (default: <out>.cache)")
    ext.add_argument("--save-every", type=int, default=8, help="flush the cache every N new files (default: 8)")
    add_reward_options(ext)
    ext.set_defaults(handler=cmd_extract_features)

    # 3. align train-head
    train = commands.add_parser(
        "train-head", help="train a TuneJury head on extracted features (RankNet)",
        formatter_class=argparse.RawDescriptionHelpFormatter,
        description="Train the TuneJury head with the RankNet loss and the published hyper-parameters; writes "
                    "the released checkpoint layout (<out>, a plain state_dict) with its sidecar <out>.json, "
                    "loadable with --reward <out>, and <out>.training.json (history).",
        epilog="settings: defaults < --config YAML < flags < key=value overrides.\n"
               "config keys:\n" + describe(HeadTrainingConfig))
    train.add_argument("overrides", nargs="*", metavar="KEY=VALUE", help="config overrides, e.g. lr=3e-4")
    train.add_argument("--features", required=True, help="features file from `align extract-features`")
    train.add_argument("--val-features", help="features file for early stopping (default: a seeded split)")
    train.add_argument("--out", required=True, help="checkpoint to write, e.g. my_head.pt")
    train.add_argument("--exclude", action="append", metavar="BLOCK[,BLOCK]",
                       help="input blocks to leave out: clap_audio, mert, text (repeatable or comma-separated)")
    train.add_argument("--config", help="YAML file of HeadTrainingConfig keys")
    train.add_argument("--epochs", type=int, help="max epochs (default 1000)")
    train.add_argument("--seed", type=int, help="seed (default 42)")
    train.add_argument("--device", help="torch device: cpu, cuda, auto (default: cpu)")
    train.set_defaults(handler=cmd_train_head)

    # 4. align eval
    ev = commands.add_parser(
        "eval", help="pairwise accuracy, ECE and Spearman against human judgements",
        description="Evaluate the reward: on preference pairs (--pairs: scores or audio) pairwise accuracy on "
                    "non-tie pairs and ECE (10 equal-count bins of |margin|); on a MOS set (--mos: 'mos' with "
                    "'score' or 'audio') the Spearman correlation.")
    source = ev.add_mutually_exclusive_group(required=True)
    source.add_argument("--pairs", help="CSV or JSONL preference pairs")
    source.add_argument("--mos", help="CSV or JSONL rated clips")
    ev.add_argument("--calibration", help="calibration JSON from `align calibrate` (pairs with systems)")
    ev.add_argument("--bins", type=int, default=10, help="ECE bins (default: %(default)s)")
    ev.add_argument("--out", help="also write the results JSON here")
    ev.add_argument("--json", action="store_true", help="print the results as JSON")
    add_reward_options(ev)
    ev.set_defaults(handler=cmd_eval)


# -- shared ------------------------------------------------------------------------------------------
def _read_pairs(path: str, require_systems: bool = False):
    from ..reward.calibration import PairsError, read_pairs

    try:
        return read_pairs(path, require_systems=require_systems)
    except PairsError as err:
        raise UsageError(str(err)) from err


def _score_audio_pairs(args, pairs):
    """Score pairs given as audio with the reward; returns (pairs, failures)."""
    from ..reward.evaluation import score_pairs

    if all(p.has_scores for p in pairs):
        return pairs, {}
    files = {(f, p.prompt) for p in pairs if not p.has_scores for f in (p.audio_a, p.audio_b)}
    say(f"scoring {len(files)} audio file(s) of {len(pairs)} pair(s) with the reward {printable(args.reward)}")
    reward = load_reward(args)
    with Progress("scoring", len(files), "files") as bar:
        return score_pairs(pairs, CountingReward(reward, bar.update))


class CountingReward:
    """The reward, reporting each file it scores to ``progress`` (the library scores silently)."""

    def __init__(self, reward, progress):
        self.reward, self.progress = reward, progress

    def score_files(self, paths, prompts=None):
        try:
            return self.reward.score_files(paths, prompts)
        finally:
            self.progress(len(paths))


def _report_failures(failures: dict[str, str], dropped: int, total: int) -> None:
    for file, error in failures.items():
        print(f"error: {printable(error)}" if file in error else f"error: {printable(file)}: {printable(error)}",
              file=sys.stderr)
    if failures:
        print(f"{len(failures)} audio file(s) could not be read; {dropped} of {total} pair(s) left out",
              file=sys.stderr)


# -- align calibrate --------------------------------------------------------------------------------
def cmd_calibrate(args) -> int:
    from ..reward.calibration import PinMissingWarning, fit_calibration, k_sweep
    from ..rundir import atomic_write_json

    # 1. Check the inputs before any scoring.
    ks = None
    if args.sweep is not None:
        try:
            ks = [int(k) for k in args.sweep.split(",") if k.strip()]
        except ValueError as err:
            raise UsageError(f"--sweep takes comma-separated integers, got {args.sweep!r}") from err
        if not ks or any(k < 0 or k > args.pool for k in ks):
            raise UsageError(f"--sweep values must be in 0..--pool ({args.pool}), got {args.sweep!r}")
        if args.seeds < 1 or args.test < 1 or args.pool < 0:
            raise UsageError("--seeds and --test must be >= 1, --pool >= 0")
    elif not args.out:
        raise UsageError("--out is required (the calibration JSON to write), unless --sweep is given")
    if args.out:
        check_output_file(args.out)
    if args.l2 < 0:
        raise UsageError(f"--l2 must be >= 0, got {args.l2}")
    pairs = _read_pairs(args.pairs, require_systems=True)
    if ks is not None and args.pool + args.test > len(pairs):
        raise UsageError(f"--pool {args.pool} + --test {args.test} exceeds the {len(pairs)} pairs in {args.pairs}")
    # 2. Scores (audio pairs are scored with the reward).
    total = len(pairs)
    pairs, failures = _score_audio_pairs(args, pairs)
    _report_failures(failures, total - len(pairs), total)
    if failures and ks is not None:
        print("error: the K-sweep shuffles every row of the file; fix or remove the pairs above", file=sys.stderr)
        return EXIT_SOME_FAILED
    # 3. The sweep, or one fit.
    if ks is not None:
        with warnings.catch_warnings():  # the per-K counts are printed instead
            warnings.simplefilter("ignore", PinMissingWarning)
            result = k_sweep(pairs, ks, seeds=args.seeds, pool=args.pool, test=args.test, l2=args.l2, pin=args.pin)
        if args.out:
            atomic_write_json(Path(args.out), result)
        print(json.dumps(result, indent=1) if args.json else format_sweep(result))
        return EXIT_SOME_FAILED if failures else EXIT_OK
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always", PinMissingWarning)
        calibration = fit_calibration(pairs, l2=args.l2, pin=args.pin)
    for warning in caught:
        print(f"warning: {warning.message}", file=sys.stderr)
    calibration.save(args.out)
    if args.json:
        print(json.dumps(calibration.as_dict(), indent=1))
    else:
        print(f"fitted {len(calibration.biases)} system bias(es) from {calibration.pairs} pair(s) "
              f"({calibration.ties} tie(s) excluded), l2={calibration.l2} -> {args.out}")
        width = max(display_width(printable(s)) for s in calibration.biases) if calibration.biases else 6
        for system, bias in calibration.biases.items():
            pinned = ""
            if system == calibration.pinned:
                pinned = "  (pinned; absent from the pairs)" if calibration.pin_missing else "  (pinned)"
            print(f"  {pad(printable(system), width)}  {bias:+.4f}{pinned}")
        print("# a calibrated score is score - bias: `align score --calibration FILE --system NAME`")
    return EXIT_SOME_FAILED if failures else EXIT_OK


def format_sweep(result: dict) -> str:
    lines = [f"K-sweep: {result['seeds']} seed(s), pool {result['pool']}, test {result['test']}, l2={result['l2']}"
             + (f", pin {result['pin']}" if result["pin"] else ""),
             "K      agreement  (mean ± population std over seeds)"]
    for row in result["k"]:
        note = (f"   (pin absent from the anchors in {row['pin_missing']} of {result['seeds']} seed(s))"
                if row["pin_missing"] else "")
        lines.append(f"{row['k']:<6d} {100 * row['mean']:6.2f} % ± {100 * row['std']:.2f}{note}")
    base = result["uncalibrated"]
    lines.append(f"uncalibrated: {100 * base['mean']:.2f} % ± {100 * base['std']:.2f}")
    return "\n".join(lines)


# -- align extract-features ---------------------------------------------------------------------------
def cmd_extract_features(args) -> int:
    from ..reward.features import FeatureFileError, extract_pair_features

    pairs = _read_pairs(args.pairs)
    missing = [p.where for p in pairs if not (p.audio_a and p.audio_b)]
    if missing:
        raise UsageError(f"{missing[0]}: feature extraction needs 'audio_a' and 'audio_b' in every row")
    if args.save_every < 1:
        raise UsageError("--save-every must be >= 1")
    check_output_file(args.out)
    cache = Path(args.cache) if args.cache else Path(args.out + ".cache")
    check_output_dir(str(cache), label=f"--cache {cache}", lock=False)
    files = len({f for p in pairs for f in (p.audio_a, p.audio_b)})
    say(f"extract-features: {len(pairs)} pair(s), {files} audio file(s) -> {printable(args.out)} "
        f"(cache {printable(cache)}: a rerun resumes from it)")
    reward = load_reward(args)
    try:
        with Progress("features", files, "files") as bar:
            features, report = extract_pair_features(reward, pairs, cache, save_every=args.save_every,
                                                     progress=bar.update)
    except FeatureFileError as err:
        raise UsageError(str(err)) from err
    features.save(args.out)
    _report_failures(report.failures, len(report.dropped_pairs), len(pairs))
    label = " (debug reward: the features mean nothing)" if reward.is_debug else ""
    print(f"{report.pairs} pair(s), {len(features.files)} file(s) ({report.from_cache} from the cache), "
          f"{len(features.prompts)} prompt(s), blocks {sorted(features.blocks)}{label} -> {args.out}")
    return EXIT_SOME_FAILED if report.failures else EXIT_OK


# -- align train-head ---------------------------------------------------------------------------------
def cmd_train_head(args) -> int:
    from ..config import load_config
    from ..reward.features import FeatureFileError, PairFeatures
    from ..reward.training import HeadTrainingConfig, save_head_checkpoint, train_head_on_features

    exclude = None
    if args.exclude:
        exclude = [b.strip() for item in args.exclude for b in item.split(",") if b.strip()]
    device = resolve_device(args.device, None) if args.device else None
    config = load_config(HeadTrainingConfig, args.config, args.overrides, exclude=exclude,
                         max_epochs=args.epochs, seed=args.seed, device=device)
    check_output_file(args.out)
    try:
        features = PairFeatures.load(args.features)
        validation = PairFeatures.load(args.val_features) if args.val_features else None
        say(f"train-head: {len(features)} pair(s), at most {config.max_epochs} epochs (stops after {config.patience} "
            f"without improvement) -> {printable(args.out)}")
        with Progress("train-head", config.max_epochs, "epochs at most") as bar:
            result = train_head_on_features(features, config, validation=validation, progress=lambda record: bar.update(1))
    except (FeatureFileError, ValueError) as err:
        raise UsageError(str(err)) from err
    training = {"config": {k: getattr(config, k) for k in config.__dataclass_fields__}, **result.summary(),
                "features": str(args.features), "pairs": len(features), "history": result.history}
    save_head_checkpoint(result.head, result.spec, args.out, training=training)
    val = f", validation accuracy {result.val_accuracy:.4f}" if result.val_accuracy is not None else ""
    print(f"trained on {len(features)} pair(s), blocks {list(result.spec.blocks)}: best epoch {result.best_epoch} "
          f"of {result.epochs} ({result.monitored} {result.best_loss:.4f}), train accuracy "
          f"{result.train_accuracy:.4f}{val} -> {args.out} (+ {args.out}.json)")
    print(f"# use it: align score FILES --reward {args.out}")
    return EXIT_OK


# -- align eval ----------------------------------------------------------------------------------------
def cmd_eval(args) -> int:
    from ..reward.calibration import Calibration, PairsError
    from ..reward.evaluation import evaluate_mos, evaluate_pairs, read_mos, score_mos
    from ..rundir import atomic_write_json

    if args.bins < 1:
        raise UsageError("--bins must be >= 1")
    if args.out:
        check_output_file(args.out)
    calibration = None
    if args.calibration:
        if args.mos:
            raise UsageError("--calibration applies to --pairs (per-system biases), not to --mos")
        try:
            calibration = Calibration.load(args.calibration)
        except (OSError, ValueError) as err:
            raise UsageError(f"calibration file {args.calibration}: {err}") from err
    if args.pairs:
        pairs = _read_pairs(args.pairs)
        total = len(pairs)
        pairs, failures = _score_audio_pairs(args, pairs)
        _report_failures(failures, total - len(pairs), total)
        if not any(not p.is_tie for p in pairs):
            raise UsageError(f"{args.pairs}: no non-tie pair to evaluate")
        result = {"kind": "pairs", "file": args.pairs, **evaluate_pairs(pairs, calibration, bins=args.bins)}
    else:
        try:
            items = read_mos(args.mos)
        except PairsError as err:
            raise UsageError(str(err)) from err
        total = len(items)
        failures = {}
        if any(item.score is None for item in items):
            say(f"scoring {sum(item.score is None for item in items)} audio file(s) with the reward "
                f"{printable(args.reward)}")
            reward = load_reward(args)
            with Progress("scoring", sum(item.score is None for item in items), "files") as bar:
                items, failures = score_mos(items, CountingReward(reward, bar.update))
        _report_failures(failures, total - len(items), total)
        if len(items) < 2:
            raise UsageError(f"{args.mos}: Spearman needs at least 2 scored items, got {len(items)}")
        result = {"kind": "mos", "file": args.mos, **evaluate_mos(items)}
        if result["spearman"] != result["spearman"]:  # NaN: JSON has no NaN
            result["spearman"] = None
            print("warning: Spearman is undefined (constant scores or MOS)", file=sys.stderr)
    if args.out:
        atomic_write_json(Path(args.out), result)
    print(json.dumps(result, indent=1) if args.json else format_eval(result))
    return EXIT_SOME_FAILED if failures else EXIT_OK


def format_eval(result: dict) -> str:
    if result["kind"] == "mos":
        rho = "undefined" if result["spearman"] is None else f"{result['spearman']:.4f}"
        return f"{result['file']}: {result['items']} item(s), Spearman {rho}"
    lines = [f"{result['file']}: {result['used']} non-tie pair(s) ({result['ties']} tie(s) left out)"
             + (", calibrated" if result["calibrated"] else ""),
             f"  pairwise accuracy {result['accuracy']:.4f}", f"  ECE {result['ece']:.4f}",
             "  bin  count  |margin| range      confidence  accuracy"]
    for number, row in enumerate(result["bins"], 1):
        lines.append(f"  {number:<4d} {row['count']:<6d} {row['low']:8.4f}-{row['high']:<9.4f}  "
                     f"{row['confidence']:.4f}      {row['accuracy']:.4f}")
    return "\n".join(lines)
