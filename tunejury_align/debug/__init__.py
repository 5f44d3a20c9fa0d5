"""The debug world: tiny generators whose output varies audibly with the seed, a hidden truth that
plays the part of human preference, and a debug reward that is a learned proxy of that truth (as
TuneJury is a learned proxy of human votes), so that alignment methods can be measured -- and seen to
fail -- without the real models.

* :func:`truth` (:mod:`.truth`): what the debug world's listeners prefer.
* The debug generators (``debug-musicgen``, ``debug-stable-audio``, ``debug-audioldm2``):
  :func:`tunejury_align.generators.load_generator`.
* The debug reward: ``TuneJuryReward.from_pretrained("debug")``, a head trained with the project's
  own RankNet code on noisy truth comparisons of debug-generator samples (:mod:`.proxy`).
"""

from .truth import TRUTH_VERSION, target_profile, truth, truth_parts

#: how the CLI and reports name the truth, so that nobody mistakes it for human preference
TRUTH_LABEL = "debug world's truth"


def world_scorers(generator) -> dict:
    """``{"truth": truth}`` for a debug generator (its clips are in the debug world), else ``{}``: the
    recipes record these scores beside the reward."""
    return {"truth": truth} if getattr(generator, "is_debug", False) else {}


__all__ = ["TRUTH_LABEL", "TRUTH_VERSION", "target_profile", "truth", "truth_parts", "world_scorers"]
