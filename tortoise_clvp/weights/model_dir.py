"""A model directory in any supported layout -> the loaded decoder, scorer, tokenizer and mel norms.

Layouts (detected from the files present):
- ``tortoise``: the original release, ``autoregressive.pth`` + ``clvp2.pth``;
- ``huggingface``: a ``ClvpModelForConditionalGeneration`` folder, ``config.json`` + ``model.safetensors``
  (or a sharded index, or ``pytorch_model.bin``);
- ``native``: ours, ``tortoise_clvp.json`` + ``autoregressive.safetensors`` + ``clvp.safetensors``.
Every layout also needs Tortoise's two data files beside the weights: ``tokenizer.json`` and ``mel_norms.pth``.
The waveform stage needs the diffusion decoder and the vocoder: ``diffusion_decoder.pth`` and ``vocoder.pth``
from the original release in any layout (Hugging Face's CLVP repository has neither), or their native
safetensors. A ``tortoise_clvp.json`` in a ``tortoise`` folder supplies sizes that shapes cannot tell.

`model_parts` says which file each model of a folder is read from and how it becomes ours; `load_models` loads
them and `info.describe_model_dir` checks them on the meta device, so both follow the same rules.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable, Mapping

import torch
from torch import nn

from ..config import AutoregressiveConfig, ClvpConfig, DiffusionConfig, VocoderConfig
from ..errors import CheckpointError, OptionsError, describe
from ..frontend.mel import load_mel_norms
from ..frontend.text import TOKENIZER_FILENAME, BpeTokenizer
from ..models.autoregressive import AutoregressiveModel
from ..models.clvp import ClvpModel
from ..models.diffusion import DiffusionModel
from ..models.vocoder import UnivNetVocoder
from . import (
    hf_clvp,
    native,
    original_autoregressive,
    original_clvp,
    original_diffusion,
    original_vocoder,
)
from .hf_autoregressive import HF_AUTOREGRESSIVE_PREFIXES, load_autoregressive_hf
from .original import OriginalFormat, load_part
from .strict import read_json, read_torch_checkpoint

MEL_NORMS_FILE = "mel_norms.pth"
MODEL_DTYPES = (torch.float32, torch.bfloat16, torch.float16)
HF_WEIGHT_FILES = (hf_clvp.SAFETENSORS_FILE, hf_clvp.SAFETENSORS_INDEX, hf_clvp.TORCH_FILE)
LAYOUTS = ("tortoise", "huggingface", "native")
PARTS = ("autoregressive", "clvp", "diffusion", "vocoder")
REQUIRED_PARTS = native.REQUIRED_PARTS  # the candidates stage; the other two make audio
PART_ROLES = {
    "autoregressive": "autoregressive decoder",
    "clvp": "CLVP scorer",
    "diffusion": "diffusion decoder",
    "vocoder": "UnivNet vocoder",
}
ORIGINAL_FORMATS: dict[str, OriginalFormat] = {
    "autoregressive": original_autoregressive.FORMAT,
    "clvp": original_clvp.FORMAT,
    "diffusion": original_diffusion.FORMAT,
    "vocoder": original_vocoder.FORMAT,
}
_CONFIG_CLASSES = {"autoregressive": AutoregressiveConfig, "clvp": ClvpConfig, "diffusion": DiffusionConfig,
                   "vocoder": VocoderConfig}
# the data files every layout needs beside the weights: name -> (what it is, its reader)
DATA_FILES: dict[str, tuple[str, Callable[[Path], Any]]] = {
    TOKENIZER_FILENAME: ("Tortoise's BPE vocabulary", BpeTokenizer),
    MEL_NORMS_FILE: ("Tortoise's conditioning mel norms", load_mel_norms),
}


@dataclass
class LoadedModels:
    """Every model of the pipeline on one device; diffusion and vocoder are None where the folder lacks them.
    `default_preset`: the preset the folder names for callers that name none (None: it names none)."""

    autoregressive: AutoregressiveModel
    clvp: ClvpModel
    tokenizer: BpeTokenizer
    mel_norms: torch.Tensor
    layout: str
    diffusion: DiffusionModel | None = None
    vocoder: UnivNetVocoder | None = None
    default_preset: str | None = None


@dataclass(frozen=True)
class ModelPart:
    """One model of a folder: the file(s) it is stored in, and how it is read and built."""

    part: str
    files: tuple[str, ...]  # relative to the folder: the weights file, or a sharded index then its shards
    read: Callable[[bool], Mapping[str, Any]]  # meta -> the stored state dict (only shapes, as meta tensors)
    build: Callable[[Mapping[str, Any]], nn.Module]  # stored state -> our eval-mode model, every key and shape checked

    def load(self, meta: bool = False) -> nn.Module:
        """The model; with `meta`, built on the meta device from the file's shapes alone (no data read)."""
        return self.build(self.read(meta))


def detect_layout(path: Path) -> str:
    """'tortoise', 'huggingface' or 'native'; a clear error naming the expected files otherwise."""
    if not path.is_dir():
        state = "is a file, not a folder" if path.exists() else "does not exist"
        raise CheckpointError(
            f"model directory {path} {state}. Put the released Tortoise files (autoregressive.pth, "
            "clvp2.pth, tokenizer.json, mel_norms.pth) in a folder and pass that folder's path."
        )
    ar_file, clvp_file = ORIGINAL_FORMATS["autoregressive"].filename, ORIGINAL_FORMATS["clvp"].filename
    if (path / native.CONFIG_FILE).is_file() and (path / native.weights_file("autoregressive")).is_file():
        return "native"
    if (path / ar_file).is_file() or (path / clvp_file).is_file():
        return "tortoise"
    if (path / hf_clvp.CONFIG_FILE).is_file() and any((path / name).is_file() for name in HF_WEIGHT_FILES):
        return "huggingface"
    raise CheckpointError(
        f"{path} holds no model this package can read. Expected one of: "
        f"{ar_file} + {clvp_file} (original Tortoise); "
        f"{hf_clvp.CONFIG_FILE} + {hf_clvp.SAFETENSORS_FILE} (Hugging Face CLVP); "
        f"{native.CONFIG_FILE} + {native.weights_file('autoregressive')} (converted), each with "
        f"{TOKENIZER_FILENAME} and {MEL_NORMS_FILE} beside them."
    )


def required_file(path: Path, name: str, what: str) -> Path:
    """`path / name`, or a clear error saying the folder lacks it."""
    file = path / name
    if not file.is_file():
        raise CheckpointError(f"{path} lacks {name} ({what}); put it in the model directory and try again.")
    return file


def _original_part(path: Path, part: str, sizes: Mapping[str, Any]) -> ModelPart:
    """An original-release .pth; its sizes from tortoise_clvp.json where it names them, else from the shapes."""
    fmt = ORIGINAL_FORMATS[part]

    def build(state: Mapping[str, Any]) -> nn.Module:
        try:
            config = _CONFIG_CLASSES[part].from_dict(sizes[part]) if part in sizes else None
        except (TypeError, ValueError) as exc:
            raise CheckpointError(
                f"{path / native.CONFIG_FILE} has no valid {part} sizes ({exc}); fix or remove it"
            ) from None
        return load_part(fmt, state, config, str(path / fmt.filename))

    return ModelPart(
        part,
        (fmt.filename,),
        lambda meta: read_torch_checkpoint(required_file(path, fmt.filename, f"the {PART_ROLES[part]}"), meta),
        build,
    )


def _native_part(path: Path, part: str, meta_json: dict[str, Any]) -> ModelPart:
    name = native.weights_file(part)
    return ModelPart(
        part,
        (name,),
        lambda meta: native.read_part(path, part, meta),
        lambda state: native.build_part(meta_json, part, dict(state), str(path / name)),
    )


def hf_weight_files(path: Path) -> tuple[str, ...]:
    """The Hugging Face weights files the loader reads: model.safetensors, else the index and its shards, else the
    .bin (model.safetensors when there is none of them, to name what is missing)."""
    if (path / hf_clvp.SAFETENSORS_FILE).is_file():
        return (hf_clvp.SAFETENSORS_FILE,)
    if (path / hf_clvp.SAFETENSORS_INDEX).is_file():
        shards = read_json(path / hf_clvp.SAFETENSORS_INDEX).get("weight_map", {}).values()
        return (hf_clvp.SAFETENSORS_INDEX, *sorted(set(shards)))
    if (path / hf_clvp.TORCH_FILE).is_file():
        return (hf_clvp.TORCH_FILE,)
    return (hf_clvp.SAFETENSORS_FILE,)


def _hf_parts(path: Path) -> dict[str, ModelPart]:
    """The decoder and the scorer of a Hugging Face folder: one checkpoint, each reading its own keys."""
    config = read_json(path / hf_clvp.CONFIG_FILE)
    files = hf_weight_files(path)
    source = str(path / files[0])

    def decoder_keys(key: str) -> bool:
        return key.startswith(HF_AUTOREGRESSIVE_PREFIXES)

    return {
        "autoregressive": ModelPart(
            "autoregressive", files,
            lambda meta: hf_clvp.read_hf_clvp_state(path, decoder_keys, meta),
            lambda state: load_autoregressive_hf(state, config),
        ),
        "clvp": ModelPart(
            "clvp", files,
            lambda meta: hf_clvp.read_hf_clvp_state(path, meta=meta),
            lambda state: hf_clvp.load_clvp_hf(state, config, source),
        ),
    }


def model_parts(path: Path, layout: str) -> dict[str, ModelPart]:
    """The models `load_models` reads from a folder of `layout`: the decoder and the scorer always (reading one whose
    file is missing is an error), the diffusion decoder and the vocoder where the folder has them. Raises
    `CheckpointError` when the folder's own sizes file (tortoise_clvp.json, config.json) cannot be read."""
    if layout == "native":
        meta_json = native.read_meta(path)
        listed = [part for part in PARTS if part in REQUIRED_PARTS or part in meta_json]
        return {part: _native_part(path, part, meta_json) for part in listed}
    sizes = read_json(path / native.CONFIG_FILE) if (path / native.CONFIG_FILE).is_file() else {}
    parts = _hf_parts(path) if layout == "huggingface" else {p: _original_part(path, p, sizes) for p in REQUIRED_PARTS}
    for part in PARTS:
        if part not in parts and (path / ORIGINAL_FORMATS[part].filename).is_file():
            parts[part] = _original_part(path, part, sizes)
    return parts


def load_models(
    path: str | Path, device: str | torch.device = "cpu", dtype: torch.dtype = torch.float32
) -> LoadedModels:
    """Load a model directory of any layout; models in eval mode on `device`, the decoder in `dtype`."""
    if dtype not in MODEL_DTYPES:
        raise OptionsError(f"dtype must be one of {', '.join(map(str, MODEL_DTYPES))}, got {dtype!r}")
    path = Path(path).expanduser()
    layout = detect_layout(path)
    tokenizer, mel_norms = (reader(required_file(path, name, role)) for name, (role, reader) in DATA_FILES.items())
    models = {name: part.load() for name, part in model_parts(path, layout).items()}
    autoregressive, clvp = models["autoregressive"], models["clvp"]
    diffusion, vocoder = models.get("diffusion"), models.get("vocoder")
    check_parts_fit(autoregressive, diffusion, vocoder, path)
    try:
        device = torch.device(device)
        autoregressive = autoregressive.to(device=device, dtype=dtype).eval()
        clvp = clvp.to(device).eval()
        diffusion = None if diffusion is None else diffusion.to(device=device, dtype=dtype).eval()
        vocoder = None if vocoder is None else vocoder.to(device).eval()
    except (RuntimeError, AssertionError) as exc:
        raise CheckpointError(f"cannot place the models on {device} ({describe(exc)}); choose another device") from None
    return LoadedModels(
        autoregressive, clvp, tokenizer, mel_norms, layout, diffusion, vocoder, folder_default_preset(path, layout)
    )


def folder_default_preset(path: Path, layout: str) -> str | None:
    """The preset a model folder names for callers that name none (a native folder's `default_preset`), or None."""
    return native.read_meta(path).get(native.DEFAULT_PRESET_KEY) if layout == "native" else None


def check_parts_fit(
    autoregressive: AutoregressiveModel, diffusion: DiffusionModel | None, vocoder: UnivNetVocoder | None, path: Path
) -> None:
    """Models from different releases or sizes cannot feed each other: say which pair does not fit."""
    if diffusion is not None and diffusion.config.in_latent_channels != autoregressive.config.model_dim:
        raise CheckpointError(
            f"{path}: the diffusion decoder takes {diffusion.config.in_latent_channels}-wide latents but the "
            f"autoregressive decoder makes {autoregressive.config.model_dim}-wide ones; both must come from one release"
        )
    if diffusion is not None and vocoder is not None and vocoder.config.mel_channels != diffusion.config.in_channels:
        raise CheckpointError(
            f"{path}: the vocoder takes {vocoder.config.mel_channels}-band mels but the diffusion decoder makes "
            f"{diffusion.config.in_channels}-band ones; both must come from one release"
        )


def convert(source: str | Path, destination: str | Path, overwrite: bool = False) -> Path:
    """Read a model directory of any layout and write it, atomically, in the native format (keeping the preset
    the folder names)."""
    source, destination = Path(source).expanduser(), Path(destination).expanduser()
    if destination.exists() and not overwrite:  # say so before minutes of loading
        raise CheckpointError(f"{destination} already exists; choose another path or pass overwrite")
    models = load_models(source)
    parts = {"autoregressive": models.autoregressive, "clvp": models.clvp, "diffusion": models.diffusion,
             "vocoder": models.vocoder}
    return native.save_native(destination, {k: v for k, v in parts.items() if v is not None}, source, overwrite,
                              default_preset=models.default_preset)
