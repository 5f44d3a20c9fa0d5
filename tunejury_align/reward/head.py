"""The TuneJury head exactly as released, and a safe loader for its checkpoints.

Architecture (Kim et al., 2026, arXiv 2606.17006): an MLP
``input_dim -> 1024 -> 512 -> 256 -> 128 -> 1`` whose hidden blocks are
``Linear, BatchNorm1d, ReLU, Dropout(0.5)``, held in ``self.net`` so that the
state-dict keys are ``net.{0,4,8,12,16}.*`` (Linear) and ``net.{1,5,9,13}.*``
(BatchNorm), as in the released ``tunejury.pt``.
"""

from __future__ import annotations

import json
import logging
import pickle
import re
import zipfile
from dataclasses import dataclass, field
from pathlib import Path

import torch
from torch import nn

#: Input blocks in the order the released features are concatenated, with their widths.
FEATURE_BLOCKS: dict[str, int] = {"clap_audio": 512, "mert": 1024, "text": 512}
HIDDEN_SIZES = (1024, 512, 256, 128)

logger = logging.getLogger(__name__)


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


def numpy_float64_globals() -> list[tuple[object, str]]:
    """What unpickling a numpy ``float64`` scalar calls, each under the name a pickle can give it.

    ``np.float64(x)`` pickles as ``numpy.core.multiarray.scalar(numpy.dtype('f8', ...), bytes)``
    (numpy 2 writes ``numpy._core.multiarray.scalar``), and the dtype is then given its state, which
    ``weights_only`` allows only for allow-listed types (``numpy.dtypes.Float64DType``). The objects
    are taken from numpy itself (no deprecated module is imported), so both names work on numpy 1
    and 2. Nothing else numpy can pickle (arrays, other dtypes) is covered.
    """
    import numpy as np

    scalar = np.float64(0.0).__reduce__()[0]  # numpy's ``multiarray.scalar``
    float64_dtype = type(np.dtype(np.float64))
    return [(scalar, "numpy.core.multiarray.scalar"), (scalar, "numpy._core.multiarray.scalar"),
            (np.dtype, "numpy.dtype"), (float64_dtype, "numpy.dtypes.Float64DType")]


def _unpickler_reason(err: Exception) -> str:
    """The line of torch's ``weights_only`` error that says what was refused, without its advice
    (which suggests ``weights_only=False`` or allow-listing the global)."""
    text = re.sub(r"\x1b\[[0-9;]*m", "", str(err))
    if "WeightsUnpickler error:" in text:
        text = text.split("WeightsUnpickler error:", 1)[1]
    advice = ("Weights only load failed", "Check the documentation", "Please file an issue", "(1)", "(2)")
    lines = [line.strip() for line in text.splitlines() if line.strip() and not line.strip().startswith(advice)]
    return lines[0].split(" Please use `torch.serialization", 1)[0] if lines else type(err).__name__


def _private_mmap() -> bool:
    """Whether ``torch.load(mmap=True)`` maps files copy-on-write (its default): tensors backed by
    such a mapping can be written without the file changing."""
    import mmap

    private = getattr(mmap, "MAP_PRIVATE", None)
    return private is not None and torch.serialization.get_default_mmap_options() == private


def _torch_load(path: Path, *, numpy_scalars: bool, mmap: bool):
    allowance: list = []
    if numpy_scalars:
        # Only for this call, and only what is not allowed already: torch's context manager
        # removes on exit every entry it was given, which would drop a caller's own allowance.
        present = set(torch.serialization.get_safe_globals())
        allowance = [g for g in numpy_float64_globals() if g not in present]
    if mmap and not _private_mmap():
        logger.info("torch's default mmap mode is not MAP_PRIVATE (torch.serialization.set_default_mmap_options): "
                    "reading %s whole rather than mapping it writable", path)
        mmap = False
    if mmap and not zipfile.is_zipfile(path):
        logger.info("%s is in torch's legacy (pre-1.6, non-zip) format, which cannot be memory-mapped; "
                    "reading it whole", path)
        mmap = False
    with torch.serialization.safe_globals(allowance):
        return torch.load(path, map_location="cpu", weights_only=True, mmap=mmap)


def load_state_dict_safely(path: Path, *, numpy_scalars: bool = False, mmap: bool = False) -> dict[str, torch.Tensor]:
    """``torch.load(weights_only=True)`` (or safetensors), unwrapping ``{"state_dict": ...}``.

    Only the model weights are returned: for a training checkpoint (``{"epoch", "name",
    "state_dict", "optimizer", ...}``) everything but ``state_dict`` is released, and a leading
    ``module.`` (DistributedDataParallel) is stripped from the keys.

    ``numpy_scalars``: also allow the numpy float64 scalars a training checkpoint carries outside its
    weights (LAION-CLAP's learning rates, :func:`numpy_float64_globals`), for this load only.
    ``mmap``: map the file instead of reading it, so the parts that are dropped (optimizer state) are
    never read; the returned tensors are then backed by the private (copy-on-write) mapping. Files in
    torch's legacy format, or a process whose torch mmap default is ``MAP_SHARED``, are read whole.
    Raises :class:`CheckpointError` for anything else a pickle would have to run or build.
    """
    path = Path(path)
    if not path.is_file():
        raise CheckpointError(f"checkpoint file not found: {path}")
    if path.stat().st_size == 0:
        raise CheckpointError(f"{path} is empty (0 bytes): a download or copy was cut short; fetch it again")
    if path.suffix == ".safetensors":
        from safetensors.torch import load_file

        try:
            obj = load_file(str(path))
        except Exception as err:  # safetensors raises SafetensorError (and OSError) for a damaged file
            raise CheckpointError(f"{path} is not a valid safetensors file ({type(err).__name__}: {err}); "
                                  "fetch it again or re-save it with safetensors.torch.save_file") from err
    else:
        try:
            obj = _torch_load(path, numpy_scalars=numpy_scalars, mmap=mmap)
        except pickle.UnpicklingError as err:
            raise CheckpointError(
                f"refusing to load {path}: it needs arbitrary pickle code to unpickle, which is unsafe "
                f"(weights_only=True failed: {_unpickler_reason(err)}"
                f"{'; of numpy, only float64 scalars are allowed' if numpy_scalars else ''}). "
                "Re-save it as a plain state_dict "
                "(torch.save(model.state_dict(), path)) or as safetensors."
            ) from err
        except Exception as err:  # torch.load on other bytes: KeyError, IndexError, EOFError, RuntimeError, ...
            reason = f"{type(err).__name__}: {err}" if str(err) else type(err).__name__
            raise CheckpointError(f"cannot read checkpoint {path}: not a torch.save file, or a damaged one ({reason}); "
                                  "fetch it again, or pass the .pt / .safetensors file the head was saved as") from err
    if isinstance(obj, dict) and "state_dict" in obj and isinstance(obj["state_dict"], dict):
        dropped = sorted(str(k) for k in obj if k != "state_dict")
        if dropped:
            logger.debug("%s: keeping 'state_dict', dropping %s", path, dropped)
        obj = obj["state_dict"]  # the rest (optimizer state, ...) is released here
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
    if not all(isinstance(block, str) for block in exclude):
        raise CheckpointError(f"{where}: sidecar 'exclude' must be a list of block names, got {exclude!r}")
    spec = HeadSpec(tuple(exclude))
    declared = sidecar.get("input_dim", spec.input_dim)
    if isinstance(declared, bool) or not isinstance(declared, int):
        raise CheckpointError(f"{where}: sidecar 'input_dim' must be an integer, got {declared!r} "
                              f"({type(declared).__name__}); for these blocks it is {spec.input_dim}")
    if declared != spec.input_dim:
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
    variances = [k for k, v in state_dict.items() if k.endswith("running_var") and not bool((v > 0).all())]
    if variances:  # a negative variance scores NaN, a zero one divides by sqrt(eps)
        raise CheckpointError(f"{checkpoint}: BatchNorm variances {variances[:6]} must be > 0 everywhere but hold "
                              "zero or negative entries; the checkpoint is damaged or was edited")
    head = TuneJuryHead(spec.input_dim)
    head.load_state_dict(state_dict, strict=True)
    head.eval().requires_grad_(False)
    return head, spec
