"""Latents -> mel through a tiny diffusion decoder: against the original pipeline's stage s8 (parity), and the fast
samplers' output size on a tiny seeded one."""

from __future__ import annotations

import pytest
import torch
from conftest import read_json, read_tensors

from tortoise_clvp.pipeline.diffusion import latents_to_mel
from tortoise_clvp.pipeline.samplers import SamplerOptions
from tortoise_clvp.weights.original_diffusion import (
    diffusion_config_from_original_kwargs,
    load_diffusion_original,
)


@pytest.fixture(scope="module")
def diffusion(reference_dir):
    folder = reference_dir / "models" / "diffusion_tiny"
    config = diffusion_config_from_original_kwargs(read_json(folder / "config.json")["kwargs"])
    return load_diffusion_original(folder / "diffusion_decoder.pth", config)


def test_mels_match_original_pipeline(diffusion, reference_dir):
    meta = read_json(reference_dir / "pipeline_tiny" / "config.json")
    cases = read_tensors(reference_dir / "pipeline_tiny" / "cases.safetensors")
    audio = read_tensors(reference_dir / "audio_cases.safetensors")
    mels = torch.stack([audio[f"{clip}.diffusion_cond_mel"] for clip in meta["clips"]], dim=1)
    latent = diffusion.get_conditioning(mels)
    torch.testing.assert_close(latent, cases["s2.diffusion_latent"], atol=1e-4, rtol=1e-4)
    options = SamplerOptions(
        sampler="p", steps=meta["diffusion_iterations"], cond_free=meta["cond_free"],
        cond_free_k=meta["cond_free_k"], temperature=meta["diffusion_temperature"],
    )
    for index, seed in enumerate(meta["s8_seeds"]):
        latents = cases[f"s7.cand{index}.trimmed_latents"][0]
        mel = latents_to_mel(diffusion, latents, latent[0], options, torch.Generator().manual_seed(seed))
        torch.testing.assert_close(mel, cases[f"s8.cand{index}.mel"][0], atol=1e-3, rtol=1e-3)


@pytest.mark.parametrize("sampler", ["ddim", "dpm++2m"])
def test_fast_samplers_make_a_mel_of_the_right_size(tiny_models, sampler):
    diffusion = tiny_models["diffusion"]
    latents = torch.randn(20, diffusion.config.in_latent_channels)
    cond = torch.randn(2 * diffusion.config.model_channels)
    options = SamplerOptions(sampler=sampler, steps=5)
    calls = []
    mel = latents_to_mel(diffusion, latents, cond, options, torch.Generator().manual_seed(0), lambda done, total: calls.append(done))
    assert mel.shape == (diffusion.config.in_channels, 20 * 4 * 24000 // 22050)
    assert torch.isfinite(mel).all() and calls == [1, 2, 3, 4, 5]
