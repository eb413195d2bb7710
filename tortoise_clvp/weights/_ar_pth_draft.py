"""(draft, merged into tortoise_pth.py) original autoregressive.pth <-> our AutoregressiveModel."""

from __future__ import annotations

import re
from pathlib import Path
from typing import Any, Mapping

import torch

from ..config import AutoregressiveConfig
from ..errors import CheckpointError
from ..models.autoregressive import AutoregressiveModel
from .strict import check_state_dict, load_strict, read_torch_checkpoint

# heads cannot be read off GPT-2 weight shapes; the released model is the only width we know without a config
_KNOWN_AR_HEADS = {AutoregressiveConfig.RELEASED.model_dim: AutoregressiveConfig.RELEASED.heads}
_LEGACY_GPT2_BUFFER = re.compile(r"gpt\.h\.\d+\.attn\.(bias|masked_bias)$")
_TRAINING_ONLY = re.compile(r"text_head\.(weight|bias)$")  # next-text-token head, unused at inference

_AR_RENAMES = [
    (re.compile(r"conditioning_encoder\.attn\.(\d+)\."), r"conditioning_encoder.blocks.\1."),
    (re.compile(r"text_pos_embedding\.emb\."), "text_pos."),
    (re.compile(r"mel_pos_embedding\.emb\."), "mel_pos."),
    (re.compile(r"gpt\.h\.(\d+)\.attn\.c_attn\."), r"blocks.\1.attn.qkv."),
    (re.compile(r"gpt\.h\.(\d+)\.attn\.c_proj\."), r"blocks.\1.attn.proj."),
    (re.compile(r"gpt\.h\.(\d+)\.mlp\.c_fc\."), r"blocks.\1.mlp.fc."),
    (re.compile(r"gpt\.h\.(\d+)\.mlp\.c_proj\."), r"blocks.\1.mlp.proj."),
    (re.compile(r"gpt\.h\.(\d+)\.(ln_[12])\."), r"blocks.\1.\2."),
    (re.compile(r"gpt\.ln_f\."), "ln_f."),
]
_GPT2_CONV1D_WEIGHT = re.compile(r"gpt\.h\.\d+\.(attn\.c_attn|attn\.c_proj|mlp\.c_fc|mlp\.c_proj)\.weight$")
_COND_QKV = re.compile(r"conditioning_encoder\.attn\.\d+\.qkv\.(weight|bias)$")


def autoregressive_config_from_kwargs(kwargs: Mapping[str, Any]) -> AutoregressiveConfig:
    """Our config from the original `UnifiedVoice(**kwargs)` constructor arguments."""
    ours = {k: kwargs[k] for k in ("layers", "model_dim", "heads", "max_text_tokens", "max_mel_tokens",
                                   "max_conditioning_inputs", "number_text_tokens", "number_mel_codes",
                                   "mel_length_compression") if k in kwargs}
    return AutoregressiveConfig(**ours)


def infer_autoregressive_config(state: Mapping[str, torch.Tensor], heads: int | None = None) -> AutoregressiveConfig:
    """Read the decoder's dimensions off an original state dict's shapes."""
    dim = state["text_embedding.weight"].shape[1]
    if heads is None:
        if dim not in _KNOWN_AR_HEADS:
            raise CheckpointError(
                f"the autoregressive checkpoint has width {dim}, whose head count cannot be read from its shapes; "
                "pass a config (config.json beside the weights) that names 'heads'."
            )
        heads = _KNOWN_AR_HEADS[dim]
    layers = len({int(m.group(1)) for k in state if (m := re.match(r"gpt\.h\.(\d+)\.", k))})
    released = AutoregressiveConfig.RELEASED
    return AutoregressiveConfig(
        layers=layers,
        model_dim=dim,
        heads=heads,
        max_text_tokens=state["text_pos_embedding.emb.weight"].shape[0] - 2,
        max_mel_tokens=state["mel_pos_embedding.emb.weight"].shape[0] - 2 - released.max_conditioning_inputs,
        number_text_tokens=state["text_embedding.weight"].shape[0] - 1,
        number_mel_codes=state["mel_embedding.weight"].shape[0],
        mel_channels=state["conditioning_encoder.init.weight"].shape[1],
        conditioning_attn_blocks=len({k.split(".")[2] for k in state if k.startswith("conditioning_encoder.attn.")}),
    )


def _deinterleave_heads(tensor: torch.Tensor, heads: int) -> torch.Tensor:
    """Conv qkv rows laid out per head [q_h k_h v_h] -> [q (all heads); k; v] (quirk 7)."""
    rows = tensor.shape[0]
    per_head = rows // (3 * heads)
    return tensor.reshape(heads, 3, per_head, *tensor.shape[1:]).transpose(0, 1).reshape(tensor.shape)


def autoregressive_state_from_original(state: Mapping[str, torch.Tensor], config: AutoregressiveConfig) -> dict[str, torch.Tensor]:
    """Rename and reshape an original autoregressive.pth state dict into ours.

    Dropped after a shape check: the legacy GPT-2 attention buffers and the training-only text head.
    """
    dropped = {"text_head.weight": (config.text_vocab, config.model_dim), "text_head.bias": (config.text_vocab,)}
    check_state_dict(dropped, {k: v for k, v in state.items() if _TRAINING_ONLY.match(k)}, "autoregressive text head")
    ours: dict[str, torch.Tensor] = {}
    for key, value in state.items():
        if _LEGACY_GPT2_BUFFER.match(key) or _TRAINING_ONLY.match(key):
            continue
        if _GPT2_CONV1D_WEIGHT.match(key):
            value = value.t()
        elif _COND_QKV.match(key):
            value = _deinterleave_heads(value, config.heads)
        new_key = key
        for pattern, replacement in _AR_RENAMES:
            new_key = pattern.sub(replacement, new_key)
        ours[new_key] = value
    return ours


def load_autoregressive_original(
    source: str | Path | Mapping[str, torch.Tensor], config: AutoregressiveConfig | None = None
) -> AutoregressiveModel:
    """Build and strictly load the decoder from an original `autoregressive.pth` (path or state dict)."""
    state = read_torch_checkpoint(source) if isinstance(source, (str, Path)) else dict(source)
    if "mel_head.weight" not in state or "text_embedding.weight" not in state:
        raise CheckpointError(
            f"{source if isinstance(source, (str, Path)) else 'the state dict'} is not an autoregressive.pth "
            "(no mel_head / text_embedding weights): check which file went into the autoregressive slot."
        )
    config = config or infer_autoregressive_config(state)
    model = AutoregressiveModel(config)
    return load_strict(model, autoregressive_state_from_original(state, config), "autoregressive checkpoint")
