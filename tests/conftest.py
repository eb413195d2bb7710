"""Shared fixtures: the golden reference folder and small readers for its files.

The folder comes from `CLVP_REFERENCE_DIR` (default `../shared/reference` beside the repo). Tests read every
size and case list from its JSON, so any folder of the same layout (other seeds, other tiny configs) passes.
"""

from __future__ import annotations

import json
import os
from pathlib import Path

import pytest
import torch
from safetensors.torch import load_file

REPO_ROOT = Path(__file__).resolve().parent.parent


def _reference_dir() -> Path:
    return Path(os.environ.get("CLVP_REFERENCE_DIR", REPO_ROOT.parent / "shared" / "reference")).resolve()


@pytest.fixture(scope="session")
def reference_dir() -> Path:
    path = _reference_dir()
    if not (path / "README.md").is_file():
        pytest.fail(f"golden reference folder not found at {path}; set CLVP_REFERENCE_DIR to it")
    return path


def read_json(path: Path) -> dict:
    with open(path, encoding="utf-8") as handle:
        return json.load(handle)


def read_tensors(path: Path) -> dict[str, torch.Tensor]:
    return load_file(str(path))


@pytest.fixture(scope="session")
def audio_cases(reference_dir: Path) -> dict:
    return read_json(reference_dir / "audio_cases.json")


@pytest.fixture(scope="session")
def audio_tensors(reference_dir: Path) -> dict[str, torch.Tensor]:
    return read_tensors(reference_dir / "audio_cases.safetensors")


@pytest.fixture(autouse=True)
def _deterministic_threads():
    torch.set_num_threads(2)
    yield


@pytest.fixture(scope="session")
def ar_fixture(reference_dir: Path):
    """(model, cases, config.json) for the tiny original autoregressive checkpoint, loaded through our loader."""
    from tortoise_clvp.weights.tortoise_pth import (
        autoregressive_config_from_original_kwargs,
        load_autoregressive_original,
    )

    folder = reference_dir / "models" / "ar_tiny"
    meta = read_json(folder / "config.json")
    model = load_autoregressive_original(folder / "autoregressive.pth", autoregressive_config_from_original_kwargs(meta["kwargs"]))
    return model.eval(), read_tensors(folder / "cases.safetensors"), meta


@pytest.fixture(scope="session")
def tiny_model_dir(reference_dir: Path, tmp_path_factory) -> Path:
    """An original-layout model directory made of the tiny fixture checkpoints, with the sizes shapes can't tell."""
    import shutil

    from tortoise_clvp.weights.tortoise_pth import (
        autoregressive_config_from_original_kwargs,
        clvp_config_from_original_kwargs,
    )

    folder = tmp_path_factory.mktemp("tiny_tortoise")
    models = reference_dir / "models"
    shutil.copyfile(models / "ar_tiny" / "autoregressive.pth", folder / "autoregressive.pth")
    shutil.copyfile(models / "clvp_tiny" / "clvp.pth", folder / "clvp2.pth")
    shutil.copyfile(models / "diffusion_tiny" / "diffusion_decoder.pth", folder / "diffusion_decoder.pth")
    shutil.copyfile(models / "vocoder_tiny" / "vocoder.pth", folder / "vocoder.pth")
    for name in ("tokenizer.json", "mel_norms.pth"):
        shutil.copyfile(reference_dir / "tortoise" / name, folder / name)
    sizes = {
        "autoregressive": autoregressive_config_from_original_kwargs(read_json(models / "ar_tiny" / "config.json")["kwargs"]).to_dict(),
        "clvp": clvp_config_from_original_kwargs(read_json(models / "clvp_tiny" / "config.json")["kwargs"]).to_dict(),
    }
    (folder / "tortoise_clvp.json").write_text(json.dumps(sizes))
    return folder
