"""Reduced precision (`dtype=torch.float16` / `bfloat16`, `--dtype`): the tiny pipeline runs on CPU and stays close
to float32.

The decoder and the diffusion decoder run in the reduced type, CLVP and the vocoder stay float32 (see
`TextToSpeech.from_local`). float16 keeps 10 mantissa bits: on the tiny models it samples the same candidates as float32
for a seed and its audio differs by under 3 %. bfloat16 keeps 7: it is checked for closeness of the conditioning and
for finite audio of the same length.
"""

from __future__ import annotations

from typing import Callable

import pytest
import soundfile
import torch
from typer.testing import CliRunner

from tortoise_clvp.api import Speech, TextToSpeech
from tortoise_clvp.cli import app
from tortoise_clvp.pipeline.decoding import DecodingOptions
from tortoise_clvp.pipeline.samplers import SamplerOptions
from tortoise_clvp.pipeline.sampling import SamplingOptions
from tortoise_clvp.presets import GenerationOptions

TEXT = "Hello, this is a test."
# dtype -> largest relative error of the conditioning latents against float32
CONDITIONING_TOLERANCE = {torch.float16: 5e-3, torch.bfloat16: 3e-2}
FLOAT16_AUDIO_TOLERANCE = 3e-2  # relative error of the waveform for the same seed and candidates
GREEDY_TOKENS = 12


def _relative_error(got: torch.Tensor, expected: torch.Tensor) -> float:
    return ((got.float() - expected.float()).norm() / expected.float().norm()).item()


def _generation() -> GenerationOptions:
    return GenerationOptions(DecodingOptions(num_candidates=2, batch_size=2, max_new_tokens=20),
                             SamplerOptions(sampler="dpm++2m", steps=2))


@pytest.fixture(scope="module")
def float32(tiny_model_dir) -> TextToSpeech:
    return TextToSpeech.from_local(tiny_model_dir)


@pytest.fixture(scope="module")
def float32_speech(float32, speech_clip):
    return float32.generate(TEXT, [speech_clip], _generation(), seed=1)


@pytest.fixture(scope="module")
def reduced(tiny_model_dir, speech_clip) -> Callable[[torch.dtype], tuple[TextToSpeech, Speech]]:
    """dtype -> (the tiny models loaded in it, their speech for TEXT with seed 1), each made once."""
    made: dict[torch.dtype, tuple[TextToSpeech, Speech]] = {}

    def get(dtype: torch.dtype) -> tuple[TextToSpeech, Speech]:
        if dtype not in made:
            tts = TextToSpeech.from_local(tiny_model_dir, dtype=dtype)
            made[dtype] = tts, tts.generate(TEXT, [speech_clip], _generation(), seed=1)
        return made[dtype]

    return get


@pytest.mark.parametrize("dtype", [torch.float16, torch.bfloat16], ids=str)
def test_reduced_precision_runs_the_pipeline_close_to_float32(reduced, float32, float32_speech, speech_clip, dtype):
    tts, speech = reduced(dtype)
    models = tts.models
    assert next(models.autoregressive.parameters()).dtype == dtype and next(models.diffusion.parameters()).dtype == dtype
    assert next(models.clvp.parameters()).dtype == torch.float32 and next(models.vocoder.parameters()).dtype == torch.float32

    conditioning = tts.get_conditioning([speech_clip], seed=0)
    expected = float32.get_conditioning([speech_clip], seed=0)
    assert conditioning.autoregressive.dtype == dtype
    assert _relative_error(conditioning.autoregressive, expected.autoregressive) < CONDITIONING_TOLERANCE[dtype]
    assert _relative_error(conditioning.diffusion, expected.diffusion) < CONDITIONING_TOLERANCE[dtype]

    assert speech.waveform.dtype == torch.float32 and torch.isfinite(speech.waveform).all()
    assert speech.waveform.shape == float32_speech.waveform.shape and speech.waveform.abs().max() > 0.01


def test_float16_samples_the_same_candidates_and_nearly_the_same_audio(reduced, float32, float32_speech, speech_clip):
    tts, speech = reduced(torch.float16)
    greedy = DecodingOptions(sampling=SamplingOptions(do_sample=False), num_candidates=1, batch_size=1,
                             max_new_tokens=GREEDY_TOKENS, min_new_tokens=GREEDY_TOKENS)
    half = tts.candidates(TEXT, [speech_clip], greedy, k=1, seed=0)
    full = float32.candidates(TEXT, [speech_clip], greedy, k=1, seed=0)
    assert torch.equal(half.raw_codes, full.raw_codes)

    assert torch.equal(speech.candidates.raw_codes, float32_speech.candidates.raw_codes)
    assert _relative_error(speech.waveform, float32_speech.waveform) < FLOAT16_AUDIO_TOLERANCE


def test_cli_dtype_float16_writes_audio(tiny_model_dir, speech_clip, tmp_path, monkeypatch):
    monkeypatch.setenv("TORTOISE_CLVP_CACHE", str(tmp_path / "cache"))
    out = tmp_path / "half.wav"
    result = CliRunner().invoke(app, [
        "speak", TEXT, "--voice", str(speech_clip), "--models-dir", str(tiny_model_dir), "--dtype", "float16",
        "--preset", "ultra_fast_dpm", "--candidates", "2", "--steps", "2", "--max-tokens", "16", "--seed", "1",
        "--quiet", "-o", str(out),
    ])
    assert result.exit_code == 0, result.output
    samples, rate = soundfile.read(str(out), dtype="float32")
    assert rate == 24000 and samples.size > 0 and abs(samples).max() > 0.01
