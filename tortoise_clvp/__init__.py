"""tortoise_clvp: a fast, faithful inference engine for the Tortoise text-to-speech pipeline.

The public names below are imported on first use (module ``__getattr__``), so ``import tortoise_clvp`` (and the
command line's help, voice listing and argument checks) does not import torch.
"""

from __future__ import annotations

import importlib
from typing import Any

# public name -> the module that defines it
_EXPORTS = {
    "CandidateResult": ".api",
    "Speech": ".api",
    "TextToSpeech": ".api",
    "generate": ".api",
    "AudioError": ".errors",
    "CheckpointError": ".errors",
    "InputTextError": ".errors",
    "OptionsError": ".errors",
    "TortoiseClvpError": ".errors",
    "LongSpeech": ".longform",
    "SpeechChunk": ".longform",
    "speak_long": ".longform",
    "stream_speech": ".longform",
    "Conditioning": ".pipeline.conditioning",
    "DecodingOptions": ".pipeline.decoding",
    "FAITHFUL_DECODING": ".pipeline.decoding",
    "SamplerOptions": ".pipeline.samplers",
    "FAITHFUL_SAMPLING": ".pipeline.sampling",
    "SamplingOptions": ".pipeline.sampling",
    "GenerationOptions": ".presets",
    "PRESETS": ".presets",
    "preset": ".presets",
    "list_voices": ".voices",
    "resolve_voice": ".voices",
    "voice_conditioning": ".voices",
}

__all__ = sorted(_EXPORTS)


def __getattr__(name: str) -> Any:
    if name not in _EXPORTS:
        raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
    value = getattr(importlib.import_module(_EXPORTS[name], __name__), name)
    globals()[name] = value  # the next look-up is an ordinary attribute
    return value


def __dir__() -> list[str]:
    return sorted(set(globals()) | set(__all__))
