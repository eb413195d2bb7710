"""The export stage: the trained models as a native model folder, WORK_DIR/export, with a model card.

The folder is what `TextToSpeech.from_local` loads: the decoder and CLVP (always), the diffusion decoder and the
vocoder (once their stages have trained them), the speech codes' DVAE (for fine-tuning with `--init` and for
previews), the trained tokenizer.json and mel_norms.pth, and MODEL_CARD.md: data, voices and licences, the recipe
command, and the metrics the stages measured. The card is written last, so a folder without it is unfinished and
the stage redoes it; with it, the stage is skipped unless a stage trained a part the folder lacks (the diffusion
decoder or the vocoder, trained after an earlier export) or wrote new best weights since (trained on).
"""

from __future__ import annotations

import json
from dataclasses import replace
from pathlib import Path
from typing import Any

import torch
from torch import nn

from ..atomic import write_bytes_atomic
from ..config import DiffusionConfig, VocoderConfig
from ..errors import CheckpointError
from ..models.diffusion import DiffusionModel
from ..models.dvae import DiscreteVae
from ..models.vocoder import UnivNetVocoder
from ..weights.native import MODEL_CARD_FILE, build_part, read_meta, read_part, save_native
from .autoregressive import PART as AUTOREGRESSIVE_PART
from .autoregressive import load_decoder
from .clvp import PART as CLVP_PART
from .clvp import load_scorer
from .codes import PART as DVAE_PART
from .codes import load_codes, load_dvae
from .config import (
    AUTOREGRESSIVE_DIR,
    CLVP_DIR,
    CODES_DIR,
    DIFFUSION_DIR,
    EXPORT_DIR,
    TOKENIZER_DIR,
    VOCODER_DIR,
    RecipeConfig,
    TrainProgress,
)
from .loop import METRICS_FILE, load_trained, weights_file
from .metadata import corpus_dir, read_metadata

VOICES_FILE = "voices.json"  # written by the corpus stage
WAVEFORM_PARTS = {DIFFUSION_DIR: ("diffusion", DiffusionModel, DiffusionConfig), VOCODER_DIR: ("vocoder", UnivNetVocoder, VocoderConfig)}


def load_exported_dvae(path: Path) -> DiscreteVae:
    """The DVAE of an exported native folder (its codebook defines the codes its decoder and CLVP read)."""
    meta = read_meta(path)
    if "dvae" not in meta:
        raise CheckpointError(
            f"{path} has no speech-code DVAE (dvae.safetensors), so its codebook cannot encode new data: fine-tune "
            "from a model exported by `clvp-tts train export`"
        )
    return build_part(meta, "dvae", read_part(path, "dvae"), str(path)).eval()


def _read_json(path: Path) -> Any:
    return json.loads(path.read_text(encoding="utf-8")) if path.is_file() else None


def _parameters(model: nn.Module) -> str:
    return f"{sum(p.numel() for p in model.parameters()) / 1e6:.2f} M"


def _best(history: list[dict], step: int) -> dict:
    return next((entry for entry in history if entry.get("step") == step), history[-1] if history else {})


def _format(value: Any) -> str:
    return f"{value:.4g}" if isinstance(value, float) else str(value)


def model_card(work_dir: Path, config: RecipeConfig, parts: dict[str, nn.Module]) -> str:
    """MODEL_CARD.md of an export: what was trained on what, with which command, and how well (read from the
    stages' own records: codes summary, metrics.json of every trained stage, the corpus's voices.json)."""
    utterances = read_metadata(work_dir)
    hours: dict[str, float] = {}
    voices_by_split: dict[str, set] = {}
    for utterance in utterances:
        hours[utterance.split] = hours.get(utterance.split, 0.0) + utterance.duration / 3600
        voices_by_split.setdefault(utterance.split, set()).add(utterance.voice)
    voices = _read_json(corpus_dir(work_dir) / VOICES_FILE) or {}
    smoke = replace(config, seed=RecipeConfig.smoke().seed, init_dir=None) == RecipeConfig.smoke()
    command = "clvp-tts train all WORK_DIR" + (" --smoke" if smoke else "") + (
        f" --init {config.init_dir}" if config.init_dir else "") + (
        f" --data {config.corpus.data_dir}" if config.corpus.data_dir else "") + f" --seed {config.seed}"
    lines = [
        "# Model card",
        "",
        "A small English Tortoise-style model trained by this package's recipe (`tortoise_clvp.train`) on a corpus",
        "of synthetic voices, for trying the engine offline and for tests. It is not the released Tortoise.",
        "",
        f"Recipe: `{command}`" + (" (toy scale: proves the recipe, says nothing about quality)" if smoke else ""),
        "",
        f"Default preset: `{config.export.default_preset}` (`tortoise_clvp.json`; used when a caller names none).",
        "",
        "## Parts",
        "",
        "| part | parameters | config |",
        "|---|---|---|",
    ]
    lines += [f"| {name} | {_parameters(model)} | `{json.dumps(model.config.to_dict())}` |" for name, model in parts.items()]
    tokens = parts["autoregressive"].config.tokens
    lines += [
        "",
        f"Speech tokens: {tokens.mel_start} codes (the DVAE's codebook), start {tokens.mel_start}, stop "
        f"{tokens.mel_stop}; the calm code (silence, padding after the stop) is {tokens.calm} and stopped "
        f"candidates end in {list(tokens.fix_tail)}.",
        "",
        "## Data",
        "",
        "| split | utterances | hours | voices |",
        "|---|---|---|---|",
    ]
    for split in sorted(hours):
        count = sum(1 for u in utterances if u.split == split)
        lines.append(f"| {split} | {count} | {hours[split]:.2f} | {', '.join(sorted(voices_by_split[split]))} |")
    if voices:
        lines += ["", "Voices: " + "; ".join(f"{v['name']} ({v['engine']}, {v['role']})" for v in voices.get("voices", []))]
        lines += ["", "Licences:", ""]
        lines += [f"- {text}" for text in voices.get("engines", {}).values()]
        lines += [f"- {text}" for text in voices.get("text", [])]
    lines += ["", "## Measured", ""]
    codes = load_codes(work_dir).summary
    valid = codes.get("valid", {})
    lines += [
        f"- Speech codes (DVAE, {codes.get('dvae')}): held-out reconstruction MSE {_format(valid.get('loss'))} "
        f"(normalised log-mel), codebook perplexity {_format(valid.get('perplexity'))} of {codes['codebook_size']} "
        f"codes on held-out speech ({_format(codes.get('train_perplexity'))} on training speech), usage "
        f"{_format(codes.get('train_usage'))}.",
    ]
    for folder, what in ((CODES_DIR, "DVAE"), (AUTOREGRESSIVE_DIR, "Decoder"), (CLVP_DIR, "CLVP"), (DIFFUSION_DIR, "Diffusion"),
                         (VOCODER_DIR, "Vocoder")):
        metrics = _read_json(Path(work_dir) / folder / METRICS_FILE)
        if not metrics:
            continue
        best = {k: v for k, v in _best(metrics.get("history", []), metrics.get("best_step")).items() if k != "seconds"}
        shown = ", ".join(f"{k} {_format(v)}" for k, v in best.items())
        lines.append(
            f"- {what}: {metrics.get('step')} of {metrics.get('steps')} steps in {metrics.get('train_seconds', 0) / 60:.1f} "
            f"min of training; best held-out evaluation: {shown}."
        )
    return "\n".join(lines) + "\n"


def _retrained_since(work_dir: Path, card: Path) -> bool:
    """Whether a stage wrote new best weights after the export's model card (a stage trained on with --steps)."""
    stages = {AUTOREGRESSIVE_DIR: AUTOREGRESSIVE_PART, CLVP_DIR: CLVP_PART, CODES_DIR: DVAE_PART}
    stages.update({folder: part for folder, (part, _, _) in WAVEFORM_PARTS.items()})
    written = card.stat().st_mtime_ns
    files = [weights_file(work_dir / folder, part) for folder, part in stages.items()]
    return any(file.is_file() and file.stat().st_mtime_ns > written for file in files)


def run_export(work_dir: Path, config: RecipeConfig, progress: TrainProgress) -> None:
    """Write WORK_DIR/export (replacing an unfinished or outdated one); skipped when it is complete and current."""
    work_dir = Path(work_dir)
    export = work_dir / EXPORT_DIR
    trained = {folder: part for folder, (part, _, _) in WAVEFORM_PARTS.items() if weights_file(work_dir / folder, part).is_file()}
    card = export / MODEL_CARD_FILE
    if card.is_file() and set(trained.values()) <= set(read_meta(export)) and not _retrained_since(work_dir, card):
        return
    parts: dict[str, nn.Module] = {"autoregressive": load_decoder(work_dir), "clvp": load_scorer(work_dir)}
    for folder, part in trained.items():
        _, model_class, config_class = WAVEFORM_PARTS[folder]
        parts[part] = load_trained(work_dir / folder, part, model_class, config_class)
    trained_dvae = weights_file(work_dir / CODES_DIR, DVAE_PART).is_file()  # not when fine-tuning: the init's is reused
    if not trained_dvae and config.init_dir is None:
        raise CheckpointError(
            f"{work_dir} has no trained DVAE: its codes were made by the DVAE of the model it was fine-tuned from. "
            "Export with the same --init MODEL_DIR the other stages ran with"
        )
    parts["dvae"] = load_dvae(work_dir) if trained_dvae else load_exported_dvae(Path(config.init_dir))
    storage = getattr(torch, config.export.storage_dtype)
    save_native(export, parts, work_dir / TOKENIZER_DIR, overwrite=True, storage_dtype=storage,
                default_preset=config.export.default_preset)
    write_bytes_atomic(export / MODEL_CARD_FILE, model_card(work_dir, config, parts).encode("utf-8"))
    progress("export", 1, 1, {"parts": float(len(parts))})
