"""`TextToSpeech.from_pretrained`: an explicit folder, else $TORTOISE_MODELS_DIR; a named folder without a model is a
clear error, never a silent fallback to another model."""

from __future__ import annotations

import re

import pytest
import torch

from tortoise_clvp.api import TextToSpeech
from tortoise_clvp.errors import CheckpointError

MODELS_ENV = "TORTOISE_MODELS_DIR"


def _assert_same_models(got: TextToSpeech, expected: TextToSpeech) -> None:
    assert got.models.layout == expected.models.layout
    for part in ("clvp", "diffusion", "vocoder"):  # the decoder's linears are packed on CPU: not in its state dict
        ours, theirs = getattr(got.models, part).state_dict(), getattr(expected.models, part).state_dict()
        assert ours.keys() == theirs.keys() and all(torch.equal(ours[key], theirs[key]) for key in ours), part
    torch.testing.assert_close(got.models.mel_norms, expected.models.mel_norms, atol=0, rtol=0)


@pytest.fixture(scope="module")
def expected(tiny_model_dir) -> TextToSpeech:
    return TextToSpeech.from_local(tiny_model_dir)


def test_an_explicit_folder_is_loaded_whatever_the_environment_says(tiny_model_dir, expected, monkeypatch, tmp_path):
    monkeypatch.setenv(MODELS_ENV, str(tmp_path / "not_a_model"))
    _assert_same_models(TextToSpeech.from_pretrained(tiny_model_dir), expected)
    _assert_same_models(TextToSpeech.from_pretrained(str(tiny_model_dir)), expected)


def test_the_environment_variable_names_the_folder(tiny_model_dir, expected, monkeypatch):
    monkeypatch.setenv(MODELS_ENV, str(tiny_model_dir))
    _assert_same_models(TextToSpeech.from_pretrained(), expected)


def test_the_environment_variable_naming_an_empty_folder_is_a_clear_error(monkeypatch, tmp_path):
    empty = tmp_path / "empty"
    empty.mkdir()
    monkeypatch.setenv(MODELS_ENV, str(empty))
    with pytest.raises(CheckpointError, match=rf"\${MODELS_ENV}.*{re.escape(str(empty))}"):
        TextToSpeech.from_pretrained()


def test_an_explicit_folder_without_a_model_is_a_clear_error(tiny_model_dir, monkeypatch, tmp_path):
    monkeypatch.setenv(MODELS_ENV, str(tiny_model_dir))  # a usable model elsewhere must not be used instead
    with pytest.raises(CheckpointError, match=re.escape(str(tmp_path))):
        TextToSpeech.from_pretrained(tmp_path)
