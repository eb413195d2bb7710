"""Listening to speech codes before the diffusion decoder exists: codes -> DVAE decoder -> mel -> Griffin-Lim.

The DVAE's decoder gives back the normalised 80-band conditioning mel; multiplying by the mel norms and taking the
exponential gives mel power; the least-squares inverse of the mel filter bank (clamped at zero) gives a power
spectrogram up to 8 kHz; Griffin-Lim finds a phase for its magnitude. The result is 22.05 kHz audio that sounds
metallic but is intelligible enough for an ASR to score: with ground-truth codes it is the ceiling of this path.
"""

from __future__ import annotations

import functools

import torch
import torchaudio.functional as AF
from torch import Tensor

from ..frontend.mel import HOP_LENGTH, N_FFT, conditioning_mel_filters, hann_window
from ..models.dvae import DiscreteVae

GRIFFIN_LIM_ITERATIONS = 64
GRIFFIN_LIM_MOMENTUM = 0.99  # torchaudio's fast Griffin-Lim
PEAK = 0.9  # previews are scaled to this peak


@functools.lru_cache(maxsize=1)
def _inverse_filters() -> Tensor:
    """(513, 80) least-squares inverse of the conditioning mel filter bank."""
    return torch.linalg.pinv(conditioning_mel_filters().double()).float()


def mel_to_audio(mel: Tensor, mel_norms: Tensor, iterations: int = GRIFFIN_LIM_ITERATIONS) -> Tensor:
    """(80, T) normalised conditioning mel -> ((T - 1) * 256,) samples at 22.05 kHz, peak-normalised (seeded Griffin-Lim:
    the same mel always gives the same audio)."""
    power_mel = torch.exp(mel.float() * mel_norms[:, None])  # undo the norms and the log
    power = (_inverse_filters() @ power_mel).clamp(min=0.0)  # (513, T)
    audio = AF.griffinlim(
        power.sqrt(), hann_window(), N_FFT, HOP_LENGTH, N_FFT, power=1.0, n_iter=iterations,
        momentum=GRIFFIN_LIM_MOMENTUM, length=(mel.shape[1] - 1) * HOP_LENGTH, rand_init=False,
    )
    return audio * (PEAK / audio.abs().max().clamp(min=1e-8))


@torch.inference_mode()
def codes_to_audio(dvae: DiscreteVae, codes: Tensor, mel_norms: Tensor) -> Tensor:
    """(M,) speech codes -> ((4M - 1) * 256,) samples at 22.05 kHz through the DVAE's decoder and Griffin-Lim."""
    if codes.dim() != 1 or codes.numel() == 0:
        raise ValueError(f"expected a non-empty (M,) tensor of codes, got shape {tuple(codes.shape)}")
    return mel_to_audio(dvae.decode(codes[None].long())[0], mel_norms)
