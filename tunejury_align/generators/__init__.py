"""Generator families, one module each, listed in one literal dict.

``FAMILIES`` drives everything that depends on the family: :func:`load_generator` (hub ids, local
folders, ``debug-<family>``), :func:`as_generator` / :func:`as_diffusion_generator` (wrapping a
library object a user holds, e.g. for DITTO), :func:`trainer_for` (expert iteration's fine-tuning
loss) and the CLI's help. Adding a family = one module exposing ``FAMILY`` + one line here.
"""

from __future__ import annotations

import json
from pathlib import Path

from ..hub import ModelNotFoundError, hub_file, looks_like_repo_id
from . import audioldm2, musicgen, stable_audio
from .audiocraft import AudiocraftGenerator
from .base import CallableGenerator, Family, Generator, Trainer

FAMILIES: dict[str, Family] = {
    "musicgen": musicgen.FAMILY,
    "stable-audio": stable_audio.FAMILY,
    "audioldm2": audioldm2.FAMILY,
}
DEBUG_NAMES = {f"debug-{name}": name for name in FAMILIES}


def family_help(predicate=lambda family: True, debug_default: str | None = None) -> str:
    """The CLI help for ``--generator``: the families that satisfy ``predicate``, and their debug models."""
    chosen = [family for family in FAMILIES.values() if predicate(family)]
    debug = f"'debug' (= {debug_default}), " if debug_default else ""
    return ("hub id or local folder of " + "; ".join(f.summary for f in chosen) + f"; or {debug}"
            + ", ".join(f"debug-{f.name}" for f in chosen) + " (tiny offline models)")


def _read_json(name: str, filename: str) -> dict | None:
    local = Path(name).expanduser()
    if local.is_dir():
        path = local / filename
        return json.loads(path.read_text()) if path.is_file() else None
    path = hub_file(name, filename, what=f"generator '{name}'", optional=True)
    return json.loads(path.read_text()) if path is not None else None


def detect_family(name: str) -> str:
    """The family of a hub id or local folder, from its ``model_index.json`` / ``config.json``."""
    pipelines = {cls: f.name for f in FAMILIES.values() for cls in f.pipeline_classes}
    model_types = {kind: f.name for f in FAMILIES.values() for kind in f.config_model_types}
    local = Path(name).expanduser()
    if not local.is_dir() and not looks_like_repo_id(name):
        raise ModelNotFoundError(f"generator '{name}' is neither a local folder, a hub id, nor one of "
                                 f"{['debug', *DEBUG_NAMES]}")
    index = _read_json(name, "model_index.json")
    if index is not None:
        family = pipelines.get(index.get("_class_name"))
        if family is None:
            raise ModelNotFoundError(f"generator '{name}' is a {index.get('_class_name')}; supported pipelines: "
                                     f"{sorted(pipelines)}")
        return family
    config = _read_json(name, "config.json")
    if config is None:
        raise ModelNotFoundError(
            f"generator '{name}' not found (no model_index.json or config.json locally or in the Hugging Face "
            f"cache). On a machine with network run `huggingface-cli download {name}`, or pass a local folder.")
    if config.get("model_type") in model_types:
        return model_types[config["model_type"]]
    raise ModelNotFoundError(f"generator '{name}' has model_type '{config.get('model_type')}'; supported: "
                             f"{sorted(model_types)} and pipelines {sorted(pipelines)}")


def load_generator(name: str, *, debug_default: str = "debug-musicgen", device=None, dtype=None) -> Generator:
    """``debug`` (-> ``debug_default``), ``debug-<family>``, a hub id or a local folder."""
    if name == "debug":
        name = debug_default
    if name in DEBUG_NAMES:
        generator = FAMILIES[DEBUG_NAMES[name]].debug()
        return generator.to(device) if device else generator
    family = FAMILIES[detect_family(name)]
    return family.adapter.from_pretrained(name, device=device, dtype=dtype)


def as_generator(generator, sample_rate: int | None = None) -> Generator:
    """An adapter as is; a library object of a registered family (e.g. a diffusers pipeline) wrapped;
    a plain ``generate(prompts, seeds) -> (B, C, T)`` callable wrapped with ``sample_rate``."""
    if hasattr(generator, "generate") and hasattr(generator, "sample_rate"):
        return generator
    kind = type(generator).__name__
    for family in FAMILIES.values():
        if kind in family.pipeline_classes:
            return family.adapter.from_pipeline(generator, name=getattr(generator, "name_or_path", None) or kind)
    if callable(generator):
        if sample_rate is None:
            raise ValueError("a plain generate callable needs sample_rate=...")
        return CallableGenerator(generator, sample_rate=sample_rate, name=getattr(generator, "__name__", "callable"))
    raise TypeError(f"not a generator: {kind}")


def as_diffusion_generator(generator):
    """A diffusion adapter (one with a differentiable ``sample`` from given ``initial_noise``), or a
    diffusers pipeline of a diffusion family wrapped (its modules put in eval mode and frozen)."""
    diffusion = [f for f in FAMILIES.values() if f.diffusion]
    if all(hasattr(generator, name) for name in ("sample", "initial_noise", "options", "sample_rate")):
        return generator
    kind = type(generator).__name__
    if any(kind in f.pipeline_classes for f in diffusion):
        return as_generator(generator)
    raise TypeError(f"this needs a diffusion generator (an adapter of {[f.name for f in diffusion]}, or a diffusers "
                    f"{' / '.join(c for f in diffusion for c in f.pipeline_classes)}); got {kind}. Autoregressive "
                    "models (MusicGen) have no initial noise to optimise.")


def trainer_for(generator, trainable=None, generation: dict | None = None) -> Trainer:
    """The fine-tuning target of ``generator``'s family; ``generation``: the run's generation options
    (Stable Audio conditions its loss on their ``duration``)."""
    name = getattr(generator, "family", None)
    family = FAMILIES.get(name)
    if family is None or family.trainer is None:
        trainable_families = sorted(f.name for f in FAMILIES.values() if f.trainer is not None)
        raise TypeError(f"expert iteration fine-tunes {trainable_families} generators, not "
                        f"{name or type(generator).__name__}")
    return family.trainer(generator, trainable, generation)


__all__ = ["FAMILIES", "AudiocraftGenerator", "CallableGenerator", "DEBUG_NAMES", "Family", "Generator",
           "as_diffusion_generator", "as_generator", "detect_family", "family_help", "load_generator",
           "trainer_for"]
