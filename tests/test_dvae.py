"""The discrete VAE (models/dvae.py) and its codebook training (train/codes.py): shapes, nearest-code choice, the
straight-through gradient, the moving-average codebook with dead-code restarts, and the perplexity arithmetic."""

from __future__ import annotations

import math

import pytest
import torch

from tortoise_clvp.config import DvaeConfig
from tortoise_clvp.models.dvae import DiscreteVae
from tortoise_clvp.train.codes import RESTART_GRACE_STEPS, DvaeTraining, pad_frames, perplexity

TINY = DvaeConfig(channels=16, res_blocks=1, codebook_size=8, code_dim=4)


def test_four_mel_frames_make_one_code_and_decode_back():
    torch.manual_seed(0)
    dvae = DiscreteVae(TINY)
    mel = torch.randn(2, 80, 36)
    codes = dvae.encode(mel)
    assert TINY.compression == 4 and codes.shape == (2, 9) and codes.dtype == torch.long
    assert int(codes.min()) >= 0 and int(codes.max()) < TINY.codebook_size
    assert dvae.decode(codes).shape == (2, 80, 36)
    recon, latents, forward_codes = dvae(mel)
    assert recon.shape == mel.shape and latents.shape == (2, TINY.code_dim, 9) and torch.equal(forward_codes, codes)


def test_quantize_picks_the_code_of_highest_cosine_similarity():
    dvae = DiscreteVae(DvaeConfig(channels=8, res_blocks=1, codebook_size=3, code_dim=2))
    dvae.codebook.copy_(torch.tensor([[1.0, 0.0], [0.0, 1.0], [-0.6, -0.8]]))
    latents = torch.nn.functional.normalize(torch.tensor([[[9.0, 0.1, -1.0], [1.0, 2.0, -1.5]]]), dim=1)  # (1, 2, 3)
    assert dvae.quantize(latents).tolist() == [[0, 1, 2]]
    assert torch.equal(dvae.lookup(torch.tensor([[2, 1]])), torch.tensor([[[-0.6, 0.0], [-0.8, 1.0]]]))
    encoded = dvae.encode_latents(torch.randn(2, 80, 8))
    assert torch.allclose(encoded.norm(dim=1), torch.ones(2, 2))  # latents live on the unit sphere


def test_gradients_reach_the_encoder_straight_through_the_codebook():
    torch.manual_seed(0)
    dvae = DiscreteVae(TINY)
    mel = torch.randn(1, 80, 16)
    recon, _, _ = dvae(mel)
    (recon - mel).pow(2).mean().backward()
    encoder_grads = [p.grad for p in dvae.encoder.parameters()]
    assert all(g is not None and torch.isfinite(g).all() for g in encoder_grads)
    assert sum(float(g.abs().sum()) for g in encoder_grads) > 0
    assert dvae.codebook.grad is None  # the codebook is a buffer: training moves it by moving averages


@pytest.mark.parametrize("frames", [0, 5, 18])
def test_mels_must_be_padded_to_whole_codes(frames):
    with pytest.raises(ValueError, match="multiple of 4"):
        DiscreteVae(TINY).encode(torch.randn(1, 80, frames))


def test_codes_outside_the_codebook_are_rejected():
    with pytest.raises(ValueError, match=r"\[0, 8\)"):
        DiscreteVae(TINY).decode(torch.tensor([[1, 8]]))


def test_pad_frames_adds_silence_up_to_a_whole_code():
    silence = torch.full((80,), -3.0)
    padded = pad_frames(torch.zeros(80, 5), silence, 4)
    assert padded.shape == (80, 8) and (padded[:, 5:] == -3.0).all() and (padded[:, :5] == 0).all()
    assert pad_frames(torch.zeros(80, 8), silence, 4).shape == (80, 8)


def test_codebook_follows_the_mean_direction_of_its_latents_and_restarts_dead_codes():
    training = DvaeTraining(DvaeConfig(channels=8, res_blocks=1, codebook_size=4, code_dim=2))
    latents = torch.tensor([[[1.0, 0.6, 0.0, -0.6], [0.0, 0.8, 1.0, 0.8]]])  # (1, 2, 4) unit vectors
    codes = torch.tensor([[0, 0, 1, 1]])
    generator = torch.Generator().manual_seed(0)
    # first update: an even share is 4 latents / 4 codes = 1 per step; codes 2 and 3 got none, so their average use
    # (0) is below 0.1 of it and they restart on latents of this batch, RESTART_GRACE_STEPS decays above it
    restarts = training.update_codebook(latents, codes, decay=0.5, dead_fraction=0.1, generator=generator)
    assert restarts == 2
    book = training.dvae.codebook
    assert torch.allclose(book[0], torch.nn.functional.normalize(torch.tensor([1.6, 0.8]), dim=0))
    assert torch.allclose(book[1], torch.nn.functional.normalize(torch.tensor([-0.6, 1.8]), dim=0))
    columns = {tuple(column.tolist()) for column in latents[0].T}
    assert {tuple(book[2].tolist()), tuple(book[3].tolist())} <= columns
    restarted = 0.1 / 0.5**RESTART_GRACE_STEPS
    assert torch.allclose(training.code_counts, torch.tensor([1.0, 1.0, restarted, restarted]))
    # a second batch of two code-0 latents (threshold 0.1 * 2 / 4): codes 1, 2 and 3 decay but stay above it
    restarts = training.update_codebook(torch.tensor([[[0.0, 0.0], [1.0, 1.0]]]), torch.tensor([[0, 0]]), 0.5, 0.1, generator)
    assert restarts == 0
    sums = 0.5 * torch.tensor([1.6, 0.8]) * 0.5 + 0.5 * torch.tensor([0.0, 2.0])  # decayed sums of code 0's latents
    assert torch.allclose(book[0], torch.nn.functional.normalize(sums, dim=0))


def test_perplexity_counts_codes_in_effective_use():
    assert perplexity(torch.tensor([5.0, 5.0, 5.0, 5.0])) == pytest.approx(4.0)
    assert perplexity(torch.tensor([0.0, 9.0, 0.0])) == pytest.approx(1.0)
    p = torch.tensor([0.5, 0.25, 0.25])
    assert perplexity(p * 8) == pytest.approx(math.exp(-(p * p.log()).sum().item()))
