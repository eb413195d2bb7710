"""tortoise_clvp: a fast, faithful inference engine for the Tortoise text-to-speech pipeline."""

from .api import CandidateResult, Speech, TextToSpeech, generate
from .errors import (
    AudioError,
    CheckpointError,
    InputTextError,
    OptionsError,
    TortoiseClvpError,
)
from .longform import LongSpeech, SpeechChunk, speak_long, stream_speech
from .pipeline.conditioning import Conditioning
from .pipeline.decoding import FAITHFUL_DECODING, DecodingOptions
from .pipeline.samplers import SamplerOptions
from .pipeline.sampling import FAITHFUL_SAMPLING, SamplingOptions
from .presets import PRESETS, GenerationOptions, preset
from .voices import list_voices, resolve_voice, voice_conditioning

__all__ = [
    "AudioError",
    "CandidateResult",
    "CheckpointError",
    "Conditioning",
    "DecodingOptions",
    "FAITHFUL_DECODING",
    "FAITHFUL_SAMPLING",
    "GenerationOptions",
    "InputTextError",
    "LongSpeech",
    "OptionsError",
    "PRESETS",
    "SamplerOptions",
    "SamplingOptions",
    "Speech",
    "SpeechChunk",
    "TextToSpeech",
    "TortoiseClvpError",
    "generate",
    "list_voices",
    "preset",
    "resolve_voice",
    "speak_long",
    "stream_speech",
    "voice_conditioning",
]
