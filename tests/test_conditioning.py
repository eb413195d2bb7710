"""Voice clips -> conditioning latents: checks on the clips, and the latents against the original."""

from __future__ import annotations

import pytest
import torch

from tortoise_clvp.errors import AudioError
from tortoise_clvp.frontend.mel import load_mel_norms
from tortoise_clvp.pipeline.conditioning import (
    MIN_CLIP_SECONDS,
    autoregressive_conditioning,
    check_clip,
)

RATE = 22050


@pytest.mark.parametrize(
    "wav,match",
    [
        (torch.zeros(1, 0), "empty"),
        (torch.zeros(1, 3 * RATE), "silent"),
        (torch.full((1, 3 * RATE), float("nan")), "NaN"),
        (torch.randn(1, int(0.5 * MIN_CLIP_SECONDS * RATE)), "at least"),
        (torch.randn(2, 3 * RATE), "mono"),
        (torch.ones(1, 3 * RATE, dtype=torch.int16), "mono float"),
    ],
)
def test_bad_clips_are_clear_errors(wav, match):
    with pytest.raises(AudioError, match=match):
        check_clip(wav, "test.wav")


def test_short_but_usable_clips_are_padded_like_the_original(ar_fixture, reference_dir):
    model, _, _ = ar_fixture
    norms = load_mel_norms(reference_dir / "tortoise" / "mel_norms.pth")
    clip = torch.randn(int(MIN_CLIP_SECONDS * RATE)) * 0.1
    latent = autoregressive_conditioning(model, [clip], norms)
    assert latent.shape == (model.config.model_dim,) and torch.isfinite(latent).all()
    with pytest.raises(AudioError, match="no voice clips"):
        autoregressive_conditioning(model, [], norms)
