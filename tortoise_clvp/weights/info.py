"""What a model directory holds, without loading the weights: `describe_model_dir` and `format_info`.

Built on the loaders: every model the folder would load (`model_dir.model_parts`) is read for its shapes only (meta
tensors: ``.pth`` files memory-mapped, ``.safetensors`` files up to their header) and loaded by its own loader into a
model built on the meta device. So a model counts as readable exactly when `load_models` would accept it, and its
parameter count is what `load_models` gives; what is wrong is recorded for its part, never raised. The pipeline
stages the folder supports follow: 'candidates' needs the autoregressive decoder, CLVP, tokenizer.json and
mel_norms.pth; 'audio' also needs the diffusion decoder and the vocoder.

Only a path that does not exist or is not a folder raises `CheckpointError`.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Mapping

import torch
from torch import nn

from ..errors import CheckpointError, describe
from ..presets import DEFAULT_PRESET
from . import hf_clvp, native
from .model_dir import (
    DATA_FILES,
    ORIGINAL_FORMATS,
    PART_ROLES,
    PARTS,
    REQUIRED_PARTS,
    ModelPart,
    check_parts_fit,
    detect_layout,
    folder_default_preset,
    model_parts,
)

STAGES = ("candidates", "audio")
LAYOUT_NAMES = {
    "tortoise": "original Tortoise release, .pth files",
    "huggingface": "Hugging Face CLVP, config.json + weights",
    "native": "converted, tortoise_clvp safetensors",
}
_STAGE_OF_PART = {part: "candidates" if part in REQUIRED_PARTS else "audio" for part in PARTS}
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
    the autoregressive text head and GPT-2 buffers, the vocoder's weight norm). ``ok``: its loader accepts it."""

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
    default_preset: str | None = None  # the preset the folder names for callers that name none

    @property
    def parameters(self) -> dict[str, int]:
        """Parameter count per readable model."""
        return {part: m.parameters for part, m in self.models.items() if m.parameters is not None}

    @property
    def configs(self) -> dict[str, dict[str, Any]]:
        return {part: m.config for part, m in self.models.items() if m.config is not None}

    def file(self, name: str) -> FileStatus | None:
        return next((f for f in self.files if f.name == name), None)


def describe_model_dir(path: str | Path) -> ModelDirInfo:
    """Describe a model directory (see the module docstring). Raises `CheckpointError` only when `path` does not
    exist or is not a directory; everything wrong inside it is listed in ``problems``."""
    path = Path(path).expanduser()
    if not path.exists():
        raise CheckpointError(f"model directory {path} does not exist; pass the folder that holds the weights")
    if not path.is_dir():
        raise CheckpointError(f"{path} is a file, not a model directory; pass the folder that holds it")
    info = ModelDirInfo(path, None)
    parts: dict[str, ModelPart] = {}
    everywhere: list[str] = []  # reasons that block every stage
    try:
        info.layout = detect_layout(path)
        parts = model_parts(path, info.layout)
        info.default_preset = folder_default_preset(path, info.layout)
    except CheckpointError as exc:
        info.problems.append(str(exc))
        everywhere.append("no model layout recognised" if info.layout is None else "model sizes unreadable")

    meta_models: dict[str, nn.Module] = {}
    for part in PARTS if info.layout else ():
        files = _part_files(info.layout, part, parts)
        label = files[0] if len(files) == 1 else f"{files[0]} (+{len(files) - 1} shards)"
        model = ModelInfo(part, label, present=part in parts and all((path / name).is_file() for name in files))
        info.models[part] = model
        if model.present:
            built = _inspect(parts[part], model, str(path / files[0]), info.problems)
            if built is not None:
                meta_models[part] = built
    info.files = [FileStatus(name, role, stage, (path / name).is_file(), _size(path / name))
                  for name, role, stage in _expected_files(info.layout, parts)]
    unreadable_data = _unreadable_data_files(path, info.problems) if info.layout else []
    fit = _check_fit(path, meta_models, info.problems)
    info.blockers = _blockers(info, everywhere, unreadable_data, fit)
    info.stages = {stage: not info.blockers[stage] for stage in STAGES}
    return info


def _part_files(layout: str | None, part: str, parts: Mapping[str, ModelPart]) -> tuple[str, ...]:
    """The file(s) a part is read from; for a part the folder lacks, the file the layout would hold it in."""
    if part in parts:
        return parts[part].files
    if layout == "native":
        return (native.weights_file(part),)
    if layout == "huggingface" and part in REQUIRED_PARTS:
        return (hf_clvp.SAFETENSORS_FILE,)
    return (ORIGINAL_FORMATS[part].filename,)


def _expected_files(layout: str | None, parts: Mapping[str, ModelPart]) -> list[tuple[str, str, str]]:
    """(name, role, stage) of every file the layout expects, in the order a reader wants them."""
    def weights(which: tuple[str, ...]) -> list[tuple[str, str, str]]:
        return [(name, PART_ROLES[part], _STAGE_OF_PART[part])
                for part in which for name in _part_files(layout, part, parts)]

    data = [(name, role, "candidates") for name, (role, _) in DATA_FILES.items()]
    sizes = [(native.CONFIG_FILE, "model sizes shapes cannot tell", "optional")]
    waveform = weights(("diffusion", "vocoder"))
    if layout == "native":
        return [(native.CONFIG_FILE, "sizes of the converted models", "candidates"), *weights(REQUIRED_PARTS), *data,
                *waveform]
    if layout == "huggingface":
        files = _part_files(layout, "clvp", parts)
        return [(hf_clvp.CONFIG_FILE, "Hugging Face CLVP config", "candidates"),
                *((name, "Hugging Face CLVP weights (decoder + scorer)", "candidates") for name in files),
                *data, *waveform, *sizes]
    return [*weights(REQUIRED_PARTS), *data, *waveform, *sizes]


def _size(file: Path) -> int | None:
    return file.stat().st_size if file.is_file() else None


def _tensors(obj: Any) -> list[torch.Tensor]:
    """Every tensor of a (possibly wrapped, as vocoder.pth is) state dict."""
    if isinstance(obj, torch.Tensor):
        return [obj]
    if isinstance(obj, Mapping):
        return [t for v in obj.values() for t in _tensors(v)]
    return []


def _inspect(part: ModelPart, info: ModelInfo, source: str, problems: list[str]) -> nn.Module | None:
    """Read the part's shapes and load them with its loader on the meta device; record what was found, or why not."""
    try:
        state = part.read(True)
        tensors = _tensors(state)
        info.stored_elements = sum(t.numel() for t in tensors)
        info.dtypes = tuple(sorted({str(t.dtype).replace("torch.", "") for t in tensors}))
        model = part.build(state)
    except Exception as exc:  # noqa: BLE001 - a broken file is reported, never raised
        problems.append(_error_text(exc, source))
        return None
    info.ok, info.config = True, model.config.to_dict()
    info.parameters = sum(p.numel() for p in model.parameters())
    return model


def _error_text(exc: BaseException, source: str | Path) -> str:
    """Our errors say where they happened; anything else gets the file's name."""
    return str(exc) if isinstance(exc, CheckpointError) else f"{source}: {describe(exc, 300)}"


def _unreadable_data_files(path: Path, problems: list[str]) -> list[str]:
    """The data files present that their readers refuse (each one's error recorded)."""
    unreadable = []
    for name, (_, reader) in DATA_FILES.items():
        if (path / name).is_file():
            try:
                reader(path / name)
            except Exception as exc:  # noqa: BLE001
                problems.append(_error_text(exc, path / name))
                unreadable.append(name)
    return unreadable


def _check_fit(path: Path, models: Mapping[str, nn.Module], problems: list[str]) -> bool:
    """The diffusion decoder must take the decoder's latents and the vocoder its mels (as load_models checks)."""
    if "autoregressive" not in models:
        return True
    try:
        check_parts_fit(models["autoregressive"], models.get("diffusion"), models.get("vocoder"), path)
    except CheckpointError as exc:
        problems.append(str(exc))
        return False
    return True


def _blockers(info: ModelDirInfo, everywhere: list[str], unreadable_data: list[str], fit: bool) -> dict[str, list[str]]:
    """Why each stage is unusable. `load_models` reads every model file it finds and checks that they fit, so a
    broken waveform file (or a misfit) stops the candidates stage too, not just audio."""
    blockers: dict[str, list[str]] = {stage: list(everywhere) for stage in STAGES}

    def block(reason: str, first_stage: str) -> None:
        for stage in STAGES[STAGES.index(first_stage):]:
            if reason not in blockers[stage]:
                blockers[stage].append(reason)

    if info.layout is None:
        return blockers
    for status in info.files:
        if status.stage in STAGES and not status.present:
            block(f"{status.name} missing", status.stage)
    for part, model in info.models.items():
        if model.present and not model.ok:
            suffix = "" if part in REQUIRED_PARTS else " (load_models reads every model file present)"
            block(f"{model.file} unreadable{suffix}", "candidates")
    for name in unreadable_data:
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
    if info.layout:
        chosen = info.default_preset or f"{DEFAULT_PRESET} (the package's; the folder names none)"
        lines.append(f"Default preset: {chosen}")
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


__all__ = ["FileStatus", "ModelDirInfo", "ModelInfo", "describe_model_dir", "format_info"]
