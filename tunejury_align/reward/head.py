"""The TuneJury head exactly as released, and a safe loader for its checkpoints.

Architecture (Kim et al., 2026, arXiv 2606.17006): an MLP
``input_dim -> 1024 -> 512 -> 256 -> 128 -> 1`` whose hidden blocks are
``Linear, BatchNorm1d, ReLU, Dropout(0.5)``, held in ``self.net`` so that the
state-dict keys are ``net.{0,4,8,12,16}.*`` (Linear) and ``net.{1,5,9,13}.*``
(BatchNorm), as in the released ``tunejury.pt``.
"""

from __future__ import annotations

import json
import pickle
from dataclasses import dataclass, field
from pathlib import Path

import torch
from torch import nn

#: Input blocks in the order the released features are concatenated, with their widths.
FEATURE_BLOCKS: dict[str, int] = {"clap_audio": 512, "mert": 1024, "text": 512}
HIDDEN_SIZES = (1024, 512, 256, 128)


class CheckpointError(ValueError):
    """A reward-head checkpoint that cannot be used; the message says why and what to do."""


@dataclass(frozen=True)
class HeadSpec:
    """Which feature blocks a head reads. ``exclude`` names blocks left out of the input."""

    exclude: tuple[str, ...] = ()
    blocks: tuple[str, ...] = field(init=False)
    input_dim: int = field(init=False)

    def __post_init__(self):
        unknown = sorted(set(self.exclude) - set(FEATURE_BLOCKS))
        if unknown:
            raise CheckpointError(
                f"unknown feature block(s) in 'exclude': {unknown}; valid names are {list(FEATURE_BLOCKS)}"
            )
        blocks = tuple(b for b in FEATURE_BLOCKS if b not in self.exclude)
        if not blocks:
            raise CheckpointError("'exclude' leaves no input block; a head needs at least one of "
                                  f"{list(FEATURE_BLOCKS)}")
        object.__setattr__(self, "exclude", tuple(b for b in FEATURE_BLOCKS if b in self.exclude))
        object.__setattr__(self, "blocks", blocks)
        object.__setattr__(self, "input_dim", sum(FEATURE_BLOCKS[b] for b in blocks))


class TuneJuryHead(nn.Module):
    """The released preference head. Input ``(B, input_dim)`` features, output ``(B,)`` rewards."""

    def __init__(self, input_dim: int = 2048, dropout: float = 0.5):
        super().__init__()
        layers: list[nn.Module] = []
        width = input_dim
        for hidden in HIDDEN_SIZES:
            layers += [nn.Linear(width, hidden), nn.BatchNorm1d(hidden), nn.ReLU(), nn.Dropout(dropout)]
            width = hidden
        layers.append(nn.Linear(width, 1))
        self.net = nn.Sequential(*layers)
        self.input_dim = input_dim

    def forward(self, features: torch.Tensor) -> torch.Tensor:
        """``features (B, input_dim)`` -> ``(B,)``."""
        return self.net(features).squeeze(-1)


def _expected_shapes(input_dim: int) -> dict[str, tuple[int, ...]]:
    return {k: tuple(v.shape) for k, v in TuneJuryHead(input_dim).state_dict().items()}


def read_sidecar(checkpoint: Path) -> dict | None:
    """Read ``<checkpoint>.json`` (or ``<stem>.json``) if present."""
    for candidate in (checkpoint.with_name(checkpoint.name + ".json"), checkpoint.with_suffix(".json")):
        if candidate.is_file() and candidate != checkpoint:
            try:
                data = json.loads(candidate.read_text())
            except json.JSONDecodeError as err:
                raise CheckpointError(f"sidecar {candidate} is not valid JSON ({err})") from err
            if not isinstance(data, dict):
                raise CheckpointError(f"sidecar {candidate} must hold a JSON object with 'input_dim'/'exclude'")
            return data
    return None


def load_state_dict_safely(path: Path) -> dict[str, torch.Tensor]:
    """``torch.load(weights_only=True)`` (or safetensors), unwrapping ``{"state_dict": ...}``."""
    path = Path(path)
    if not path.is_file():
        raise CheckpointError(f"checkpoint file not found: {path}")
    if path.suffix == ".safetensors":
        from safetensors.torch import load_file

        obj = load_file(str(path))
    else:
        try:
            obj = torch.load(path, map_location="cpu", weights_only=True)
        except pickle.UnpicklingError as err:
            raise CheckpointError(
                f"refusing to load {path}: it needs arbitrary pickle code to unpickle, which is unsafe "
                f"(weights_only=True failed: {str(err).splitlines()[0]}). Re-save it as a plain state_dict "
                "(torch.save(model.state_dict(), path)) or as safetensors."
            ) from err
        except (RuntimeError, EOFError, OSError) as err:
            raise CheckpointError(f"cannot read checkpoint {path}: {err}. Is it a torch.save file?") from err
    if isinstance(obj, dict) and "state_dict" in obj and isinstance(obj["state_dict"], dict):
        obj = obj["state_dict"]
    if not isinstance(obj, dict) or not all(isinstance(v, torch.Tensor) for v in obj.values()):
        raise CheckpointError(f"{path} does not hold a state_dict (a dict of tensors), nor {{'state_dict': ...}}")
    if obj and all(k.startswith("module.") for k in obj):
        obj = {k[len("module."):]: v for k, v in obj.items()}
    return obj


def spec_from_sidecar(sidecar: dict | None, state_dict: dict[str, torch.Tensor], where: str) -> HeadSpec:
    """Decide which blocks the head reads, checking the sidecar against the weights."""
    weight = state_dict.get("net.0.weight")
    if weight is None or weight.ndim != 2:
        raise CheckpointError(f"{where}: no 'net.0.weight' matrix; this is not a TuneJury head state_dict")
    actual_dim = int(weight.shape[1])
    if sidecar is None:
        if actual_dim != sum(FEATURE_BLOCKS.values()):
            raise CheckpointError(
                f"{where}: the head reads {actual_dim}-d features but has no sidecar "
                f"'<checkpoint>.json' saying which blocks are excluded; {actual_dim} is ambiguous. "
                'Add a sidecar such as {"input_dim": 512, "exclude": ["mert", "text"]}.'
            )
        return HeadSpec(())
    exclude = sidecar.get("exclude", [])
    if isinstance(exclude, str) or not isinstance(exclude, (list, tuple)):
        raise CheckpointError(f"{where}: sidecar 'exclude' must be a list of block names, got {exclude!r}")
    spec = HeadSpec(tuple(exclude))
    declared = sidecar.get("input_dim", spec.input_dim)
    if int(declared) != spec.input_dim:
        raise CheckpointError(
            f"{where}: sidecar says input_dim {declared} but excluding {list(spec.exclude)} gives {spec.input_dim}"
        )
    if actual_dim != spec.input_dim:
        raise CheckpointError(
            f"{where}: the weights read {actual_dim}-d features but the sidecar describes {spec.input_dim}-d "
            f"(blocks {list(spec.blocks)}); the sidecar does not belong to this checkpoint"
        )
    return spec


def load_head(checkpoint: str | Path, sidecar: dict | None = None) -> tuple[TuneJuryHead, HeadSpec]:
    """Load a released head checkpoint safely; returns the eval-mode head and its input spec.

    ``sidecar`` overrides the ``<checkpoint>.json`` file next to the checkpoint.
    Raises :class:`CheckpointError` for pickled code, missing/unexpected keys or wrong shapes.
    """
    checkpoint = Path(checkpoint)
    state_dict = load_state_dict_safely(checkpoint)
    spec = spec_from_sidecar(sidecar if sidecar is not None else read_sidecar(checkpoint), state_dict, str(checkpoint))
    expected = _expected_shapes(spec.input_dim)
    missing = sorted(set(expected) - set(state_dict))
    unexpected = sorted(set(state_dict) - set(expected))
    if missing or unexpected:
        raise CheckpointError(
            f"{checkpoint}: not the released TuneJury head layout; missing keys {missing[:6]}"
            f"{'...' if len(missing) > 6 else ''}, unexpected keys {unexpected[:6]}"
            f"{'...' if len(unexpected) > 6 else ''}"
        )
    wrong = [f"{k}: {tuple(state_dict[k].shape)} (expected {shape})" for k, shape in expected.items()
             if tuple(state_dict[k].shape) != shape]
    if wrong:
        raise CheckpointError(f"{checkpoint}: wrong tensor shapes: " + "; ".join(wrong[:6]))
    bad = [k for k, v in state_dict.items() if v.is_floating_point() and not torch.isfinite(v).all()]
    if bad:
        raise CheckpointError(f"{checkpoint}: non-finite values (NaN/Inf) in {bad[:6]}")
    head = TuneJuryHead(spec.input_dim)
    head.load_state_dict(state_dict, strict=True)
    head.eval().requires_grad_(False)
    return head, spec
