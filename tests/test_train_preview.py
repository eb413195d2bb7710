"""The Griffin-Lim preview: a mel comes back as audio whose own mel is close to it; codes come back as audio of
the length they stand for."""

from __future__ import annotations

import pytest
import torch
from conftest import synth_speech

from tortoise_clvp.config import DvaeConfig
from tortoise_clvp.frontend.mel import CONDITIONING_N_MELS, HOP_LENGTH, conditioning_mel
from tortoise_clvp.models.dvae import DiscreteVae
from tortoise_clvp.train.preview import codes_to_audio, mel_to_audio

NORMS = torch.full((CONDITIONING_N_MELS,), -4.0)


def test_a_mel_comes_back_as_audio_with_nearly_that_mel():
    wav = torch.from_numpy(synth_speech(1.5, 22050, seed=3))
    mel = conditioning_mel(wav, NORMS)  # (80, T)
    audio = mel_to_audio(mel, NORMS)
    assert audio.shape == ((mel.shape[1] - 1) * HOP_LENGTH,) and torch.isfinite(audio).all()
    assert float(audio.abs().max()) == pytest.approx(0.9)
    again = conditioning_mel(audio, NORMS)
    noise = conditioning_mel(0.1 * torch.randn(audio.shape, generator=torch.Generator().manual_seed(0)), NORMS)
    error, baseline = (again - mel).abs().mean(), (noise - mel).abs().mean()
    assert error < 0.25 * baseline
    assert torch.equal(mel_to_audio(mel, NORMS), audio)  # seeded: the same mel gives the same audio


def test_codes_come_back_as_audio_of_their_length():
    dvae = DiscreteVae(DvaeConfig(channels=8, res_blocks=1, codebook_size=16, code_dim=4))
    audio = codes_to_audio(dvae, torch.tensor([1, 2, 3, 4, 5]), NORMS)
    assert audio.shape == ((5 * 4 - 1) * HOP_LENGTH,) and torch.isfinite(audio).all()
    with pytest.raises(ValueError, match="non-empty"):
        codes_to_audio(dvae, torch.tensor([], dtype=torch.long), NORMS)
