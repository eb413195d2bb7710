"""The recipe's stage registry and the `clvp-tts train` command."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import soundfile
from typer.testing import CliRunner

from conftest import synth_speech
from tortoise_clvp.cli import app
from tortoise_clvp.train import recipe
from tortoise_clvp.train.config import RecipeConfig
from tortoise_clvp.train.recipe import STAGE_NAMES, Stage, get_stage, run_all

runner = CliRunner()
EXPECTED_STAGES = ("corpus", "tokenizer", "codes", "autoregressive", "clvp", "diffusion", "vocoder", "export")


def test_stages_in_recipe_order():
    assert STAGE_NAMES == EXPECTED_STAGES
    assert all(callable(get_stage(name).load()) for name in STAGE_NAMES)  # every stage is built
    with pytest.raises(ValueError, match="unknown training stage 'bogus'; choose one of corpus, tokenizer"):
        get_stage("bogus")


def test_run_all_runs_every_stage_in_order(monkeypatch, tmp_path: Path):
    ran, announced = [], []
    monkeypatch.setattr(recipe.Stage, "load", lambda self: (lambda work, config, progress: ran.append(self.name)))
    monkeypatch.setattr(recipe, "STAGES", (Stage("a", "", "a"), Stage("b", "", "b")))
    run_all(tmp_path, RecipeConfig.smoke(), lambda *args: None, lambda stage: announced.append(stage.name))
    assert ran == announced == ["a", "b"]


def test_cli_help_lists_the_stages():
    result = runner.invoke(app, ["train", "--help"])
    assert result.exit_code == 0
    assert "corpus, tokenizer, codes, autoregressive, clvp, diffusion, vocoder, export" in " ".join(result.output.split())


def test_cli_unknown_stage(tmp_path: Path):
    result = runner.invoke(app, ["train", "bogus", str(tmp_path)])
    assert result.exit_code == 2
    assert "unknown stage 'bogus'; choose one of corpus, tokenizer" in result.output


def test_cli_options_reach_the_config(monkeypatch, tmp_path: Path):
    seen = {}
    monkeypatch.setattr(recipe, "run_stage", lambda name, work, config, progress: seen.update(name=name, config=config))
    init = tmp_path / "model"
    init.mkdir()
    result = runner.invoke(app, ["train", "tokenizer", str(tmp_path / "w"), "--smoke", "--seed", "7", "--init", str(init)])
    assert result.exit_code == 0, result.output
    assert seen["name"] == "tokenizer"
    assert seen["config"].seed == 7 and seen["config"].init_dir == init
    assert seen["config"].corpus == RecipeConfig.smoke().corpus
    result = runner.invoke(app, ["train", "codes", str(tmp_path / "w"), "--init", str(tmp_path / "absent")])
    assert result.exit_code == 2 and "--init" in result.output and "is not a folder" in result.output


def test_cli_steps_sets_only_that_stage_budget(monkeypatch, tmp_path: Path):
    seen = {}
    monkeypatch.setattr(recipe, "run_stage", lambda name, work, config, progress: seen.update(config=config))
    result = runner.invoke(app, ["train", "diffusion", str(tmp_path / "w"), "--steps", "12345"])
    assert result.exit_code == 0, result.output
    full = RecipeConfig()
    assert seen["config"].diffusion.loop.steps == 12345
    assert seen["config"].diffusion.loop.learning_rate == full.diffusion.loop.learning_rate
    assert seen["config"].autoregressive == full.autoregressive


@pytest.mark.parametrize("stage, steps, message", [
    ("corpus", "10", "only a model stage has a step budget"),
    ("all", "10", "only a model stage has a step budget"),
    ("clvp", "0", "at least 1"),
])
def test_cli_steps_is_refused_where_it_means_nothing(tmp_path: Path, stage, steps, message):
    result = runner.invoke(app, ["train", stage, str(tmp_path / "w"), "--steps", steps])
    assert result.exit_code == 2
    assert "--steps" in result.output and message in result.output
    assert not (tmp_path / "w").exists()


def test_cli_device_reaches_the_config_for_the_decoder_only(monkeypatch, tmp_path: Path):
    seen = {}
    monkeypatch.setattr(recipe, "run_stage", lambda name, work, config, progress: seen.update(config=config))
    result = runner.invoke(app, ["train", "autoregressive", str(tmp_path / "w"), "--device", "cuda:1"])
    assert result.exit_code == 0, result.output
    assert seen["config"].device == "cuda:1"
    for stage in ("diffusion", "all"):
        result = runner.invoke(app, ["train", stage, str(tmp_path / "w"), "--device", "cuda"])
        assert result.exit_code == 2
        assert "--device: only autoregressive can train on 'cuda' so far" in " ".join(result.output.split())
    assert RecipeConfig().with_device("clvp", "cpu").device == "cpu"


def test_cli_corpus_from_data_reports_skipped_items(tmp_path: Path):
    folder = tmp_path / "my_voice"
    (folder / "wavs").mkdir(parents=True)
    for index in range(3):
        soundfile.write(str(folder / "wavs" / f"c{index}.wav"), synth_speech(1.0, 22050, index), 22050)
    soundfile.write(str(folder / "wavs" / "silent.wav"), np.zeros(22050, dtype=np.float32), 22050)
    lines = ["c0|One clip.", "c1|Another clip.", "c2|A third clip.", "silent|Nothing to hear.", "c9|No audio."]
    (folder / "metadata.csv").write_text("\n".join(lines), encoding="utf-8")
    result = runner.invoke(app, ["train", "corpus", str(tmp_path / "work"), "--data", str(folder)])
    assert result.exit_code == 0, result.output
    assert "2 item(s)" in result.output and "rejected.jsonl" in result.output
    assert len((tmp_path / "work" / "corpus" / "metadata.jsonl").read_text().splitlines()) == 3
