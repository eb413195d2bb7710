"""Tortoise's clvp2.pth (the CLVP scorer, x-transformers layout) -> `ClvpModel`.

An explicit key map built from the config, sizes read from tensor shapes, every key and shape checked in the file's
own names; `load_clvp_original` runs them through `original.load_part`. The saved rotary ``inv_freq`` buffers are
checked against the ones the model recomputes, then dropped.
"""

from __future__ import annotations

import re
from typing import Any, Mapping

import torch

from ..config import ClvpConfig
from ..errors import CheckpointError
from ..models.clvp import ClvpModel, rotary_inv_freq
from .original import (
    HF_SIGNATURE,
    OriginalFormat,
    StateSource,
    guess_checkpoint_kind,
    load_part,
    require_tensors,
    wrong_slot,
)
from .strict import check_state_dict, shape_of

CLVP_CHECKPOINT = "clvp2.pth"
# our tower name -> the original's attribute prefixes (embedding, x-transformers stack, latent projection)
_CLVP_TOWERS = {
    "text": ("text_emb", "text_transformer.transformer", "to_text_latent"),
    "speech": ("speech_emb", "speech_transformer.transformer", "to_speech_latent"),
}
# Constructor kwargs of the original CLVP that only matter for training (token masking, unused compression).
_CLVP_TRAINING_ONLY_KWARGS = ("text_mask_percentage", "voice_mask_percentage", "wav_token_compression")


def check_rotary_buffer(tensor: Any, rotary_dim: int, key: str, source: str) -> None:
    """A saved rotary ``inv_freq`` buffer must be the one the model recomputes; it is then dropped."""
    expected = rotary_inv_freq(rotary_dim)
    if not isinstance(tensor, torch.Tensor) or tuple(tensor.shape) != tuple(expected.shape):
        shape = list(tensor.shape) if isinstance(tensor, torch.Tensor) else type(tensor).__name__
        raise CheckpointError(
            f"{source}: {key} has shape {shape}, expected {list(expected.shape)} (rotary on {rotary_dim} channels). "
            "The file does not match the model config."
        )
    if tensor.device.type != "meta" and not torch.allclose(tensor.float(), expected, rtol=1e-3, atol=1e-7):
        raise CheckpointError(
            f"{source}: {key} holds rotary frequencies other than 1 / 10000^(2i/{rotary_dim}); "
            "this model recomputes them and cannot load a file trained with other ones."
        )


def _clvp_depths(config: ClvpConfig) -> dict[str, int]:
    return {"text": config.text_enc_depth, "speech": config.speech_enc_depth}


def clvp_rotary_buffer_keys() -> tuple[str, ...]:
    """The rotary ``inv_freq`` buffers clvp2.pth holds (checked against the recomputed ones, then dropped)."""
    return tuple(f"{stack}.attn_layers.rotary_pos_emb.inv_freq" for _, stack, _ in _CLVP_TOWERS.values())


def clvp_key_map(config: ClvpConfig) -> dict[str, str]:
    """Every parameter of clvp2.pth (original name) -> its name in `ClvpModel`.

    x-transformers stores layer ``2i`` (attention) and ``2i + 1`` (feed-forward) as
    ``layers.{n}.0.0`` = pre-norm, ``layers.{n}.1.wrap`` = the block (``wrap`` from Tortoise's checkpoint wrapper),
    ``layers.{n}.2`` = the residual (no parameters).
    """
    mapping = {"temperature": "temperature"}
    for tower, (embedding, stack, to_latent) in _CLVP_TOWERS.items():
        ours = f"{tower}_encoder"
        mapping[f"{embedding}.weight"] = f"{ours}.token_embedding.weight"
        mapping[f"{to_latent}.weight"] = f"{ours}.to_latent.weight"
        for i in range(_clvp_depths(config)[tower]):
            attn, ff = f"{stack}.attn_layers.layers.{2 * i}", f"{stack}.attn_layers.layers.{2 * i + 1}"
            block = f"{ours}.blocks.{i}"
            mapping[f"{attn}.0.0.g"] = f"{block}.attn_norm.weight"
            for proj in ("q", "k", "v"):
                mapping[f"{attn}.1.wrap.to_{proj}.weight"] = f"{block}.attn.{proj}_proj.weight"
            mapping[f"{attn}.1.wrap.to_out.weight"] = f"{block}.attn.out_proj.weight"
            mapping[f"{attn}.1.wrap.to_out.bias"] = f"{block}.attn.out_proj.bias"
            mapping[f"{ff}.0.0.g"] = f"{block}.ff_norm.weight"
            for param in ("weight", "bias"):
                mapping[f"{ff}.1.wrap.net.0.proj.{param}"] = f"{block}.ff.proj_in.{param}"  # GEGLU's joint projection
                mapping[f"{ff}.1.wrap.net.3.{param}"] = f"{block}.ff.proj_out.{param}"  # net.1 Identity, net.2 Dropout
        for param in ("weight", "bias"):
            mapping[f"{stack}.norm.{param}"] = f"{ours}.final_norm.{param}"
    return mapping


def clvp_config_from_original_kwargs(kwargs: Mapping[str, Any]) -> ClvpConfig:
    """A `ClvpConfig` from the original ``CLVP(**kwargs)`` constructor arguments (as api.py / the fixtures list them).

    Training-only arguments (token masking, ``wav_token_compression``) are ignored; ``use_xformers=False`` builds a
    different network (learned position embeddings, another transformer) that this package does not implement.
    """
    kwargs = dict(kwargs)
    if not kwargs.pop("use_xformers", False):
        raise ValueError(
            "only CLVP(use_xformers=True) is supported (the released clvp2.pth); "
            "use_xformers=False is a different architecture"
        )
    for name in _CLVP_TRAINING_ONLY_KWARGS:
        kwargs.pop(name, None)
    return ClvpConfig.from_dict(kwargs)


def clvp_config_from_state(state: Mapping[str, Any], source: str = "the CLVP state dict") -> ClvpConfig:
    """Sizes of a clvp2.pth-style state dict, read from its tensor shapes.

    Heads cannot be seen in the shapes as such: every head is ``dim_head`` (64) wide, so heads = q rows / 64.
    ``text_seq_len`` / ``speech_seq_len`` are not stored (and not used by this model): they keep their defaults.
    """
    dim_head = ClvpConfig().dim_head
    sizes: dict[str, int] = {}
    shared: dict[str, set[int]] = {"dim_latent": set(), "ff_mult": set(), "rotary_dim": set()}
    for tower, (embedding, stack, to_latent) in _CLVP_TOWERS.items():
        vocab, dim = shape_of(state, f"{embedding}.weight", source)
        dim_latent, latent_in = shape_of(state, f"{to_latent}.weight", source)
        q_rows, _ = shape_of(state, f"{stack}.attn_layers.layers.0.1.wrap.to_q.weight", source)
        _, ff_inner = shape_of(state, f"{stack}.attn_layers.layers.1.1.wrap.net.3.weight", source)
        pattern = re.compile(re.escape(f"{stack}.attn_layers.layers.") + r"(\d+)\.")
        n_layers = 1 + max(int(m.group(1)) for key in state if (m := pattern.match(key)))
        if n_layers % 2:
            raise CheckpointError(f"{source}: the {tower} encoder's {n_layers} layers are not (attention, ff) pairs")
        if q_rows % dim_head or ff_inner % dim or latent_in != dim:
            raise CheckpointError(
                f"{source}: the {tower} encoder's shapes (q {q_rows} rows, feed-forward width {ff_inner}, "
                f"model width {dim}, latent input {latent_in}) do not fit CLVP's layout (heads of {dim_head})"
            )
        sizes.update({f"num_{tower}_tokens": vocab, f"dim_{tower}": dim, f"{tower}_enc_depth": n_layers // 2,
                      f"{tower}_heads": q_rows // dim_head})
        shared["dim_latent"].add(dim_latent)
        shared["ff_mult"].add(ff_inner // dim)
        rotary_key = f"{stack}.attn_layers.rotary_pos_emb.inv_freq"
        shared["rotary_dim"].add(2 * state[rotary_key].shape[0] if rotary_key in state else ClvpConfig().rotary_dim)
    disagreeing = sorted(name for name, values in shared.items() if len(values) != 1)
    if disagreeing:
        raise CheckpointError(f"{source}: the text and speech encoders disagree on {', '.join(disagreeing)}")
    return ClvpConfig(**sizes, **{name: values.pop() for name, values in shared.items()})


def _plain_clvp(state: Mapping[str, Any], source: str) -> Mapping[str, Any]:
    """`state` itself once it is known to be a clvp2.pth-style state dict."""
    wanted = f"a CLVP checkpoint ({CLVP_CHECKPOINT})"
    require_tensors(state, source, wanted)
    has_text = "text_emb.weight" in state or any(k.startswith("text_transformer.") for k in state)
    has_speech = "speech_emb.weight" in state or any(k.startswith("speech_transformer.") for k in state)
    if not (has_text and has_speech):
        hint = ""
        if guess_checkpoint_kind(state) == HF_SIGNATURE:
            hint = " For Hugging Face's layout use tortoise_clvp.weights.hf_clvp.load_clvp_hf."
        raise wrong_slot(state, source, wanted, hint)
    return state


def clvp_state_from_original(
    state: Mapping[str, torch.Tensor], config: ClvpConfig, source: str = "the CLVP state dict"
) -> dict[str, torch.Tensor]:
    """Check a clvp2.pth state dict against ``config`` (every key, every shape) and rename it to `ClvpModel`'s keys."""
    state = dict(_plain_clvp(state, source))
    for key in clvp_rotary_buffer_keys():
        if key in state:  # optional: a file saved without persistent buffers is fine too
            check_rotary_buffer(state.pop(key), config.rotary_dim, key, source)
    with torch.device("meta"):
        ours = {k: v.shape for k, v in ClvpModel(config).state_dict().items()}
    mapping = clvp_key_map(config)
    expected = {original: ours[name] for original, name in mapping.items()}
    if set(mapping.values()) != set(ours):  # the key map and the model must describe the same parameters
        raise AssertionError(f"CLVP key map out of date: {sorted(set(ours) ^ set(mapping.values()))[:8]}")
    check_state_dict(expected, state, f"{source} (CLVP)")
    return {mapping[key]: tensor for key, tensor in state.items()}


FORMAT = OriginalFormat(CLVP_CHECKPOINT, "CLVP", ClvpModel, _plain_clvp, clvp_config_from_state,
                        clvp_state_from_original)


def load_clvp_original(path_or_state: StateSource, config: ClvpConfig | None = None) -> ClvpModel:
    """Load Tortoise's clvp2.pth (a path or an already-read state dict) into an eval-mode float32 `ClvpModel`.

    With ``config=None`` the sizes are read from the tensor shapes (`clvp_config_from_state`).
    """
    return load_part(FORMAT, path_or_state, config)
