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

__all__ = ["TRUTH_VERSION", "target_profile", "truth", "truth_parts"]
