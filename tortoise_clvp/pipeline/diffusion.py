"""Decoder latents -> mel spectrogram: the diffusion decoder driven by a sampler on a respaced subset of its
4000 timesteps (`pipeline.samplers`); one candidate at a time, or several of different lengths in one batch."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Callable, Sequence

import torch
import torch.nn.functional as F
from torch import Tensor

from ..errors import OptionsError
from ..frontend.mel import UNIVNET_N_MELS, denormalize_tacotron_mel
from ..models.diffusion import DiffusionModel, output_frames
from .samplers import SamplerOptions, sample, stacked_denoiser

# Samplers whose only randomness is the initial noise: rows of one batch can each draw theirs from their own
# generator. The p-sampler also draws noise at every step, from one generator for the whole batch.
BATCHABLE_SAMPLERS = ("ddim", "dpm++2m")


@dataclass(frozen=True)
class MelRequest:
    """One candidate to sample: its latents (M, C), its voice's diffusion latent (2C',), and the generator its
    initial noise comes from."""

    latents: Tensor
    conditioning_latent: Tensor
    generator: torch.Generator | None = None


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
    return _sample_mels(model, [MelRequest(latents, conditioning_latent, generator)], options, progress, generator)[0]


@torch.inference_mode()
def latents_to_mels(
    model: DiffusionModel,
    requests: Sequence[MelRequest],
    options: SamplerOptions,
    progress: Callable[[int, int], None] | None = None,
) -> list[Tensor]:
    """Several candidates, of any lengths and voices, sampled in ONE batch -> one mel (100, frames) each.

    Each row is padded to the longest and masked (`DiffusionModel.forward`'s `mask`), and draws its initial noise
    from its own generator, so each mel is the one `latents_to_mel` makes alone with that generator (to float
    rounding). Only for samplers without per-step noise (`BATCHABLE_SAMPLERS`).
    """
    if options.sampler not in BATCHABLE_SAMPLERS:
        raise OptionsError(
            f"the {options.sampler!r} sampler draws noise at every step and cannot batch rows of different "
            f"requests; batch only {', '.join(BATCHABLE_SAMPLERS)}, or sample one at a time with latents_to_mel"
        )
    return _sample_mels(model, requests, options, progress, None)


def _sample_mels(
    model: DiffusionModel,
    requests: Sequence[MelRequest],
    options: SamplerOptions,
    progress: Callable[[int, int], None] | None,
    step_generator: torch.Generator | None,
) -> list[Tensor]:
    """The requests' mels from one batch, each row's initial noise from its own generator and the p-sampler's
    per-step noise from `step_generator`. Rows of one length need no mask, so one row alone runs unmasked."""
    if not requests:
        return []
    device, dtype = model.device, model.dtype
    frames = [output_frames(request.latents.shape[0]) for request in requests]
    longest = max(frames)
    embeddings, noise = [], []
    for request, length in zip(requests, frames):
        one = model.timestep_independent(
            request.latents[None].to(device, dtype), request.conditioning_latent[None].to(device, dtype), length
        )
        embeddings.append(F.pad(one, (0, longest - length)))
        drawn = torch.randn((1, UNIVNET_N_MELS, length), generator=request.generator, dtype=torch.float32, device=device)
        noise.append(F.pad(drawn, (0, longest - length)))
    embeddings, noise = torch.cat(embeddings), torch.cat(noise)  # (B, C, T), (B, 100, T)
    mask = None
    if min(frames) != longest:
        mask = (torch.arange(longest, device=device) < torch.tensor(frames, device=device)[:, None])[:, None]  # (B, 1, T)
    if options.cond_free:  # [conditioned; unconditioned] rows in one forward
        both, both_mask = model.with_unconditioned(embeddings), None if mask is None else torch.cat([mask, mask])
        denoise = stacked_denoiser(lambda x, t, _free: model(x.to(dtype), t, both, both_mask).float())
    else:
        denoise = lambda x, t: model(x.to(dtype), t, embeddings, mask).float()  # noqa: E731
    mels = sample(denoise, tuple(noise.shape), options, noise=noise, generator=step_generator, progress=progress)
    return [denormalize_tacotron_mel(mels[i : i + 1, :, :length])[0] for i, length in enumerate(frames)]
