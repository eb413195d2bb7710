"""The command line through typer's CliRunner, on the tiny model directory."""

from __future__ import annotations

from typer.testing import CliRunner

from tortoise_clvp.cli import app

runner = CliRunner()


def test_candidates_ranks_and_reports(tiny_model_dir, reference_dir):
    clip = reference_dir / "audio" / "speech_a_22k_mono_s16.wav"
    args = ["candidates", "Hello there.", "--voice", str(clip), "--models-dir", str(tiny_model_dir),
            "-n", "3", "--batch-size", "2", "--max-tokens", "12", "--seed", "4"]
    result = runner.invoke(app, args)
    assert result.exit_code == 0, result.output
    assert "seed 4; 3 candidates" in result.output
    rows = [line.split() for line in result.output.splitlines() if line.strip()[:1].isdigit()]
    assert [row[0] for row in rows] == ["1", "2", "3"]
    scores = [float(row[2]) for row in rows]
    assert scores == sorted(scores, reverse=True)
    again = runner.invoke(app, args).output
    assert [line for line in again.splitlines() if not line.startswith("timings")] == [
        line for line in result.output.splitlines() if not line.startswith("timings")
    ]


def test_missing_models_and_bad_clip_are_one_line_errors(tmp_path, tiny_model_dir, monkeypatch):
    monkeypatch.delenv("TORTOISE_MODELS_DIR", raising=False)
    result = runner.invoke(app, ["candidates", "Hi.", "--voice", "x.wav"])
    assert result.exit_code != 0 and "--models-dir" in result.output
    result = runner.invoke(app, ["candidates", "Hi.", "--voice", "x.wav", "--models-dir", str(tmp_path / "none")])
    assert result.exit_code == 2 and "does not exist" in result.output and "Traceback" not in result.output
    result = runner.invoke(app, ["candidates", "Hi.", "--voice", str(tmp_path / "x.wav"), "--models-dir", str(tiny_model_dir)])
    assert result.exit_code == 2 and "error:" in result.output


def test_convert_command(tiny_model_dir, tmp_path):
    result = runner.invoke(app, ["convert", str(tiny_model_dir), str(tmp_path / "out")])
    assert result.exit_code == 0 and "wrote" in result.output
    again = runner.invoke(app, ["convert", str(tiny_model_dir), str(tmp_path / "out")])
    assert again.exit_code == 2 and "already exists" in again.output
