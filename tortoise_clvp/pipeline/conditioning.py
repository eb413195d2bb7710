"""Voice conditioning: reference clips -> the latents the decoder and the diffusion decoder are prompted with.

A voice clip is read once (`frontend.audio.load_audio`, 22.05 kHz) and shaped into two conditioning inputs:

* :func:`format_conditioning`: exactly 6 s (132300 samples) of it, zero-padded on the right or cropped at a random
  start, as the 80-band conditioning mel for the autoregressive decoder (and CLVP / CVVP);
* :func:`diffusion_conditioning_mel`: the clip resampled to 24 kHz, cut or padded to its first 102400 samples
  (4.27 s), as the 100-band UnivNet mel for the diffusion decoder.

:func:`autoregressive_conditioning` and :func:`diffusion_conditioning` encode them into a :class:`Conditioning`.
`TextToSpeech.get_conditioning` is the one entry point that reads clips and calls them (see `tortoise_clvp.seeds`
for the crop seed).
"""

from __future__ import annotations

import random
from dataclasses import dataclass
from typing import Sequence

import torch
import torch.nn.functional as F
import torchaudio.functional as AF
from torch import Tensor

from ..errors import AudioError
from ..frontend.mel import CONDITIONING_SAMPLE_RATE, OUTPUT_SAMPLE_RATE, conditioning_mel, univnet_mel
from ..models.autoregressive import AutoregressiveModel
from ..models.diffusion import DiffusionModel

MIN_CLIP_SECONDS = 1.0  # shorter clips carry too little voice to condition on (the original zero-pads anything)
CONDITIONING_SAMPLES = 132300  # 6 s at 22.05 kHz: what the AR decoder / CLVP see of each voice clip (517 mel frames)
DIFFUSION_CONDITIONING_SAMPLES = 102400  # first 4.27 s at 24 kHz: what the diffusion decoder sees (401 mel frames)


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


# Shaping clips into conditioning mels -------------------------------------------------------------------------------
def pad_or_trim(wav: Tensor, length: int) -> Tensor:
    """Keep the first ``length`` samples of the last dimension, zero-padding on the right if there are fewer."""
    samples = wav.shape[-1]
    if samples > length:
        return wav[..., :length]
    if samples < length:
        return F.pad(wav, (0, length - samples))
    return wav


def conditioning_crop_start(num_samples: int, rng: random.Random | None = None) -> int | None:
    """Where format_conditioning crops a clip of ``num_samples``: None if it is not longer than 6 s (no crop),
    else ``rng.randint(0, num_samples - CONDITIONING_SAMPLES)``.

    The random draw happens only when a crop is needed, as in the original, so a seeded ``random.Random`` (or the
    global ``random`` module when rng is None, which the original's ``deterministic_state`` seeds) gives the same
    starts for the same clips in the same order.
    """
    gap = num_samples - CONDITIONING_SAMPLES
    if gap <= 0:
        return None
    return (rng if rng is not None else random).randint(0, gap)


def crop_conditioning(wav: Tensor, rng: random.Random | None = None) -> Tensor:
    """Exactly CONDITIONING_SAMPLES of ``wav`` (last dim): right zero-padded if shorter, a random crop if longer."""
    start = conditioning_crop_start(wav.shape[-1], rng)
    if start is None:
        return pad_or_trim(wav, CONDITIONING_SAMPLES)
    return wav[..., start : start + CONDITIONING_SAMPLES]


def _one_mono_clip(wav: Tensor, what: str) -> Tensor:
    if wav.dim() == 1:
        wav = wav[None]
    if wav.dim() != 2 or wav.shape[0] != 1:
        raise AudioError(f"{what} expects one mono clip shaped (N,) or (1, N), got {tuple(wav.shape)}")
    return wav


def format_conditioning(wav: Tensor, mel_norms: Tensor, rng: random.Random | None = None) -> Tensor:
    """The AR / CLVP conditioning input of one 22.05 kHz clip: (1, 80, 517) normalised log-mel of 6 s of it.

    wav: (N,) or (1, N) from `load_audio`; mel_norms from :func:`tortoise_clvp.frontend.mel.load_mel_norms`;
    rng: see :func:`conditioning_crop_start`. The mel is on the clip's device.
    """
    clip = crop_conditioning(_one_mono_clip(wav, "format_conditioning"), rng)
    return conditioning_mel(clip, mel_norms)


def diffusion_conditioning_clip(wav: Tensor) -> Tensor:
    """A 22.05 kHz clip resampled to 24 kHz and cut or zero-padded to its first DIFFUSION_CONDITIONING_SAMPLES."""
    resampled = AF.resample(wav, CONDITIONING_SAMPLE_RATE, OUTPUT_SAMPLE_RATE)
    return pad_or_trim(resampled, DIFFUSION_CONDITIONING_SAMPLES)


def diffusion_conditioning_mel(wav: Tensor) -> Tensor:
    """The diffusion decoder's conditioning input of one 22.05 kHz clip: (1, 100, 401) UnivNet log-mel.

    wav: (N,) or (1, N) from `load_audio` at CONDITIONING_SAMPLE_RATE. The mel is on the clip's device.
    """
    clip = diffusion_conditioning_clip(_one_mono_clip(wav, "diffusion_conditioning_mel"))
    return univnet_mel(clip)


# Encoding ------------------------------------------------------------------------------------------------------------
@torch.inference_mode()
def autoregressive_conditioning(
    model: AutoregressiveModel,
    clips: Sequence[Tensor],
    mel_norms: Tensor,
    rng: random.Random | None = None,
) -> Tensor:
    """22.05 kHz clips -> (C,) latent: each clip zero-padded or randomly cropped to exactly 6 s, mel'd and encoded on
    its own; the clips' encodings averaged.

    `rng` chooses crop starts for clips longer than 6 s (a seeded `random.Random` makes them repeatable).
    """
    if not clips:
        raise AudioError("no voice clips given; pass at least one reference clip")
    mels = [format_conditioning(check_clip(clip, f"#{i + 1}"), mel_norms, rng) for i, clip in enumerate(clips)]
    stacked = torch.stack(mels, dim=1).to(model.device, model.dtype)  # (1, clips, 80, T)
    return model.get_conditioning(stacked)[0]


@torch.inference_mode()
def diffusion_conditioning(model: DiffusionModel, clips: Sequence[Tensor]) -> Tensor:
    """22.05 kHz clips -> (2C',) latent: each clip resampled to 24 kHz and cut or zero-padded to its first 102400
    samples (no random crop here), mel'd and encoded; then one mean over the time frames of all clips together."""
    if not clips:
        raise AudioError("no voice clips given; pass at least one reference clip")
    mels = [diffusion_conditioning_mel(check_clip(clip, f"#{i + 1}")) for i, clip in enumerate(clips)]
    stacked = torch.stack(mels, dim=1).to(model.device, model.dtype)  # (1, clips, 100, T)
    return model.get_conditioning(stacked)[0]
