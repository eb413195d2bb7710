"""What a model directory holds, without loading the weights: `describe_model_dir` and `format_info`.

For each expected file: present or missing, and its size. For each model: its sizes (config), the parameter count
of the model it loads into (counted on a meta-device model, so it equals what `load_models` gives), the numbers
stored in the file, and whether every key and shape fits. Weights are never read: ``.pth`` files are opened with
``torch.load(mmap=True, weights_only=True)`` and only their tensors' shapes are used; ``.safetensors`` files are read
up to their JSON header. Which pipeline stages the folder supports follows: 'candidates' needs the autoregressive
decoder, CLVP, tokenizer.json and mel_norms.pth; 'audio' also needs the diffusion decoder and the vocoder.

A broken file is a *problem* in the result (a string naming the file and what is wrong), never an exception; only a
path that does not exist or is not a folder raises `CheckpointError`.
"""

from __future__ import annotations

import json
import struct
from dataclasses import dataclass, field
from pathlib import Path
from types import SimpleNamespace
from typing import Any, Callable, Mapping

import torch

from ..config import AutoregressiveConfig, ClvpConfig, DiffusionConfig, VocoderConfig
from ..errors import CheckpointError, describe
from ..frontend.text import TOKENIZER_FILENAME
from ..models.autoregressive import AutoregressiveModel
from ..models.clvp import ClvpModel
from ..models.diffusion import DiffusionModel
from ..models.vocoder import UnivNetVocoder
from . import hf_clvp, native
from .hf_autoregressive import (
    autoregressive_config_from_hf,
    autoregressive_state_from_hf,
)
from .original_diffusion import (
    DIFFUSION_CHECKPOINT,
    diffusion_config_from_state,
    diffusion_state_from_original,
)
from .original_vocoder import (
    VOCODER_CHECKPOINT,
    vocoder_config_from_state,
    vocoder_state_from_original,
)
from .strict import check_state_dict, read_torch_checkpoint
from .tortoise_pth import (
    AUTOREGRESSIVE_CHECKPOINT,
    CLVP_CHECKPOINT,
    autoregressive_config_from_state,
    autoregressive_state_from_original,
    clvp_config_from_state,
    clvp_state_from_original,
    guess_checkpoint_kind,
)

MEL_NORMS_FILE = "mel_norms.pth"
STAGES = ("candidates", "audio")
PARTS = ("autoregressive", "clvp", "diffusion", "vocoder")
LAYOUT_NAMES = {
    "tortoise": "original Tortoise release, .pth files",
    "huggingface": "Hugging Face CLVP, config.json + weights",
    "native": "converted, tortoise_clvp safetensors",
}
_STAGE_OF_PART = {"autoregressive": "candidates", "clvp": "candidates", "diffusion": "audio", "vocoder": "audio"}
_MODEL_CLASSES: dict[str, tuple[Any, type[torch.nn.Module]]] = {
    "autoregressive": (AutoregressiveConfig, AutoregressiveModel),
    "clvp": (ClvpConfig, ClvpModel),
    "diffusion": (DiffusionConfig, DiffusionModel),
    "vocoder": (VocoderConfig, UnivNetVocoder),
}
_ROLES = {
    "autoregressive": "autoregressive decoder",
    "clvp": "CLVP scorer",
    "diffusion": "diffusion decoder",
    "vocoder": "UnivNet vocoder",
}
# original .pth slot -> (file name, marker in guess_checkpoint_kind's answer, sizes from shapes, check + convert)
_ORIGINAL: dict[str, tuple[str, str, Callable[..., Any], Callable[..., Any]]] = {
    "autoregressive": (AUTOREGRESSIVE_CHECKPOINT, AUTOREGRESSIVE_CHECKPOINT,
                       lambda s, src: autoregressive_config_from_state(s, source=src), autoregressive_state_from_original),
    "clvp": (CLVP_CHECKPOINT, CLVP_CHECKPOINT, clvp_config_from_state, clvp_state_from_original),
    "diffusion": (DIFFUSION_CHECKPOINT, DIFFUSION_CHECKPOINT, diffusion_config_from_state, diffusion_state_from_original),
    "vocoder": (VOCODER_CHECKPOINT, "vocoder", vocoder_config_from_state, vocoder_state_from_original),
}
# config fields shown by format_info (the full config is in ModelInfo.config)
_SUMMARY_FIELDS = {
    "autoregressive": ("layers", "model_dim", "heads", "max_text_tokens", "max_mel_tokens"),
    "clvp": ("dim_text", "text_enc_depth", "dim_speech", "speech_enc_depth", "dim_latent"),
    "diffusion": ("model_channels", "num_layers", "num_heads", "in_latent_channels"),
    "vocoder": ("channel_size", "noise_dim", "mel_channels", "hop_length"),
}


@dataclass(frozen=True)
class FileStatus:
    """One expected file. ``stage``: the first stage that needs it ('candidates', 'audio'), or 'optional'."""

    name: str
    role: str
    stage: str
    present: bool
    size: int | None = None


@dataclass
class ModelInfo:
    """One model of the folder. ``parameters``: of the model the file loads into (what `load_models` gives);
    ``stored_elements``: numbers stored for it in the file (differs where the loader drops or folds tensors:
    the autoregressive text head and GPT-2 buffers, the vocoder's weight norm). ``ok``: read, and every key and
    shape fits ``config``."""

    part: str
    file: str
    present: bool = False
    ok: bool = False
    parameters: int | None = None
    stored_elements: int | None = None
    dtypes: tuple[str, ...] = ()
    config: dict[str, Any] | None = None


@dataclass
class ModelDirInfo:
    path: Path
    layout: str | None
    files: list[FileStatus] = field(default_factory=list)
    models: dict[str, ModelInfo] = field(default_factory=dict)
    stages: dict[str, bool] = field(default_factory=dict)
    blockers: dict[str, list[str]] = field(default_factory=dict)  # stage -> why it is unusable
    problems: list[str] = field(default_factory=list)

    @property
    def parameters(self) -> dict[str, int]:
        """Parameter count per readable model."""
        return {part: m.parameters for part, m in self.models.items() if m.parameters is not None}

    @property
    def configs(self) -> dict[str, dict[str, Any]]:
        return {part: m.config for part, m in self.models.items() if m.config is not None}

    def file(self, name: str) -> FileStatus | None:
        return next((f for f in self.files if f.name == name), None)


# ---------------------------------------------------------------------------------------------------------------
# Reading shapes only
# ---------------------------------------------------------------------------------------------------------------

_SAFETENSORS_DTYPES = {
    "F64": torch.float64, "F32": torch.float32, "F16": torch.float16, "BF16": torch.bfloat16,
    "I64": torch.int64, "I32": torch.int32, "I16": torch.int16, "I8": torch.int8, "U8": torch.uint8,
    "BOOL": torch.bool,
}


def _to_meta(obj: Any) -> Any:
    """Tensors -> same-shape meta tensors (nested dicts kept): every later check costs nothing and reads no data."""
    if isinstance(obj, torch.Tensor):
        return torch.empty(obj.shape, dtype=obj.dtype, device="meta")
    if isinstance(obj, Mapping):
        return {k: _to_meta(v) for k, v in obj.items()}
    return obj


def _tensors(obj: Any) -> list[torch.Tensor]:
    if isinstance(obj, torch.Tensor):
        return [obj]
    if isinstance(obj, Mapping):
        return [t for v in obj.values() for t in _tensors(v)]
    return []


def _read_pth_shapes(path: Path) -> dict[str, Any]:
    """A .pth state dict as meta tensors (memory-mapped, weights-only read; no tensor data is touched)."""
    return _to_meta(read_torch_checkpoint(path))


def read_safetensors_header(path: Path) -> dict[str, torch.Tensor]:
    """The tensors of a .safetensors file as meta tensors, from its JSON header alone (its length is checked)."""
    try:
        size = path.stat().st_size
        with open(path, "rb") as handle:
            raw = handle.read(8)
            if len(raw) < 8:
                raise ValueError("shorter than a safetensors header")
            (header_len,) = struct.unpack("<Q", raw)
            if header_len > size - 8:
                raise ValueError("the header runs past the end of the file")
            header = json.loads(handle.read(header_len))
        state, end = {}, 0
        for name, entry in header.items():
            if name == "__metadata__":
                continue
            dtype = _SAFETENSORS_DTYPES.get(entry["dtype"])
            if dtype is None:
                raise ValueError(f"tensor {name} has unsupported dtype {entry['dtype']}")
            state[name] = torch.empty(entry["shape"], dtype=dtype, device="meta")
            end = max(end, entry["data_offsets"][1])
        if 8 + header_len + end != size:
            raise ValueError(f"{size} bytes, but its header declares {8 + header_len + end}")
    except (OSError, ValueError, KeyError, TypeError, IndexError) as exc:
        raise CheckpointError(
            f"cannot read {path} as a safetensors file ({describe(exc)}). "
            "The file is corrupt or truncated: convert or download it again."
        ) from None
    return state


def _read_json(path: Path) -> dict[str, Any]:
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as exc:
        raise CheckpointError(f"cannot read {path} as JSON ({exc}); restore or re-download it") from None
    if not isinstance(data, dict):
        raise CheckpointError(f"{path} does not hold a JSON object")
    return data


def _model_shapes_and_count(part: str, config: Any) -> tuple[dict[str, torch.Size], int]:
    """The state-dict shapes and parameter count of our model for `config`, built on the meta device."""
    _, model_class = _MODEL_CLASSES[part]
    with torch.device("meta"):
        model = model_class(config)
    return {k: v.shape for k, v in model.state_dict().items()}, sum(p.numel() for p in model.parameters())


def _describe_error(exc: BaseException, file: str) -> str:
    if isinstance(exc, CheckpointError):
        return str(exc)
    return f"{file}: {describe(exc, 300)}"


# ---------------------------------------------------------------------------------------------------------------
# Per layout
# ---------------------------------------------------------------------------------------------------------------


def _finish_model(info: ModelInfo, part: str, config: Any, converted: Mapping[str, torch.Tensor], what: str) -> None:
    """Check the converted state against our model (as load_strict would) and record the sizes and counts."""
    shapes, count = _model_shapes_and_count(part, config)
    check_state_dict(shapes, converted, what)
    info.config = config.to_dict()
    info.parameters = count
    info.ok = True


def _stored(info: ModelInfo, tensors: list[torch.Tensor]) -> None:
    info.stored_elements = sum(t.numel() for t in tensors)
    info.dtypes = tuple(sorted({str(t.dtype).replace("torch.", "") for t in tensors}))


def _inspect_original(path: Path, part: str, sizes: Mapping[str, Any], problems: list[str]) -> ModelInfo:
    """One original-release .pth (autoregressive.pth, clvp2.pth, diffusion_decoder.pth, vocoder.pth)."""
    name, marker, config_from_state, state_from_original = _ORIGINAL[part]
    file = path / name
    info = ModelInfo(part, name, present=file.is_file())
    if not info.present:
        return info
    try:
        state = _read_pth_shapes(file)
        _stored(info, _tensors(state))
        kind = guess_checkpoint_kind(state)
        if kind is not None and marker not in kind:
            problems.append(f"{file} holds {kind}, not the {_ROLES[part]}: it is in the wrong slot")
            return info
        config_class, _ = _MODEL_CLASSES[part]
        config = config_class.from_dict(sizes[part]) if part in sizes else config_from_state(state, str(file))
        converted = state_from_original(state, config, str(file))
        _finish_model(info, part, config, converted, f"{file} ({_ROLES[part]})")
    except Exception as exc:  # noqa: BLE001 - a broken file is reported, never raised
        problems.append(_describe_error(exc, str(file)))
    return info


def _inspect_native(path: Path, problems: list[str]) -> tuple[dict[str, ModelInfo], list[str]]:
    """The native layout's parts; returns (models, blockers that hit every stage)."""
    models = {part: ModelInfo(part, native.weights_file(part), present=(path / native.weights_file(part)).is_file())
              for part in PARTS}
    try:
        meta = _read_json(path / native.CONFIG_FILE)
        if meta.get("format") != native.FORMAT_NAME or meta.get("version") != native.FORMAT_VERSION:
            raise CheckpointError(
                f"{path / native.CONFIG_FILE} is format {meta.get('format')!r} version {meta.get('version')!r}; this "
                f"package reads {native.FORMAT_NAME!r} version {native.FORMAT_VERSION}: convert the model again"
            )
    except CheckpointError as exc:
        problems.append(str(exc))
        return models, [f"{native.CONFIG_FILE} unreadable"]
    return_blockers: list[str] = []
    for part, info in models.items():
        file = path / info.file
        if not info.present:
            if part in meta:  # the loader reads every part its config lists
                problems.append(f"{native.CONFIG_FILE} lists the {_ROLES[part]} but {file} is missing; "
                                "nothing loads until it is restored (convert the model again)")
                if part in native.REQUIRED_PARTS:
                    continue
                return_blockers.append(f"{info.file} missing but listed in {native.CONFIG_FILE}")
            continue
        if part not in meta:
            problems.append(f"{file} is present but {native.CONFIG_FILE} has no {part} config, so it is ignored")
            info.present = False  # the loader will not see it
            continue
        try:
            state = read_safetensors_header(file)
            _stored(info, list(state.values()))
            config_class, _ = _MODEL_CLASSES[part]
            config = config_class.from_dict(meta[part])
            _finish_model(info, part, config, state, f"{file} ({_ROLES[part]})")
        except Exception as exc:  # noqa: BLE001
            problems.append(_describe_error(exc, str(file)))
    return models, return_blockers


def _hf_weight_files(path: Path) -> list[str]:
    """The HF weights files the loader would read (model.safetensors, else the index and its shards, else .bin)."""
    if (path / hf_clvp.SAFETENSORS_FILE).is_file():
        return [hf_clvp.SAFETENSORS_FILE]
    if (path / hf_clvp.SAFETENSORS_INDEX).is_file():
        try:
            shards = sorted(set(_read_json(path / hf_clvp.SAFETENSORS_INDEX).get("weight_map", {}).values()))
        except CheckpointError:
            shards = []
        return [hf_clvp.SAFETENSORS_INDEX, *shards]
    if (path / hf_clvp.TORCH_FILE).is_file():
        return [hf_clvp.TORCH_FILE]
    return [hf_clvp.SAFETENSORS_FILE]


def _inspect_huggingface(path: Path, problems: list[str]) -> dict[str, ModelInfo]:
    weights = _hf_weight_files(path)
    label = weights[0] if len(weights) == 1 else f"{weights[0]} (+{len(weights) - 1} shards)"
    present = all((path / name).is_file() for name in weights)
    models = {part: ModelInfo(part, label, present=present) for part in ("autoregressive", "clvp")}
    if not present:
        return models
    try:
        config = _read_json(path / hf_clvp.CONFIG_FILE)
        state: dict[str, torch.Tensor] = {}
        for name in weights:
            if name.endswith(".safetensors"):
                state.update(read_safetensors_header(path / name))
            elif not name.endswith(".json"):
                state.update(_read_pth_shapes(path / name))
    except Exception as exc:  # noqa: BLE001
        problems.append(_describe_error(exc, str(path / weights[0])))
        return models
    source = str(path / label)
    clvp = models["clvp"]
    try:
        _stored(clvp, [v for k, v in state.items() if k == "logit_scale" or k.startswith(hf_clvp.HF_CLVP_PREFIXES[:2])])
        clvp_config = hf_clvp.clvp_config_from_hf(config)
        converted = hf_clvp.clvp_state_from_hf(state, clvp_config, source)
        _finish_model(clvp, "clvp", clvp_config, converted, f"{source} (CLVP scorer)")
    except Exception as exc:  # noqa: BLE001
        problems.append(_describe_error(exc, source))
    ar = models["autoregressive"]
    try:
        decoder = [v for k, v in state.items() if k.startswith(hf_clvp.HF_AUTOREGRESSIVE_PREFIXES)]
        _stored(ar, decoder)
        if not any(k.startswith("speech_decoder_model.") for k in state):
            raise CheckpointError(f"{source} has no speech_decoder_model weights: it is not a full "
                                  "ClvpModelForConditionalGeneration")
        ar_config = autoregressive_config_from_hf(config)
        converted = autoregressive_state_from_hf(state, ar_config)
        _finish_model(ar, "autoregressive", ar_config, converted, f"{source} (autoregressive decoder)")
    except Exception as exc:  # noqa: BLE001
        problems.append(_describe_error(exc, source))
    return models


def _files_for(path: Path, layout: str | None) -> list[tuple[str, str, str]]:
    """(name, role, stage) of every file the layout expects."""
    data = [(TOKENIZER_FILENAME, "Tortoise's BPE vocabulary", "candidates"),
            (MEL_NORMS_FILE, "Tortoise's conditioning mel norms", "candidates")]
    if layout == "native":
        return [
            (native.CONFIG_FILE, "sizes of the converted models", "candidates"),
            *((native.weights_file(p), _ROLES[p], _STAGE_OF_PART[p]) for p in ("autoregressive", "clvp")),
            *data,
            *((native.weights_file(p), _ROLES[p], "audio") for p in ("diffusion", "vocoder")),
        ]
    waveform = [(DIFFUSION_CHECKPOINT, _ROLES["diffusion"], "audio"), (VOCODER_CHECKPOINT, _ROLES["vocoder"], "audio")]
    sizes = [(native.CONFIG_FILE, "model sizes shapes cannot tell", "optional")]
    if layout == "huggingface":
        weights = [(name, "Hugging Face CLVP weights (decoder + scorer)", "candidates") for name in _hf_weight_files(path)]
        return [(hf_clvp.CONFIG_FILE, "Hugging Face CLVP config", "candidates"), *weights, *data, *waveform, *sizes]
    return [
        (AUTOREGRESSIVE_CHECKPOINT, _ROLES["autoregressive"], "candidates"),
        (CLVP_CHECKPOINT, _ROLES["clvp"], "candidates"),
        *data,
        *waveform,
        *sizes,
    ]


# ---------------------------------------------------------------------------------------------------------------
# The description
# ---------------------------------------------------------------------------------------------------------------


def describe_model_dir(path: str | Path) -> ModelDirInfo:
    """Describe a model directory (see the module docstring). Raises `CheckpointError` only when `path` does not
    exist or is not a directory; everything wrong inside it is listed in ``problems``."""
    from .model_dir import detect_layout

    path = Path(path).expanduser()
    if not path.exists():
        raise CheckpointError(f"model directory {path} does not exist; pass the folder that holds the weights")
    if not path.is_dir():
        raise CheckpointError(f"{path} is a file, not a model directory; pass the folder that holds it")
    problems: list[str] = []
    try:
        layout: str | None = detect_layout(path)
    except CheckpointError as exc:
        layout = None
        problems.append(str(exc))

    files = []
    for name, role, stage in _files_for(path, layout):
        file = path / name
        files.append(FileStatus(name, role, stage, file.is_file(), file.stat().st_size if file.is_file() else None))
    info = ModelDirInfo(path, layout, files, problems=problems)
    global_blockers: list[str] = []

    if layout == "native":
        info.models, global_blockers = _inspect_native(path, problems)
    elif layout is not None:
        sizes: dict[str, Any] = {}
        if (path / native.CONFIG_FILE).is_file():
            try:
                sizes = _read_json(path / native.CONFIG_FILE)
            except CheckpointError as exc:
                problems.append(str(exc))
                global_blockers.append(f"{native.CONFIG_FILE} unreadable")
        if layout == "huggingface":
            info.models.update(_inspect_huggingface(path, problems))
        else:
            for part in ("autoregressive", "clvp"):
                info.models[part] = _inspect_original(path, part, sizes, problems)
        for part in ("diffusion", "vocoder"):
            info.models[part] = _inspect_original(path, part, sizes, problems)

    data_ok = {}
    if layout is not None:
        data_ok = _check_data_files(path, problems)
    fit = _check_fit(path, info.models, problems)
    info.blockers = _blockers(info, layout, global_blockers, data_ok, fit)
    info.stages = {stage: not info.blockers[stage] for stage in STAGES}
    return info


def _check_data_files(path: Path, problems: list[str]) -> dict[str, bool]:
    from ..frontend.mel import load_mel_norms
    from ..frontend.text import BpeTokenizer

    ok = {}
    for name, reader in ((TOKENIZER_FILENAME, BpeTokenizer), (MEL_NORMS_FILE, load_mel_norms)):
        file = path / name
        if not file.is_file():
            ok[name] = False
            continue
        try:
            reader(file)
            ok[name] = True
        except Exception as exc:  # noqa: BLE001
            problems.append(_describe_error(exc, str(file)))
            ok[name] = False
    return ok


def _check_fit(path: Path, models: Mapping[str, ModelInfo], problems: list[str]) -> bool:
    """The diffusion decoder must take the decoder's latents and the vocoder its mels (as load_models checks)."""
    from .model_dir import check_parts_fit

    configs = {}
    for part in PARTS:
        info = models.get(part)
        if info is not None and info.ok and info.config is not None:
            configs[part] = SimpleNamespace(config=_MODEL_CLASSES[part][0].from_dict(info.config))
    if "autoregressive" not in configs:
        return True
    try:
        check_parts_fit(configs["autoregressive"], configs.get("diffusion"), configs.get("vocoder"), path)
    except CheckpointError as exc:
        problems.append(str(exc))
        return False
    return True


def _blockers(info: ModelDirInfo, layout: str | None, global_blockers: list[str], data_ok: Mapping[str, bool],
              fit: bool) -> dict[str, list[str]]:
    """Why each stage is unusable. `load_models` reads every model file present and checks that they fit, so a
    broken waveform file (or a misfit) stops the candidates stage too, not just audio."""
    blockers: dict[str, list[str]] = {stage: list(global_blockers) for stage in STAGES}

    def block(reason: str, first_stage: str) -> None:
        for stage in STAGES[STAGES.index(first_stage):]:
            if reason not in blockers[stage]:
                blockers[stage].append(reason)

    if layout is None:
        block("no model layout recognised", "candidates")
        return blockers
    reported: set[str] = set()
    for status in info.files:
        if status.stage in STAGES and not status.present:
            reported.add(status.name)
            block(f"{status.name} missing", status.stage)
    for part, model in info.models.items():
        if model.ok:
            continue
        if model.present:
            block(f"{model.file} unreadable" + ("" if _STAGE_OF_PART[part] == "candidates"
                                               else " (load_models reads every model file present)"), "candidates")
        elif model.file not in reported:
            block(f"{model.file} missing", _STAGE_OF_PART[part])
    for name, ok in data_ok.items():
        if not ok and name not in reported:
            block(f"{name} unreadable", "candidates")
    if not fit:
        block("the models do not fit together (load_models refuses them)", "candidates")
    return blockers


# ---------------------------------------------------------------------------------------------------------------
# Text
# ---------------------------------------------------------------------------------------------------------------


def _human_size(size: int | None) -> str:
    if size is None:
        return "-"
    value = float(size)
    for unit in ("B", "KB", "MB", "GB"):
        if value < 1000 or unit == "GB":
            return f"{int(value)} B" if unit == "B" else f"{value:.1f} {unit}"
        value /= 1000
    return f"{size} B"  # pragma: no cover


def _table(rows: list[list[str]]) -> list[str]:
    widths = [max(len(row[i]) for row in rows) for i in range(len(rows[0]))]
    return ["  ".join(cell.ljust(width) for cell, width in zip(row, widths)).rstrip() for row in rows]


def _config_summary(part: str, config: dict[str, Any] | None) -> str:
    if not config:
        return "-"
    fields = [name for name in _SUMMARY_FIELDS.get(part, ()) if name in config] or list(config)
    return " ".join(f"{name}={config[name]}" for name in fields)


def format_info(info: ModelDirInfo) -> str:
    """A plain-text report of `describe_model_dir`'s result, for the command line."""
    lines = [f"Model directory: {info.path}"]
    lines.append(f"Layout: {info.layout} ({LAYOUT_NAMES[info.layout]})" if info.layout else "Layout: not recognised")
    lines.append("")
    rows = [["File", "Role", "Needed for", "Status", "Size"]]
    for f in info.files:
        rows.append([f.name, f.role, f.stage, "present" if f.present else "MISSING", _human_size(f.size)])
    lines += _table(rows)
    if info.models:
        lines.append("")
        rows = [["Model", "File", "Parameters", "Stored numbers", "Dtypes", "Sizes"]]
        for part, m in info.models.items():
            status = "" if m.ok else (" (unreadable)" if m.present else " (missing)")
            rows.append([
                part + status,
                m.file,
                f"{m.parameters:,}" if m.parameters is not None else "-",
                f"{m.stored_elements:,}" if m.stored_elements is not None else "-",
                ",".join(m.dtypes) or "-",
                _config_summary(part, m.config),
            ])
        lines += _table(rows)
        total = sum(info.parameters.values())
        if total:
            lines.append(f"Total parameters: {total:,}")
    lines.append("")
    lines.append("Stages:")
    for stage in STAGES:
        usable = info.stages.get(stage, False)
        why = "" if usable else ": " + "; ".join(info.blockers.get(stage, []) or ["unknown"])
        lines.append(f"  {stage:<11} {'usable' if usable else 'unusable'}{why}")
    if info.problems:
        lines.append("")
        lines.append("Problems:")
        for problem in info.problems:
            first, *rest = problem.splitlines()
            lines.append(f"  - {first}")
            lines += [f"    {line.strip()}" for line in rest]
    return "\n".join(lines)


__all__ = ["FileStatus", "ModelDirInfo", "ModelInfo", "describe_model_dir", "format_info", "read_safetensors_header"]
