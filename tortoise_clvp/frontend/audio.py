"""Reading and writing audio files: voice clips in (:func:`load_audio`), speech out (:func:`save_audio`).

Audio tensors are float32 in [-1, 1], shaped (channels, samples) with one channel. Shaping clips into conditioning
mels lives in `tortoise_clvp.pipeline.conditioning`.
"""

from __future__ import annotations

import numbers
import os
from pathlib import Path

import numpy as np
import soundfile
import torch
import torchaudio.functional as AF

from tortoise_clvp.atomic import atomic_write
from tortoise_clvp.errors import AudioError

__all__ = ["load_audio", "pcm16_bytes", "save_audio"]

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


_PCM16_FULL_SCALE = 32767  # 1.0 -> 32767 and -1.0 -> -32767, so both signs clip at the same level


def pcm16_bytes(wav: torch.Tensor) -> bytes:
    """(samples,) float audio -> raw little-endian signed 16-bit PCM (no header), for piping into a player.

    Samples are clamped to [-1, 1], scaled by 32767 and rounded to the nearest integer.
    """
    samples = wav.detach().to("cpu", torch.float32).reshape(-1).clamp(-1.0, 1.0)
    return (samples * _PCM16_FULL_SCALE).round().to(torch.int16).numpy().astype("<i2").tobytes()
