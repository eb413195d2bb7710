"""CUDA smoke test: the tiny pipeline on a GPU agrees with the CPU wherever no random draw is involved, and makes
finite audio in float32 and float16. Skipped where no CUDA device exists (the `cuda` marker)."""

from __future__ import annotations

import pytest
import torch

from tortoise_clvp.api import TextToSpeech
from tortoise_clvp.pipeline.decoding import DecodingOptions
from tortoise_clvp.pipeline.samplers import SamplerOptions
from tortoise_clvp.pipeline.sampling import SamplingOptions
from tortoise_clvp.presets import GenerationOptions

pytestmark = pytest.mark.cuda

TEXT = "Hello, this is a test."
DEVICE = "cuda"
GREEDY_TOKENS = 20
ATOL = 1e-3  # GPU kernels (TF32 matmuls where enabled, other reduction orders) against the CPU


def _greedy() -> DecodingOptions:
    return DecodingOptions(sampling=SamplingOptions(do_sample=False), num_candidates=2, batch_size=2,
                           max_new_tokens=GREEDY_TOKENS, min_new_tokens=GREEDY_TOKENS)


@pytest.fixture(scope="module")
def cpu(tiny_model_dir) -> TextToSpeech:
    return TextToSpeech.from_local(tiny_model_dir)


def test_tiny_pipeline_on_cuda_matches_the_cpu(tiny_model_dir, cpu, speech_clip):
    gpu = TextToSpeech.from_local(tiny_model_dir, device=DEVICE)
    assert gpu.device.type == DEVICE

    conditioning = gpu.get_conditioning([speech_clip], seed=0)
    expected = cpu.get_conditioning([speech_clip], seed=0)
    assert conditioning.autoregressive.device.type == DEVICE
    torch.testing.assert_close(conditioning.autoregressive.cpu(), expected.autoregressive, atol=ATOL, rtol=ATOL)
    torch.testing.assert_close(conditioning.diffusion.cpu(), expected.diffusion, atol=ATOL, rtol=ATOL)

    ours = gpu.candidates(TEXT, [speech_clip], _greedy(), k=1, seed=0)
    theirs = cpu.candidates(TEXT, [speech_clip], _greedy(), k=1, seed=0)
    assert torch.equal(ours.raw_codes.cpu(), theirs.raw_codes)
    torch.testing.assert_close(ours.ranked.scores.float().cpu(), theirs.ranked.scores.float(), atol=ATOL, rtol=ATOL)
    for got, want in zip(ours.latents, theirs.latents):
        torch.testing.assert_close(got.float().cpu(), want.float(), atol=ATOL, rtol=ATOL)


@pytest.mark.parametrize("dtype", [torch.float32, torch.float16], ids=str)
def test_cuda_makes_finite_audio(tiny_model_dir, speech_clip, dtype):
    gpu = TextToSpeech.from_local(tiny_model_dir, device=DEVICE, dtype=dtype)
    options = GenerationOptions(DecodingOptions(num_candidates=2, batch_size=2, max_new_tokens=20),
                                SamplerOptions(sampler="dpm++2m", steps=2))
    first = gpu.generate(TEXT, [speech_clip], options, seed=1)
    again = gpu.generate(TEXT, [speech_clip], options, seed=1)
    wave = first.waveform.cpu()
    assert wave.dtype == torch.float32 and wave.numel() > 0 and torch.isfinite(wave).all() and wave.abs().max() > 0.01
    assert torch.equal(first.candidates.raw_codes.cpu(), again.candidates.raw_codes.cpu())  # a seed repeats on the GPU
