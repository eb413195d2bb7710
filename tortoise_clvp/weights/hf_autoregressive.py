"""Hugging Face's ``ClvpModelForConditionalGeneration`` layout -> our `AutoregressiveModel`.

Covers ``conditioning_encoder.*`` (mel encoder plus the text embeddings, which HF keeps there) and
``speech_decoder_model.*``; the CLVP scorer's keys are `hf_clvp`'s. Names follow transformers'
``convert_clvp_to_hf.py`` as restated in the reference ``keys/hf_clvp_mapping.json``. HF keeps no text head
(a training-only output), which we do not keep either.
"""

from __future__ import annotations

import re
from typing import Any, Mapping

import torch

from ..config import AutoregressiveConfig
from ..errors import CheckpointError
from ..models.autoregressive import AutoregressiveModel
from .strict import check_state_dict, load_into_meta_model

HF_AUTOREGRESSIVE_PREFIXES = ("conditioning_encoder.", "speech_decoder_model.")
_DECODER = "speech_decoder_model.model.decoder."
_COND = "conditioning_encoder."

# transformers' ClvpDecoderConfig defaults (save_pretrained leaves out values equal to them)
HF_DECODER_DEFAULTS: dict[str, Any] = {
    "vocab_size": 8194,
    "max_position_embeddings": 608,
    "max_text_tokens": 404,
    "hidden_size": 1024,
    "num_hidden_layers": 30,
    "num_attention_heads": 16,
    "n_inner": None,
    "num_mel_attn_blocks": 6,
    "activation_function": "gelu_new",
    "layer_norm_epsilon": 1e-5,
    "feature_size": 80,
}
_HF_TEXT_VOCAB_DEFAULT = 256


def autoregressive_config_from_hf(config: Mapping[str, Any]) -> AutoregressiveConfig:
    """Our config from an HF ``ClvpConfig`` dict (the model's config.json)."""
    decoder = {**HF_DECODER_DEFAULTS, **config.get("decoder_config", {})}
    text_vocab = config.get("text_config", {}).get("vocab_size", _HF_TEXT_VOCAB_DEFAULT)
    dim = decoder["hidden_size"]
    if decoder["n_inner"] not in (None, 4 * dim) or decoder["activation_function"] != "gelu_new":
        raise CheckpointError(
            f"this HF CLVP decoder uses n_inner={decoder['n_inner']} / activation {decoder['activation_function']!r}; "
            f"Tortoise's decoder has n_inner = 4 * hidden_size and gelu_new, so this model cannot be loaded here"
        )
    released = AutoregressiveConfig.RELEASED
    return AutoregressiveConfig(
        layers=decoder["num_hidden_layers"],
        model_dim=dim,
        heads=decoder["num_attention_heads"],
        max_text_tokens=decoder["max_text_tokens"] - 2,
        max_mel_tokens=decoder["max_position_embeddings"] - 2 - released.max_conditioning_inputs,
        number_text_tokens=text_vocab - 1,
        number_mel_codes=decoder["vocab_size"],
        mel_channels=decoder["feature_size"],
        conditioning_attn_blocks=decoder["num_mel_attn_blocks"],
        layer_norm_eps=decoder["layer_norm_epsilon"],
    )


def _expected_hf_shapes(config: AutoregressiveConfig) -> dict[str, tuple[int, ...]]:
    dim, inner = config.model_dim, 4 * config.model_dim
    shapes: dict[str, tuple[int, ...]] = {
        _COND + "text_token_embedding.weight": (config.text_vocab, dim),
        _COND + "text_position_embedding.weight": (config.text_positions, dim),
        _COND + "mel_conv.weight": (dim, config.mel_channels, 1),
        _COND + "mel_conv.bias": (dim,),
        _DECODER + "input_embeds_layer.weight": (config.number_mel_codes, dim),
        _DECODER + "position_embeds_layer.weight": (config.mel_positions, dim),
        _DECODER + "layer_norm.weight": (dim,),
        _DECODER + "layer_norm.bias": (dim,),
        "speech_decoder_model.final_norm.weight": (dim,),
        "speech_decoder_model.final_norm.bias": (dim,),
        "speech_decoder_model.lm_head.weight": (config.number_mel_codes, dim),
        "speech_decoder_model.lm_head.bias": (config.number_mel_codes,),
    }
    for i in range(config.conditioning_attn_blocks):
        shapes[f"{_COND}group_norms.{i}.weight"] = shapes[f"{_COND}group_norms.{i}.bias"] = (dim,)
        for proj in ("q_proj", "k_proj", "v_proj", "out_proj"):
            shapes[f"{_COND}mel_attn_blocks.{i}.{proj}.weight"] = (dim, dim)
            shapes[f"{_COND}mel_attn_blocks.{i}.{proj}.bias"] = (dim,)
    for i in range(config.layers):
        layer = f"{_DECODER}layers.{i}."
        for norm in ("input_layernorm", "post_attention_layernorm"):
            shapes[f"{layer}{norm}.weight"] = shapes[f"{layer}{norm}.bias"] = (dim,)
        for proj in ("q_proj", "k_proj", "v_proj", "out_proj"):
            shapes[f"{layer}attn.{proj}.weight"] = (dim, dim)
            shapes[f"{layer}attn.{proj}.bias"] = (dim,)
        shapes[f"{layer}mlp.c_fc.weight"] = (dim, inner)  # GPT-2 Conv1D: (in, out)
        shapes[f"{layer}mlp.c_fc.bias"] = (inner,)
        shapes[f"{layer}mlp.c_proj.weight"] = (inner, dim)
        shapes[f"{layer}mlp.c_proj.bias"] = (dim,)
    return shapes


_RENAMES = [
    (re.compile(r"conditioning_encoder\.text_token_embedding\."), "text_embedding."),
    (re.compile(r"conditioning_encoder\.text_position_embedding\."), "text_pos."),
    (re.compile(r"conditioning_encoder\.mel_conv\."), "conditioning_encoder.init."),
    (re.compile(r"conditioning_encoder\.group_norms\.(\d+)\."), r"conditioning_encoder.blocks.\1.norm."),
    (re.compile(r"conditioning_encoder\.mel_attn_blocks\.(\d+)\.out_proj\."), r"conditioning_encoder.blocks.\1.proj_out."),
    (re.compile(r"speech_decoder_model\.model\.decoder\.input_embeds_layer\."), "mel_embedding."),
    (re.compile(r"speech_decoder_model\.model\.decoder\.position_embeds_layer\."), "mel_pos."),
    (re.compile(r"speech_decoder_model\.model\.decoder\.layer_norm\."), "ln_f."),
    (re.compile(r"speech_decoder_model\.model\.decoder\.layers\.(\d+)\.input_layernorm\."), r"blocks.\1.ln_1."),
    (re.compile(r"speech_decoder_model\.model\.decoder\.layers\.(\d+)\.post_attention_layernorm\."), r"blocks.\1.ln_2."),
    (re.compile(r"speech_decoder_model\.model\.decoder\.layers\.(\d+)\.attn\.out_proj\."), r"blocks.\1.attn.proj."),
    (re.compile(r"speech_decoder_model\.model\.decoder\.layers\.(\d+)\.mlp\.c_fc\."), r"blocks.\1.mlp.fc."),
    (re.compile(r"speech_decoder_model\.model\.decoder\.layers\.(\d+)\.mlp\.c_proj\."), r"blocks.\1.mlp.proj."),
    (re.compile(r"speech_decoder_model\.final_norm\."), "final_norm."),
    (re.compile(r"speech_decoder_model\.lm_head\."), "mel_head."),
]
_SPLIT_QKV = re.compile(r"(conditioning_encoder\.mel_attn_blocks|speech_decoder_model\.model\.decoder\.layers)\.(\d+)\.(?:attn\.)?q_proj\.(weight|bias)$")
_CONV1D = re.compile(r"\.mlp\.c_(fc|proj)\.weight$")


def autoregressive_state_from_hf(state: Mapping[str, torch.Tensor], config: AutoregressiveConfig) -> dict[str, torch.Tensor]:
    """Check every HF decoder key and shape, then rename/reshape into ours (q/k/v fused, Conv1D transposed)."""
    relevant = {k: v for k, v in state.items() if k.startswith(HF_AUTOREGRESSIVE_PREFIXES)}
    check_state_dict(_expected_hf_shapes(config), relevant, "Hugging Face CLVP decoder weights")
    ours: dict[str, torch.Tensor] = {}
    for key, value in relevant.items():
        if re.search(r"\.(k_proj|v_proj)\.", key) and "out_proj" not in key:
            continue  # fused with its q_proj below
        if match := _SPLIT_QKV.match(key):
            prefix, index, kind = match.groups()
            sep = ".attn." if prefix.startswith("speech") else "."
            parts = [state[f"{prefix}.{index}{sep}{p}_proj.{kind}"] for p in ("q", "k", "v")]
            fused = torch.cat(parts, dim=0)
            if prefix.startswith("conditioning"):
                name = f"conditioning_encoder.blocks.{index}.qkv.{kind}"
                ours[name] = fused.unsqueeze(-1) if kind == "weight" else fused  # Conv1d (3C, C, 1)
            else:
                ours[f"blocks.{index}.attn.qkv.{kind}"] = fused
            continue
        if _CONV1D.search(key):
            value = value.t()
        elif "mel_attn_blocks" in key and "out_proj.weight" in key:
            value = value.unsqueeze(-1)
        new_key = key
        for pattern, replacement in _RENAMES:
            new_key = pattern.sub(replacement, new_key)
        ours[new_key] = value
    return ours


def load_autoregressive_hf(state: Mapping[str, torch.Tensor], config: Mapping[str, Any] | AutoregressiveConfig) -> AutoregressiveModel:
    """Build and strictly load the decoder from an HF CLVP state dict and its config (dict or ours): an eval-mode
    float32 model (a meta one from meta tensors)."""
    if not any(k.startswith(_DECODER) for k in state):
        raise CheckpointError(
            "the Hugging Face checkpoint has no speech_decoder_model weights: it is not a full "
            "ClvpModelForConditionalGeneration (check that the right repository was downloaded)"
        )
    if not isinstance(config, AutoregressiveConfig):
        config = autoregressive_config_from_hf(config)
    mapped = autoregressive_state_from_hf(state, config)
    with torch.device("meta"):
        model = AutoregressiveModel(config)
    mapped = {k: v.contiguous() for k, v in mapped.items()}
    return load_into_meta_model(model, mapped, "Hugging Face CLVP decoder weights")
