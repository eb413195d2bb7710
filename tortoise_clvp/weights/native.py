"""Our native format: safetensors weights in our own names plus one JSON of sizes, read without pickle.

A native directory holds ``tortoise_clvp.json`` (format version, each model's config and, optionally, the preset
the model is meant to run with: a small model trained here samples best with other settings than the release), one
``<part>.safetensors`` per model (autoregressive and clvp always; diffusion and vocoder when converted from
a folder that had them), and Tortoise's ``tokenizer.json`` / ``mel_norms.pth`` copied as they are.
`model_dir.convert` writes one from any supported layout, atomically; `model_dir.model_parts` reads it with
`read_meta`, `read_part` and `build_part`.
"""

from __future__ import annotations

import json
import os
import shutil
import tempfile
from pathlib import Path
from typing import Any

import torch
from safetensors.torch import save_file
from torch import nn

from ..config import AutoregressiveConfig, ClvpConfig, DiffusionConfig, DvaeConfig, VocoderConfig
from ..errors import CheckpointError
from ..models.autoregressive import AutoregressiveModel
from ..models.clvp import ClvpModel
from ..models.diffusion import DiffusionModel
from ..models.dvae import DiscreteVae
from ..models.vocoder import UnivNetVocoder
from ..presets import PRESETS
from .strict import load_into_meta_model, read_json, read_safetensors

CONFIG_FILE = "tortoise_clvp.json"
FORMAT_NAME = "tortoise_clvp"
FORMAT_VERSION = 1
ASSET_FILES = ("tokenizer.json", "mel_norms.pth")
MODEL_CARD_FILE = "MODEL_CARD.md"  # what a trained export says about itself: data, recipe, measured metrics
# part name -> (config class, model class); the first two are required, the waveform stage's are optional
PARTS: dict[str, tuple[Any, type[nn.Module]]] = {
    "autoregressive": (AutoregressiveConfig, AutoregressiveModel),
    "clvp": (ClvpConfig, ClvpModel),
    "diffusion": (DiffusionConfig, DiffusionModel),
    "vocoder": (VocoderConfig, UnivNetVocoder),
    "dvae": (DvaeConfig, DiscreteVae),  # models trained here: the speech codes' DVAE (fine-tuning, previews)
}
REQUIRED_PARTS = ("autoregressive", "clvp")
DEFAULT_PRESET_KEY = "default_preset"  # optional: the preset used when a caller names none


def weights_file(part: str) -> str:
    return f"{part}.safetensors"


def read_meta(path: Path) -> dict[str, Any]:
    """The folder's ``tortoise_clvp.json``, checked to be this format and version."""
    meta = read_json(path / CONFIG_FILE, "convert the model again")
    if meta.get("format") != FORMAT_NAME or meta.get("version") != FORMAT_VERSION:
        raise CheckpointError(
            f"{path / CONFIG_FILE} is format {meta.get('format')!r} version {meta.get('version')!r}; this package "
            f"reads {FORMAT_NAME!r} version {FORMAT_VERSION}. Convert the original files again with this version."
        )
    chosen = meta.get(DEFAULT_PRESET_KEY)
    if chosen is not None and chosen not in PRESETS:
        raise CheckpointError(
            f"{path / CONFIG_FILE} names the default preset {chosen!r}, which this package does not have (it has "
            f"{', '.join(PRESETS)}); upgrade tortoise_clvp or remove {DEFAULT_PRESET_KEY!r} from the file"
        )
    return meta


def read_part(path: Path, part: str, meta: bool = False) -> dict[str, torch.Tensor]:
    """A part's stored tensors (only their shapes, as meta tensors, with `meta`)."""
    file = path / weights_file(part)
    if not file.is_file():
        raise CheckpointError(f"{file} is missing; convert the model again (clvp-tts convert SRC DST)")
    return read_safetensors(file, meta=meta)


def build_part(meta: dict[str, Any], part: str, state: dict[str, torch.Tensor], source: str) -> nn.Module:
    """The eval-mode float32 model of `part` with `state` loaded strictly (every key and shape checked; float16
    storage comes back as float32); its config comes from the folder's `meta`. Meta tensors give a meta model."""
    config_class, model_class = PARTS[part]
    try:
        config = config_class.from_dict(meta[part])
    except (KeyError, TypeError, ValueError) as exc:
        raise CheckpointError(
            f"{source}: {CONFIG_FILE} has no valid {part} config ({exc}); convert the model again"
        ) from None
    with torch.device("meta"):
        model = model_class(config)
    return load_into_meta_model(model, state, source)


def save_native(
    destination: str | Path,
    parts: dict[str, nn.Module],
    assets: Path,
    overwrite: bool = False,
    storage_dtype: torch.dtype = torch.float32,
    default_preset: str | None = None,
) -> Path:
    """Write a native directory at `destination`, all or nothing: built in a temporary sibling, then renamed.

    `parts` maps part names (see PARTS) to models; `assets` is the directory holding tokenizer.json and
    mel_norms.pth. An existing destination is refused unless `overwrite`, and replaced only once the new one
    is complete. `storage_dtype` float16 halves the files: the parameters are stored in it, buffers stay float32
    (loading restores float32, or the dtype asked for). `default_preset` names the preset the model runs with
    when a caller names none (None: the package's default).
    """
    if storage_dtype not in (torch.float32, torch.float16):
        raise CheckpointError(f"native weights are stored in float32 or float16, not {storage_dtype}")
    if default_preset is not None and default_preset not in PRESETS:
        raise CheckpointError(f"unknown default preset {default_preset!r}; choose one of {', '.join(PRESETS)}")
    destination = Path(destination).expanduser()
    missing = [part for part in REQUIRED_PARTS if part not in parts]
    if missing or set(parts) - set(PARTS):
        raise CheckpointError(f"a native directory needs {list(REQUIRED_PARTS)} and may add {list(PARTS)}; got {list(parts)}")
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
        meta: dict[str, Any] = {"format": FORMAT_NAME, "version": FORMAT_VERSION}
        if default_preset is not None:
            meta[DEFAULT_PRESET_KEY] = default_preset
        for part, model in parts.items():
            meta[part] = model.config.to_dict()
            weights = {name for name, _ in model.named_parameters()}  # buffers (tables, filters) stay float32
            state = {k: v.detach().to("cpu", storage_dtype if k in weights else torch.float32).contiguous()
                     for k, v in model.state_dict().items()}
            save_file(state, str(staging / weights_file(part)), metadata={"format": FORMAT_NAME})
        (staging / CONFIG_FILE).write_text(json.dumps(meta, indent=1), encoding="utf-8")
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
