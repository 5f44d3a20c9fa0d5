"""Hacking-alarm checks: exploit probes on a prompt's candidate clips and distribution checks on embeddings.

Exploit probes take ``(B, C, T)`` float audio in [-1, 1] and return one value per clip: integrated
loudness (ITU-R BS.1770-4 through ``pyloudnorm``), the reward rescored after loudness normalisation,
silence, clipping and DC offset; :func:`exploit_report` flags a winner whose lead over the other
candidates comes from level alone. Distribution checks take ``(N, D)`` embeddings (the reward's own
CLAP audio and MERT features) of a run and of a reference set: the Frechet distance
(:func:`~tunejury_align.reward.metrics.frechet_distance`), MAD = -ln MAUVE on MERT (Pillutla et al.,
2021, through the optional ``mauve-text``) and the run's diversity.
"""

from __future__ import annotations

import math

import numpy as np
import torch

from .metrics import frechet_distance, pairwise_cosine_diversity

#: the audio files ``align score`` and the distribution checks' ``--reference`` folders read
AUDIO_SUFFIXES = {".wav", ".flac", ".ogg", ".mp3", ".aiff", ".aif", ".opus"}

LUFS_FLOOR = -70.0  # BS.1770's absolute gate: a clip with no block above it (silence) reads as this, not -inf
MIN_LOUDNESS_SECONDS = 0.4  # one BS.1770 gating block; shorter clips are repeat-padded to it
CLIPPING_FLAG = 0.01  # more than 1% of samples at full scale: audible distortion, or a reward that likes it
SILENCE_FLAG = 0.5  # more than half of the 50 ms frames below -60 dBFS: mostly silence
DC_OFFSET_FLAG = 0.05  # |mean| over 0.05 (-26 dBFS of DC): no generator should emit it, no listener hears it
MAD_BLOCK = "mert"  # the embedding block MAD is computed on (the TuneJury authors' choice)
MAD_MIN_SAMPLES = 20  # per set: MAUVE's automatic k-means uses max(2, round(min(N, M) / 10)) buckets
MAUVE_INSTALL = "pip install 'tunejury-align[judges]'  (or: pip install mauve-text faiss-cpu scikit-learn)"


# -- exploit probes on audio ------------------------------------------------------------------
def _as_numpy(audio: torch.Tensor) -> np.ndarray:
    if not isinstance(audio, torch.Tensor) or audio.ndim != 3 or audio.shape[-1] == 0:
        shape = tuple(audio.shape) if isinstance(audio, torch.Tensor) else type(audio).__name__
        raise ValueError(f"audio must be a non-empty (B, C, T) tensor, got {shape}")
    return audio.detach().to("cpu", torch.float64).numpy()


def integrated_loudness(audio: torch.Tensor, sample_rate: int) -> np.ndarray:
    """``(B, C, T)`` -> ``(B,)`` integrated loudness in LUFS (ITU-R BS.1770-4: K-weighting, 400 ms blocks
    with 75% overlap, absolute gate -70 LUFS, relative gate -10 LU) from ``pyloudnorm.Meter``.

    Channels are summed with BS.1770's weights (1 for the first three, 1.41 for surrounds; at most 5),
    so a stereo clip with two equal channels reads 3 LU above its mono mix. Clips shorter than one
    400 ms block (where pyloudnorm refuses) are repeat-padded to 0.4 s: that keeps a stationary
    signal's loudness, where zero-padding would lower it. Silent clips (no block above the absolute gate,
    where pyloudnorm returns -inf) read :data:`LUFS_FLOOR` = -70, so the result stays finite and JSON-safe.
    """
    import pyloudnorm

    waves = _as_numpy(audio)
    if waves.shape[1] > 5:
        raise ValueError(f"BS.1770 weights cover at most 5 channels, got {waves.shape[1]}")
    meter = pyloudnorm.Meter(sample_rate, block_size=MIN_LOUDNESS_SECONDS)
    minimum = math.ceil(MIN_LOUDNESS_SECONDS * sample_rate) + 1
    loudness = np.empty(len(waves))
    for index, wave in enumerate(waves):
        if wave.shape[-1] < minimum:
            wave = np.resize(wave, (wave.shape[0], minimum))  # np.resize repeats each row cyclically
        value = meter.integrated_loudness(wave.T)  # pyloudnorm wants (T, C)
        loudness[index] = value if np.isfinite(value) and value > LUFS_FLOOR else LUFS_FLOOR
    return loudness


def normalise_loudness(audio: torch.Tensor, sample_rate: int, target_lufs: float = -23.0) -> torch.Tensor:
    """``(B, C, T)`` -> ``(B, C, T)``, each clip scaled by one gain to ``target_lufs`` (same dtype and device).

    Gain only: no limiter, so a peaky clip may leave [-1, 1] (a limiter would change the very timbre the
    rescoring should hold fixed; at the default -23 LUFS, EBU R128's level, real music peaks well below 1).
    Silent clips (at :data:`LUFS_FLOOR`) are returned unchanged. Gradients do not flow through the gain.
    """
    return _apply_gain(audio, integrated_loudness(audio, sample_rate), target_lufs)


def _apply_gain(audio: torch.Tensor, loudness: np.ndarray, target_lufs: float) -> torch.Tensor:
    gain_db = np.where(loudness > LUFS_FLOOR, target_lufs - loudness, 0.0)
    gain = torch.as_tensor(10.0 ** (gain_db / 20.0), dtype=audio.dtype, device=audio.device)
    return audio * gain.view(-1, 1, 1)


def silence_fraction(audio: torch.Tensor, sample_rate: int, threshold_db: float = -60.0,
                     frame_seconds: float = 0.05) -> np.ndarray:
    """``(B, C, T)`` -> ``(B,)`` fraction of non-overlapping frames of the mono mix whose RMS is below
    ``threshold_db`` dBFS (re amplitude 1.0). A last partial frame counts, its RMS over its own samples."""
    mono = _as_numpy(audio).mean(axis=1)
    frame = max(1, round(frame_seconds * sample_rate))
    frames = -(-mono.shape[-1] // frame)
    padded = np.zeros((len(mono), frames * frame))
    padded[:, : mono.shape[-1]] = mono
    counts = np.full(frames, frame)
    counts[-1] = mono.shape[-1] - (frames - 1) * frame
    rms = np.sqrt((padded.reshape(len(mono), frames, frame) ** 2).sum(axis=-1) / counts)
    return (rms < 10.0 ** (threshold_db / 20.0)).mean(axis=1)


def clipping_fraction(audio: torch.Tensor, level: float = 0.999) -> np.ndarray:
    """``(B, C, T)`` -> ``(B,)`` fraction of samples (all channels) with ``|x| >= level``."""
    return (np.abs(_as_numpy(audio)) >= level).mean(axis=(1, 2))


def dc_offset(audio: torch.Tensor) -> np.ndarray:
    """``(B, C, T)`` -> ``(B,)`` absolute mean of each clip's mono mix."""
    return np.abs(_as_numpy(audio).mean(axis=(1, 2)))


def loudness_probe(score_fn, audio: torch.Tensor, sample_rate: int, prompts, target_lufs: float = -23.0) -> dict:
    """Score the clips as they are and again after :func:`normalise_loudness`.

    ``score_fn(audio, sample_rate, prompts) -> (B,)`` is any reward. Returns ``(B,)`` float64 arrays:
    ``score`` (as generated), ``score_normalised`` (every clip at ``target_lufs``) and ``lufs``.
    """
    loudness = integrated_loudness(audio, sample_rate)
    normalised = _apply_gain(audio, loudness, target_lufs)
    with torch.no_grad():
        raw = torch.as_tensor(score_fn(audio, sample_rate, prompts)).detach().to("cpu", torch.float64)
        level = torch.as_tensor(score_fn(normalised, sample_rate, prompts)).detach().to("cpu", torch.float64)
    return {"score": raw.numpy().reshape(-1), "score_normalised": level.numpy().reshape(-1),
            "lufs": loudness}


def loudness_exploit(scores, scores_normalised, winner: int, margin: float = 0.0) -> bool:
    """True when ``winner`` leads the raw scores but, with every clip loudness-normalised, leads the best
    other clip by at most ``margin``: its win came from level, not content.

    The lead is over the runner-up (the best other clip), not the median of the others: best-of-N keeps
    the argmax, so what matters is whether the pick changes, and only the strongest rival decides that.
    ``margin`` (reward units) is the normalised lead needed to count as real; 0 asks "still strictly first".
    A winner that does not lead the raw scores is never flagged (its pick was not made on these scores).
    """
    raw, level = np.asarray(scores, dtype=np.float64), np.asarray(scores_normalised, dtype=np.float64)
    if raw.shape != level.shape or raw.ndim != 1 or len(raw) < 2:
        raise ValueError(f"need two (B,) score arrays with B >= 2, got {raw.shape} and {level.shape}")
    if not 0 <= winner < len(raw):
        raise ValueError(f"winner {winner} is not a clip index (B = {len(raw)})")
    others = np.arange(len(raw)) != winner
    raw_lead = raw[winner] - raw[others].max()
    level_lead = level[winner] - level[others].max()
    return bool(raw_lead > 0 and level_lead <= margin)


def exploit_report(score_fn, audio: torch.Tensor, sample_rate: int, prompts, winner_index: int,
                   target_lufs: float = -23.0, margin: float = 0.0) -> dict:
    """All exploit probes for the ``(B, C, T)`` candidate clips of one prompt, as a JSON-ready dict.

    ``prompts`` is a list of ``B`` prompts or one string (repeated). Per-clip lists: ``score``,
    ``score_normalised``, ``lufs``, ``silence_fraction``, ``clipping_fraction``, ``dc_offset``. ``flags`` are
    about the winner: ``loudness_exploit`` (:func:`loudness_exploit` with ``margin``), ``clipping``
    (> :data:`CLIPPING_FLAG`), ``silence`` (> :data:`SILENCE_FLAG`), ``dc_offset`` (> :data:`DC_OFFSET_FLAG`).
    """
    if isinstance(prompts, str):
        prompts = [prompts] * audio.shape[0]
    probe = loudness_probe(score_fn, audio, sample_rate, prompts, target_lufs)
    per_clip = {**probe, "silence_fraction": silence_fraction(audio, sample_rate),
                "clipping_fraction": clipping_fraction(audio), "dc_offset": dc_offset(audio)}
    exploit = loudness_exploit(probe["score"], probe["score_normalised"], winner_index, margin)
    flags = {"loudness_exploit": exploit,
             "clipping": bool(per_clip["clipping_fraction"][winner_index] > CLIPPING_FLAG),
             "silence": bool(per_clip["silence_fraction"][winner_index] > SILENCE_FLAG),
             "dc_offset": bool(per_clip["dc_offset"][winner_index] > DC_OFFSET_FLAG)}
    return {"winner_index": int(winner_index), "target_lufs": float(target_lufs), "margin": float(margin),
            **{name: [float(v) for v in values] for name, values in per_clip.items()}, "flags": flags}


#: what :func:`clip_measures` records per clip (the alarm's exploit check compares kept clips with plain ones on them)
MEASURES = ("dc_offset", "clipping_fraction", "silence_fraction", "lufs")


def clip_measures(audio: torch.Tensor, sample_rate: int) -> dict[str, np.ndarray]:
    """``(B, C, T)`` -> ``{measure: (B,)}`` for :data:`MEASURES`: the probes that need no reward, cheap enough to
    record for every candidate a recipe draws."""
    return {"dc_offset": dc_offset(audio), "clipping_fraction": clipping_fraction(audio),
            "silence_fraction": silence_fraction(audio, sample_rate), "lufs": integrated_loudness(audio, sample_rate)}


def threshold_flags(measures: dict) -> dict[str, np.ndarray]:
    """``{"dc_offset", "clipping", "silence"}`` -> ``(K,)`` bools: :func:`clip_measures` ``measures`` over the probes'
    own thresholds (:data:`DC_OFFSET_FLAG`, :data:`CLIPPING_FLAG`, :data:`SILENCE_FLAG`)."""
    return {"dc_offset": np.asarray(measures["dc_offset"]) > DC_OFFSET_FLAG,
            "clipping": np.asarray(measures["clipping_fraction"]) > CLIPPING_FLAG,
            "silence": np.asarray(measures["silence_fraction"]) > SILENCE_FLAG}


# -- distribution checks on embeddings --------------------------------------------------------
def mad(run_features: np.ndarray, reference_features: np.ndarray, seed: int = 0) -> float:
    """MAD = -ln MAUVE(run, reference) on ``(N, D)`` and ``(M, D)`` embeddings (MERT for TuneJury); 0 = same
    distribution, larger = further. MAUVE (Pillutla et al., NeurIPS 2021) from ``mauve-text``'s
    ``compute_mauve`` on precomputed features, with its defaults: L2-normalised features, PCA to 90%
    explained variance, k-means with ``num_buckets='auto'`` = max(2, round(min(N, M) / 10)) clusters
    (5 restarts, 500 iterations), 25-point divergence curve, scaling factor 5; ``seed`` seeds k-means.

    Quantising into buckets needs many samples (the MAUVE authors use thousands); below
    :data:`MAD_MIN_SAMPLES` per set this raises ``ValueError``. With few samples the value is biased and
    noisy: compare runs only at equal N and M. Needs the optional extra: :data:`MAUVE_INSTALL`. faiss's
    k-means writes "WARNING clustering ... points to ... centroids" to stderr from C++ on every call (the
    'auto' buckets hold ~20 points, faiss asks for 39): expected, and not silenced here (that would need a
    process-wide redirect of file descriptor 2).
    """
    try:
        import mauve
    except ImportError as error:
        raise ImportError(f"MAD needs the MAUVE implementation mauve-text (with faiss-cpu and scikit-learn), "
                          f"which did not import ({error}): {MAUVE_INSTALL}") from error
    run, reference = np.asarray(run_features, np.float32), np.asarray(reference_features, np.float32)
    if run.ndim != 2 or reference.ndim != 2 or run.shape[1] != reference.shape[1]:
        raise ValueError(f"MAD needs (N, D) and (M, D) features, got {run.shape} and {reference.shape}")
    if min(len(run), len(reference)) < MAD_MIN_SAMPLES:
        raise ValueError(f"MAD needs at least {MAD_MIN_SAMPLES} embeddings per set, got {len(run)} (run) and "
                         f"{len(reference)} (reference)")
    result = mauve.compute_mauve(p_features=run, q_features=reference, num_buckets="auto", seed=seed,
                                 device_id=-1, verbose=False)
    return float(-math.log(max(result.mauve, 1e-300)))


def _diversity(embeddings: np.ndarray) -> tuple[float, str]:
    """``(P, E, D)`` -> mean per-prompt pairwise cosine distance; ``(N, D)`` -> the whole set as one group."""
    if embeddings.ndim == 3:
        return pairwise_cosine_diversity(embeddings), "per_prompt"
    return pairwise_cosine_diversity(embeddings[None]), "whole_set"


def distribution_report(run: dict[str, np.ndarray], reference: dict[str, np.ndarray], seed: int = 0) -> dict:
    """Per embedding block (e.g. ``"clap_audio"``, ``"mert"``): how far a run's outputs sit from a reference set.

    Each value is ``(N, D)``, or ``(P, E, D)`` for E samples of each of P prompts (flattened to ``(P E, D)``
    for the distances). Per block: ``frechet_distance``, ``n_run``, ``n_reference``, ``diversity`` of the run
    and ``reference_diversity`` (mean pairwise cosine distance; ``diversity_scope`` says ``"per_prompt"``
    for 3-D input, ``"whole_set"`` for 2-D), and for the ``"mert"`` block ``mad`` (:func:`mad`, or ``None``
    with a ``mad_note`` saying why). Every block of ``run`` must be in ``reference``.

    The Frechet distance is fadtk's formula (Gui et al., 2024, ``fadtk/fad.py``: ``np.cov`` with ``N - 1``;
    fadtk takes the matrix root by ``eig`` of the non-symmetric ``S_x S_y``, ours by symmetric ``eigh``:
    the same trace up to round-off, and ours is clipped at 0). The difference is the rows: fadtk pools
    every frame of every file (MERT-v1-95M layer 12 at 24 kHz mono, about 75 rows a second; LAION-CLAP
    one row per 10 s window at a 1 s hop, int16-quantised 48 kHz mono) and this function takes whatever
    rows it is given, usually one pooled embedding per clip: values are not comparable to published FAD.
Diversity builds an ``(E, E)`` cosine matrix per group: a ``(N, D)`` set costs ``N^2`` floats.
    """
    missing = sorted(set(run) - set(reference))
    if missing:
        raise ValueError(f"blocks {missing} of the run have no reference embeddings "
                         f"(reference has {sorted(reference)})")
    report = {}
    for name, run_embeddings in run.items():
        run_embeddings = np.asarray(run_embeddings, dtype=np.float64)
        reference_embeddings = np.asarray(reference[name], dtype=np.float64)
        run_rows = run_embeddings.reshape(-1, run_embeddings.shape[-1])
        reference_rows = reference_embeddings.reshape(-1, reference_embeddings.shape[-1])
        diversity, scope = _diversity(run_embeddings)
        entry = {"frechet_distance": frechet_distance(run_rows, reference_rows), "n_run": len(run_rows),
                 "n_reference": len(reference_rows), "diversity": diversity, "diversity_scope": scope,
                 "reference_diversity": _diversity(reference_embeddings)[0]}
        if name == MAD_BLOCK:
            try:
                entry["mad"] = mad(run_rows, reference_rows, seed=seed)
            except (ImportError, ValueError) as error:
                entry["mad"], entry["mad_note"] = None, str(error)
        report[name] = entry
    return report
