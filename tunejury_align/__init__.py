"""tunejury-align: align text-to-music generators with the TuneJury reward at generation time.

The public API, each usable in a few lines from a generator codebase::

    from tunejury_align import TuneJuryReward, load_generator, best_of_n, BestOfNConfig

    reward = TuneJuryReward.from_pretrained("TuneJury/tunejury")      # or "debug"
    generator = load_generator("facebook/musicgen-small")             # or an adapter / pipeline / callable
    result = best_of_n(generator, reward, ["calm solo piano"], config=BestOfNConfig(n=8))
    result.winner_audio[0]                                           # (C, T) at result.sample_rate

Names are imported on first use (``import tunejury_align`` stays light for the CLI).
"""

from __future__ import annotations

import importlib

__version__ = "0.1.0"

_EXPORTS = {
    "TuneJuryReward": "tunejury_align.reward",
    "load_generator": "tunejury_align.generators",
    "best_of_n": "tunejury_align.recipes.best_of_n",
    "BestOfNConfig": "tunejury_align.recipes.best_of_n",
    "BestOfNResult": "tunejury_align.recipes.best_of_n",
    "ditto": "tunejury_align.recipes.ditto",
    "DittoConfig": "tunejury_align.recipes.ditto",
    "DittoResult": "tunejury_align.recipes.ditto",
    "expert_iteration": "tunejury_align.recipes.expert_iter_run",
    "ExpertIterConfig": "tunejury_align.recipes.expert_iter",
    "smc": "tunejury_align.recipes.smc",
    "SMCConfig": "tunejury_align.recipes.smc",
    "pruned_best_of_n": "tunejury_align.recipes.best_of_n_prune",
    "Compute": "tunejury_align.recipes.compute",
    "load_judges": "tunejury_align.reward.judges",
    "judge_scorers": "tunejury_align.reward.judges",
}
__all__ = ["__version__", *_EXPORTS]


def __getattr__(name: str):
    if name in _EXPORTS:
        value = getattr(importlib.import_module(_EXPORTS[name]), name)
        globals()[name] = value
        return value
    raise AttributeError(f"module 'tunejury_align' has no attribute {name!r}")


def __dir__() -> list[str]:
    return sorted(__all__)
