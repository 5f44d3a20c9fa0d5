"""Hacking-alarm probes: BS.1770 loudness, normalisation, silence, clipping, DC, the loudness-exploit rule
and its report, and the distribution report (Frechet distance, diversity, MAD when mauve-text is installed)."""

import importlib.util
import json

import numpy as np
import pytest
import torch

from tunejury_align.reward.probes import (
    LUFS_FLOOR,
    clipping_fraction,
    dc_offset,
    distribution_report,
    exploit_report,
    integrated_loudness,
    loudness_exploit,
    loudness_probe,
    mad,
    normalise_loudness,
    silence_fraction,
)

SR = 16000
HAS_MAUVE = importlib.util.find_spec("mauve") is not None


def sine(freq, amplitude, seconds=1.0, sample_rate=SR, offset=0.0):
    t = torch.arange(round(seconds * sample_rate), dtype=torch.float64) / sample_rate
    return offset + amplitude * torch.sin(2 * torch.pi * freq * t)


def batch(*waves):
    """Mono ``(T,)`` waves of equal length -> ``(B, 1, T)`` float32."""
    return torch.stack(waves).unsqueeze(1).float()


def rms_reward(audio, sample_rate, prompts):
    return audio.pow(2).mean(dim=(1, 2)).sqrt()


def zero_crossing_reward(audio, sample_rate, prompts):
    """Level-blind: a positive gain keeps every sign, so normalising cannot change it."""
    mono = audio.mean(dim=1)
    return (torch.sign(mono[:, 1:]) != torch.sign(mono[:, :-1])).float().mean(dim=1)


def test_integrated_loudness_of_a_sine_matches_bs1770_and_pyloudnorm():
    import pyloudnorm

    # BS.1770: a 0 dBFS 1 kHz sine in one channel reads -3.01 LUFS; amplitude 0.5 is 6.02 dB lower
    wave = sine(1000, 0.5, sample_rate=48000)
    mono = integrated_loudness(batch(wave), 48000)
    assert mono.shape == (1,) and mono[0] == pytest.approx(-9.03, abs=0.1)
    stereo = torch.stack([wave, wave]).unsqueeze(0)  # (1, 2, T): two equal channels add 3.01 LU
    independent = pyloudnorm.Meter(48000).integrated_loudness(np.stack([wave.numpy()] * 2, axis=1))
    assert integrated_loudness(stereo, 48000)[0] == pytest.approx(independent, abs=1e-6)
    assert integrated_loudness(stereo, 48000)[0] - mono[0] == pytest.approx(3.01, abs=0.01)


def test_short_clips_are_repeat_padded_and_silence_reads_the_floor():
    long = integrated_loudness(batch(sine(1000, 0.5)), SR)[0]
    short = integrated_loudness(batch(sine(1000, 0.5, seconds=0.1)), SR)[0]  # 100 whole cycles, under 0.4 s
    assert short == pytest.approx(long, abs=0.05)
    silent = integrated_loudness(torch.zeros(2, 1, SR), SR)
    assert np.array_equal(silent, [LUFS_FLOOR, LUFS_FLOOR])


def test_normalise_loudness_brings_each_clip_to_target_and_leaves_silence():
    noise = 0.05 * torch.randn(SR, generator=torch.Generator().manual_seed(0), dtype=torch.float64)
    audio = batch(sine(440, 0.8), noise, sine(3000, 0.01), torch.zeros(SR))
    out = normalise_loudness(audio, SR, target_lufs=-23.0)
    assert out.shape == audio.shape and out.dtype == torch.float32 and out.device == audio.device
    assert np.abs(integrated_loudness(out[:3], SR) + 23.0).max() < 0.1
    assert torch.equal(out[3], audio[3])
    # gain only: each clip is its input times one number
    gain = out.flatten(1).norm(dim=1) / audio.flatten(1).norm(dim=1).clamp_min(1e-12)
    assert torch.allclose(out[:3], audio[:3] * gain[:3].view(-1, 1, 1), rtol=1e-5, atol=1e-7)


def test_silence_fraction_of_half_silent_audio():
    half = torch.cat([torch.zeros(SR // 2, dtype=torch.float64), sine(440, 0.5, seconds=0.5)])
    quiet = sine(440, 1e-4)  # -83 dBFS RMS: silent at -60; -43 dBFS is not
    fractions = silence_fraction(batch(half, quiet, sine(440, 1e-2)), SR)
    assert fractions == pytest.approx([0.5, 1.0, 0.0])


def test_clipping_fraction_of_an_overdriven_sine():
    # 2 sin clamped to [-1, 1]: |2 sin| >= 0.999 on just over 2/3 of the cycle (|sin| >= 1/2 on [pi/6, 5pi/6])
    overdriven = sine(100, 2.0).clamp(-1, 1)
    fractions = clipping_fraction(batch(overdriven, sine(100, 0.9)))
    assert fractions[0] == pytest.approx(2 / 3, abs=0.01) and fractions[1] == 0.0


def test_dc_offset_of_a_shifted_sine_and_of_opposite_channels():
    shifted = batch(sine(100, 0.5, offset=0.1))  # whole cycles: the sine averages to 0
    opposite = torch.stack([sine(100, 0.5, offset=0.2), sine(100, 0.5, offset=-0.2)]).unsqueeze(0)
    assert dc_offset(shifted)[0] == pytest.approx(0.1, abs=1e-6)
    assert dc_offset(opposite)[0] == pytest.approx(0.0, abs=1e-6)  # the mono mix cancels it


def test_loudness_exploit_rule():
    assert loudness_exploit([3, 2, 1], [1, 2, 0], winner=0)  # led raw, second once level is removed
    assert loudness_exploit([3, 2, 1], [2, 2, 0], winner=0)  # a tie is no longer a lead
    assert not loudness_exploit([3, 2, 1], [3, 2, 1], winner=0)  # level-blind reward
    assert not loudness_exploit([1, 2, 3], [0, 2, 1], winner=0)  # never led the raw scores
    assert loudness_exploit([3, 2], [2.5, 2.4], winner=0, margin=0.2)  # a 0.1 lead is below the margin
    assert not loudness_exploit([3, 2], [2.5, 2.4], winner=0, margin=0.0)
    with pytest.raises(ValueError):
        loudness_exploit([3], [3], winner=0)


def test_rms_reward_win_is_flagged_as_loudness_exploit():
    # K-weighting lifts 3 kHz by ~4 dB and cuts 60 Hz: at equal LUFS the 60 Hz tone has the larger RMS
    audio = batch(sine(3000, 0.5), sine(60, 0.3))
    probe = loudness_probe(rms_reward, audio, SR, ["a", "a"])
    assert probe["score"].argmax() == 0 and probe["score_normalised"].argmax() == 1
    report = exploit_report(rms_reward, audio, SR, "a", winner_index=0)
    assert report["flags"] == {"loudness_exploit": True, "clipping": False, "silence": False, "dc_offset": False}
    assert report["score"] == pytest.approx(probe["score"].tolist())
    assert report["lufs"] == pytest.approx(integrated_loudness(audio, SR).tolist())
    json.dumps(report, allow_nan=False)


def test_level_blind_reward_is_not_flagged():
    audio = batch(sine(3000, 0.05), sine(60, 0.9))
    report = exploit_report(zero_crossing_reward, audio, SR, ["a", "a"], winner_index=0)
    assert report["score"] == pytest.approx(report["score_normalised"])
    assert not report["flags"]["loudness_exploit"]


def test_exploit_report_flags_a_clipped_mostly_silent_winner_and_a_dc_winner():
    broken = torch.cat([torch.zeros(int(0.6 * SR), dtype=torch.float64), sine(1000, 2.0, seconds=0.4).clamp(-1, 1)])
    report = exploit_report(zero_crossing_reward, batch(broken, sine(200, 0.3)), SR, "a", winner_index=0)
    assert report["silence_fraction"][0] == pytest.approx(0.6) and report["clipping_fraction"][0] > 0.2
    assert report["flags"] == {"loudness_exploit": False, "clipping": True, "silence": True, "dc_offset": False}
    shifted = batch(sine(1000, 0.3, offset=0.1), sine(200, 0.3))
    report = exploit_report(zero_crossing_reward, shifted, SR, "a", winner_index=0)
    assert report["flags"] == {"loudness_exploit": False, "clipping": False, "silence": False, "dc_offset": True}


def test_distribution_report_frechet_zero_for_identical_sets_and_shift_squared():
    rng = np.random.default_rng(0)
    reference = rng.normal(size=(64, 8))
    shift = np.full(8, 0.5)  # equal covariances: the distance is |shift|^2 = 2
    report = distribution_report({"clap_audio": reference, "other": reference + shift},
                                 {"clap_audio": reference, "other": reference})
    assert report["clap_audio"]["frechet_distance"] == pytest.approx(0.0, abs=1e-8)
    assert report["other"]["frechet_distance"] == pytest.approx(2.0, rel=1e-6)
    assert report["clap_audio"]["diversity_scope"] == "whole_set" and "mad" not in report["clap_audio"]
    # (P, E, D): diversity per prompt; identical samples within each prompt are not diverse at all
    copies = np.repeat(rng.normal(size=(4, 1, 8)), 3, axis=1)
    per_prompt = distribution_report({"clap_audio": copies}, {"clap_audio": reference})["clap_audio"]
    assert per_prompt["diversity_scope"] == "per_prompt" and per_prompt["n_run"] == 12
    assert per_prompt["diversity"] == pytest.approx(0.0, abs=1e-12) and per_prompt["reference_diversity"] > 0.5
    with pytest.raises(ValueError, match="no reference"):
        distribution_report({"mert": reference}, {"clap_audio": reference})


def test_mad_in_report_is_none_with_a_note_when_it_cannot_be_computed():
    rng = np.random.default_rng(1)
    few = rng.normal(size=(5, 8))
    entry = distribution_report({"mert": few}, {"mert": few})["mert"]
    assert entry["mad"] is None
    assert ("at least" in entry["mad_note"]) if HAS_MAUVE else ("mauve-text" in entry["mad_note"])


@pytest.mark.skipif(not HAS_MAUVE, reason="mauve-text is not installed (optional extra: judges)")
def test_mad_smaller_for_same_distribution_than_for_shifted():
    rng = np.random.default_rng(2)
    reference, same = rng.normal(size=(200, 16)), rng.normal(size=(200, 16))
    shifted = rng.normal(size=(200, 16)) + 1.5
    close, far = mad(same, reference), mad(shifted, reference)
    assert 0.0 <= close < far
    report = distribution_report({"mert": shifted}, {"mert": reference})["mert"]
    assert report["mad"] == pytest.approx(far) and "mad_note" not in report
