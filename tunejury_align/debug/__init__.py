"""The debug world: tiny generators whose output varies audibly with the seed, a hidden truth that
plays the part of human preference, and a debug reward that is a learned proxy of that truth (as
TuneJury is a learned proxy of human votes), so that alignment methods can be measured -- and seen to
fail -- without the real models. A world is its truth plus its build settings.

* :func:`truth` (:mod:`.truth`, ``spectral``): what the default world's listeners prefer; :mod:`.temporal` ships
  a second truth (``temporal``); any callable ``truth(audio, sample_rate, prompts) -> (B,)`` makes a world
  (:mod:`.worlds`: naming truths, their identity).
* The debug generators (``debug-musicgen``, ``debug-stable-audio``, ``debug-audioldm2``):
  :func:`tunejury_align.generators.load_generator`.
* The debug reward: ``TuneJuryReward.from_pretrained("debug")`` or ``debug_reward(truth=...)``, a head trained with
  the project's own RankNet code on noisy truth comparisons of debug-generator clips (:mod:`.proxy`, which also
  holds the criteria a world must meet); its judges: ``load_judges("debug", reward)``; both in one pass:
  :func:`.build.build_world`.
"""

from .truth import TRUTH_VERSION, target_profile, truth, truth_parts
from .worlds import SHIPPED_TRUTHS, resolve_truth, truth_label

#: how the CLI and reports name the truth, so that nobody mistakes it for human preference
TRUTH_LABEL = "debug world's truth"


def world_scorers(generator, world_truth=None) -> dict:
    """``{"truth": world_truth}`` for a debug generator (its clips are in the debug world), else ``{}``: the
    recipes record these scores beside the reward. ``world_truth``: a truth callable, a shipped truth's name or
    ``package.module:function`` (:func:`.worlds.resolve_truth`; ``None``: the shipped default, :func:`truth`); a
    debug reward's own is ``reward.world_truth``."""
    return {"truth": resolve_truth(world_truth)} if getattr(generator, "is_debug", False) else {}


__all__ = ["SHIPPED_TRUTHS", "TRUTH_LABEL", "TRUTH_VERSION", "resolve_truth", "target_profile", "truth", "truth_label",
           "truth_parts", "world_scorers"]
