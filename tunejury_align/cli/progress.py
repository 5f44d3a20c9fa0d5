"""Progress of long commands, on stderr: what will run, said at the start (:func:`say`), then a tqdm bar
on a terminal or, when stderr is not one (a log file, a job scheduler, ``nohup``), a line every
:data:`INTERVAL_SECONDS` (:class:`Progress`). The library reports progress through callbacks and
never prints; this module is what the commands pass as those callbacks."""

from __future__ import annotations

import sys
import time

#: seconds between progress lines when stderr is not a terminal
INTERVAL_SECONDS = 30.0


def say(message: str, enabled: bool = True) -> None:
    """One line on stderr (flushed), e.g. what a command is about to run."""
    if enabled:
        print(message, file=sys.stderr, flush=True)


def duration(seconds: float) -> str:
    seconds = int(round(seconds))
    if seconds < 60:
        return f"{seconds}s"
    minutes, seconds = divmod(seconds, 60)
    if minutes < 60:
        return f"{minutes}m{seconds:02d}s"
    hours, minutes = divmod(minutes, 60)
    return f"{hours}h{minutes:02d}m"


class Progress:
    """``update(n)`` as work is done: a tqdm bar when ``stream`` (default stderr) is a terminal,
    otherwise a line such as ``best-of-n: 12/96 candidates (12%), 1m30s elapsed, ~10m30s left`` at
    most every :data:`INTERVAL_SECONDS`, and one when it closes. ``enabled=False`` (processes other than
    the main one) shows nothing."""

    def __init__(self, desc: str, total: int, unit: str, *, enabled: bool = True, stream=None, clock=time.monotonic,
                 leave: bool = True):
        self.desc, self.total, self.unit, self.enabled = desc, int(total), unit, enabled
        self.stream = stream if stream is not None else sys.stderr
        self.clock, self.done, self.bar, self.closed, self.note = clock, 0, None, False, ""
        self.start = self.last = clock()
        if enabled and _is_terminal(self.stream):
            from tqdm.auto import tqdm

            self.bar = tqdm(total=self.total, desc=desc, unit=unit.split()[0], file=self.stream, leave=leave)

    def update(self, advance: int = 1, note: str | None = None) -> None:
        """``advance`` more units done; ``note`` (e.g. a validation accuracy) is shown after the count."""
        self.done += advance
        if note is not None:
            self.note = note
            if self.bar is not None:
                self.bar.set_postfix_str(note, refresh=False)
        if self.bar is not None:
            self.bar.update(advance)
        elif self.enabled and self.clock() - self.last >= INTERVAL_SECONDS:
            self._line()

    def _line(self, closing: bool = False) -> None:
        now = self.clock()
        elapsed, self.last = now - self.start, now
        share = self.done / self.total if self.total else 1.0
        if closing:
            timing = f"done in {duration(elapsed)}" if self.done >= self.total else f"stopped after {duration(elapsed)}"
        elif self.done:
            timing = f"{duration(elapsed)} elapsed, ~{duration(elapsed / share - elapsed)} left"
        else:
            timing = f"{duration(elapsed)} elapsed"
        note = f", {self.note}" if self.note else ""
        print(f"{self.desc}: {self.done}/{self.total} {self.unit} ({share:.0%}){note}, {timing}", file=self.stream,
              flush=True)

    def close(self) -> None:
        if self.closed:
            return
        self.closed = True
        if self.bar is not None:
            self.bar.close()
        elif self.enabled:
            self._line(closing=True)

    def write(self, line: str, file=None) -> None:
        """Print ``line`` (default: stdout) without breaking the bar."""
        file = file if file is not None else sys.stdout
        if self.bar is not None:
            self.bar.write(line, file=file)
        else:
            print(line, file=file, flush=True)

    def __enter__(self) -> Progress:
        return self

    def __exit__(self, *exc) -> None:
        self.close()


class Phases:
    """Progress of a command in phases (``round 1: generate``, ``round 1: train`` ...): one
    :class:`Progress` per phase, called as ``phases(phase, advance, total, note)`` (expert iteration's and the
    debug world's build callback). ``unit(phase)`` names what a phase counts."""

    def __init__(self, unit, enabled: bool = True):
        self.unit, self.enabled, self.phases = unit, enabled, {}

    def __call__(self, phase: str, advance: int, total: int, note: str | None = None) -> None:
        if phase not in self.phases:
            self.phases[phase] = Progress(phase, total, self.unit(phase), enabled=self.enabled, leave=False)
        progress = self.phases[phase]
        if total != progress.total:  # the work turned out shorter (e.g. training stopped early)
            progress.total = int(total)
            if progress.bar is not None:
                progress.bar.total = int(total)
        progress.update(advance, note or None)
        if progress.done >= total:
            progress.close()

    def close(self) -> None:
        for progress in self.phases.values():
            progress.close()


def _is_terminal(stream) -> bool:
    try:
        return bool(stream.isatty())
    except (AttributeError, ValueError):
        return False
