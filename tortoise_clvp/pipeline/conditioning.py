"""Voice conditioning: reference clips -> the latent the decoder is prompted with."""

from __future__ import annotations

import random
from dataclasses import dataclass
from typing import Sequence

import torch
from torch import Tensor

from ..errors import AudioError
from ..frontend.audio import (
    CONDITIONING_SAMPLE_RATE,
    diffusion_conditioning_mel,
    format_conditioning,
)
from ..models.autoregressive import AutoregressiveModel
from ..models.diffusion import DiffusionModel

MIN_CLIP_SECONDS = 1.0  # shorter clips carry too little voice to condition on (the original zero-pads anything)


@dataclass(frozen=True)
class Conditioning:
    """What a voice contributes to generation.

    autoregressive: (C,) mean of the clips' conditioning-encoder outputs, prompts the speech-token decoder.
    diffusion: (2C',) the diffusion decoder's voice latent; None when only candidates are wanted.
    """

    autoregressive: Tensor
    diffusion: Tensor | None = None


def check_clip(wav: Tensor, name: str) -> Tensor:
    """A loaded clip as (1, N) float, rejecting the empty, silent and non-finite with a clear message."""
    if wav.dim() == 1:
        wav = wav.unsqueeze(0)
    if wav.dim() != 2 or wav.shape[0] != 1 or not wav.is_floating_point():
        raise AudioError(f"voice clip {name}: expected mono float samples shaped (N,) or (1, N), got {tuple(wav.shape)} {wav.dtype}")
    if wav.shape[1] == 0:
        raise AudioError(f"voice clip {name} is empty; give a clip of a few seconds of clear speech")
    if wav.shape[1] < MIN_CLIP_SECONDS * CONDITIONING_SAMPLE_RATE:
        seconds = wav.shape[1] / CONDITIONING_SAMPLE_RATE
        raise AudioError(
            f"voice clip {name} lasts {seconds:.2f} s; give at least {MIN_CLIP_SECONDS:g} s of speech (Tortoise reads "
            "6 s of each clip for the decoder and 4.3 s for the diffusion decoder, zero-padding shorter ones; "
            "6-10 s clips work best)"
        )
    if not torch.isfinite(wav).all():
        raise AudioError(f"voice clip {name} contains NaN or infinite samples; re-export it")
    if not wav.abs().max() > 0:
        raise AudioError(f"voice clip {name} is silent (all zeros); give a clip with speech in it")
    return wav


@torch.inference_mode()
def autoregressive_conditioning(
    model: AutoregressiveModel,
    clips: Sequence[Tensor],
    mel_norms: Tensor,
    rng: random.Random | None = None,
) -> Tensor:
    """22.05 kHz clips -> (C,) latent: each clip padded/cropped to 6 s, mel'd, encoded; mean over clips (quirk 5, 6).

    `rng` chooses crop starts for clips longer than 6 s (a seeded `random.Random` makes them repeatable).
    """
    if not clips:
        raise AudioError("no voice clips given; pass at least one reference clip")
    mels = [format_conditioning(check_clip(clip, f"#{i + 1}"), mel_norms, rng) for i, clip in enumerate(clips)]
    stacked = torch.stack(mels, dim=1).to(model.device, model.dtype)  # (1, clips, 80, T)
    return model.get_conditioning(stacked)[0]


@torch.inference_mode()
def diffusion_conditioning(model: DiffusionModel, clips: Sequence[Tensor]) -> Tensor:
    """22.05 kHz clips -> (2C',) latent: each clip resampled to 24 kHz, its first 102400 samples mel'd (quirk 5),
    encoded, and the clips' encodings averaged over time together (quirk 6)."""
    if not clips:
        raise AudioError("no voice clips given; pass at least one reference clip")
    mels = [diffusion_conditioning_mel(check_clip(clip, f"#{i + 1}")) for i, clip in enumerate(clips)]
    stacked = torch.stack(mels, dim=1).to(model.device, model.dtype)  # (1, clips, 100, T)
    return model.get_conditioning(stacked)[0]
