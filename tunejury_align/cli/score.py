"""``align score``: score audio files, with their percentiles among the published scores."""

from __future__ import annotations

import csv
import json
import logging
import re
import sys
import warnings
from pathlib import Path

from .common import (
    DEBUG_NOTE,
    EXIT_OK,
    EXIT_SOME_FAILED,
    UsageError,
    add_reward_options,
    display_width,
    load_judges_for,
    load_reward,
    pad,
    printable,
    truth_text,
    world_from,
    world_truth,
)
from .progress import Progress, say

logger = logging.getLogger(__name__)

#: a ``world.KEY=VALUE`` setting among the inputs
WORLD_SETTING = re.compile(r"^world\.[A-Za-z_]+=")



def add_parser(commands) -> None:
    score = commands.add_parser("score", help="score audio files with the reward",
                                description="Score audio files; prints each score and its percentile in "
                                            "the seven published collections.")
    score.add_argument("inputs", nargs="+", metavar="FILE_OR_DIR",
                       help="audio files or folders (searched recursively); a world.KEY=VALUE among them is a setting "
                            "of the debug world (with --reward debug): world.truth=spectral|temporal|"
                            "package.module:function, the truth printed beside the debug reward (default spectral)")
    prompt = score.add_mutually_exclusive_group()
    prompt.add_argument("--prompt", help="one prompt for every file (default: none, the empty-prompt protocol)")
    prompt.add_argument("--prompts-file", help="CSV (file,prompt) or JSONL ({'file','prompt'}) with a prompt per file")
    score.add_argument("--json", action="store_true", help="print one JSON object per file (JSONL)")
    score.add_argument("--calibration", help="calibration JSON from `align calibrate`")
    score.add_argument("--system", help="the generator system whose calibration bias to subtract")
    add_reward_options(score)
    score.set_defaults(handler=cmd_score)


def collect_audio_files(inputs: list[str]) -> list[tuple[Path, str | None]]:
    """``(path, error)`` per file to score: each file given, the audio files of each folder (recursively),
    and ``(folder, "... no audio files ...")`` for a folder holding none (its own error row). Only when no
    input yields a file is it a :class:`UsageError`."""
    from ..reward.probes import AUDIO_SUFFIXES

    entries: list[tuple[Path, str | None]] = []
    for item in inputs:
        path = Path(item)
        if path.is_dir():
            found = sorted(p for p in path.rglob("*") if p.is_file() and p.suffix.lower() in AUDIO_SUFFIXES)
            if not found:
                entries.append((path, f"{path}: folder holds no audio files ({', '.join(sorted(AUDIO_SUFFIXES))})"))
            entries.extend((file, None) for file in found)
        else:
            entries.append((path, None))  # a missing/unreadable file is a per-file error, reported with the rest
    if all(error is not None for _, error in entries):
        raise UsageError("; ".join(printable(error) for _, error in entries))
    return entries


def read_prompts_file(path: Path) -> dict[str, str]:
    """``file -> prompt`` from a CSV (columns ``file,prompt``) or JSONL (``{"file": .., "prompt": ..}``)."""
    if not path.is_file():
        raise UsageError(f"prompts file {path} not found")
    rows: list[dict] = []
    try:
        if path.suffix.lower() in {".jsonl", ".json"}:
            for number, line in enumerate(path.read_text(encoding="utf-8-sig").splitlines(), 1):
                if line.strip():
                    try:
                        row = json.loads(line)
                    except json.JSONDecodeError as err:
                        raise UsageError(f"{path}, line {number}: invalid JSON ({err.msg})") from err
                    if not isinstance(row, dict):
                        raise UsageError(f"{path}, line {number}: expected a JSON object with 'file' and 'prompt'")
                    rows.append(row)
        else:
            with path.open(newline="", encoding="utf-8-sig") as handle:  # a byte-order mark is not a column name
                rows = list(csv.DictReader(handle))
    except UnicodeDecodeError as err:
        raise UsageError(f"prompts file {path} is not UTF-8 text ({err})") from err
    mapping = {}
    for number, row in enumerate(rows, 1):
        if "file" not in row or "prompt" not in row:
            raise UsageError(f"{path}: row {number} needs 'file' and 'prompt' fields, got {sorted(map(str, row))}")
        mapping[str(row["file"])] = "" if row["prompt"] is None else str(row["prompt"])
    return mapping


def prompt_for(file: Path, mapping: dict[str, str]) -> str | None:
    for key in (str(file), file.name, str(file.resolve())):
        if key in mapping:
            return mapping[key]
    return None


def cmd_score(args) -> int:
    from ..reward.judges import JUDGE_PREFIX, judge_scorers
    from ..reward.percentiles import collection_names

    # 1. Inputs, settings, prompts and calibration are checked before the reward loads.
    settings = [item for item in args.inputs if WORLD_SETTING.match(item)]
    args.inputs = [item for item in args.inputs if not WORLD_SETTING.match(item)]
    if not args.inputs:
        raise UsageError("give at least one audio file or folder to score")
    truth = world_truth(args, world_from(settings))
    entries = collect_audio_files(args.inputs)
    files = [file for file, error in entries if error is None]
    if args.prompts_file:
        mapping = read_prompts_file(Path(args.prompts_file))
        missing = [printable(str(f)) for f in files if prompt_for(f, mapping) is None]
        if missing:
            raise UsageError(f"{args.prompts_file} has no prompt for {missing[:5]} "
                             "(list every file; use an empty prompt for none)")
    calibration = None
    if args.calibration or args.system:
        calibration = load_calibration_offset(args)
    say(f"scoring {len(files)} file(s) with the reward {printable(args.reward)}")
    reward = load_reward(args, truth)
    judges = judge_scorers(reward, load_judges_for(args, reward))
    names = collection_names()
    # 2. Score file after file; each result is printed (and flushed) as soon as it is known.
    table = None if args.json else ScoreTable([printable(str(file)) for file, _ in entries], names, reward.is_debug,
                                              [name[len(JUDGE_PREFIX):] for name in judges],
                                              truth_text(truth) if reward.is_debug else "")
    failed = 0
    with Progress("scoring", len(files), "files") as progress:
        for file, error in entries:
            prompt = (prompt_for(file, mapping) if args.prompts_file else args.prompt or "") if error is None else None
            record = (score_one(reward, file, prompt, calibration, truth=truth if reward.is_debug else None,
                                judges=judges)
                      if error is None
                      else {"file": str(file), "error": error})
            record["reward"] = "debug" if reward.is_debug else args.reward
            if reward.is_debug:
                record["debug"] = True
            progress.write(json.dumps(record) if table is None else table.row(record))
            if "error" in record:
                failed += 1
                print(f"error: {printable(record['error'])}", file=sys.stderr, flush=True)
            if "warning" in record:
                print(f"warning: {printable(record['warning'])}", file=sys.stderr, flush=True)
            if error is None:
                progress.update(1)
    if table is not None and len(entries) > failed:
        print(table.footer(), flush=True)
    if failed:
        print(f"{failed} of {len(entries)} file(s) could not be scored", file=sys.stderr)
    return EXIT_SOME_FAILED if failed else EXIT_OK


def score_one(reward, file: Path, prompt: str, calibration: float | None, truth=None,
              judges: dict | None = None) -> dict:
    """One file's record: its score and percentiles (and any warning about how it was read), or its
    error. Any failure is this file's error; the other files are still scored. ``truth``: a debug world's truth
    callable, also scored (with the debug reward); ``judges``: each judge's score (``judge_<name>``),
    from the reward's own features of the file (no second encoder pass; a judge with its own encoders runs them)."""
    import torch

    from ..reward.audio import AudioError, AudioWarning, read_audio
    from ..reward.percentiles import percentiles

    record: dict = {"file": str(file), "prompt": prompt}
    try:
        with warnings.catch_warnings(record=True) as caught:
            warnings.simplefilter("always", AudioWarning)
            wave, sample_rate = read_audio(file)
        audio = wave.unsqueeze(0)
        with torch.inference_mode():  # the numbers of reward.score_files: forward on the decoded waveform
            score = float(reward(audio, sample_rate, [prompt])[0])
            record.update({name: float(fn(audio, sample_rate, [prompt])[0]) for name, fn in (judges or {}).items()})
        for warning in caught:
            if issubclass(warning.category, AudioWarning):
                record["warning"] = str(warning.message)
            else:
                warnings.showwarning(warning.message, warning.category, warning.filename, warning.lineno)
        record["score"] = score
        if calibration is not None:
            record["calibrated_score"] = score - calibration
        record["percentiles"] = percentiles(score)
        if truth is not None:
            record["truth"] = float(truth(audio, sample_rate, [prompt])[0])
    except AudioError as err:
        record["error"] = str(err) if str(file) in str(err) else f"{file}: {err}"
    except Exception as err:  # any other per-file failure is named; it never ends the other files' scores
        logger.debug("scoring %s failed", file, exc_info=True)
        record["error"] = f"{file}: {type(err).__name__}: {err}"
    return record


def load_calibration_offset(args) -> float:
    if not (args.calibration and args.system):
        raise UsageError("--calibration and --system go together")
    path = Path(args.calibration)
    if not path.is_file():
        raise UsageError(f"calibration file {path} not found")
    try:
        data = json.loads(path.read_text(encoding="utf-8-sig"))
    except json.JSONDecodeError as err:
        raise UsageError(f"calibration file {path}, line {err.lineno}: not valid JSON ({err.msg}); "
                         "write it with `align calibrate`") from err
    except UnicodeDecodeError as err:
        raise UsageError(f"calibration file {path} is not UTF-8 text ({err})") from err
    biases = data.get("biases") if isinstance(data, dict) else None
    if not isinstance(biases, dict):
        raise UsageError(f"calibration file {path} has no 'biases' mapping; write it with `align calibrate`")
    if args.system not in biases:
        raise UsageError(f"system '{printable(args.system)}' is not in {path} "
                         f"(known: {[printable(s) for s in sorted(biases)]})")
    bias = biases[args.system]
    if isinstance(bias, bool) or not isinstance(bias, (int, float)):
        raise UsageError(f"calibration file {path}: the bias of '{printable(args.system)}' must be a number, "
                         f"got {bias!r}")
    return float(bias)


class ScoreTable:
    """The score table, one row at a time: the column widths are fixed up front from the known file
    names (display width: a CJK character takes two columns), so rows can be printed as they come."""

    def __init__(self, files: list[str], names: dict[str, str], debug: bool, judges: list[str] = (),
                 truth: str = ""):
        self.names, self.debug, self.judges, self.truth = names, debug, list(judges), truth
        extra = (["truth"] if debug else []) + self.judges
        self.header = ["file", "score"] + extra + [f"%{names[k]}" for k in names]
        score_width = len("-0.0000 (debug)" if debug else "-0.0000")
        self.widths = ([max([4, *map(display_width, files)]), score_width] + [max(len(h), 7) for h in extra]
                       + [max(len(h), 5) for h in self.header[2 + len(extra):]])
        lines = [f"# {DEBUG_NOTE}"] if debug else []
        print("\n".join([*lines, self.format(self.header)]), flush=True)

    def format(self, cells: list[str]) -> str:
        return "  ".join(pad(cell, width) for cell, width in zip(cells, self.widths)).rstrip()

    def row(self, record: dict) -> str:
        if "error" in record:
            return self.format([printable(record["file"]), "ERROR"])
        score = f"{record['score']:.4f}" + (" (debug)" if self.debug else "")
        truth = [f"{record['truth']:.4f}"] if self.debug else []
        judged = [f"{record['judge_' + name]:.4f}" for name in self.judges]  # judges.JUDGE_PREFIX
        return self.format([printable(record["file"]), score, *truth, *judged]
                           + [f"{record['percentiles'][k]:.1f}" for k in self.names])

    def footer(self) -> str:
        truth = (f"\n# truth: {self.truth} of the file, which the debug reward is a learned proxy of"
                 if self.debug else "")
        judged = ("\n# " + ", ".join(self.judges) + ": held-out judges' scores of the file (heads on the reward's own "
                  "features, or on their own encoders)") if self.judges else ""
        return ("# %<collection>: percentile among the published scores of that collection "
                "(empty prompt, release protocol)" + truth + judged)
