"""The voices a server offers: named voices (bundled, user folders), `random`, combinations `a&b` of named ones, and
clips uploaded through the API.

Voice names from requests are looked up, never resolved as paths: anything that looks like a path is refused with
a clear message. Conditionings are computed once per voice and kept in memory (and in the latent cache folder).
Uploaded clips are written to a temporary folder only while their latents are computed, never into `voices/`; the
voice they make is known by an id derived from the clips' contents (the same clips give the same id).
"""

from __future__ import annotations

import hashlib
import tempfile
import threading
from collections import OrderedDict
from dataclasses import dataclass
from pathlib import Path

import soundfile

from ..api import TextToSpeech
from ..errors import AudioError
from ..pipeline.conditioning import Conditioning
from ..voices import RANDOM_VOICE, VoiceSpec, list_voices, voice_latents
from .settings import ServeSettings

UPLOAD_PREFIX = "upload-"
_ID_HEX = 16  # hex digits of the content hash in an uploaded voice's id
_PATH_MARKS = ("/", "\\", "..", "~", "\x00")


class UnknownVoice(AudioError):
    """The request names a voice this server does not have."""


@dataclass(frozen=True)
class ServedVoice:
    """A voice as `GET /v1/audio/voices` lists it; source: bundled, user, upload or random."""

    id: str
    name: str
    source: str


@dataclass(frozen=True)
class Clip:
    """One uploaded clip: the client's file name (for messages only) and its bytes."""

    filename: str
    data: bytes


class VoiceBook:
    """Looks voices up by name, computes and keeps their conditionings, and takes uploads (see the module notes)."""

    def __init__(self, tts: TextToSpeech, settings: ServeSettings):
        self.tts, self.settings = tts, settings
        self._named: dict[str, Conditioning] = {}
        self._uploads: OrderedDict[str, tuple[ServedVoice, Conditioning]] = OrderedDict()
        self._lock = threading.Lock()

    def list(self) -> list[ServedVoice]:
        named = [ServedVoice(v.name, v.name, v.source) for v in list_voices(self.settings.voices_dirs)]
        with self._lock:
            uploads = [voice for voice, _ in self._uploads.values()]
        return [*named, ServedVoice(RANDOM_VOICE, RANDOM_VOICE, "random"), *uploads]

    def conditioning(self, voice: str, seed: int) -> Conditioning:
        """The conditioning of `voice` (a name, `random` drawn from `seed`, `a&b`, or an uploaded voice's id)."""
        if not voice or any(mark in voice for mark in _PATH_MARKS) or voice.startswith("."):
            raise UnknownVoice(f"voice {voice!r} is not a voice name: paths are not accepted; {self._choices()}")
        if voice == RANDOM_VOICE:
            return voice_latents(self.tts, RANDOM_VOICE, seed=seed).conditioning
        with self._lock:
            upload = self._uploads.get(voice)
            known = upload[1] if upload is not None else self._named.get(voice)
        if known is not None:
            return known
        registry = {v.name: v for v in list_voices(self.settings.voices_dirs)}
        names = voice.split("&")
        missing = [name for name in names if name not in registry]
        if missing:
            raise UnknownVoice(f"unknown voice {missing[0]!r}; {self._choices()}")
        parts = tuple(VoiceSpec(v.name, "named", v.clips, source=v.source, folder=v.folder)
                      for v in (registry[name] for name in names))
        spec = parts[0] if len(parts) == 1 else VoiceSpec(voice, "combined", sum((p.clips for p in parts), ()), parts)
        conditioning = voice_latents(self.tts, spec, self.settings.cache_dir).conditioning
        with self._lock:
            self._named[voice] = conditioning
        return conditioning

    def add_upload(self, clips: list[Clip], name: str | None = None) -> ServedVoice:
        """A new voice from uploaded clips (checked: count, size, readable audio, duration); its id is returned."""
        settings = self.settings
        if not clips:
            raise AudioError("no clips uploaded; send one or more audio files in the 'files' field")
        if len(clips) > settings.max_upload_files:
            raise AudioError(f"{len(clips)} clips uploaded; at most {settings.max_upload_files} per voice")
        digest = hashlib.sha256()
        for clip in sorted(clips, key=lambda c: hashlib.sha256(c.data).digest()):
            digest.update(hashlib.sha256(clip.data).digest())
        voice_id = UPLOAD_PREFIX + digest.hexdigest()[:_ID_HEX]
        with tempfile.TemporaryDirectory(prefix="clvp-upload-") as folder:
            paths = [self._checked_clip(Path(folder), index, clip) for index, clip in enumerate(clips)]
            spec = VoiceSpec(name or voice_id, "folder", tuple(paths))
            conditioning = voice_latents(self.tts, spec, settings.cache_dir).conditioning
        served = ServedVoice(voice_id, name or voice_id, "upload")
        with self._lock:
            self._uploads[voice_id] = (served, conditioning)
            self._uploads.move_to_end(voice_id)
            while len(self._uploads) > settings.max_uploaded_voices:
                self._uploads.popitem(last=False)
        return served

    def _checked_clip(self, folder: Path, index: int, clip: Clip) -> Path:
        settings = self.settings
        shown = clip.filename or f"clip {index + 1}"
        if len(clip.data) > settings.max_upload_bytes:
            raise AudioError(f"{shown} is {len(clip.data)} bytes; clips may be at most {settings.max_upload_bytes}")
        if not clip.data:
            raise AudioError(f"{shown} is empty; upload a recording of a few seconds of speech")
        path = folder / f"clip_{index}"
        path.write_bytes(clip.data)
        try:
            info = soundfile.info(str(path))
        except (soundfile.SoundFileError, RuntimeError) as error:
            raise AudioError(f"{shown} is not audio this server can read ({error}); upload wav, flac, ogg or mp3") from None
        if info.duration > settings.max_clip_seconds:
            raise AudioError(
                f"{shown} lasts {info.duration:.1f} s; clips may be at most {settings.max_clip_seconds:g} s "
                "(6-10 s of clear speech is what the model uses)"
            )
        return path

    def _choices(self) -> str:
        names = [voice.id for voice in self.list()]
        return f"available voices: {', '.join(names)} (and 'a&b' to combine named voices)"
