"""Response audio formats: OpenAI's names (wav, flac, pcm, mp3, opus) plus the other containers soundfile writes.

`pcm` is raw 16-bit little-endian mono samples at 24 kHz with no header, as OpenAI sends it; `wav` is 16-bit PCM.
Streaming (`stream: true`) sends pcm as it comes, or wav with a header whose sizes say "unknown length"
(0xFFFFFFFF, which players read as "until the end of the stream"); the other formats need the whole audio first.
"""

from __future__ import annotations

import io
import struct
from dataclasses import dataclass

import numpy as np
import soundfile

from ..errors import OptionsError

PCM_MAX = 32767  # float [-1, 1] -> signed 16-bit
UNKNOWN_LENGTH = 0xFFFFFFFF  # a RIFF size field meaning "streamed: read to the end"
_UNSUPPORTED = {"aac": "AAC has no encoder here"}


@dataclass(frozen=True)
class AudioFormat:
    """A response format: its media type and how soundfile writes it (container None: raw 16-bit PCM)."""

    name: str
    media_type: str
    container: str | None = None
    subtype: str | None = None

    @property
    def streamable(self) -> bool:
        return self.name in STREAMABLE


_CANDIDATES = (
    AudioFormat("pcm", "audio/pcm"),
    AudioFormat("wav", "audio/wav", "WAV", "PCM_16"),
    AudioFormat("flac", "audio/flac", "FLAC", "PCM_16"),
    AudioFormat("mp3", "audio/mpeg", "MP3", "MPEG_LAYER_III"),
    AudioFormat("opus", "audio/ogg", "OGG", "OPUS"),
    AudioFormat("ogg", "audio/ogg", "OGG", "VORBIS"),
    AudioFormat("aiff", "audio/aiff", "AIFF", "PCM_16"),
    AudioFormat("au", "audio/basic", "AU", "PCM_16"),
    AudioFormat("caf", "audio/x-caf", "CAF", "PCM_16"),
    AudioFormat("w64", "audio/x-w64", "W64", "PCM_16"),
    AudioFormat("rf64", "audio/x-rf64", "RF64", "PCM_16"),
)
FORMATS = {f.name: f for f in _CANDIDATES if f.container is None or soundfile.check_format(f.container, f.subtype)}
STREAMABLE = ("pcm", "wav")


def audio_format(name: str) -> AudioFormat:
    """The format called `name`, or OptionsError listing the ones this server writes."""
    found = FORMATS.get(name)
    if found is None:
        why = f" ({_UNSUPPORTED[name]})" if name in _UNSUPPORTED else ""
        raise OptionsError(f"response_format {name!r} is not supported{why}; use one of {', '.join(FORMATS)}")
    return found


def pcm16(samples: np.ndarray) -> bytes:
    """float samples (n,) -> 16-bit little-endian PCM bytes, clipped to [-1, 1]."""
    return (np.clip(samples, -1.0, 1.0) * PCM_MAX).round().astype("<i2").tobytes()


def wav_stream_header(sample_rate: int) -> bytes:
    """A 44-byte mono 16-bit WAV header for audio of unknown length (streamed)."""
    byte_rate, align = sample_rate * 2, 2
    return (b"RIFF" + struct.pack("<I", UNKNOWN_LENGTH) + b"WAVEfmt "
            + struct.pack("<IHHIIHH", 16, 1, 1, sample_rate, byte_rate, align, 16)
            + b"data" + struct.pack("<I", UNKNOWN_LENGTH))


def encode(samples: np.ndarray, sample_rate: int, fmt: AudioFormat) -> bytes:
    """The whole audio (n,) float in `fmt`."""
    if fmt.container is None:
        return pcm16(samples)
    buffer = io.BytesIO()
    soundfile.write(buffer, np.clip(samples, -1.0, 1.0), sample_rate, subtype=fmt.subtype, format=fmt.container)
    return buffer.getvalue()
