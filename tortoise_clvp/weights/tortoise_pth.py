"""Original Tortoise checkpoints (the released ``.pth`` files) -> this package's modules.

One section per model file. Each section provides
- an explicit key map built from the config (original name -> our name; no pattern guessing at load time),
- ``<model>_config_from_state(state)``: sizes read from tensor shapes, so a released file loads without typing them,
- ``<model>_state_from_original(state, config)``: checks every key and shape *in the file's own names* (so an
  error message points at what is really in the file) and returns a state dict in our names,
- ``load_<model>_original(path_or_state, config=None)``: read safely, map, load strictly, return an eval-mode model.

Every failure is a `CheckpointError` that says what was wrong, never a torch traceback.
"""

from __future__ import annotations

import re
from pathlib import Path
from typing import Any, Mapping, Union

import torch

from ..config import AutoregressiveConfig, ClvpConfig
from ..errors import CheckpointError
from ..models.autoregressive import AutoregressiveModel
from ..models.clvp import ClvpModel, rotary_inv_freq
from .strict import check_state_dict, load_strict, read_torch_checkpoint, shape_of

StateSource = Union[str, Path, Mapping[str, torch.Tensor]]


# ---------------------------------------------------------------------------------------------------------------
# Shared helpers
# ---------------------------------------------------------------------------------------------------------------

# (what the file is, key prefixes that must all occur in it). Used only to say what a wrong file looks like.
_CHECKPOINT_SIGNATURES: tuple[tuple[str, tuple[str, ...]], ...] = (
    ("Tortoise's autoregressive.pth (UnifiedVoice)", ("gpt.", "mel_head.", "conditioning_encoder.")),
    ("Tortoise's clvp2.pth (CLVP)", ("text_emb.", "to_text_latent.", "text_transformer.")),
    ("Tortoise's cvvp.pth (CVVP)", ("cond_emb.", "to_conditioning_latent.")),
    ("Tortoise's diffusion_decoder.pth (DiffusionTts)", ("code_converter.", "latent_conditioner.")),
    ("Tortoise's vocoder.pth (UnivNet, {'model_g': ...} wrapper)", ("model_g",)),
    ("a UnivNet vocoder state dict", ("conv_pre.", "res_stack.", "conv_post.")),
    ("Tortoise's classifier.pth", ("enc.", "head.")),
    (
        "a Hugging Face ClvpModelForConditionalGeneration state dict",
        ("text_encoder_model.", "speech_encoder_model."),
    ),
)


def guess_checkpoint_kind(state: Mapping[str, Any]) -> str | None:
    """Name the known checkpoint whose key prefixes all occur in ``state`` (None when nothing fits)."""
    keys = list(state)
    for name, prefixes in _CHECKPOINT_SIGNATURES:
        if all(any(key == p or key.startswith(p) for key in keys) for p in prefixes):
            return name
    return None


def _read_state(path_or_state: StateSource) -> tuple[dict[str, Any], str]:
    """A state dict and a description of where it came from (for error messages)."""
    if isinstance(path_or_state, (str, Path)):
        return read_torch_checkpoint(path_or_state), str(path_or_state)
    if isinstance(path_or_state, Mapping):
        return dict(path_or_state), "the given state dict"
    raise TypeError(f"expected a checkpoint path or a state dict, got {type(path_or_state).__name__}")


def _wrong_slot(state: Mapping[str, Any], source: str, wanted: str, hint: str = "") -> CheckpointError:
    kind = guess_checkpoint_kind(state)
    found = f"it looks like {kind}" if kind else f"its keys start with {sorted({k.split('.')[0] for k in state})[:8]}"
    return CheckpointError(f"{source} is not {wanted}: {found}. Pass the right file for this slot.{hint}")


def _is_meta(tensor: torch.Tensor) -> bool:
    return tensor.device.type == "meta"


def _check_rotary_buffer(tensor: Any, rotary_dim: int, key: str, source: str) -> None:
    """A saved rotary ``inv_freq`` buffer must be the one the model recomputes; it is then dropped."""
    expected = rotary_inv_freq(rotary_dim)
    if not isinstance(tensor, torch.Tensor) or tuple(tensor.shape) != tuple(expected.shape):
        shape = list(tensor.shape) if isinstance(tensor, torch.Tensor) else type(tensor).__name__
        raise CheckpointError(
            f"{source}: {key} has shape {shape}, expected {list(expected.shape)} (rotary on {rotary_dim} channels). "
            "The file does not match the model config."
        )
    if not _is_meta(tensor) and not torch.allclose(tensor.float(), expected, rtol=1e-3, atol=1e-7):
        raise CheckpointError(
            f"{source}: {key} holds rotary frequencies other than 1 / 10000^(2i/{rotary_dim}); "
            "this model recomputes them and cannot load a file trained with other ones."
        )


def _load_into_meta_model(model: torch.nn.Module, state: Mapping[str, torch.Tensor], what: str) -> torch.nn.Module:
    """Load ``state`` strictly into a model built on the meta device: its tensors become the parameters (float32,
    no second copy; a caller's state dict is used in place). Returns the model in eval mode without gradients."""
    state = {k: v.float() if v.is_floating_point() else v for k, v in state.items()}
    load_strict(model, state, what)
    return model.eval().requires_grad_(False)


# ---------------------------------------------------------------------------------------------------------------
# CLVP (clvp2.pth)
# ---------------------------------------------------------------------------------------------------------------

CLVP_CHECKPOINT = "clvp2.pth"
# our tower name -> the original's attribute prefixes (embedding, x-transformers stack, latent projection)
_CLVP_TOWERS = {
    "text": ("text_emb", "text_transformer.transformer", "to_text_latent"),
    "speech": ("speech_emb", "speech_transformer.transformer", "to_speech_latent"),
}
# Constructor kwargs of the original CLVP that only matter for training (token masking, unused compression).
_CLVP_TRAINING_ONLY_KWARGS = ("text_mask_percentage", "voice_mask_percentage", "wav_token_compression")


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


def _require_tensors(state: Mapping[str, Any], source: str, wanted: str) -> None:
    """`state` must be a non-empty plain state dict of tensors; otherwise say what it is instead."""
    if not state:
        raise CheckpointError(f"{source} is not {wanted}: it holds no tensors at all.")
    if not all(isinstance(v, torch.Tensor) for v in state.values()):
        kind = guess_checkpoint_kind(state)
        raise CheckpointError(
            f"{source} is not {wanted}: it holds a wrapper with entries {sorted(state)[:8]} instead of a plain state "
            f"dict of tensors{f' (it looks like {kind})' if kind else ''}. Pass the right file for this slot."
        )


def _require_clvp(state: Mapping[str, Any], source: str) -> None:
    wanted = f"a CLVP checkpoint ({CLVP_CHECKPOINT})"
    _require_tensors(state, source, wanted)
    has_text = "text_emb.weight" in state or any(k.startswith("text_transformer.") for k in state)
    has_speech = "speech_emb.weight" in state or any(k.startswith("speech_transformer.") for k in state)
    if not (has_text and has_speech):
        hint = ""
        if guess_checkpoint_kind(state) == _CHECKPOINT_SIGNATURES[-1][0]:
            hint = " For Hugging Face's layout use tortoise_clvp.weights.hf_clvp.load_clvp_hf."
        raise _wrong_slot(state, source, f"a CLVP checkpoint ({CLVP_CHECKPOINT})", hint)


def clvp_state_from_original(
    state: Mapping[str, torch.Tensor], config: ClvpConfig, source: str = "the CLVP state dict"
) -> dict[str, torch.Tensor]:
    """Check a clvp2.pth state dict against ``config`` (every key, every shape) and rename it to `ClvpModel`'s keys."""
    _require_clvp(state, source)
    state = dict(state)
    for key in clvp_rotary_buffer_keys():
        if key in state:  # optional: a file saved without persistent buffers is fine too
            _check_rotary_buffer(state.pop(key), config.rotary_dim, key, source)
    with torch.device("meta"):
        ours = {k: v.shape for k, v in ClvpModel(config).state_dict().items()}
    mapping = clvp_key_map(config)
    expected = {original: ours[name] for original, name in mapping.items()}
    if set(mapping.values()) != set(ours):  # the key map and the model must describe the same parameters
        raise AssertionError(f"CLVP key map out of date: {sorted(set(ours) ^ set(mapping.values()))[:8]}")
    check_state_dict(expected, state, f"{source} (CLVP)")
    return {mapping[key]: tensor for key, tensor in state.items()}


def load_clvp_original(path_or_state: StateSource, config: ClvpConfig | None = None) -> ClvpModel:
    """Load Tortoise's clvp2.pth (a path or an already-read state dict) into an eval-mode float32 `ClvpModel`.

    With ``config=None`` the sizes are read from the tensor shapes (`clvp_config_from_state`).
    """
    state, source = _read_state(path_or_state)
    _require_clvp(state, source)
    if config is None:
        config = clvp_config_from_state(state, source)
    mapped = clvp_state_from_original(state, config, source)
    with torch.device("meta"):
        model = ClvpModel(config)
    return _load_into_meta_model(model, mapped, f"{source} (CLVP)")


# ---------------------------------------------------------------------------------------------------------------
# Autoregressive decoder (autoregressive.pth)
# ---------------------------------------------------------------------------------------------------------------

AUTOREGRESSIVE_CHECKPOINT = "autoregressive.pth"
# heads cannot be read off GPT-2 weight shapes; the released width is the only one known without a config
_KNOWN_AR_HEADS = {AutoregressiveConfig.RELEASED.model_dim: AutoregressiveConfig.RELEASED.heads}
# Dropped after a check: GPT-2 attention buffers older transformers saved (quirk: the released file very likely
# holds them) and the training-only next-text-token head.
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
    state: Mapping[str, Any], heads: int | None = None, source: str = "the autoregressive state dict"
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


def _deinterleave_heads(tensor: torch.Tensor, heads: int) -> torch.Tensor:
    """Conv qkv rows laid out per head [q_h k_h v_h] -> [q (all heads); k; v] (quirk 7)."""
    per_head = tensor.shape[0] // (3 * heads)
    return tensor.reshape(heads, 3, per_head, *tensor.shape[1:]).transpose(0, 1).reshape(tensor.shape)


def _require_autoregressive(state: Mapping[str, Any], source: str) -> None:
    if not all(isinstance(v, torch.Tensor) for v in state.values()) or "mel_head.weight" not in state \
            or not any(k.startswith("gpt.h.") for k in state):
        hint = ""
        if guess_checkpoint_kind(state) == _CHECKPOINT_SIGNATURES[-1][0]:
            hint = " For Hugging Face's layout use tortoise_clvp.weights.hf_autoregressive.load_autoregressive_hf."
        raise _wrong_slot(state, source, f"an autoregressive checkpoint ({AUTOREGRESSIVE_CHECKPOINT})", hint)


def autoregressive_state_from_original(
    state: Mapping[str, torch.Tensor], config: AutoregressiveConfig, source: str = "the autoregressive state dict"
) -> dict[str, torch.Tensor]:
    """Check autoregressive.pth against ``config`` (every key and shape, in the file's names) and convert it:
    GPT-2 Conv1D weights transposed to Linear, conditioning qkv rows de-interleaved per head."""
    _require_autoregressive(state, source)
    state = {k: v for k, v in state.items() if not _LEGACY_GPT2_BUFFER.match(k)}
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
            value = _deinterleave_heads(value, config.heads)
        converted[name] = value
    return converted


def load_autoregressive_original(
    path_or_state: StateSource, config: AutoregressiveConfig | None = None
) -> AutoregressiveModel:
    """Load Tortoise's autoregressive.pth (a path or a state dict) into an eval-mode float32 `AutoregressiveModel`."""
    state, source = _read_state(path_or_state)
    _require_autoregressive(state, source)
    if config is None:
        config = autoregressive_config_from_state(state, source=source)
    mapped = autoregressive_state_from_original(state, config, source)
    with torch.device("meta"):
        model = AutoregressiveModel(config)
    return _load_into_meta_model(model, {k: v.contiguous() for k, v in mapped.items()}, f"{source} (autoregressive)")
