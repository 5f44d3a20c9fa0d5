"""Recipe configs: dataclass defaults < YAML file (``--config``) < ``key=value`` overrides.

Unknown keys are errors that name the key and list the valid ones (trl's convention); every value is
checked against its field's declared type before the config is built (:func:`check_fields`), so a
wrong setting is refused before anything is written.
"""

from __future__ import annotations

import dataclasses
import re
import types
import typing
from pathlib import Path
from typing import Any

import yaml


class ConfigError(ValueError):
    """A config file or override that does not fit the recipe's config dataclass."""


#: keys of earlier releases -> what they are called now (each name means one thing)
RENAMED = {
    "batch_size": "candidates_per_batch (best-of-N, expert iteration's sampling), train_batch_size (expert "
                  "iteration's and head training's optimizer steps) or generation.max_batch_size (a generator's "
                  "forward passes)",
    "generation_batch_size": "candidates_per_batch",
}


class _Loader(yaml.SafeLoader):
    """YAML 1.1 reads ``5e-3`` (no dot) as a string; this loader reads it as the number it is (YAML 1.2)."""


_Loader.add_implicit_resolver("tag:yaml.org,2002:float", re.compile(r"^[-+]?(\d+(\.\d*)?|\.\d+)[eE][-+]?\d+$"),
                              list("-+0123456789."))

#: how :func:`check_fields` names the types it checks
TYPE_NAMES = {int: "an integer", float: "a number", bool: "true or false", str: "a string", dict: "a mapping",
              list: "a list"}


def _fits(value, annotation) -> tuple[bool, Any, str]:
    """(whether ``value`` fits ``annotation``, the value to use, what was expected)."""
    union = typing.get_origin(annotation) in (typing.Union, types.UnionType)
    options = typing.get_args(annotation) if union else (annotation,)
    kinds = [typing.get_origin(k) or k for k in options if k is not type(None)]
    optional = len(kinds) < len(options)
    expected = " or ".join(TYPE_NAMES.get(k, getattr(k, "__name__", str(k))) for k in kinds) + (
        " or null" if optional else "")
    if value is None:
        return optional, value, expected
    for kind in kinds:
        if kind not in TYPE_NAMES:  # Any, classes: not checked here
            return True, value, expected
        if isinstance(value, bool) and kind is not bool:
            continue  # a bool is an int to Python, never to a setting
        if kind is float and isinstance(value, (int, float)):
            return True, float(value), expected
        if kind is list and isinstance(value, (list, tuple)):
            return True, list(value), expected
        if isinstance(value, kind):
            return True, value, expected
    return False, value, expected


def check_fields(cls, values: dict, *, prefix: str = "", sources: dict[str, str] | None = None) -> dict:
    """``values`` checked against the field types of dataclass ``cls`` (int, float -- ints accepted --,
    bool, str, dict, list, ``X | None``; no bools where numbers belong); returns them with ints made
    floats where floats belong. Raises :class:`ConfigError` naming the key (``prefix`` + key), the value,
    the expected type and where it was set (``sources``). Keys that are not fields are left alone."""
    hints = typing.get_type_hints(cls)
    checked = dict(values)
    for key, value in values.items():
        if key in hints:
            fits, checked[key], expected = _fits(value, hints[key])
            if not fits:
                where = (sources or {}).get(key, "")
                raise ConfigError(f"'{prefix}{key}' must be {expected}, got {value!r} ({type(value).__name__}){where}")
    return checked


def parse_override(text: str) -> tuple[list[str], Any]:
    """``a.b=value`` -> (["a", "b"], value parsed as YAML scalar: numbers, true/false, null, strings)."""
    if "=" not in text:
        raise ConfigError(f"override '{text}' is not key=value")
    key, raw = text.split("=", 1)
    if not key:
        raise ConfigError(f"override '{text}' has an empty key")
    try:
        value = yaml.load(raw, Loader=_Loader) if raw != "" else ""
    except yaml.YAMLError:
        value = raw
    return key.split("."), value


def load_config(cls, path: str | Path | None = None, overrides: list[str] | None = None, **explicit):
    """Build ``cls`` from defaults, then the YAML file, then ``explicit`` (CLI flags), then overrides."""
    values: dict[str, Any] = {}
    sources: dict[str, str] = {}  # where each top-level key was last set, for error messages
    if path is not None:
        path = Path(path)
        if not path.is_file():
            raise ConfigError(f"config file {path} not found")
        try:
            loaded = yaml.load(path.read_text(), Loader=_Loader) or {}
        except yaml.YAMLError as err:
            raise ConfigError(f"{path}: invalid YAML ({err})") from err
        if not isinstance(loaded, dict):
            raise ConfigError(f"{path}: expected a mapping of config keys")
        values.update(loaded)
        sources.update({key: f" in {path}" for key in loaded})
    flags = {k: v for k, v in explicit.items() if v is not None}
    values.update(flags)
    sources.update({key: " (from a command-line flag)" for key in flags})
    for override in overrides or []:
        keys, value = parse_override(override)
        target = values
        for key in keys[:-1]:
            target = target.setdefault(key, {})
            if not isinstance(target, dict):
                raise ConfigError(f"override '{override}': '{key}' is not a mapping")
        target[keys[-1]] = value
        sources[keys[0]] = f" (override {override!r})"
    names = {f.name for f in dataclasses.fields(cls)}
    unknown = sorted(set(values) - names)
    if unknown:
        where = f" in {path}" if path else ""
        renamed = "".join(f"; '{key}' is now {RENAMED[key]}" for key in unknown if key in RENAMED)
        raise ConfigError(f"unknown config key(s) {unknown}{where}{renamed}; valid keys: {sorted(names)}")
    values = check_fields(cls, values, sources=sources)
    try:
        return cls(**values)
    except (TypeError, ValueError) as err:
        raise ConfigError(f"invalid {cls.__name__}: {err}") from err


def describe(cls) -> str:
    """One line per field with its default and help text (for --help epilogues)."""
    lines = []
    for f in dataclasses.fields(cls):
        default = f.default if f.default is not dataclasses.MISSING else f.default_factory()
        lines.append(f"  {f.name} (default {default!r}): {f.metadata.get('help', '')}")
    return "\n".join(lines)
