"""Tortoise's autoregressive.pth (UnifiedVoice: a GPT-2 speech-token decoder and its conditioning encoder)
-> `AutoregressiveModel`.

An explicit key map built from the config, sizes read from tensor shapes (all but the head count, which GPT-2
weights do not show), every key and shape checked in the file's own names; `load_autoregressive_original` runs
them through `original.load_part`. GPT-2's Conv1D weights are transposed into linears and the conditioning
encoder's qkv rows de-interleaved per head.
"""

from __future__ import annotations

import re
from typing import Any, Mapping

import torch

from ..config import AutoregressiveConfig
from ..errors import CheckpointError
from ..models.autoregressive import AutoregressiveModel
from .original import (
    HF_SIGNATURE,
    OriginalFormat,
    StateSource,
    deinterleave_heads,
    guess_checkpoint_kind,
    load_part,
    wrong_slot,
)
from .strict import check_state_dict, shape_of

AUTOREGRESSIVE_CHECKPOINT = "autoregressive.pth"
# heads cannot be read off GPT-2 weight shapes; the released width is the only one known without a config
_KNOWN_AR_HEADS = {AutoregressiveConfig.RELEASED.model_dim: AutoregressiveConfig.RELEASED.heads}
# Dropped after a check: GPT-2 attention buffers older transformers saved (the released file very likely holds
# them) and the training-only next-text-token head.
_LEGACY_GPT2_BUFFER = re.compile(r"gpt\.h\.\d+\.attn\.(bias|masked_bias)$")
_TEXT_HEAD = ("text_head.weight", "text_head.bias")
_GPT2_CONV1D_WEIGHT = re.compile(r"gpt\.h\.\d+\.(attn|mlp)\.c_\w+\.weight$")
_AR_KWARGS = ("layers", "model_dim", "heads", "max_text_tokens", "max_mel_tokens", "max_conditioning_inputs",
              "number_text_tokens", "number_mel_codes", "mel_length_compression")


def autoregressive_key_map(config: AutoregressiveConfig) -> dict[str, str]:
    """Every tensor of autoregressive.pth we keep (original name) -> its name in `AutoregressiveModel`."""
    mapping = {
        "conditioning_encoder.init.weight": "conditioning_encoder.init.weight",
        "conditioning_encoder.init.bias": "conditioning_encoder.init.bias",
        "text_embedding.weight": "text_embedding.weight",
        "text_pos_embedding.emb.weight": "text_pos.weight",
        "mel_embedding.weight": "mel_embedding.weight",
        "mel_pos_embedding.emb.weight": "mel_pos.weight",
    }
    for i in range(config.conditioning_attn_blocks):
        for part in ("norm", "qkv", "proj_out"):
            for param in ("weight", "bias"):
                mapping[f"conditioning_encoder.attn.{i}.{part}.{param}"] = f"conditioning_encoder.blocks.{i}.{part}.{param}"
    gpt2 = {"ln_1": "ln_1", "attn.c_attn": "attn.qkv", "attn.c_proj": "attn.proj", "ln_2": "ln_2",
            "mlp.c_fc": "mlp.fc", "mlp.c_proj": "mlp.proj"}
    for i in range(config.layers):
        for theirs, ours in gpt2.items():
            for param in ("weight", "bias"):
                mapping[f"gpt.h.{i}.{theirs}.{param}"] = f"blocks.{i}.{ours}.{param}"
    for theirs, ours in (("gpt.ln_f", "ln_f"), ("final_norm", "final_norm"), ("mel_head", "mel_head")):
        for param in ("weight", "bias"):
            mapping[f"{theirs}.{param}"] = f"{ours}.{param}"
    return mapping


def autoregressive_config_from_original_kwargs(kwargs: Mapping[str, Any]) -> AutoregressiveConfig:
    """Our config from the original ``UnifiedVoice(**kwargs)`` arguments (training-only ones are ignored)."""
    return AutoregressiveConfig(**{k: kwargs[k] for k in _AR_KWARGS if k in kwargs})


def autoregressive_config_from_state(
    state: Mapping[str, Any], source: str = "the autoregressive state dict", heads: int | None = None
) -> AutoregressiveConfig:
    """Read the decoder's sizes off an original state dict's shapes; `heads` is needed unless the width is released."""
    dim = shape_of(state, "text_embedding.weight", source)[1]
    if heads is None:
        if dim not in _KNOWN_AR_HEADS:
            raise CheckpointError(
                f"{source} is {dim} wide, and a GPT-2 head count cannot be read from weight shapes; pass a config "
                "that names 'heads' (a tortoise_clvp.json beside the weights)."
            )
        heads = _KNOWN_AR_HEADS[dim]
    layers = len({int(m.group(1)) for key in state if (m := re.match(r"gpt\.h\.(\d+)\.ln_1\.weight$", key))})
    blocks = len({int(m.group(1)) for key in state if (m := re.match(r"conditioning_encoder\.attn\.(\d+)\.qkv\.weight$", key))})
    return AutoregressiveConfig(
        layers=layers,
        model_dim=dim,
        heads=heads,
        max_text_tokens=shape_of(state, "text_pos_embedding.emb.weight", source)[0] - 2,
        max_mel_tokens=shape_of(state, "mel_pos_embedding.emb.weight", source)[0] - 2
        - AutoregressiveConfig.RELEASED.max_conditioning_inputs,
        number_text_tokens=shape_of(state, "text_embedding.weight", source)[0] - 1,
        number_mel_codes=shape_of(state, "mel_embedding.weight", source)[0],
        mel_channels=shape_of(state, "conditioning_encoder.init.weight", source)[1],
        conditioning_attn_blocks=blocks,
    )


def _plain_autoregressive(state: Mapping[str, Any], source: str) -> Mapping[str, Any]:
    """`state` itself once it is known to be an autoregressive.pth-style state dict."""
    if not all(isinstance(v, torch.Tensor) for v in state.values()) or "mel_head.weight" not in state \
            or not any(k.startswith("gpt.h.") for k in state):
        hint = ""
        if guess_checkpoint_kind(state) == HF_SIGNATURE:
            hint = " For Hugging Face's layout use tortoise_clvp.weights.hf_autoregressive.load_autoregressive_hf."
        raise wrong_slot(state, source, f"an autoregressive checkpoint ({AUTOREGRESSIVE_CHECKPOINT})", hint)
    return state


def autoregressive_state_from_original(
    state: Mapping[str, torch.Tensor], config: AutoregressiveConfig, source: str = "the autoregressive state dict"
) -> dict[str, torch.Tensor]:
    """Check autoregressive.pth against ``config`` (every key and shape, in the file's names) and convert it:
    GPT-2 Conv1D weights transposed to Linear, conditioning qkv rows de-interleaved per head."""
    state = {k: v for k, v in _plain_autoregressive(state, source).items() if not _LEGACY_GPT2_BUFFER.match(k)}
    mapping = autoregressive_key_map(config)
    with torch.device("meta"):
        ours = {k: v.shape for k, v in AutoregressiveModel(config).state_dict().items()}
    if set(mapping.values()) != set(ours):
        raise AssertionError(f"autoregressive key map out of date: {sorted(set(ours) ^ set(mapping.values()))[:8]}")
    expected = {original: ours[name] for original, name in mapping.items()}
    for key in expected:
        if _GPT2_CONV1D_WEIGHT.match(key):  # GPT-2 Conv1D stores (in, out)
            expected[key] = tuple(reversed(expected[key]))
    expected.update({_TEXT_HEAD[0]: (config.text_vocab, config.model_dim), _TEXT_HEAD[1]: (config.text_vocab,)})
    check_state_dict(expected, state, f"{source} (autoregressive)")
    converted = {}
    for key, name in mapping.items():
        value = state[key]
        if _GPT2_CONV1D_WEIGHT.match(key):
            value = value.t()
        elif re.match(r"conditioning_encoder\.attn\.\d+\.qkv\.", key):
            value = deinterleave_heads(value, config.heads)
        converted[name] = value
    return converted


FORMAT = OriginalFormat(AUTOREGRESSIVE_CHECKPOINT, "autoregressive", AutoregressiveModel, _plain_autoregressive,
                        autoregressive_config_from_state, autoregressive_state_from_original)


def load_autoregressive_original(
    path_or_state: StateSource, config: AutoregressiveConfig | None = None
) -> AutoregressiveModel:
    """Load Tortoise's autoregressive.pth (a path or a state dict) into an eval-mode float32 `AutoregressiveModel`.
    With ``config=None`` the sizes come from the tensor shapes (the head count only for the released width)."""
    return load_part(FORMAT, path_or_state, config)
