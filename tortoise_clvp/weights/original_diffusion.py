"""Tortoise's diffusion_decoder.pth (`DiffusionTts` state dict) -> `DiffusionModel`.

An explicit key map built from the config, sizes read from tensor shapes, every key and shape checked in the
file's own names; `load_diffusion_original` runs them through `original.load_part`. The file holds exactly the
model's parameters (the original loads it with strict=True): nothing is dropped.
"""

from __future__ import annotations

import re
from typing import Any, Mapping

import torch

from ..config import DiffusionConfig
from ..errors import CheckpointError
from ..models.diffusion import (
    CODE_CONVERTER_BLOCKS,
    CONTEXTUAL_EMBEDDER_BLOCKS,
    LATENT_CONDITIONER_BLOCKS,
    TAIL_RESBLOCKS,
    TIMESTEP_INTEGRATOR_LAYERS,
    DiffusionModel,
)
from .original import (
    OriginalFormat,
    StateSource,
    deinterleave_heads,
    load_part,
    wrong_slot,
)
from .strict import check_state_dict, shape_of

DIFFUSION_CHECKPOINT = "diffusion_decoder.pth"
# Constructor arguments of DiffusionTts that only matter for training (or pick autocast, a runtime choice).
_DIFFUSION_TRAINING_ONLY_KWARGS = ("dropout", "use_fp16", "layer_drop", "unconditioned_percentage")
_QKV = re.compile(r"\.qkv\.(weight|bias)$")
_ATTENTION_CONV_WEIGHT = re.compile(r"\.(qkv|proj_out)\.weight$")  # 1x1 convs (out, in, 1); ours are linears


def _attention_keys(theirs: str, ours: str) -> dict[str, str]:
    """arch_util.AttentionBlock(relative_pos_embeddings=True) -> our AttentionBlock."""
    mapping = {f"{theirs}.relative_pos_embeddings.relative_attention_bias.weight": f"{ours}.rel_bias.weight"}
    for part in ("norm", "qkv", "proj_out"):
        for param in ("weight", "bias"):
            mapping[f"{theirs}.{part}.{param}"] = f"{ours}.{part}.{param}"
    return mapping


def _resblock_keys(theirs: str, ours: str) -> dict[str, str]:
    """diffusion_decoder.ResBlock: in_layers = (norm, SiLU, conv), emb_layers = (SiLU, linear),
    out_layers = (norm, SiLU, Dropout, conv)."""
    parts = {"in_layers.0": "in_norm", "in_layers.2": "in_conv", "emb_layers.1": "emb_proj",
             "out_layers.0": "out_norm", "out_layers.3": "out_conv"}
    return {f"{theirs}.{a}.{param}": f"{ours}.{b}.{param}" for a, b in parts.items() for param in ("weight", "bias")}


def _diffusion_layer_keys(theirs: str, ours: str) -> dict[str, str]:
    return {**_resblock_keys(f"{theirs}.resblk", f"{ours}.res"), **_attention_keys(f"{theirs}.attn", f"{ours}.attn")}


def diffusion_key_map(config: DiffusionConfig) -> dict[str, str]:
    """Every tensor of diffusion_decoder.pth (original name) -> its name in `DiffusionModel`."""
    mapping = {"unconditioned_embedding": "unconditioned_embedding", "code_embedding.weight": "code_embedding.weight"}
    plain = {"inp_block": "input_conv", "time_embed.0": "time_in", "time_embed.2": "time_out",
             "code_norm": "code_norm", "latent_conditioner.0": "latent_conv", "contextual_embedder.0": "cond_conv1",
             "contextual_embedder.1": "cond_conv2", "integrating_conv": "merge_conv", "mel_head": "mel_head",
             "out.0": "out_norm", "out.2": "out_conv"}  # out.1 is SiLU
    for theirs, ours in plain.items():
        for param in ("weight", "bias"):
            mapping[f"{theirs}.{param}"] = f"{ours}.{param}"
    for i in range(CODE_CONVERTER_BLOCKS):
        mapping.update(_attention_keys(f"code_converter.{i}", f"code_blocks.{i}"))
    for i in range(LATENT_CONDITIONER_BLOCKS):  # latent_conditioner.0 is the input conv
        mapping.update(_attention_keys(f"latent_conditioner.{i + 1}", f"latent_blocks.{i}"))
    for i in range(CONTEXTUAL_EMBEDDER_BLOCKS):  # contextual_embedder.0/.1 are the two strided convs
        mapping.update(_attention_keys(f"contextual_embedder.{i + 2}", f"cond_blocks.{i}"))
    for i in range(TIMESTEP_INTEGRATOR_LAYERS):
        mapping.update(_diffusion_layer_keys(f"conditioning_timestep_integrator.{i}", f"integrator.{i}"))
    for i in range(config.num_layers):
        mapping.update(_diffusion_layer_keys(f"layers.{i}", f"layers.{i}"))
    for i in range(TAIL_RESBLOCKS):  # the original appends its 3 plain res-blocks to the same `layers` list
        mapping.update(_resblock_keys(f"layers.{config.num_layers + i}", f"tail.{i}"))
    return mapping


def diffusion_config_from_original_kwargs(kwargs: Mapping[str, Any]) -> DiffusionConfig:
    """A `DiffusionConfig` from the original ``DiffusionTts(**kwargs)`` arguments (api.py / the fixtures list them).
    Training-only arguments (dropout, layer drop, unconditioned percentage, use_fp16) are ignored."""
    kwargs = {k: v for k, v in kwargs.items() if k not in _DIFFUSION_TRAINING_ONLY_KWARGS}
    return DiffusionConfig.from_dict(kwargs)


def diffusion_config_from_state(state: Mapping[str, Any], source: str = "the diffusion state dict") -> DiffusionConfig:
    """Sizes of a diffusion_decoder.pth-style state dict, read from its tensor shapes.

    Unlike the autoregressive file, the head count is visible: every attention block's relative position bias
    table is (buckets, heads). Only ``rel_pos_max_distance`` (64, hard-coded in the original) is not stored.
    """
    channels, in_channels, _ = shape_of(state, "inp_block.weight", source)
    buckets, heads = shape_of(state, "code_converter.0.relative_pos_embeddings.relative_attention_bias.weight", source)
    layers = {int(m.group(1)) for key in state if (m := re.match(r"layers\.(\d+)\.resblk\.", key))}
    if channels % heads:
        raise CheckpointError(f"{source}: {channels} channels do not split into {heads} attention heads")
    return DiffusionConfig(
        model_channels=channels,
        num_layers=len(layers),
        num_heads=heads,
        in_channels=in_channels,
        in_latent_channels=shape_of(state, "latent_conditioner.0.weight", source)[1],
        in_tokens=shape_of(state, "code_embedding.weight", source)[0],
        out_channels=shape_of(state, "out.2.weight", source)[0],
        rel_pos_buckets=buckets,
    )


def _plain_diffusion(state: Mapping[str, Any], source: str) -> Mapping[str, Any]:
    """`state` itself once it is known to be a diffusion_decoder.pth-style state dict."""
    if not all(isinstance(v, torch.Tensor) for v in state.values()) \
            or not any(k.startswith("code_converter.") for k in state) \
            or not any(k.startswith("conditioning_timestep_integrator.") for k in state):
        raise wrong_slot(state, source, f"a diffusion decoder checkpoint ({DIFFUSION_CHECKPOINT})")
    return state


def diffusion_state_from_original(
    state: Mapping[str, torch.Tensor], config: DiffusionConfig, source: str = "the diffusion state dict"
) -> dict[str, torch.Tensor]:
    """Check diffusion_decoder.pth against ``config`` (every key and shape, in the file's names) and convert it:
    attention qkv rows de-interleaved from per head [q_h k_h v_h] to [q; k; v]."""
    state = _plain_diffusion(state, source)
    mapping = diffusion_key_map(config)
    with torch.device("meta"):
        ours = {k: v.shape for k, v in DiffusionModel(config).state_dict().items()}
    if set(mapping.values()) != set(ours):
        raise AssertionError(f"diffusion key map out of date: {sorted(set(ours) ^ set(mapping.values()))[:8]}")
    expected = {original: ours[name] for original, name in mapping.items()}
    for key in expected:
        if _ATTENTION_CONV_WEIGHT.search(key):
            expected[key] = (*expected[key], 1)
    check_state_dict(expected, state, f"{source} (diffusion)")
    converted = {}
    for key, name in mapping.items():
        value = state[key]
        if _ATTENTION_CONV_WEIGHT.search(key):
            value = value[..., 0]
        if _QKV.search(key):
            value = deinterleave_heads(value, config.num_heads)
        converted[name] = value
    return converted


FORMAT = OriginalFormat(DIFFUSION_CHECKPOINT, "diffusion", DiffusionModel, _plain_diffusion,
                        diffusion_config_from_state, diffusion_state_from_original)


def load_diffusion_original(path_or_state: StateSource, config: DiffusionConfig | None = None) -> DiffusionModel:
    """Load Tortoise's diffusion_decoder.pth (a path or a state dict) into an eval-mode float32 `DiffusionModel`.
    With ``config=None`` the sizes come from the tensor shapes."""
    return load_part(FORMAT, path_or_state, config)
