"""Our resampler against torchaudio's ``functional.resample`` (defaults), through stored values.

``tests/data/resample_reference.npz`` was written by ``scripts/make_resample_reference.py`` with
real torchaudio (see its docstring); torchaudio itself is not needed here.
"""

from __future__ import annotations

import math
from pathlib import Path

import numpy as np
import pytest
import torch

from tunejury_align.reward import audio
from tunejury_align.reward.resample import _kernel, resample, resampled_length

REFERENCE = np.load(Path(__file__).parent / "data" / "resample_reference.npz")
PAIRS = sorted(tuple(int(r) for r in key.split("_")[1:]) for key in REFERENCE.files if key.startswith("y_"))
PAIRS_F64 = sorted(tuple(int(r) for r in key.split("_")[1:]) for key in REFERENCE.files if key.startswith("y64_"))


def reference_input(orig: int, dtype=torch.float32) -> torch.Tensor:
    return torch.from_numpy(REFERENCE[f"x_{orig}"].astype(np.float64) / 32768.0).to(dtype)


def test_reference_covers_the_rates_we_use():
    assert {(44100, 48000), (32000, 48000), (16000, 48000), (48000, 16000), (16000, 24000), (44100, 24000),
            (32000, 24000), (48000, 24000), (22050, 24000)} <= set(PAIRS)
    assert len(PAIRS) >= 10 and PAIRS_F64


@pytest.mark.parametrize("orig,new", PAIRS)
def test_matches_torchaudio_float32(orig, new):
    x = reference_input(orig)
    assert x.abs().max() <= 1.0
    expected = torch.from_numpy(REFERENCE[f"y_{orig}_{new}"])
    out = resample(x, orig, new)
    assert out.dtype == torch.float32
    assert out.shape == expected.shape == (math.ceil(x.shape[-1] * new / orig),)
    assert float((out - expected).abs().max()) <= 1e-5


@pytest.mark.parametrize("orig,new", PAIRS_F64)
def test_matches_torchaudio_float64(orig, new):
    out = resample(reference_input(orig, torch.float64), orig, new)
    expected = torch.from_numpy(REFERENCE[f"y64_{orig}_{new}"])
    assert out.dtype == torch.float64 and out.shape == expected.shape
    assert float((out - expected).abs().max()) <= 1e-12


def test_the_comparison_can_fail():
    # julius' rolloff (0.945) instead of torchaudio's 0.99 is far outside the tolerance.
    out = resample(reference_input(44100), 44100, 48000, rolloff=0.945)
    assert float((out - torch.from_numpy(REFERENCE["y_44100_48000"])).abs().max()) > 1e-3


def test_output_lengths_round_as_torchaudio_does():
    rows = REFERENCE["lengths"].tolist()
    assert rows
    for orig, new, length, expected in rows:
        assert resampled_length(length, orig, new) == expected
    # beyond 2**24 output samples torchaudio's float32 ceiling is not always the exact one
    exact = [-(-length * new // orig) for orig, new, length, _ in rows]
    assert any(e != row[3] for e, row in zip(exact, rows)) and any(e == row[3] for e, row in zip(exact, rows))
    assert resampled_length(441, 44100, 48000) == 480 and resampled_length(10, 48000, 48000) == 10


def test_gradients_flow_to_the_input():
    x = reference_input(44100)[:500].requires_grad_()
    weights = torch.randn(resampled_length(500, 44100, 48000), generator=torch.Generator().manual_seed(0))
    (resample(x, 44100, 48000) * weights).sum().backward()
    assert x.grad is not None and torch.isfinite(x.grad).all() and x.grad.abs().sum() > 0
    short = torch.randn(2, 40, dtype=torch.float64, requires_grad=True)
    assert torch.autograd.gradcheck(lambda w: resample(w, 3, 2), (short,), fast_mode=True)


def test_batched_equals_per_item_and_any_leading_dims():
    x = torch.stack([reference_input(48000)[i * 300:i * 300 + 1000] for i in range(6)]).reshape(2, 3, 1000)
    out = resample(x, 48000, 16000)
    assert out.shape == (2, 3, resampled_length(1000, 48000, 16000))
    for i in range(2):
        for j in range(3):
            torch.testing.assert_close(out[i, j], resample(x[i, j], 48000, 16000), atol=1e-6, rtol=0)
    # non-contiguous input (time not the fastest axis)
    torch.testing.assert_close(resample(x.transpose(0, 1).contiguous().transpose(0, 1), 48000, 16000), out)


def test_equal_rates_is_identity_and_audio_resample_is_this_one():
    x = reference_input(22050)
    assert resample(x, 22050, 22050) is x and audio.resample(x, 22050, 22050) is x
    assert torch.equal(audio.resample(x, 22050, 24000), resample(x, 22050, 24000))
    assert torch.equal(audio.resample(x, np.int64(22050), 24000), resample(x, 22050, 24000))


def test_kernel_cache_is_small_and_holds_no_graph():
    assert _kernel.cache_info().maxsize == 16
    _kernel.cache_clear()
    with torch.inference_mode():  # a kernel first built here must still work with autograd later
        resample(torch.zeros(1, 100), 44100, 48000)
    kernel, _ = _kernel(147, 160, 6, 0.99, torch.device("cpu"), torch.float32)
    assert not kernel.requires_grad and kernel.grad_fn is None and not kernel.is_inference()
    x = torch.zeros(1, 100, requires_grad=True)
    resample(x, 44100, 48000).sum().backward()
    assert x.grad is not None
    assert _kernel.cache_info().currsize == 1  # 44100 -> 48000 and 88200 -> 96000 share a kernel
    resample(torch.zeros(1, 100), 88200, 96000)
    assert _kernel.cache_info().currsize == 1


def test_bad_arguments():
    x = torch.zeros(1, 100)
    with pytest.raises(TypeError, match="floating point"):
        resample(torch.zeros(1, 100, dtype=torch.int16), 44100, 48000)
    for orig, new in [(0, 48000), (44100, -1), (44100.5, 48000), (True, 48000), (None, 48000), ("44100", 48000),
                      (float("nan"), 48000), (float("inf"), 48000)]:
        with pytest.raises(ValueError, match="positive integer"):
            resample(x, orig, new)
    with pytest.raises(ValueError, match="rolloff"):
        resample(x, 44100, 48000, rolloff=1.5)
    with pytest.raises(ValueError, match="lowpass_filter_width"):
        resample(x, 44100, 48000, lowpass_filter_width=0)
