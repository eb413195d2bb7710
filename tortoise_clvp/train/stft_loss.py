"""Spectral losses for training the vocoder: a multi-resolution STFT loss and a log-mel L1 loss.

The STFT loss (Yamamoto et al., Parallel WaveGAN) compares magnitude spectrograms at several resolutions, so no one
time/frequency trade-off is favoured: at each, the spectral convergence ``||S - S_hat||_F / ||S||_F`` (dominated by
the loud bins) plus the mean absolute difference of log magnitudes (every bin alike). The mel L1 loss compares the
100-band UnivNet log-mels (the vocoder's own input), which weighs frequencies the way the ear does; they are computed
here with an FFT (`log_mel`) rather than `frontend.mel.univnet_mel`'s exact DFT convolution: much cheaper, the same
values up to float rounding near the log floor, and with finite gradients where the audio is silent.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
from torch import Tensor

from ..frontend.mel import HOP_LENGTH, LOG_FLOOR, N_FFT, univnet_mel_filters

# (FFT size, hop, window length) of each resolution: UnivNet's three, around the vocoder's own 1024 / 256
STFT_RESOLUTIONS: tuple[tuple[int, int, int], ...] = ((1024, 120, 600), (2048, 240, 1200), (512, 50, 240))
MAGNITUDE_FLOOR = 1e-7  # |S| is computed as sqrt(|S|^2 + floor^2): finite logs, and gradients even for near silence


@dataclass(frozen=True)
class SpectralLosses:
    """The loss terms of one batch (scalars): spectral convergence and log magnitude averaged over the STFT
    resolutions, and the log-mel L1."""

    spectral_convergence: Tensor
    log_magnitude: Tensor
    mel_l1: Tensor

    @property
    def stft(self) -> Tensor:
        """The multi-resolution STFT loss: spectral convergence + log magnitude."""
        return self.spectral_convergence + self.log_magnitude

    def total(self, mel_weight: float) -> Tensor:
        """What training minimises: the STFT loss plus `mel_weight` times the mel L1."""
        return self.stft + mel_weight * self.mel_l1

    def as_floats(self) -> dict[str, float]:
        return {
            "spectral_convergence": self.spectral_convergence.item(),
            "log_magnitude": self.log_magnitude.item(),
            "stft": self.stft.item(),
            "mel_l1": self.mel_l1.item(),
        }


def stft_magnitude(wav: Tensor, fft_size: int, hop: int, window_length: int) -> Tensor:
    """|STFT| of (B, N) audio, Hann window -> (B, fft_size // 2 + 1, frames), softly floored at MAGNITUDE_FLOOR."""
    window = torch.hann_window(window_length, device=wav.device, dtype=wav.dtype)
    spectrum = torch.stft(
        wav, fft_size, hop, window_length, window, center=True, pad_mode="reflect", return_complex=True
    )
    power = spectrum.real**2 + spectrum.imag**2
    return (power + MAGNITUDE_FLOOR**2).sqrt()


def log_mel(wav: Tensor) -> Tensor:
    """The UnivNet log-mel of (B, N) 24 kHz audio -> (B, 100, N // 256 + 1), differentiable everywhere."""
    magnitude = stft_magnitude(wav, N_FFT, HOP_LENGTH, N_FFT)  # (B, 513, frames)
    return torch.log(torch.clamp(univnet_mel_filters(wav.device, wav.dtype) @ magnitude, min=LOG_FLOOR))


def _as_rows(wav: Tensor, what: str) -> Tensor:
    """(B, N) or (B, 1, N) -> (B, N)."""
    if wav.dim() == 3 and wav.shape[1] == 1:
        wav = wav[:, 0]
    if wav.dim() != 2:
        raise ValueError(f"{what} must be audio shaped (batch, samples) or (batch, 1, samples), got {tuple(wav.shape)}")
    return wav


def spectral_losses(
    predicted: Tensor, target: Tensor, resolutions: tuple[tuple[int, int, int], ...] = STFT_RESOLUTIONS
) -> SpectralLosses:
    """Every loss term between `predicted` and `target` audio of the same shape, (B, N) or (B, 1, N) at 24 kHz."""
    predicted, target = _as_rows(predicted, "predicted"), _as_rows(target, "target")
    if predicted.shape != target.shape:
        raise ValueError(f"predicted audio {tuple(predicted.shape)} and target {tuple(target.shape)} differ in shape")
    convergence, log_magnitude = [], []
    for fft_size, hop, window_length in resolutions:
        predicted_mag = stft_magnitude(predicted, fft_size, hop, window_length)  # (B, F, T)
        target_mag = stft_magnitude(target, fft_size, hop, window_length)
        convergence.append(torch.linalg.norm(target_mag - predicted_mag) / torch.linalg.norm(target_mag))
        log_magnitude.append((target_mag.log() - predicted_mag.log()).abs().mean())
    mel_l1 = (log_mel(predicted) - log_mel(target)).abs().mean()
    return SpectralLosses(torch.stack(convergence).mean(), torch.stack(log_magnitude).mean(), mel_l1)
