"""``align score``: score audio files, with their percentiles among the published scores."""

from __future__ import annotations

import csv
import json
import sys
from pathlib import Path

from .common import DEBUG_NOTE, EXIT_OK, EXIT_SOME_FAILED, UsageError, add_reward_options, load_reward

AUDIO_SUFFIXES = {".wav", ".flac", ".ogg", ".mp3", ".aiff", ".aif", ".opus"}


def add_parser(commands) -> None:
    score = commands.add_parser("score", help="score audio files with the reward",
                                description="Score audio files; prints each score and its percentile in "
                                            "the seven published collections.")
    score.add_argument("inputs", nargs="+", metavar="FILE_OR_DIR", help="audio files or folders (searched recursively)")
    prompt = score.add_mutually_exclusive_group()
    prompt.add_argument("--prompt", help="one prompt for every file (default: none, the empty-prompt protocol)")
    prompt.add_argument("--prompts-file", help="CSV (file,prompt) or JSONL ({'file','prompt'}) with a prompt per file")
    score.add_argument("--json", action="store_true", help="print one JSON object per file (JSONL)")
    score.add_argument("--calibration", help="calibration JSON from `align calibrate`")
    score.add_argument("--system", help="the generator system whose calibration bias to subtract")
    add_reward_options(score)
    score.set_defaults(handler=cmd_score)


def collect_audio_files(inputs: list[str]) -> list[Path]:
    files: list[Path] = []
    for item in inputs:
        path = Path(item)
        if path.is_dir():
            found = sorted(p for p in path.rglob("*") if p.is_file() and p.suffix.lower() in AUDIO_SUFFIXES)
            if not found:
                raise UsageError(f"{path}: folder holds no audio files ({', '.join(sorted(AUDIO_SUFFIXES))})")
            files.extend(found)
        else:
            files.append(path)  # a missing/unreadable file is a per-file error, reported with the rest
    return files


def read_prompts_file(path: Path) -> dict[str, str]:
    """``file -> prompt`` from a CSV (columns ``file,prompt``) or JSONL (``{"file": .., "prompt": ..}``)."""
    if not path.is_file():
        raise UsageError(f"prompts file {path} not found")
    rows: list[dict] = []
    try:
        if path.suffix.lower() in {".jsonl", ".json"}:
            for number, line in enumerate(path.read_text().splitlines(), 1):
                if line.strip():
                    row = json.loads(line)
                    if not isinstance(row, dict):
                        raise UsageError(f"{path}:{number}: expected a JSON object with 'file' and 'prompt'")
                    rows.append(row)
        else:
            with path.open(newline="") as handle:
                rows = list(csv.DictReader(handle))
    except json.JSONDecodeError as err:
        raise UsageError(f"{path}: invalid JSON line ({err})") from err
    mapping = {}
    for number, row in enumerate(rows, 1):
        if "file" not in row or "prompt" not in row:
            raise UsageError(f"{path}: row {number} needs 'file' and 'prompt' fields, got {sorted(row)}")
        mapping[str(row["file"])] = "" if row["prompt"] is None else str(row["prompt"])
    return mapping


def prompt_for(file: Path, mapping: dict[str, str]) -> str | None:
    for key in (str(file), file.name, str(file.resolve())):
        if key in mapping:
            return mapping[key]
    return None


def cmd_score(args) -> int:
    from tqdm.auto import tqdm

    from ..reward.audio import AudioError
    from ..reward.percentiles import collection_names, percentiles

    files = collect_audio_files(args.inputs)
    if args.prompts_file:
        mapping = read_prompts_file(Path(args.prompts_file))
        prompts = [prompt_for(f, mapping) for f in files]
        missing = [str(f) for f, p in zip(files, prompts) if p is None]
        if missing:
            raise UsageError(f"{args.prompts_file} has no prompt for {missing[:5]} "
                             "(list every file; use an empty prompt for none)")
    else:
        prompts = [args.prompt or ""] * len(files)
    calibration = None
    if args.calibration or args.system:
        calibration = load_calibration_offset(args)
    reward = load_reward(args)
    names = collection_names()
    results = []
    for file, prompt in tqdm(list(zip(files, prompts)), desc="scoring", unit="file", disable=None, file=sys.stderr):
        record: dict = {"file": str(file), "prompt": prompt}
        try:
            score = reward.score_files([file], [prompt])[0]
            record["score"] = score
            if calibration is not None:
                record["calibrated_score"] = score - calibration
            record["percentiles"] = percentiles(score)
        except AudioError as err:
            record["error"] = str(err)
        record["reward"] = "debug" if reward.is_debug else args.reward
        if reward.is_debug:
            record["debug"] = True
        results.append(record)
    failed = [r for r in results if "error" in r]
    if args.json:
        for record in results:
            print(json.dumps(record))
    else:
        print_score_table(results, names, reward.is_debug)
    for record in failed:
        print(f"error: {record['error']}", file=sys.stderr)
    if failed:
        print(f"{len(failed)} of {len(results)} file(s) could not be scored", file=sys.stderr)
    return EXIT_SOME_FAILED if failed else EXIT_OK


def load_calibration_offset(args) -> float:
    if not (args.calibration and args.system):
        raise UsageError("--calibration and --system go together")
    path = Path(args.calibration)
    if not path.is_file():
        raise UsageError(f"calibration file {path} not found")
    biases = json.loads(path.read_text()).get("biases", {})
    if args.system not in biases:
        raise UsageError(f"system '{args.system}' is not in {path} (known: {sorted(biases)})")
    return float(biases[args.system])


def print_score_table(results: list[dict], names: dict[str, str], debug: bool) -> None:
    if debug:
        print(f"# {DEBUG_NOTE}")
    header = ["file", "score"] + [f"%{names[k]}" for k in names]
    rows = []
    for record in results:
        if "error" in record:
            rows.append([record["file"], "ERROR"] + [""] * len(names))
        else:
            score = f"{record['score']:.4f}" + (" (debug)" if debug else "")
            rows.append([record["file"], score] + [f"{record['percentiles'][k]:.1f}" for k in names])
    widths = [max(len(h), *(len(r[i]) for r in rows)) for i, h in enumerate(header)] if rows else [len(h) for h in header]
    print("  ".join(h.ljust(w) for h, w in zip(header, widths)))
    for row in rows:
        print("  ".join(c.ljust(w) for c, w in zip(row, widths)))
    if rows:
        print("# %<collection>: percentile among the published scores of that collection "
              "(empty prompt, release protocol)")
