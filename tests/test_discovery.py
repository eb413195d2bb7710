"""Which model folder is used: --models-dir > $TORTOISE_MODELS_DIR > a download > the Hugging Face cache > the
bundled model; a named folder without a model is an error, never a fallback. Filesystem only, no network."""

from __future__ import annotations

import shutil
from pathlib import Path

import pytest
from typer.testing import CliRunner

from tortoise_clvp.errors import CheckpointError
from tortoise_clvp.weights import discovery
from tortoise_clvp.weights.discovery import (
    BUNDLED_MODEL_DIR,
    MODELS_ENV,
    ResolvedModels,
    missing_model_files,
    resolve_models_dir,
)
from tortoise_clvp.weights.download import TORTOISE_REPO_ID

RELEASE = ["autoregressive.pth", "clvp2.pth", "tokenizer.json", "mel_norms.pth"]


def _hub_cache(root: Path, names: list[str], commit: str = "a" * 40) -> Path:
    """A Hugging Face cache holding a snapshot of the Tortoise release (its filesystem layout only)."""
    repo = root / ("models--" + TORTOISE_REPO_ID.replace("/", "--"))
    (repo / "refs").mkdir(parents=True)
    (repo / "refs" / "main").write_text(commit)
    snapshot = repo / "snapshots" / commit
    snapshot.mkdir(parents=True)
    for name in names:
        (snapshot / name).write_bytes(b"x")
    return snapshot


@pytest.fixture
def places(tmp_path, tiny_model_dir, monkeypatch):
    """Every place holding a model, as keyword arguments of resolve_models_dir; no environment variable set."""
    monkeypatch.delenv(MODELS_ENV, raising=False)
    download_dir = Path(shutil.copytree(tiny_model_dir, tmp_path / "download"))
    bundled = Path(shutil.copytree(tiny_model_dir, tmp_path / "bundled"))
    snapshot = _hub_cache(tmp_path / "cache", RELEASE)
    return dict(download_dir=download_dir, cache_dirs=[tmp_path / "empty_cache", tmp_path / "cache"],
                bundled_dir=bundled), snapshot


def test_the_whole_order(places, tmp_path, tiny_model_dir, monkeypatch):
    kwargs, snapshot = places
    flag = Path(shutil.copytree(tiny_model_dir, tmp_path / "flag"))
    from_env = Path(shutil.copytree(tiny_model_dir, tmp_path / "env"))
    monkeypatch.setenv(MODELS_ENV, str(from_env))
    assert resolve_models_dir(flag, **kwargs) == ResolvedModels(flag, "flag")
    assert resolve_models_dir(None, **kwargs) == ResolvedModels(from_env, "env")
    monkeypatch.delenv(MODELS_ENV)
    assert resolve_models_dir(None, **kwargs) == ResolvedModels(kwargs["download_dir"], "download")
    shutil.rmtree(kwargs["download_dir"])
    assert resolve_models_dir(None, **kwargs) == ResolvedModels(snapshot, "hf_cache")
    shutil.rmtree(tmp_path / "cache")
    resolved = resolve_models_dir(None, **kwargs)
    assert resolved == ResolvedModels(kwargs["bundled_dir"], "bundled") and resolved.bundled
    shutil.rmtree(kwargs["bundled_dir"])
    with pytest.raises(CheckpointError) as caught:
        resolve_models_dir(None, **kwargs)
    message = str(caught.value)
    for needle in ("no model directory given and none found", "--models-dir", MODELS_ENV, "clvp-tts download",
                   "autoregressive.pth", "clvp2.pth", "tokenizer.json", "mel_norms.pth", str(tmp_path / "empty_cache"),
                   str(kwargs["bundled_dir"])):
        assert needle in message


@pytest.mark.parametrize("source", ["flag", "env"])
def test_a_named_folder_without_a_model_is_an_error_not_a_fallback(places, tmp_path, monkeypatch, source):
    kwargs, _ = places
    empty = tmp_path / "empty"
    empty.mkdir()
    if source == "env":
        monkeypatch.setenv(MODELS_ENV, str(empty))
    with pytest.raises(CheckpointError) as caught:
        resolve_models_dir(empty if source == "flag" else None, **kwargs)
    message = str(caught.value)
    assert str(empty) in message and "holds no usable model" in message
    assert ("--models-dir" if source == "flag" else MODELS_ENV) in message


def test_a_named_folder_missing_one_needed_file_is_named(places, tmp_path, tiny_model_dir):
    kwargs, _ = places
    partial = Path(shutil.copytree(tiny_model_dir, tmp_path / "partial"))
    (partial / "mel_norms.pth").unlink()
    with pytest.raises(CheckpointError, match=r"partial lacks mel_norms.pth"):
        resolve_models_dir(partial, **kwargs)
    with pytest.raises(CheckpointError, match="does not exist"):
        resolve_models_dir(tmp_path / "nowhere", **kwargs)


def test_an_incomplete_download_or_bundled_folder_is_skipped(places, tmp_path):
    kwargs, snapshot = places
    (kwargs["download_dir"] / "clvp.safetensors").unlink()
    assert resolve_models_dir(None, **kwargs).source == "hf_cache"
    shutil.rmtree(tmp_path / "cache")
    (kwargs["bundled_dir"] / "tokenizer.json").unlink()
    with pytest.raises(CheckpointError, match="none found"):
        resolve_models_dir(None, **kwargs)


def test_an_incomplete_cached_snapshot_is_named(places, tmp_path):
    kwargs, _ = places
    shutil.rmtree(tmp_path / "cache")
    shutil.rmtree(kwargs["download_dir"])
    shutil.rmtree(kwargs["bundled_dir"])
    snapshot = _hub_cache(tmp_path / "cache", ["autoregressive.pth", "clvp2.pth"])
    with pytest.raises(CheckpointError, match="tortoise/data") as caught:
        resolve_models_dir(None, **kwargs)
    assert str(snapshot) in str(caught.value)


def test_env_pointing_at_an_original_tortoise_cache_finds_its_snapshot(places, tmp_path, monkeypatch):
    kwargs, _ = places
    snapshot = _hub_cache(tmp_path / "tortoise_cache", RELEASE)
    monkeypatch.setenv(MODELS_ENV, str(tmp_path / "tortoise_cache"))
    assert resolve_models_dir(None, **kwargs) == ResolvedModels(snapshot, "env")


def test_missing_model_files_follows_each_layout(tiny_model_dir, tmp_path):
    assert missing_model_files(tiny_model_dir) is None
    original = tmp_path / "original"
    original.mkdir()
    (original / "autoregressive.pth").write_bytes(b"x")
    assert missing_model_files(original) == f"{original} lacks clvp2.pth, tokenizer.json, mel_norms.pth"
    empty = tmp_path / "empty"
    empty.mkdir()
    assert "holds no model" in missing_model_files(empty)


def test_the_bundled_model_lives_in_the_package():
    import tortoise_clvp

    assert BUNDLED_MODEL_DIR == Path(tortoise_clvp.__file__).parent / "assets" / "model"


def test_the_cli_says_once_on_stderr_when_it_uses_the_bundled_model(tiny_model_dir, tmp_path, monkeypatch):
    from tortoise_clvp.cli import app

    monkeypatch.delenv(MODELS_ENV, raising=False)
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path / "xdg"))  # no download there
    monkeypatch.setattr(discovery, "default_cache_dirs", lambda: [])
    monkeypatch.setattr(discovery, "BUNDLED_MODEL_DIR", tiny_model_dir)
    args = ["candidates", "Hello there.", "--voice", "random", "-n", "2", "--max-tokens", "8", "--seed", "1"]
    result = CliRunner().invoke(app, args)
    assert result.exit_code == 0, result.output
    notes = [line for line in result.stderr.splitlines() if "bundled" in line]
    assert len(notes) == 1 and "clvp-tts download" in notes[0]
    assert "bundled" not in result.stdout
    named = CliRunner().invoke(app, [*args, "--models-dir", str(tiny_model_dir)])
    assert named.exit_code == 0 and "bundled" not in named.stderr


def test_info_without_a_folder_describes_the_one_found(tiny_model_dir, tmp_path, monkeypatch):
    from tortoise_clvp.cli import app

    monkeypatch.delenv(MODELS_ENV, raising=False)
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path / "xdg"))
    monkeypatch.setattr(discovery, "default_cache_dirs", lambda: [])
    monkeypatch.setattr(discovery, "BUNDLED_MODEL_DIR", tiny_model_dir)
    result = CliRunner().invoke(app, ["info"])
    assert result.exit_code == 0, result.output
    assert "Found through the bundled model." in result.stdout and f"Model directory: {tiny_model_dir}" in result.stdout
    monkeypatch.setattr(discovery, "BUNDLED_MODEL_DIR", tmp_path / "none")
    missing = CliRunner().invoke(app, ["info"])
    assert missing.exit_code == 2 and "none found" in missing.output and "Traceback" not in missing.output


def test_info_points_at_the_model_card(tiny_model_dir, tmp_path):
    from tortoise_clvp.cli import app
    from tortoise_clvp.weights.native import MODEL_CARD_FILE

    folder = Path(shutil.copytree(tiny_model_dir, tmp_path / "carded"))
    assert "Model card" not in CliRunner().invoke(app, ["info", str(folder)]).stdout
    (folder / MODEL_CARD_FILE).write_text("# Model card\n", encoding="utf-8")
    result = CliRunner().invoke(app, ["info", str(folder)])
    assert result.exit_code == 0 and f"Model card (data, recipe, measured quality): {folder / MODEL_CARD_FILE}" in result.stdout
