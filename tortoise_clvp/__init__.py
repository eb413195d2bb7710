"""tortoise_clvp: a fast, faithful inference engine for the Tortoise text-to-speech pipeline."""

from .api import CandidateResult, TextToSpeech
from .conditioning import Conditioning
from .errors import AudioError, CheckpointError, InputTextError, OptionsError, TortoiseClvpError
from .generate import FAITHFUL_DECODING, DecodingOptions
from .sampling import FAITHFUL_SAMPLING, SamplingOptions

__all__ = [
    "AudioError",
    "CandidateResult",
    "CheckpointError",
    "Conditioning",
    "DecodingOptions",
    "FAITHFUL_DECODING",
    "FAITHFUL_SAMPLING",
    "InputTextError",
    "OptionsError",
    "SamplingOptions",
    "TextToSpeech",
    "TortoiseClvpError",
]
