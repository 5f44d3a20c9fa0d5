"""Head-input features for preference pairs: extraction (cached, resumable) and one compact file.

The features are exactly what :meth:`TuneJuryReward.features` computes (same protocol, same encoders):
per distinct audio file its CLAP audio (512) and MERT (1024) embeddings, per distinct prompt its CLAP
text embedding (512; zeros for the empty prompt), and a pair table pointing into them. They are the
training input of the head (:mod:`tunejury_align.reward.training`).

The cache is a folder of small shard files keyed by the SHA-256 of each audio file's content; each shard
is written atomically every few files, so a killed extraction loses at most those few and a rerun skips
everything already done. The cache records the encoders and protocol and refuses to mix others.
"""

from __future__ import annotations

import io
import logging
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path

import torch

from ..rundir import atomic_write_bytes
from .audio import AudioError, check_audio, read_audio, resample, to_mono
from .calibration import Pair
from .head import FEATURE_BLOCKS, HeadSpec
from .mert import MertEncoder
from .model import sha256_file

logger = logging.getLogger(__name__)

FEATURES_FORMAT = "tunejury-features/1"
CACHE_FORMAT = "tunejury-feature-cache/1"
AUDIO_BLOCKS = ("clap_audio", "mert")


class FeatureFileError(ValueError):
    """A features file or cache that cannot be used; the message says why."""


def available_blocks(reward) -> tuple[str, ...]:
    """The feature blocks ``reward`` has encoders for, in the released order."""
    have = {"clap_audio": reward.clap is not None, "mert": reward.mert is not None, "text": reward.clap is not None}
    return tuple(block for block in FEATURE_BLOCKS if have[block])


def extraction_meta(reward) -> dict:
    """What the features depend on: the cache and the features file record it."""
    encoder = reward.clap if reward.clap is not None else reward.mert
    return {"protocol": reward.protocol, "clap": reward.info.clap, "mert": reward.info.mert,
            "blocks": list(available_blocks(reward)), "debug": bool(reward.info.debug),
            "dtype": str(next(encoder.parameters()).dtype)}


@torch.no_grad()
def audio_features(reward, audio: torch.Tensor, sample_rate: int) -> dict[str, torch.Tensor]:
    """``audio (B, C, T)`` -> ``{"clap_audio": (B, 512), "mert": (B, 1024)}`` (the blocks the reward
    has encoders for), float32 on the CPU. Mirrors :meth:`TuneJuryReward.features` block by block."""
    audio = check_audio(audio, sample_rate)
    mono = to_mono(audio.to(reward.device, torch.float32))
    blocks = {}
    if reward.clap is not None:
        blocks["clap_audio"] = reward.clap.embed_audio(reward.clap_window(mono, sample_rate)).float().cpu()
    if reward.mert is not None:
        blocks["mert"] = reward.mert(resample(mono, sample_rate, MertEncoder.sample_rate)).float().cpu()
    return blocks


def _save(obj, path: Path) -> None:
    buffer = io.BytesIO()
    torch.save(obj, buffer)
    atomic_write_bytes(path, buffer.getvalue())


def _load(path: Path) -> dict:
    try:
        obj = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as err:  # pickle, zip and OS errors alike: an unusable file
        raise FeatureFileError(f"cannot read {path}: {err}") from err
    if not isinstance(obj, dict):
        raise FeatureFileError(f"{path}: not a features file (expected a dict)")
    return obj


class FeatureCache:
    """Audio features keyed by the SHA-256 of the file content, kept in ``folder/shard-*.pt``."""

    def __init__(self, folder: str | Path, meta: dict):
        self.folder, self.meta = Path(folder), meta
        self.entries: dict[str, dict[str, torch.Tensor]] = {}
        self.pending: dict[str, dict[str, torch.Tensor]] = {}
        for shard in sorted(self.folder.glob("shard-*.pt")):
            data = _load(shard)
            if data.get("format") != CACHE_FORMAT or data.get("meta") != meta:
                raise FeatureFileError(
                    f"feature cache {self.folder} was made with other settings ({data.get('meta')}); these are "
                    f"{meta}. Use another --cache folder (or delete this one)")
            for i, digest in enumerate(data["sha256"]):
                self.entries[digest] = {b: data[b][i] for b in AUDIO_BLOCKS if b in data}

    def __contains__(self, digest: str) -> bool:
        return digest in self.entries

    def __getitem__(self, digest: str) -> dict[str, torch.Tensor]:
        return self.entries[digest]

    def add(self, digest: str, blocks: dict[str, torch.Tensor]) -> None:
        self.entries[digest] = self.pending[digest] = blocks

    def flush(self) -> None:
        """Write the pending entries as one new shard, atomically."""
        if not self.pending:
            return
        digests = list(self.pending)
        shard = {"format": CACHE_FORMAT, "meta": self.meta, "sha256": digests}
        for block in self.pending[digests[0]]:
            shard[block] = torch.stack([self.pending[d][block] for d in digests])
        number = len(list(self.folder.glob("shard-*.pt")))
        _save(shard, self.folder / f"shard-{number:06d}-{digests[0][:12]}.pt")
        self.pending.clear()


@dataclass
class PairFeatures:
    """Features of M pairs over N distinct audio files and P distinct prompts.

    ``blocks``: ``"clap_audio" (N, 512)``, ``"mert" (N, 1024)`` per file and ``"text" (P, 512)`` per
    prompt (those extracted); ``pair_a``/``pair_b (M,)`` index files, ``pair_prompt (M,)`` prompts;
    ``target (M,)`` is 1 / 0 / 0.5 for A wins / B wins / tie.
    """

    blocks: dict[str, torch.Tensor]
    files: list[str]
    sha256: list[str]
    prompts: list[str]
    pair_a: torch.Tensor
    pair_b: torch.Tensor
    pair_prompt: torch.Tensor
    target: torch.Tensor
    system_a: list[str] = field(default_factory=list)
    system_b: list[str] = field(default_factory=list)
    meta: dict = field(default_factory=dict)

    def __len__(self) -> int:
        return int(self.target.shape[0])

    def inputs(self, spec: HeadSpec) -> tuple[torch.Tensor, torch.Tensor]:
        """``(features_a (M, input_dim), features_b (M, input_dim))`` for a head reading ``spec.blocks``,
        concatenated in the released order."""
        missing = [b for b in spec.blocks if b not in self.blocks]
        if missing:
            raise FeatureFileError(f"the features hold blocks {sorted(self.blocks)}, not {missing}; extract them "
                                   f"with a reward that reads them, or exclude them ({list(spec.blocks)} asked)")
        side_a, side_b = [], []
        for block in spec.blocks:
            if block == "text":
                text = self.blocks["text"][self.pair_prompt]
                side_a.append(text)
                side_b.append(text)
            else:
                side_a.append(self.blocks[block][self.pair_a])
                side_b.append(self.blocks[block][self.pair_b])
        return torch.cat(side_a, dim=-1), torch.cat(side_b, dim=-1)

    def save(self, path: str | Path) -> None:
        _save({"format": FEATURES_FORMAT, "meta": self.meta, "files": self.files, "sha256": self.sha256,
               "prompts": self.prompts, "pair_a": self.pair_a, "pair_b": self.pair_b,
               "pair_prompt": self.pair_prompt, "target": self.target, "system_a": self.system_a,
               "system_b": self.system_b, **self.blocks}, Path(path))

    @classmethod
    def load(cls, path: str | Path) -> PairFeatures:
        path = Path(path)
        if not path.is_file():
            raise FeatureFileError(f"features file {path} not found")
        data = _load(path)
        if data.get("format") != FEATURES_FORMAT:
            raise FeatureFileError(f"{path} is not a features file from `align extract-features` "
                                   f"(format {data.get('format')!r})")
        return cls(blocks={b: data[b] for b in FEATURE_BLOCKS if b in data}, files=data["files"],
                   sha256=data["sha256"], prompts=data["prompts"], pair_a=data["pair_a"], pair_b=data["pair_b"],
                   pair_prompt=data["pair_prompt"], target=data["target"], system_a=data["system_a"],
                   system_b=data["system_b"], meta=data["meta"])


@dataclass
class ExtractionReport:
    files: int = 0
    from_cache: int = 0
    computed: int = 0
    pairs: int = 0
    failures: dict[str, str] = field(default_factory=dict)
    dropped_pairs: list[str] = field(default_factory=list)


def extract_pair_features(reward, pairs: Sequence[Pair], cache: str | Path, *, save_every: int = 8,
                          progress: Callable[[int], None] | None = None) -> tuple[PairFeatures, ExtractionReport]:
    """Features for audio pairs (``audio_a``, ``audio_b``, ``prompt``, ``winner``), with a resumable cache.

    ``cache``: a folder (created). New features are flushed to it every ``save_every`` files. Files that
    cannot be read are reported in ``report.failures`` and the pairs using them are left out.
    ``progress(1)`` is called after each distinct file.
    """
    # 1. Check the inputs.
    if save_every < 1:
        raise ValueError("save_every must be >= 1")
    for pair in pairs:
        if not (pair.audio_a and pair.audio_b):
            raise FeatureFileError(f"{pair.where}: feature extraction needs 'audio_a' and 'audio_b'")
    meta = extraction_meta(reward)
    store = FeatureCache(cache, meta)
    files = list(dict.fromkeys(p for pair in pairs for p in (pair.audio_a, pair.audio_b)))
    report = ExtractionReport(files=len(files))
    # 2. Audio features per distinct file: from the cache, or computed and cached.
    digests: dict[str, str] = {}
    for file in files:
        try:
            if not Path(file).is_file():
                raise AudioError(f"{file}: no such file")
            digest = sha256_file(file)
            if digest in store:
                report.from_cache += 1
            else:
                wave, sample_rate = read_audio(file)
                store.add(digest, {k: v[0] for k, v in audio_features(reward, wave.unsqueeze(0), sample_rate).items()})
                report.computed += 1
                if len(store.pending) >= save_every:
                    store.flush()
            digests[file] = digest
        except AudioError as err:
            report.failures[file] = str(err)
            logger.warning("skipping %s: %s", file, err)
        if progress is not None:
            progress(1)
    store.flush()
    # 3. The pair table over the files that worked; text embeddings per distinct prompt.
    kept = [p for p in pairs if p.audio_a in digests and p.audio_b in digests]
    report.dropped_pairs = [p.where for p in pairs if not (p.audio_a in digests and p.audio_b in digests)]
    report.pairs = len(kept)
    if not kept:
        raise FeatureFileError("no pair has both of its audio files readable; nothing to extract")
    used = list(dict.fromkeys(f for p in kept for f in (p.audio_a, p.audio_b)))
    row = {f: i for i, f in enumerate(used)}
    prompts = list(dict.fromkeys(p.prompt for p in kept))
    blocks = {b: torch.stack([store[digests[f]][b] for f in used]) for b in AUDIO_BLOCKS if b in meta["blocks"]}
    if "text" in meta["blocks"]:
        with torch.no_grad():
            blocks["text"] = reward.text_embeddings(prompts).float().cpu()
    prompt_row = {p: i for i, p in enumerate(prompts)}
    features = PairFeatures(
        blocks=blocks, files=used, sha256=[digests[f] for f in used], prompts=prompts,
        pair_a=torch.tensor([row[p.audio_a] for p in kept]), pair_b=torch.tensor([row[p.audio_b] for p in kept]),
        pair_prompt=torch.tensor([prompt_row[p.prompt] for p in kept]),
        target=torch.tensor([p.target for p in kept], dtype=torch.float32),
        system_a=[p.system_a or "" for p in kept], system_b=[p.system_b or "" for p in kept], meta=meta)
    return features, report
