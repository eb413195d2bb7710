"""The conditioning mel's per-band normalisation, measured on the corpus.

Tortoise divides the 80-band conditioning log-mel band by band by `mel_norms.pth`: an (80,) float32 tensor holding
each band's mean log-mel energy over its training speech (all negative: log of energies below 1). Dividing by it
brings every band to about 1, whatever its typical level. We measure the same statistic on our training clips:
the mean over every frame of every clip, so longer clips weigh more, as they did in the original's measurement.
"""

from __future__ import annotations

import io
from pathlib import Path
from typing import Callable, Sequence

import torch

from ..atomic import write_bytes_atomic
from ..frontend.audio import load_audio
from ..frontend.mel import CONDITIONING_N_MELS, CONDITIONING_SAMPLE_RATE, N_FFT, conditioning_mel

_UNIT_NORMS = torch.ones(CONDITIONING_N_MELS)


def compute_mel_norms(clips: Sequence[Path], on_clip: Callable[[int], None] = lambda done: None) -> torch.Tensor:
    """(80,) float32 mean log-mel per band over every frame of these 22.05 kHz clips."""
    total = torch.zeros(CONDITIONING_N_MELS, dtype=torch.float64)
    frames = 0
    for done, path in enumerate(clips, 1):
        wav = load_audio(path, CONDITIONING_SAMPLE_RATE)
        if wav.shape[-1] > N_FFT // 2:  # shorter clips have no frame the mel can compute
            mel = conditioning_mel(wav[0], _UNIT_NORMS)  # (80, T) unnormalised log-mel
            total += mel.sum(dim=1, dtype=torch.float64)
            frames += mel.shape[1]
        on_clip(done)
    if frames == 0:
        raise ValueError("no audio to measure the mel norms on")
    return (total / frames).to(torch.float32)


def save_mel_norms(path: Path, norms: torch.Tensor) -> Path:
    """Write the norms as Tortoise's mel_norms.pth is written (a plain tensor, torch.save), atomically."""
    buffer = io.BytesIO()
    torch.save(norms.detach().to("cpu", torch.float32).contiguous(), buffer)
    return write_bytes_atomic(path, buffer.getvalue())
