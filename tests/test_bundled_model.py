"""The model shipped in the package (tortoise_clvp/assets/model): complete, small, found when nothing else is, and
it speaks: `generate` and the main command make non-silent 24 kHz speech, the same for the same seed."""

from __future__ import annotations

from dataclasses import replace

import pytest
import soundfile
import torch
from typer.testing import CliRunner

from tortoise_clvp import TextToSpeech
from tortoise_clvp.frontend.mel import OUTPUT_SAMPLE_RATE
from tortoise_clvp.presets import preset
from tortoise_clvp.voices import resolve_voice
from tortoise_clvp.weights import discovery
from tortoise_clvp.weights.discovery import BUNDLED_MODEL_DIR, MODELS_ENV, missing_model_files, resolve_models_dir
from tortoise_clvp.weights.native import MODEL_CARD_FILE, PARTS

MAX_BYTES = 40 * 2**20
TEXT = "The boat left the harbour at noon."
SILENCE_RMS = 0.005  # speech levelled to about -20 dBFS has an RMS near 0.1


@pytest.fixture(scope="module")
def tts() -> TextToSpeech:
    return TextToSpeech.from_local(BUNDLED_MODEL_DIR)


@pytest.fixture
def nothing_else(tmp_path, monkeypatch):
    """No folder named, no download, no Hugging Face cache: only the bundled model is left."""
    monkeypatch.delenv(MODELS_ENV, raising=False)
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path / "xdg"))
    monkeypatch.setattr(discovery, "default_cache_dirs", lambda: [])


def _options():
    """The ultra_fast_dpm preset with 4 candidates: quick enough for the suite."""
    options = preset("ultra_fast_dpm")
    return replace(options, decoding=replace(options.decoding, num_candidates=4, batch_size=4))


def test_the_bundled_model_is_complete_small_and_described():
    assert missing_model_files(BUNDLED_MODEL_DIR) is None
    files = list(BUNDLED_MODEL_DIR.iterdir())
    assert sum(f.stat().st_size for f in files) <= MAX_BYTES
    assert {f"{part}.safetensors" for part in PARTS} <= {f.name for f in files}  # every part, the DVAE for fine-tuning
    card = (BUNDLED_MODEL_DIR / MODEL_CARD_FILE).read_text(encoding="utf-8")
    assert "synthetic" in card and "clvp-tts train all" in card


def test_it_is_found_when_nothing_else_is_and_info_describes_it(nothing_else):
    from tortoise_clvp.cli import app

    resolved = resolve_models_dir(None)
    assert resolved.path == BUNDLED_MODEL_DIR and resolved.bundled
    result = CliRunner().invoke(app, ["info"])
    assert result.exit_code == 0, result.output
    assert "Found through the bundled model." in result.stdout and str(BUNDLED_MODEL_DIR / MODEL_CARD_FILE) in result.stdout


def test_it_speaks_the_same_for_the_same_seed(tts):
    voice = resolve_voice("piper_joe").clips
    first, again = (tts.generate(TEXT, voice, _options(), seed=5).waveform for _ in range(2))
    other = tts.generate(TEXT, voice, _options(), seed=6).waveform
    assert torch.equal(first, again) and not torch.equal(first, other)
    wave = first.reshape(-1)
    assert torch.isfinite(wave).all() and 0.5 < wave.numel() / OUTPUT_SAMPLE_RATE < 10.0
    assert wave.pow(2).mean().sqrt() > SILENCE_RMS


def test_the_main_command_speaks_with_it(nothing_else, tmp_path):
    from tortoise_clvp.cli import app

    out = tmp_path / "hello.wav"
    args = ["speak", TEXT, "-o", str(out), "--preset", "ultra_fast_dpm", "--candidates", "4", "--seed", "1"]
    result = CliRunner().invoke(app, args)
    assert result.exit_code == 0, result.output
    assert "bundled" in result.stderr  # said once, on stderr
    samples, rate = soundfile.read(str(out), dtype="float32")
    assert rate == OUTPUT_SAMPLE_RATE and (samples**2).mean() ** 0.5 > SILENCE_RMS
