"""Latents -> mel through a tiny diffusion decoder: against the original pipeline's stage s8 (parity), the fast
samplers' output size on a tiny seeded one, and candidates of different lengths batched together."""

from __future__ import annotations

import pytest
import torch
from conftest import read_json, read_tensors

from tortoise_clvp.errors import OptionsError
from tortoise_clvp.pipeline.diffusion import BATCHABLE_SAMPLERS, MelRequest, latents_to_mel, latents_to_mels
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


@pytest.mark.parametrize("sampler", BATCHABLE_SAMPLERS)
@pytest.mark.parametrize("cond_free", [False, True])
def test_a_batch_of_different_lengths_gives_each_candidate_its_own_mel(tiny_models, sampler, cond_free):
    diffusion = tiny_models["diffusion"]
    generator = torch.Generator().manual_seed(3)
    shapes = [(20, 0), (9, 1), (31, 2)]  # (latent frames, seed of the row's generator)
    requests = [
        MelRequest(torch.randn(frames, diffusion.config.in_latent_channels, generator=generator),
                   torch.randn(2 * diffusion.config.model_channels, generator=generator),
                   torch.Generator().manual_seed(seed))
        for frames, seed in shapes
    ]
    options = SamplerOptions(sampler=sampler, steps=4, cond_free=cond_free)
    calls = []
    batched = latents_to_mels(diffusion, requests, options, lambda done, total: calls.append((done, total)))
    alone = [latents_to_mel(diffusion, r.latents, r.conditioning_latent, options, torch.Generator().manual_seed(seed))
             for r, (_, seed) in zip(requests, shapes)]
    assert calls == [(1, 4), (2, 4), (3, 4), (4, 4)]
    for one, reference in zip(batched, alone):
        assert one.shape == reference.shape
        # float rounding only: at the noisiest step x0 = x / sqrt(abar) - ... magnifies it (log-mel units, -11.5..2)
        torch.testing.assert_close(one, reference, atol=2e-3, rtol=0)
        assert (one - reference).abs().mean() < 1e-5
    assert [m.shape[1] for m in batched] == [20 * 4 * 24000 // 22050, 9 * 4 * 24000 // 22050, 31 * 4 * 24000 // 22050]


def test_the_p_sampler_is_refused_in_a_batch(tiny_models):
    diffusion = tiny_models["diffusion"]
    request = MelRequest(torch.randn(5, diffusion.config.in_latent_channels), torch.randn(2 * diffusion.config.model_channels))
    with pytest.raises(OptionsError, match="cannot batch"):
        latents_to_mels(diffusion, [request], SamplerOptions(sampler="p", steps=2))
    assert latents_to_mels(diffusion, [], SamplerOptions(sampler="ddim", steps=2)) == []


def test_one_candidate_in_a_batch_is_exactly_the_one_alone(tiny_models):
    diffusion = tiny_models["diffusion"]
    latents, cond = torch.randn(11, diffusion.config.in_latent_channels), torch.randn(2 * diffusion.config.model_channels)
    options = SamplerOptions(sampler="dpm++2m", steps=3)
    [batched] = latents_to_mels(diffusion, [MelRequest(latents, cond, torch.Generator().manual_seed(4))], options)
    assert torch.equal(batched, latents_to_mel(diffusion, latents, cond, options, torch.Generator().manual_seed(4)))
