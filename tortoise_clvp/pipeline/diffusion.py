"""Decoder latents -> mel spectrogram: the diffusion decoder driven by a sampler on a respaced subset of its
4000 timesteps (`pipeline.samplers`)."""

from __future__ import annotations

from typing import Callable

import torch
from torch import Tensor

from ..frontend.mel import UNIVNET_N_MELS, denormalize_tacotron_mel
from ..models.diffusion import DiffusionModel, output_frames
from .samplers import SamplerOptions, sample, stacked_denoiser


@torch.inference_mode()
def latents_to_mel(
    model: DiffusionModel,
    latents: Tensor,
    conditioning_latent: Tensor,
    options: SamplerOptions,
    generator: torch.Generator | None = None,
    progress: Callable[[int, int], None] | None = None,
) -> Tensor:
    """One candidate's latents (M, C) and the voice's diffusion latent (2C',) -> mel (100, frames) at 24 kHz.

    The timestep-independent embeddings are computed once; with guidance on, every step is ONE forward over a
    batch of [conditioned, unconditioned]. The initial noise (then the p-sampler's per-step noise) comes from
    `generator`, in the original's order.
    """
    device, dtype = model.device, model.dtype
    frames = output_frames(latents.shape[0])
    embeddings = model.timestep_independent(
        latents[None].to(device, dtype), conditioning_latent[None].to(device, dtype), frames
    )  # (1, C, frames)
    if options.cond_free:
        both = model.with_unconditioned(embeddings)  # (2, C, frames): [conditioned; unconditioned]
        denoise = stacked_denoiser(lambda x, t, _free: model(x.to(dtype), t, both).float())
    else:
        denoise = lambda x, t: model(x.to(dtype), t, embeddings).float()  # noqa: E731
    mel = sample(denoise, (1, UNIVNET_N_MELS, frames), options, generator=generator, progress=progress, device=device)
    return denormalize_tacotron_mel(mel)[0]
