"""Building a debug world in one pass: its reward and its judges, each clip generated once for all of them.

Kept apart from :mod:`.proxy` (which the reward package imports to train the debug heads): this module imports the
reward package (the debug encoders, the debug judges' specs), so it must not be imported by it.
"""

from __future__ import annotations

from collections.abc import Sequence

from .proxy import Progress, ProxySpec, build_heads


def build_world(truth=None, judges: Sequence[str] | bool = True, progress: Progress | None = None) -> None:
    """Build the debug reward and the debug judges of ``truth``'s world into the cache, in one pass: each debug
    generator's training clips are generated once for every encoder set whose features are missing
    (:func:`~tunejury_align.reward.debug_reward` followed by :func:`~tunejury_align.reward.judges.load_judges`
    would generate them again for the judges' own encoders). ``judges``: ``True`` (all six), ``False`` or their
    names. What is already cached is not rebuilt."""
    from ..reward.judges import DEBUG_JUDGES, debug_judge_spec
    from ..reward.model import debug_encoders
    from .worlds import resolve_truth

    truth = resolve_truth(truth)
    names = list(DEBUG_JUDGES) if judges is True else list(judges or [])
    specs = {"debug": ProxySpec(), **{name: debug_judge_spec(name) for name in names}}
    encoders = {seed: (lambda seed=seed: debug_encoders(seed, truth=truth).features)
                for seed in {spec.encoder_seed for spec in specs.values()}}
    build_heads(truth, specs, encoders, progress)
