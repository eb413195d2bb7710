"""Our native format: safetensors weights in our own names plus one JSON of sizes, read without pickle.

A native directory holds ``tortoise_clvp.json`` (format version and each model's config),
``autoregressive.safetensors``, ``clvp.safetensors``, and Tortoise's ``tokenizer.json`` / ``mel_norms.pth``
copied as they are. `model_dir.convert` writes one from any supported layout, atomically.
"""

from __future__ import annotations

import json
import os
import shutil
import tempfile
from pathlib import Path

import torch
from safetensors import SafetensorError
from safetensors.torch import load_file, save_file

from ..config import AutoregressiveConfig, ClvpConfig
from ..errors import CheckpointError
from ..models.autoregressive import AutoregressiveModel
from ..models.clvp import ClvpModel
from .strict import load_strict

CONFIG_FILE = "tortoise_clvp.json"
AUTOREGRESSIVE_FILE = "autoregressive.safetensors"
CLVP_FILE = "clvp.safetensors"
FORMAT_NAME = "tortoise_clvp"
FORMAT_VERSION = 1
ASSET_FILES = ("tokenizer.json", "mel_norms.pth")


def _read_weights(file: Path) -> dict[str, torch.Tensor]:
    if not file.is_file():
        raise CheckpointError(f"{file} is missing; convert the model again (clvp-tts convert SRC DST)")
    try:
        return load_file(str(file))
    except (SafetensorError, OSError, ValueError) as exc:
        raise CheckpointError(f"cannot read {file} ({str(exc).splitlines()[0][:200]}); it is corrupt: convert again") from None


def load_native(path: Path) -> tuple[AutoregressiveModel, ClvpModel]:
    """Read a native directory into eval-mode float32 models (strict: every key and shape checked)."""
    try:
        meta = json.loads((path / CONFIG_FILE).read_text(encoding="utf-8"))
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as exc:
        raise CheckpointError(f"cannot read {path / CONFIG_FILE} ({exc}); convert the model again") from None
    if meta.get("format") != FORMAT_NAME or meta.get("version") != FORMAT_VERSION:
        raise CheckpointError(
            f"{path / CONFIG_FILE} is format {meta.get('format')!r} version {meta.get('version')!r}; this package "
            f"reads {FORMAT_NAME!r} version {FORMAT_VERSION}. Convert the original files again with this version."
        )
    try:
        ar_config = AutoregressiveConfig.from_dict(meta["autoregressive"])
        clvp_config = ClvpConfig.from_dict(meta["clvp"])
    except (KeyError, TypeError, ValueError) as exc:
        raise CheckpointError(f"{path / CONFIG_FILE} has a bad model config ({exc}); convert the model again") from None
    with torch.device("meta"):
        autoregressive, clvp = AutoregressiveModel(ar_config), ClvpModel(clvp_config)
    load_strict(autoregressive, _read_weights(path / AUTOREGRESSIVE_FILE), str(path / AUTOREGRESSIVE_FILE))
    load_strict(clvp, _read_weights(path / CLVP_FILE), str(path / CLVP_FILE))
    return autoregressive.eval(), clvp.eval()


def save_native(
    destination: str | Path, autoregressive: AutoregressiveModel, clvp: ClvpModel, assets: Path, overwrite: bool = False
) -> Path:
    """Write a native directory at `destination`, all or nothing: built in a temporary sibling, then renamed.

    `assets` is the directory holding tokenizer.json and mel_norms.pth. An existing destination is refused
    unless `overwrite`, and then it is replaced only once the new one is complete.
    """
    destination = Path(destination).expanduser()
    if destination.exists() and not overwrite:
        raise CheckpointError(f"{destination} already exists; choose another path or pass overwrite")
    for name in ASSET_FILES:
        if not (assets / name).is_file():
            raise CheckpointError(f"{assets} lacks {name}; it must sit beside the weights being converted")
    parent = destination.parent
    if not parent.is_dir():
        raise CheckpointError(f"the folder {parent} does not exist; create it first")
    staging = Path(tempfile.mkdtemp(prefix=f".{destination.name}.", dir=parent))
    try:
        meta = {"format": FORMAT_NAME, "version": FORMAT_VERSION,
                "autoregressive": autoregressive.config.to_dict(), "clvp": clvp.config.to_dict()}
        (staging / CONFIG_FILE).write_text(json.dumps(meta, indent=1), encoding="utf-8")
        for model, name in ((autoregressive, AUTOREGRESSIVE_FILE), (clvp, CLVP_FILE)):
            state = {k: v.detach().to("cpu", torch.float32).contiguous() for k, v in model.state_dict().items()}
            save_file(state, str(staging / name), metadata={"format": FORMAT_NAME})
        for name in ASSET_FILES:
            shutil.copyfile(assets / name, staging / name)
        if destination.exists():
            backup = Path(tempfile.mkdtemp(prefix=f".{destination.name}.old.", dir=parent))
            os.replace(destination, backup / destination.name)
            os.replace(staging, destination)
            shutil.rmtree(backup, ignore_errors=True)
        else:
            os.replace(staging, destination)
    except OSError as exc:
        raise CheckpointError(f"cannot write {destination} ({exc}); check the folder is writable and has space") from None
    finally:
        if staging.exists():
            shutil.rmtree(staging, ignore_errors=True)
    return destination

