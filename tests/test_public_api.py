"""The public surface is pinned: a change to it is deliberate."""

from __future__ import annotations

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


def test_module_level_generate_reuses_loaded_models(tiny_model_dir, reference_dir, monkeypatch):
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
    clip = [reference_dir / "audio" / "speech_a_22k_mono_s16.wav"]
    first = tortoise_clvp.generate("Hello.", clip, options, seed=1, models_dir=tiny_model_dir)
    second = tortoise_clvp.generate("Hello.", clip, options, seed=1, models_dir=tiny_model_dir)
    assert len(loads) == 1 and first.sample_rate == 24000
    assert (first.waveform == second.waveform).all()
    api._shared.cache_clear()
