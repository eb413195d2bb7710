"""The whole training recipe at toy scale through the command line, and the exported model speaks."""

from __future__ import annotations

import shutil
from pathlib import Path

import pytest
import torch
from typer.testing import CliRunner

from tortoise_clvp import TextToSpeech
from tortoise_clvp.cli import app
from tortoise_clvp.train.config import EXPORT_DIR, VALID_SPLIT
from tortoise_clvp.train.metadata import corpus_dir, read_metadata
from tortoise_clvp.train.recipe import STAGE_NAMES

pytestmark = pytest.mark.skipif(
    shutil.which("espeak-ng") is None or shutil.which("sox") is None,
    reason="the corpus voices need espeak-ng and sox (apt-get install espeak-ng sox)",
)
runner = CliRunner()


def test_smoke_recipe_trains_and_exports_a_model_that_speaks(tmp_path: Path):
    work = tmp_path / "work"
    result = runner.invoke(app, ["train", "all", str(work), "--smoke"])
    assert result.exit_code == 0, result.output
    for stage in STAGE_NAMES:
        assert f"{stage}: " in result.output and f"{stage}: skipped" not in result.output
    card = (work / EXPORT_DIR / "MODEL_CARD.md").stat().st_mtime_ns

    tts = TextToSpeech.from_local(work / EXPORT_DIR)
    clip = next(u for u in read_metadata(work) if u.split == VALID_SPLIT)
    speech = tts.generate("Hello there.", [corpus_dir(work) / clip.wav_22k], "ultra_fast_dpm", seed=1)
    assert speech.sample_rate == 24000 and speech.waveform.numel() > 0
    assert torch.isfinite(speech.waveform).all()
    again = tts.generate("Hello there.", [corpus_dir(work) / clip.wav_22k], "ultra_fast_dpm", seed=1)
    assert torch.equal(speech.waveform, again.waveform)

    rerun = runner.invoke(app, ["train", "all", str(work), "--smoke"])  # everything finished: nothing is redone
    assert rerun.exit_code == 0, rerun.output
    assert (work / EXPORT_DIR / "MODEL_CARD.md").stat().st_mtime_ns == card
