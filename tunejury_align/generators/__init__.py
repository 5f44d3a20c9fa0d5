"""Generator adapters, one file per family, picked with literal dicts (no plugin registry)."""

from __future__ import annotations

import importlib
import json
from pathlib import Path

from ..hub import ModelNotFoundError, hub_file, looks_like_repo_id
from .base import CallableGenerator, Generator

# family -> (module, adapter class, debug builder)
FAMILIES = {
    "musicgen": ("musicgen", "MusicGenGenerator", "debug_musicgen"),
    "stable-audio": ("stable_audio", "StableAudioGenerator", "debug_stable_audio"),
    "audioldm2": ("audioldm2", "AudioLDM2Generator", "debug_audioldm2"),
}
DEBUG_NAMES = {f"debug-{family}": family for family in FAMILIES}
# how a saved model names itself -> family
PIPELINE_CLASSES = {"StableAudioPipeline": "stable-audio", "AudioLDM2Pipeline": "audioldm2"}
MODEL_TYPES = {"musicgen": "musicgen", "musicgen_melody": "musicgen"}


def _module(family: str):
    return importlib.import_module(f"{__name__}.{FAMILIES[family][0]}")


def _read_json(name: str, filename: str) -> dict | None:
    local = Path(name).expanduser()
    if local.is_dir():
        path = local / filename
        return json.loads(path.read_text()) if path.is_file() else None
    path = hub_file(name, filename, what=f"generator '{name}'", optional=True)
    return json.loads(path.read_text()) if path is not None else None


def detect_family(name: str) -> str:
    """The adapter family of a hub id or local folder, from its model_index.json / config.json."""
    local = Path(name).expanduser()
    if not local.is_dir() and not looks_like_repo_id(name):
        raise ModelNotFoundError(f"generator '{name}' is neither a local folder, a hub id, nor one of "
                                 f"{['debug', *DEBUG_NAMES]}")
    index = _read_json(name, "model_index.json")
    if index is not None:
        family = PIPELINE_CLASSES.get(index.get("_class_name"))
        if family is None:
            raise ModelNotFoundError(f"generator '{name}' is a {index.get('_class_name')}; supported pipelines: "
                                     f"{sorted(PIPELINE_CLASSES)}")
        return family
    config = _read_json(name, "config.json")
    if config is not None and config.get("model_type") in MODEL_TYPES:
        return MODEL_TYPES[config["model_type"]]
    if config is None:
        raise ModelNotFoundError(
            f"generator '{name}' not found (no model_index.json or config.json locally or in the Hugging Face "
            f"cache). On a machine with network run `huggingface-cli download {name}`, or pass a local folder.")
    raise ModelNotFoundError(f"generator '{name}' has model_type '{config.get('model_type')}'; supported: "
                             f"{sorted(MODEL_TYPES)} and pipelines {sorted(PIPELINE_CLASSES)}")


def load_generator(name: str, *, debug_default: str = "debug-musicgen", device=None, dtype=None) -> Generator:
    """``debug`` (-> ``debug_default``), ``debug-<family>``, a hub id or a local folder."""
    if name == "debug":
        name = debug_default
    if name in DEBUG_NAMES:
        family = DEBUG_NAMES[name]
        generator = getattr(_module(family), FAMILIES[family][2])()
        return generator.to(device) if device else generator
    family = detect_family(name)
    adapter = getattr(_module(family), FAMILIES[family][1])
    return adapter.from_pretrained(name, device=device, dtype=dtype)


__all__ = ["CallableGenerator", "DEBUG_NAMES", "FAMILIES", "Generator", "detect_family", "load_generator"]
