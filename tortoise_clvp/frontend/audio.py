"""Reading, writing and shaping voice audio for Tortoise.

A voice clip is read once (:func:`load_audio`, 22.05 kHz) and turned into two conditioning inputs:

* :func:`format_conditioning`: exactly 6 s (132300 samples) of it, zero-padded on the right or cropped at a random
  start, as the 80-band conditioning mel for the autoregressive decoder (and CLVP / CVVP);
* :func:`diffusion_conditioning_mel`: the clip resampled to 24 kHz, cut or padded to its first 102400 samples
  (4.27 s), as the 100-band UnivNet mel for the diffusion decoder.

Audio tensors are float32 in [-1, 1], shaped (channels, samples) with one channel.
"""

from __future__ import annotations

import numbers
import os
import random
from pathlib import Path

import numpy as np
import soundfile
import torch
import torch.nn.functional as F
import torchaudio.functional as AF

from tortoise_clvp.atomic import atomic_write
from tortoise_clvp.errors import AudioError
from tortoise_clvp.frontend.mel import (
    CONDITIONING_SAMPLE_RATE,
    OUTPUT_SAMPLE_RATE,
    conditioning_mel,
    univnet_mel,
)

__all__ = [
    "CONDITIONING_SAMPLE_RATE",
    "OUTPUT_SAMPLE_RATE",
    "CONDITIONING_SAMPLES",
    "DIFFUSION_CONDITIONING_SAMPLES",
    "load_audio",
    "save_audio",
    "pad_or_trim",
    "conditioning_crop_start",
    "crop_conditioning",
    "format_conditioning",
    "diffusion_conditioning_clip",
    "diffusion_conditioning_mel",
]

CONDITIONING_SAMPLES = 132300  # 6 s at 22.05 kHz: what the AR decoder / CLVP see of each voice clip (517 mel frames)
DIFFUSION_CONDITIONING_SAMPLES = 102400  # first 4.27 s at 24 kHz: what the diffusion decoder sees (401 mel frames)

# Integer PCM is scaled by the largest magnitude of its container type, as scipy-read wavs are in the original
# (24-bit samples arrive left-justified in int32, so they too are divided by 2**31).
_INT16_SCALE = 2.0**15
_INT32_SCALE = 2.0**31
_READ_AS = {"PCM_16": ("int16", _INT16_SCALE), "PCM_24": ("int32", _INT32_SCALE), "PCM_32": ("int32", _INT32_SCALE)}

# What save_audio writes for each suffix: (libsndfile format, default subtype).
_WRITE_FORMATS = {
    ".wav": ("WAV", "FLOAT"),  # 32-bit float, lossless, as torchaudio.save wrote the original's float tensors
    ".flac": ("FLAC", "PCM_24"),
    ".ogg": ("OGG", "VORBIS"),
}


def _check_rate(sample_rate: int) -> int:
    if not isinstance(sample_rate, numbers.Integral) or isinstance(sample_rate, bool) or sample_rate <= 0:
        raise AudioError(f"sample_rate must be a positive whole number of Hz, got {sample_rate!r}")
    return int(sample_rate)


# Reading ------------------------------------------------------------------------------------------------------------
def _read_first_channel(path: Path) -> tuple[np.ndarray, int]:
    """Samples of channel 0 as float32 (integer PCM scaled to [-1, 1)) and the file's sample rate."""
    if path.is_dir():
        raise AudioError(f"{path} is a directory, not an audio file; pass one of the clips inside it")
    if not path.exists():
        raise AudioError(f"audio file {path} not found; check the path")
    try:
        info = soundfile.info(str(path))
        read_dtype, scale = _READ_AS.get(info.subtype, ("float32", 1.0))
        data, rate = soundfile.read(str(path), dtype=read_dtype, always_2d=True)
    except PermissionError as exc:
        raise AudioError(f"cannot read audio file {path}: permission denied; make it readable") from exc
    except (soundfile.SoundFileError, RuntimeError, OSError) as exc:
        raise AudioError(
            f"cannot decode audio file {path} ({exc}); it is corrupt or not a format libsndfile reads "
            "(use wav, flac or ogg)"
        ) from exc
    if data.shape[0] == 0:
        raise AudioError(f"audio file {path} contains no samples; record or export the clip again")
    samples = data[:, 0].astype(np.float32)  # the original keeps the first channel, it does not mix down
    if scale != 1.0:
        samples = samples / np.float32(scale)
    if not np.isfinite(samples).all():
        raise AudioError(f"audio file {path} contains NaN or infinite samples; re-export it")
    if not samples.any():
        raise AudioError(f"audio file {path} is silent (every sample of its first channel is 0); use a clip of speech")
    return samples, int(rate)


def load_audio(path: str | os.PathLike, sample_rate: int) -> torch.Tensor:
    """Read a voice clip as a (1, N) float32 tensor at ``sample_rate``, clamped to [-1, 1].

    wav / flac / ogg (anything libsndfile reads). int16 PCM is divided by 2**15, int32 (and 24-bit) by 2**31,
    float is kept as is; only channel 0 of a multi-channel file is kept. Other rates are converted with
    ``torchaudio.functional.resample`` (default windowed-sinc settings). Raises AudioError for a missing, unreadable,
    empty or silent file.
    """
    sample_rate = _check_rate(sample_rate)
    samples, file_rate = _read_first_channel(Path(path))
    wav = torch.from_numpy(samples)[None]
    if file_rate != sample_rate:
        wav = AF.resample(wav, file_rate, sample_rate)
    return wav.clamp_(-1.0, 1.0)


# Writing ------------------------------------------------------------------------------------------------------------
def _to_frames(wav: torch.Tensor | np.ndarray) -> np.ndarray:
    """(N,), (C, N) or (1, C, N) audio to soundfile's (N, C) float32 layout."""
    data = wav.detach().to("cpu", torch.float32).numpy() if isinstance(wav, torch.Tensor) else np.asarray(wav)
    if data.ndim == 3 and data.shape[0] == 1:
        data = data[0]
    if data.ndim == 1:
        data = data[None]
    if data.ndim != 2:
        raise AudioError(f"save_audio expects audio shaped (N,), (channels, N) or (1, channels, N), got {data.shape}")
    if data.shape[1] == 0:
        raise AudioError("save_audio was given zero samples; nothing to write")
    data = data.astype(np.float32, copy=False)
    if not np.isfinite(data).all():
        raise AudioError("save_audio was given NaN or infinite samples; check the generation")
    return np.clip(data, -1.0, 1.0).T


def save_audio(
    path: str | os.PathLike, wav: torch.Tensor | np.ndarray, sample_rate: int, subtype: str | None = None
) -> Path:
    """Write audio atomically: to a temporary file in the same folder, then renamed over ``path``.

    The format comes from the suffix: ``.wav`` (32-bit float unless ``subtype`` says otherwise, e.g. "PCM_16"),
    ``.flac`` (24-bit) or ``.ogg`` (Vorbis). Samples are clamped to [-1, 1]. On any failure nothing is left behind
    and an existing file at ``path`` is untouched. Returns the path written.
    """
    path = Path(path)
    suffix = path.suffix.lower()
    if suffix not in _WRITE_FORMATS:
        raise AudioError(
            f"cannot tell the audio format of {path}: unknown suffix {path.suffix!r}; "
            f"use one of {sorted(_WRITE_FORMATS)}"
        )
    sample_rate = _check_rate(sample_rate)
    file_format, default_subtype = _WRITE_FORMATS[suffix]
    subtype = subtype or default_subtype
    if not soundfile.check_format(file_format, subtype):
        raise AudioError(f"{suffix} files cannot hold {subtype!r} samples; pick another subtype or suffix")
    frames = _to_frames(wav)
    folder = path.parent
    if not folder.is_dir():
        raise AudioError(f"cannot write {path}: folder {folder} does not exist; create it first")
    if path.is_dir():
        raise AudioError(f"cannot write {path}: it is a directory; give a file name")

    try:
        with atomic_write(path) as stream:
            soundfile.write(stream, frames, sample_rate, subtype=subtype, format=file_format)
    except PermissionError as exc:
        raise AudioError(f"cannot write into folder {folder} ({exc.strerror or exc}); check its permissions") from exc
    except (OSError, soundfile.SoundFileError, RuntimeError) as exc:
        raise AudioError(f"could not write {path} ({exc}); nothing was written") from exc
    return path


# Shaping ------------------------------------------------------------------------------------------------------------
def pad_or_trim(wav: torch.Tensor, length: int) -> torch.Tensor:
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


def crop_conditioning(wav: torch.Tensor, rng: random.Random | None = None) -> torch.Tensor:
    """Exactly CONDITIONING_SAMPLES of ``wav`` (last dim): right zero-padded if shorter, a random crop if longer."""
    start = conditioning_crop_start(wav.shape[-1], rng)
    if start is None:
        return pad_or_trim(wav, CONDITIONING_SAMPLES)
    return wav[..., start : start + CONDITIONING_SAMPLES]


def _one_mono_clip(wav: torch.Tensor, what: str) -> torch.Tensor:
    if wav.dim() == 1:
        wav = wav[None]
    if wav.dim() != 2 or wav.shape[0] != 1:
        raise AudioError(f"{what} expects one mono clip shaped (N,) or (1, N), got {tuple(wav.shape)}")
    return wav


def format_conditioning(
    wav: torch.Tensor, mel_norms: torch.Tensor, rng: random.Random | None = None
) -> torch.Tensor:
    """The AR / CLVP conditioning input of one 22.05 kHz clip: (1, 80, 517) normalised log-mel of 6 s of it.

    wav: (N,) or (1, N) from :func:`load_audio`; mel_norms from :func:`tortoise_clvp.frontend.mel.load_mel_norms`;
    rng: see :func:`conditioning_crop_start`. The mel is on the clip's device.
    """
    clip = crop_conditioning(_one_mono_clip(wav, "format_conditioning"), rng)
    return conditioning_mel(clip, mel_norms)


def diffusion_conditioning_clip(wav: torch.Tensor) -> torch.Tensor:
    """A 22.05 kHz clip resampled to 24 kHz and cut or zero-padded to its first DIFFUSION_CONDITIONING_SAMPLES."""
    resampled = AF.resample(wav, CONDITIONING_SAMPLE_RATE, OUTPUT_SAMPLE_RATE)
    return pad_or_trim(resampled, DIFFUSION_CONDITIONING_SAMPLES)


def diffusion_conditioning_mel(wav: torch.Tensor) -> torch.Tensor:
    """The diffusion decoder's conditioning input of one 22.05 kHz clip: (1, 100, 401) UnivNet log-mel.

    wav: (N,) or (1, N) from :func:`load_audio` at CONDITIONING_SAMPLE_RATE. The mel is on the clip's device.
    """
    clip = diffusion_conditioning_clip(_one_mono_clip(wav, "diffusion_conditioning_mel"))
    return univnet_mel(clip)
