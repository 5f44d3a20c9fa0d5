"""Recipe configs: dataclass defaults < YAML file (``--config``) < ``key=value`` overrides.

Unknown keys are errors that name the key and list the valid ones (trl's convention).
"""

from __future__ import annotations

import dataclasses
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


def parse_override(text: str) -> tuple[list[str], Any]:
    """``a.b=value`` -> (["a", "b"], value parsed as YAML scalar: numbers, true/false, null, strings)."""
    if "=" not in text:
        raise ConfigError(f"override '{text}' is not key=value")
    key, raw = text.split("=", 1)
    if not key:
        raise ConfigError(f"override '{text}' has an empty key")
    try:
        value = yaml.safe_load(raw) if raw != "" else ""
    except yaml.YAMLError:
        value = raw
    return key.split("."), value


def load_config(cls, path: str | Path | None = None, overrides: list[str] | None = None, **explicit):
    """Build ``cls`` from defaults, then the YAML file, then ``explicit`` (CLI flags), then overrides."""
    values: dict[str, Any] = {}
    if path is not None:
        path = Path(path)
        if not path.is_file():
            raise ConfigError(f"config file {path} not found")
        try:
            loaded = yaml.safe_load(path.read_text()) or {}
        except yaml.YAMLError as err:
            raise ConfigError(f"{path}: invalid YAML ({err})") from err
        if not isinstance(loaded, dict):
            raise ConfigError(f"{path}: expected a mapping of config keys")
        values.update(loaded)
    values.update({k: v for k, v in explicit.items() if v is not None})
    for override in overrides or []:
        keys, value = parse_override(override)
        target = values
        for key in keys[:-1]:
            target = target.setdefault(key, {})
            if not isinstance(target, dict):
                raise ConfigError(f"override '{override}': '{key}' is not a mapping")
        target[keys[-1]] = value
    names = {f.name for f in dataclasses.fields(cls)}
    unknown = sorted(set(values) - names)
    if unknown:
        where = f" in {path}" if path else ""
        renamed = "".join(f"; '{key}' is now {RENAMED[key]}" for key in unknown if key in RENAMED)
        raise ConfigError(f"unknown config key(s) {unknown}{where}{renamed}; valid keys: {sorted(names)}")
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
