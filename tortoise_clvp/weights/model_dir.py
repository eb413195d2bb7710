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
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch

from ..config import AutoregressiveConfig, ClvpConfig, DiffusionConfig, VocoderConfig
from ..errors import CheckpointError, OptionsError, describe
from ..frontend.mel import load_mel_norms
from ..frontend.text import TOKENIZER_FILENAME, BpeTokenizer
from ..models.autoregressive import AutoregressiveModel
from ..models.clvp import ClvpModel
from ..models.diffusion import DiffusionModel
from ..models.vocoder import UnivNetVocoder
from . import hf_clvp, native, tortoise_pth
from .hf_autoregressive import load_autoregressive_hf
from .original_diffusion import DIFFUSION_CHECKPOINT, load_diffusion_original
from .original_vocoder import VOCODER_CHECKPOINT, load_vocoder_original

MEL_NORMS_FILE = "mel_norms.pth"
MODEL_DTYPES = (torch.float32, torch.bfloat16, torch.float16)
HF_WEIGHT_FILES = (hf_clvp.SAFETENSORS_FILE, hf_clvp.SAFETENSORS_INDEX, hf_clvp.TORCH_FILE)


@dataclass
class LoadedModels:
    """Every model of the pipeline on one device; diffusion and vocoder are None where the folder lacks them."""

    autoregressive: AutoregressiveModel
    clvp: ClvpModel
    tokenizer: BpeTokenizer
    mel_norms: torch.Tensor
    layout: str
    diffusion: DiffusionModel | None = None
    vocoder: UnivNetVocoder | None = None


def detect_layout(path: Path) -> str:
    """'tortoise', 'huggingface' or 'native'; a clear error naming the expected files otherwise."""
    if not path.is_dir():
        state = "is a file, not a folder" if path.exists() else "does not exist"
        raise CheckpointError(
            f"model directory {path} {state}. Put the released Tortoise files (autoregressive.pth, "
            "clvp2.pth, tokenizer.json, mel_norms.pth) in a folder and pass that folder's path."
        )
    if (path / native.CONFIG_FILE).is_file() and (path / native.weights_file("autoregressive")).is_file():
        return "native"
    if (path / tortoise_pth.AUTOREGRESSIVE_CHECKPOINT).is_file() or (path / tortoise_pth.CLVP_CHECKPOINT).is_file():
        return "tortoise"
    if (path / hf_clvp.CONFIG_FILE).is_file() and any((path / name).is_file() for name in HF_WEIGHT_FILES):
        return "huggingface"
    raise CheckpointError(
        f"{path} holds no model this package can read. Expected one of: "
        f"{tortoise_pth.AUTOREGRESSIVE_CHECKPOINT} + {tortoise_pth.CLVP_CHECKPOINT} (original Tortoise); "
        f"{hf_clvp.CONFIG_FILE} + {hf_clvp.SAFETENSORS_FILE} (Hugging Face CLVP); "
        f"{native.CONFIG_FILE} + {native.weights_file('autoregressive')} (converted), each with "
        f"{TOKENIZER_FILENAME} and {MEL_NORMS_FILE} beside them."
    )


def _required(path: Path, name: str, what: str) -> Path:
    file = path / name
    if not file.is_file():
        raise CheckpointError(f"{path} lacks {name} ({what}); put it in the model directory and try again.")
    return file


def _read_json(file: Path) -> dict[str, Any]:
    try:
        return json.loads(file.read_text(encoding="utf-8"))
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as exc:
        raise CheckpointError(f"cannot read {file} as JSON ({exc}); restore or re-download it") from None


def _sizes(path: Path) -> dict[str, Any]:
    return _read_json(path / native.CONFIG_FILE) if (path / native.CONFIG_FILE).is_file() else {}


def _load_original_waveform_models(path: Path) -> tuple[DiffusionModel | None, UnivNetVocoder | None]:
    """diffusion_decoder.pth and vocoder.pth if present (sizes from tortoise_clvp.json where it names them)."""
    sizes = _sizes(path)
    diffusion = vocoder = None
    if (path / DIFFUSION_CHECKPOINT).is_file():
        config = DiffusionConfig.from_dict(sizes["diffusion"]) if "diffusion" in sizes else None
        diffusion = load_diffusion_original(path / DIFFUSION_CHECKPOINT, config)
    if (path / VOCODER_CHECKPOINT).is_file():
        config = VocoderConfig.from_dict(sizes["vocoder"]) if "vocoder" in sizes else None
        vocoder = load_vocoder_original(path / VOCODER_CHECKPOINT, config)
    return diffusion, vocoder


def _load_tortoise(path: Path) -> tuple[AutoregressiveModel, ClvpModel]:
    sizes = _sizes(path)
    ar_config = AutoregressiveConfig.from_dict(sizes["autoregressive"]) if "autoregressive" in sizes else None
    clvp_config = ClvpConfig.from_dict(sizes["clvp"]) if "clvp" in sizes else None
    autoregressive = tortoise_pth.load_autoregressive_original(
        _required(path, tortoise_pth.AUTOREGRESSIVE_CHECKPOINT, "the speech-token decoder"), ar_config
    )
    clvp = tortoise_pth.load_clvp_original(_required(path, tortoise_pth.CLVP_CHECKPOINT, "the CLVP scorer"), clvp_config)
    return autoregressive, clvp


def _load_huggingface(path: Path) -> tuple[AutoregressiveModel, ClvpModel]:
    config = _read_json(path / hf_clvp.CONFIG_FILE)
    clvp = hf_clvp.load_clvp_hf(path, config)
    state = hf_clvp.read_hf_clvp_state(path, keep=lambda key: key.startswith(("conditioning_encoder.", "speech_decoder_model.")))
    return load_autoregressive_hf(state, config), clvp


def load_models(path: str | Path, device: str | torch.device = "cpu", dtype: torch.dtype = torch.float32) -> LoadedModels:
    """Load a model directory of any layout; models in eval mode on `device`, the decoder in `dtype`."""
    if dtype not in MODEL_DTYPES:
        raise OptionsError(f"dtype must be one of {', '.join(map(str, MODEL_DTYPES))}, got {dtype!r}")
    path = Path(path).expanduser()
    layout = detect_layout(path)
    tokenizer = BpeTokenizer(_required(path, TOKENIZER_FILENAME, "Tortoise's BPE vocabulary"))
    mel_norms = load_mel_norms(_required(path, MEL_NORMS_FILE, "Tortoise's conditioning mel norms"))
    loader = {"tortoise": _load_tortoise, "huggingface": _load_huggingface, "native": native.load_native}[layout]
    autoregressive, clvp = loader(path)
    diffusion, vocoder = (native.load_native_waveform_models if layout == "native" else _load_original_waveform_models)(path)
    check_parts_fit(autoregressive, diffusion, vocoder, path)
    try:
        device = torch.device(device)
        autoregressive = autoregressive.to(device=device, dtype=dtype).eval()
        clvp = clvp.to(device).eval()
        diffusion = None if diffusion is None else diffusion.to(device=device, dtype=dtype).eval()
        vocoder = None if vocoder is None else vocoder.to(device).eval()
    except (RuntimeError, AssertionError) as exc:
        raise CheckpointError(f"cannot place the models on {device} ({describe(exc)}); choose another device") from None
    return LoadedModels(autoregressive, clvp, tokenizer, mel_norms, layout, diffusion, vocoder)


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
    """Read a model directory of any layout and write it, atomically, in the native format."""
    source, destination = Path(source).expanduser(), Path(destination).expanduser()
    if destination.exists() and not overwrite:  # say so before minutes of loading
        raise CheckpointError(f"{destination} already exists; choose another path or pass overwrite")
    models = load_models(source)
    parts = {"autoregressive": models.autoregressive, "clvp": models.clvp, "diffusion": models.diffusion,
             "vocoder": models.vocoder}
    return native.save_native(destination, {k: v for k, v in parts.items() if v is not None}, source, overwrite)
