"""Voice clips -> conditioning inputs and latents: checks on the clips, padding and cropping, and the latents of a
short clip computed by hand (tiny seeded models, synthesized clips)."""

from __future__ import annotations

import random

import pytest
import torch
import torchaudio.functional as AF
from conftest import synth_speech

from tortoise_clvp.api import TextToSpeech
from tortoise_clvp.errors import AudioError
from tortoise_clvp.frontend.mel import CONDITIONING_SAMPLE_RATE, OUTPUT_SAMPLE_RATE, conditioning_mel, univnet_mel
from tortoise_clvp.pipeline.conditioning import (
    CONDITIONING_SAMPLES,
    DIFFUSION_CONDITIONING_SAMPLES,
    MIN_CLIP_SECONDS,
    autoregressive_conditioning,
    check_clip,
    crop_conditioning,
    diffusion_conditioning,
    format_conditioning,
)

RATE = CONDITIONING_SAMPLE_RATE


@pytest.fixture(scope="module")
def models(tiny_model_dir):
    return TextToSpeech.from_local(tiny_model_dir).models


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


def test_short_clips_are_zero_padded_like_the_original(models):
    """A clip shorter than 6 s is zero-padded on the right to exactly 6 s (no crop, no repetition) before its mel
    is encoded; for the diffusion decoder it is resampled to 24 kHz and zero-padded to 102400 samples."""
    clip = torch.from_numpy(synth_speech(2 * MIN_CLIP_SECONDS, RATE, seed=3))[None]  # (1, N), N < 6 s
    padded = torch.cat([clip, torch.zeros(1, CONDITIONING_SAMPLES - clip.shape[1])], dim=1)
    expected_mel = conditioning_mel(padded, models.mel_norms)
    torch.testing.assert_close(format_conditioning(clip, models.mel_norms, random.Random(0)), expected_mel)

    decoder = models.autoregressive
    latent = autoregressive_conditioning(decoder, [clip], models.mel_norms)
    with torch.inference_mode():
        expected = decoder.get_conditioning(expected_mel[None])[0]  # (1, clips=1, 80, T) -> (C,)
    assert latent.shape == (decoder.config.model_dim,)
    torch.testing.assert_close(latent, expected)

    resampled = AF.resample(clip, RATE, OUTPUT_SAMPLE_RATE)
    padded_24k = torch.cat([resampled, torch.zeros(1, DIFFUSION_CONDITIONING_SAMPLES - resampled.shape[1])], dim=1)
    with torch.inference_mode():
        expected_diffusion = models.diffusion.get_conditioning(univnet_mel(padded_24k)[None])[0]
    torch.testing.assert_close(diffusion_conditioning(models.diffusion, [clip]), expected_diffusion)

    with pytest.raises(AudioError, match="no voice clips"):
        autoregressive_conditioning(decoder, [], models.mel_norms)


def test_long_clips_are_cropped_at_a_seeded_start():
    clip = torch.arange(float(CONDITIONING_SAMPLES + 500))[None]
    start = random.Random(4).randint(0, 500)
    cropped = crop_conditioning(clip, random.Random(4))
    assert cropped.shape == (1, CONDITIONING_SAMPLES) and cropped[0, 0].item() == start
