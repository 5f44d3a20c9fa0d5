"""The TuneJury reward: head, encoders, differentiable wrapper."""

from .audio import AudioError
from .head import CheckpointError, HeadSpec, TuneJuryHead, load_head
from .model import PROTOCOLS, RewardInfo, TuneJuryReward, debug_reward

__all__ = ["AudioError", "CheckpointError", "HeadSpec", "PROTOCOLS", "RewardInfo", "TuneJuryHead",
           "TuneJuryReward", "debug_reward", "load_head"]
