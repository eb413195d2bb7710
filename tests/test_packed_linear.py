"""oneDNN-packed linear layers: same outputs as nn.Linear, same generations, left out of state dicts."""

from __future__ import annotations

import copy

import pytest
import torch
from torch import nn

from tortoise_clvp.models.packed_linear import PackedLinear, pack_linears
from tortoise_clvp.pipeline.decoding import DecodingOptions, sample_candidates
from tortoise_clvp.pipeline.sampling import SamplingOptions


def test_packed_linear_matches_linear_for_every_row_count():
    torch.manual_seed(0)
    linear = nn.Linear(96, 200)
    packed = PackedLinear(linear)
    for rows in (1, 3, 16, 57):
        x = torch.randn(rows, 1, 96)
        torch.testing.assert_close(packed(x), linear(x), atol=1e-5, rtol=1e-5)


def test_packing_a_decoder_keeps_generations_and_drops_packed_weights_from_state(tiny_models):
    model = tiny_models["autoregressive"]
    packed = copy.deepcopy(model)
    swapped = pack_linears(packed)
    if swapped == 0:
        pytest.fail("oneDNN linear ops are missing from this PyTorch build; the CPU fast path would be silently off")
    assert swapped == 4 * model.config.layers + 1  # qkv, proj, fc, proj per block, plus the mel head
    assert not any("packed" in key for key in packed.state_dict())
    assert set(packed.state_dict()) < set(model.state_dict())
    options = DecodingOptions(sampling=SamplingOptions(do_sample=False), num_candidates=1, batch_size=1, max_new_tokens=25)
    text = torch.tensor([20, 31, 2, 45, 0])
    for seed in range(2):
        latent = torch.randn(model.config.model_dim, generator=torch.Generator().manual_seed(seed))
        expected = sample_candidates(model, latent, text, options)
        assert torch.equal(sample_candidates(packed, latent, text, options), expected)
