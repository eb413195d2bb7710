"""Turning a rendered or recorded clip into the corpus's two training clips: silence trimmed, loudness evened
out, then resampled to 22.05 kHz (conditioning mels, speech codes) and 24 kHz (diffusion and vocoder targets).

Trimming and loudness are measured on 256-sample frames: frames more than 40 dB below the loudest are silence; at
most 0.1 s of it is kept at either end. Speech frames are brought to -20 dBFS RMS, then the clip is scaled down if a
peak would pass 0.95, so every voice and every recording reaches the models at a similar level.
"""

from __future__ import annotations

import numpy as np
import torch
import torchaudio.functional as AF

from ..frontend.mel import CONDITIONING_SAMPLE_RATE, OUTPUT_SAMPLE_RATE

FRAME_SAMPLES = 256
SILENCE_BELOW_PEAK_DB = 40.0
KEEP_SILENCE_SECONDS = 0.1
TARGET_SPEECH_DBFS = -20.0
PEAK_LIMIT = 0.95


def _frame_rms(samples: np.ndarray) -> np.ndarray:
    frames = len(samples) // FRAME_SAMPLES + (len(samples) % FRAME_SAMPLES > 0)
    padded = np.zeros(frames * FRAME_SAMPLES, dtype=np.float64)
    padded[: len(samples)] = samples
    return np.sqrt((padded.reshape(frames, FRAME_SAMPLES) ** 2).mean(axis=1))


def trim_and_level(samples: np.ndarray, sample_rate: int) -> np.ndarray:
    """(N,) float audio with long leading/trailing silence cut and speech at TARGET_SPEECH_DBFS (float32).

    A silent clip comes back empty: the caller decides what that means.
    """
    samples = np.asarray(samples, dtype=np.float64)
    rms = _frame_rms(samples)
    if rms.size == 0 or rms.max() <= 0:
        return np.zeros(0, dtype=np.float32)
    speech = rms >= rms.max() * 10 ** (-SILENCE_BELOW_PEAK_DB / 20)
    first, last = np.flatnonzero(speech)[[0, -1]]
    keep = int(KEEP_SILENCE_SECONDS * sample_rate)
    start = max(0, first * FRAME_SAMPLES - keep)
    end = min(len(samples), (last + 1) * FRAME_SAMPLES + keep)
    clip = samples[start:end]
    speech_rms = np.sqrt((rms[speech] ** 2).mean())
    clip = clip * (10 ** (TARGET_SPEECH_DBFS / 20) / speech_rms)
    peak = np.abs(clip).max()
    if peak > PEAK_LIMIT:
        clip = clip * (PEAK_LIMIT / peak)
    return clip.astype(np.float32)


def training_clips(samples: np.ndarray, sample_rate: int) -> tuple[torch.Tensor, torch.Tensor]:
    """The trimmed, levelled clip at 22.05 kHz and at 24 kHz, each (1, N) float32."""
    wav = torch.from_numpy(trim_and_level(samples, sample_rate))[None]
    if wav.shape[-1] == 0:
        return wav, wav
    return tuple(
        wav if rate == sample_rate else AF.resample(wav, sample_rate, rate)
        for rate in (CONDITIONING_SAMPLE_RATE, OUTPUT_SAMPLE_RATE)
    )  # type: ignore[return-value]
