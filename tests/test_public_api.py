"""The public surface is pinned: a change to it is deliberate. Importing the package stays light."""

from __future__ import annotations

import subprocess
import sys

import pytest

import tortoise_clvp

PUBLIC = {
    "AudioError", "CandidateResult", "CheckpointError", "Conditioning", "DecodingOptions", "FAITHFUL_DECODING",
    "FAITHFUL_SAMPLING", "GenerationOptions", "InputTextError", "LongSpeech", "OptionsError", "PRESETS",
    "SamplerOptions", "SamplingOptions", "Speech", "SpeechChunk", "TextToSpeech", "TortoiseClvpError", "generate",
    "list_voices", "preset", "resolve_voice", "speak_long", "stream_speech", "voice_conditioning",
}


def test_public_names_are_pinned():
    assert set(tortoise_clvp.__all__) == PUBLIC
    assert all(hasattr(tortoise_clvp, name) for name in PUBLIC)
    assert PUBLIC <= set(dir(tortoise_clvp))
    with pytest.raises(AttributeError, match="no attribute 'nothing_here'"):
        tortoise_clvp.nothing_here  # noqa: B018


def test_importing_the_package_does_not_import_torch():
    code = "import sys, tortoise_clvp; print('torch' in sys.modules, tortoise_clvp.list_voices.__module__)"
    result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True)
    assert result.returncode == 0, result.stderr
    assert result.stdout.split() == ["False", "tortoise_clvp.voices"]  # listing voices needs no torch either


def test_module_level_generate_reuses_loaded_models(tiny_model_dir, speech_clip, monkeypatch):
    from tortoise_clvp import api
    from tortoise_clvp.pipeline.samplers import SamplerOptions
    from tortoise_clvp.presets import GenerationOptions

    api._shared.cache_clear()
    loads = []
    real = api.TextToSpeech.from_local
    monkeypatch.setattr(api.TextToSpeech, "from_local", classmethod(lambda cls, *a, **k: loads.append(1) or real(*a, **k)))
    options = GenerationOptions(
        decoding=tortoise_clvp.DecodingOptions(num_candidates=2, batch_size=2, max_new_tokens=10),
        diffusion=SamplerOptions(sampler="ddim", steps=2),
    )
    first = tortoise_clvp.generate("Hello.", [speech_clip], options, seed=1, models_dir=tiny_model_dir)
    second = tortoise_clvp.generate("Hello.", [speech_clip], options, seed=1, models_dir=tiny_model_dir)
    assert len(loads) == 1 and first.sample_rate == 24000
    assert (first.waveform == second.waveform).all()
    api._shared.cache_clear()
