"""A debug world is its truth plus its build settings; this module names truths and tells them apart.

A truth is any callable ``truth(audio (B, C, T), sample_rate, prompts) -> (B,)`` (higher is better). The debug
reward and its judges are learned proxies of one truth (:func:`tunejury_align.reward.debug_reward` with
``truth=fn``), and every recipe on the debug models records that truth beside the reward.

* On the command line a truth is named ``package.module:function`` (the setting ``world.truth=...``), or by the
  name of a shipped one (:data:`SHIPPED_TRUTHS`): ``spectral`` (the default, :mod:`.truth`) or ``temporal``
  (:mod:`.temporal`).
* Its identity (:func:`truth_identity`) is its qualified name and a SHA-256 of its module's source (of its own
  source where the module has no file), so that the cache never serves one truth's world for another and an
  edited truth rebuilds its world.
"""

from __future__ import annotations

import hashlib
import importlib
import inspect
import re
from collections.abc import Callable
from pathlib import Path

#: the truths that ship with the toolkit, by short name
SHIPPED_TRUTHS = {
    "spectral": "tunejury_align.debug.truth:truth",
    "temporal": "tunejury_align.debug.temporal:truth",
}
DEFAULT_TRUTH = "spectral"
TRUTH_SPEC = re.compile(r"^[A-Za-z_][\w]*(\.[A-Za-z_][\w]*)*:[A-Za-z_][\w]*(\.[A-Za-z_][\w]*)*$")


class TruthError(ValueError):
    """A truth that cannot be found or told apart from another; the message says what to do."""


def resolve_truth(spec: str | Callable | None) -> Callable:
    """The truth named by ``spec``: a callable as is, a shipped name (``spectral``, ``temporal``), or
    ``package.module:function`` (imported; attribute paths such as ``module:Class.method`` work). ``None``: the
    default truth."""
    if spec is None:
        spec = DEFAULT_TRUTH
    if callable(spec):
        return spec
    spec = SHIPPED_TRUTHS.get(spec, spec)
    if not isinstance(spec, str) or not TRUTH_SPEC.match(spec):
        raise TruthError(f"world.truth={spec!r}: give package.module:function (a callable truth(audio, "
                         f"sample_rate, prompts) -> (B,)) or one of the shipped truths {sorted(SHIPPED_TRUTHS)}")
    module_name, attribute = spec.split(":")
    try:
        target = importlib.import_module(module_name)
    except ImportError as err:
        raise TruthError(f"world.truth={spec}: cannot import {module_name} ({err}); is it on PYTHONPATH?") from err
    for part in attribute.split("."):
        if not hasattr(target, part):
            raise TruthError(f"world.truth={spec}: {module_name} has no {attribute}")
        target = getattr(target, part)
    if not callable(target):
        raise TruthError(f"world.truth={spec}: {attribute} is a {type(target).__name__}, not a callable truth")
    return target


def truth_name(truth: Callable) -> str:
    """``package.module:qualname`` of a truth (of its class for a callable object)."""
    target = truth if inspect.isfunction(truth) or inspect.ismethod(truth) else type(truth)
    return f"{getattr(target, '__module__', '?')}:{getattr(target, '__qualname__', type(truth).__name__)}"


def truth_label(truth: Callable) -> str:
    """How output and reports name a truth: its shipped name with its qualified name, or the qualified name."""
    name = truth_name(truth)
    for short, full in SHIPPED_TRUTHS.items():
        if name == full:
            return f"{short} ({name})"
    return name


def truth_identity(truth: Callable) -> dict:
    """``{"name": module:qualname, "sha256": ...}``: the SHA-256 covers the source of the truth's module (or, for a
    module without a file, the truth's own source). Raises :class:`TruthError` where neither can be read (a lambda
    typed into a console): the cache could not tell that truth from an edited one."""
    name = truth_name(truth)
    target = truth if inspect.isfunction(truth) or inspect.ismethod(truth) else type(truth)
    module = inspect.getmodule(target)
    source_file = getattr(module, "__file__", None)
    if source_file and Path(source_file).is_file() and Path(source_file).suffix == ".py":
        digest = hashlib.sha256(Path(source_file).read_bytes()).hexdigest()
    else:
        try:
            digest = hashlib.sha256(inspect.getsource(target).encode()).hexdigest()
        except (OSError, TypeError) as err:
            raise TruthError(f"the truth {name} has no readable source, so its world cannot be cached apart from "
                             "another's: define it in a module file") from err
    return {"name": name, "sha256": digest}


#: the help text of the recipes' ``world`` setting
WORLD_HELP = ("the debug world (used only with debug models): world.truth = the truth its debug reward and judges "
              "are trained on and every run on a debug generator records: 'spectral' (default), 'temporal' or "
              "package.module:function")
WORLD_KEYS = {"truth": DEFAULT_TRUTH}


def world_settings(values: dict | None) -> dict:
    """The ``world`` setting with its defaults filled in (``{"truth": "spectral"}``); unknown keys and a truth that
    is not a name are :class:`TruthError` s (the truth itself is imported later, by :func:`resolve_truth`)."""
    values = dict(values or {})
    unknown = sorted(set(values) - set(WORLD_KEYS))
    if unknown:
        raise TruthError(f"unknown world setting(s) {unknown}; valid: {sorted(WORLD_KEYS)}")
    settings = {**WORLD_KEYS, **values}
    truth = settings["truth"]
    if not isinstance(truth, str) or not (truth in SHIPPED_TRUTHS or TRUTH_SPEC.match(truth)):
        raise TruthError(f"world.truth={truth!r}: give package.module:function (a callable truth(audio, "
                         f"sample_rate, prompts) -> (B,)) or one of the shipped truths {sorted(SHIPPED_TRUTHS)}")
    return settings


def recorded_truth(run: dict) -> str | None:
    """The name of the debug world's truth a run folder's ``run.json`` recorded (``None`` outside the debug world;
    runs from before the truth could be chosen recorded the shipped default)."""
    from ..rundir import is_debug

    if not is_debug(run):
        return None
    return ((run.get("world") or {}).get("truth") or (run.get("reward") or {}).get("truth")
            or truth_label(resolve_truth(DEFAULT_TRUTH)))
