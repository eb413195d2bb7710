"""Hugging Face's ``ClvpModelForConditionalGeneration`` layout (transformers >= 4.36) -> this package's modules.

This section covers the CLVP scorer only: ``text_encoder_model.*``, ``speech_encoder_model.*`` and ``logit_scale``
(the original's ``temperature``). Keys of the autoregressive part (``conditioning_encoder.*``,
``speech_decoder_model.*``) are left to its own section. Names follow transformers' ``convert_clvp_to_hf.py``,
restated in the reference ``keys/hf_clvp_mapping.json``.

Differences between HF's CLVP and the original that matter when reading its files:
- HF's ``ClvpConfig()`` default speech vocabulary is 256; the released clvp2.pth (and any converted file) has 8192.
- HF's heads are ``hidden_size / num_attention_heads`` wide and its rotary width is
  ``max(projection_dim // (2 * heads), 32)``; the original fixes heads at 64 and rotary at 32. They agree for the
  released sizes; `clvp_config_from_hf` converts HF's numbers into ours and refuses configs the model cannot express.
- HF's RMSNorm is ``x * rsqrt(mean(x^2) + eps)`` (eps = layer_norm_eps, 1e-5); the original (and this package)
  divides by ``max(rms, 1e-8)``. Outputs agree to ~1e-6 for activations of unit scale, not bit for bit.
- ``get_text_features`` / ``get_speech_features`` take ids as given (no bos/eos added) and return unnormalised
  projections; only ``generate()`` appends the text eos (0) as Tortoise's tts() does.
"""

from __future__ import annotations

import re
from pathlib import Path
from typing import Any, Callable, Mapping

import torch

from ..config import ClvpConfig
from ..errors import CheckpointError
from ..models.clvp import ClvpModel
from .hf_autoregressive import (
    HF_AUTOREGRESSIVE_PREFIXES,  # the same file's decoder keys: not CLVP's business
)
from .original import StateSource, guess_checkpoint_kind
from .original_clvp import check_rotary_buffer
from .strict import (
    check_state_dict,
    load_into_meta_model,
    read_json,
    read_safetensors,
    read_torch_checkpoint,
    shape_of,
)

CONFIG_FILE = "config.json"
SAFETENSORS_FILE = "model.safetensors"
SAFETENSORS_INDEX = "model.safetensors.index.json"
TORCH_FILE = "pytorch_model.bin"

# our tower name -> HF's module prefix
_HF_TOWERS = {"text": "text_encoder_model", "speech": "speech_encoder_model"}
HF_CLVP_PREFIXES = ("text_encoder_model.", "speech_encoder_model.", "logit_scale")

# transformers' ClvpEncoderConfig defaults: `save_pretrained` omits values equal to them from config.json.
HF_ENCODER_DEFAULTS: dict[str, Any] = {
    "vocab_size": 256,
    "hidden_size": 768,
    "intermediate_size": 1536,
    "projection_dim": 768,
    "num_hidden_layers": 20,
    "num_attention_heads": 12,
    "hidden_act": "gelu",
    "layer_norm_eps": 1e-5,
    "use_rotary_embedding": True,
    "use_attention_bias": False,
    "summary_type": "mean",
}
_HF_DEFAULT_SPEECH_VOCAB = 256
_RELEASED_DIM_HEAD = 64


def _is_clvp_key(key: str) -> bool:
    return key == "logit_scale" or key.startswith(HF_CLVP_PREFIXES[:2])


def _rotary_key(tower: str) -> str:
    return f"{_HF_TOWERS[tower]}.rotary_pos_emb.inv_freq"


# ---------------------------------------------------------------------------------------------------------------
# Names
# ---------------------------------------------------------------------------------------------------------------


def clvp_hf_key_map(config: ClvpConfig) -> dict[str, str]:
    """Every CLVP parameter of a ``ClvpModelForConditionalGeneration`` state dict (HF name) -> its `ClvpModel` name."""
    mapping = {"logit_scale": "temperature"}
    depths = {"text": config.text_enc_depth, "speech": config.speech_enc_depth}
    for tower, hf in _HF_TOWERS.items():
        ours = f"{tower}_encoder"
        mapping[f"{hf}.token_embedding.weight"] = f"{ours}.token_embedding.weight"
        mapping[f"{hf}.projection.weight"] = f"{ours}.to_latent.weight"
        for param in ("weight", "bias"):
            mapping[f"{hf}.final_layer_norm.{param}"] = f"{ours}.final_norm.{param}"
        for i in range(depths[tower]):
            layer, block = f"{hf}.layers.{i}", f"{ours}.blocks.{i}"
            mapping[f"{layer}.input_rmsnorm.weight"] = f"{block}.attn_norm.weight"
            for proj in ("q", "k", "v"):
                mapping[f"{layer}.self_attn.{proj}_proj.weight"] = f"{block}.attn.{proj}_proj.weight"
            mapping[f"{layer}.post_attention_rmsnorm.weight"] = f"{block}.ff_norm.weight"
            for param in ("weight", "bias"):
                mapping[f"{layer}.self_attn.out_proj.{param}"] = f"{block}.attn.out_proj.{param}"
                mapping[f"{layer}.mlp.fc1.proj.{param}"] = f"{block}.ff.proj_in.{param}"
                mapping[f"{layer}.mlp.fc2.{param}"] = f"{block}.ff.proj_out.{param}"
    return mapping


# ---------------------------------------------------------------------------------------------------------------
# Config
# ---------------------------------------------------------------------------------------------------------------


def clvp_config_from_hf(config: Mapping[str, Any] | str | Path) -> ClvpConfig:
    """A `ClvpConfig` from a ``ClvpConfig`` config.json (a dict, the file, or its folder): ``text_config`` and
    ``speech_config`` give the two towers. Missing fields take transformers' defaults, as HF itself does."""
    source = "the Hugging Face config"
    if isinstance(config, (str, Path)):
        path = Path(config)
        path = path / CONFIG_FILE if path.is_dir() else path
        source, config = str(path), read_json(path)
    model_type = config.get("model_type", "clvp")
    if model_type != "clvp":
        raise CheckpointError(f"{source} is a {model_type!r} config, not a Hugging Face CLVP ('clvp') config")

    towers = {}
    for tower in _HF_TOWERS:
        values = {**HF_ENCODER_DEFAULTS, **(config.get(f"{tower}_config") or {})}
        problems = [
            f"{name}={values[name]!r} (need {want!r})"
            for name, want in (
                ("use_rotary_embedding", True),
                ("use_attention_bias", False),
                ("summary_type", "mean"),
                ("hidden_act", "gelu"),
            )
            if values[name] != want
        ]
        if abs(float(values["layer_norm_eps"]) - 1e-5) > 1e-12:
            problems.append(f"layer_norm_eps={values['layer_norm_eps']} (the original's norms use 1e-5)")
        hidden, heads, inner = values["hidden_size"], values["num_attention_heads"], values["intermediate_size"]
        if hidden % heads:
            problems.append(f"hidden_size {hidden} is not divisible by num_attention_heads {heads}")
        if inner % hidden:
            problems.append(f"intermediate_size {inner} is not a multiple of hidden_size {hidden}")
        if problems:
            raise CheckpointError(
                f"{source}: {tower}_config describes a CLVP this package cannot run: {'; '.join(problems)}"
            )
        towers[tower] = dict(
            vocab=values["vocab_size"],
            dim=hidden,
            depth=values["num_hidden_layers"],
            heads=heads,
            latent=values["projection_dim"],
            dim_head=hidden // heads,
            ff_mult=inner // hidden,
            rotary_dim=max(values["projection_dim"] // (heads * 2), 32),  # HF's rule (the original: max(64 // 2, 32))
        )
    text, speech = towers["text"], towers["speech"]
    shared = {name: text[name] for name in ("latent", "dim_head", "ff_mult", "rotary_dim")}
    differing = [f"{name} (text {text[name]}, speech {speech[name]})" for name in shared if speech[name] != text[name]]
    if differing:
        raise CheckpointError(f"{source}: text and speech towers must agree on {', '.join(differing)}")
    return ClvpConfig(
        dim_text=text["dim"],
        dim_speech=speech["dim"],
        dim_latent=shared["latent"],
        num_text_tokens=text["vocab"],
        text_enc_depth=text["depth"],
        text_heads=text["heads"],
        num_speech_tokens=speech["vocab"],
        speech_enc_depth=speech["depth"],
        speech_heads=speech["heads"],
        dim_head=shared["dim_head"],
        ff_mult=shared["ff_mult"],
        rotary_dim=shared["rotary_dim"],
    )


def clvp_config_from_hf_state(state: Mapping[str, Any], source: str = "the Hugging Face CLVP state dict") -> ClvpConfig:
    """Sizes read from HF tensor shapes, for a file without config.json.

    HF's q/k/v are square, so the head count is invisible: heads of 64 are assumed, as in every released CLVP.
    """
    sizes: dict[str, int] = {}
    shared: dict[str, set[int]] = {"latent": set(), "ff_mult": set(), "rotary": set()}
    for tower, hf in _HF_TOWERS.items():
        vocab, dim = shape_of(state, f"{hf}.token_embedding.weight", source)
        latent, _ = shape_of(state, f"{hf}.projection.weight", source)
        _, ff_inner = shape_of(state, f"{hf}.layers.0.mlp.fc2.weight", source)
        pattern = re.compile(re.escape(f"{hf}.layers.") + r"(\d+)\.")
        depth = 1 + max(int(m.group(1)) for key in state if (m := pattern.match(key)))
        if dim % _RELEASED_DIM_HEAD or ff_inner % dim:
            raise CheckpointError(
                f"{source}: {tower} width {dim} / feed-forward width {ff_inner} do not fit heads of "
                f"{_RELEASED_DIM_HEAD}; pass the model's config.json"
            )
        sizes.update({f"num_{tower}_tokens": vocab, f"dim_{tower}": dim, f"{tower}_enc_depth": depth,
                      f"{tower}_heads": dim // _RELEASED_DIM_HEAD})
        shared["latent"].add(latent)
        shared["ff_mult"].add(ff_inner // dim)
        if _rotary_key(tower) in state:
            shared["rotary"].add(2 * state[_rotary_key(tower)].shape[0])
    if len(shared["latent"]) != 1 or len(shared["ff_mult"]) != 1 or len(shared["rotary"]) > 1:
        raise CheckpointError(f"{source}: text and speech towers disagree on latent size, feed-forward or rotary width")
    return ClvpConfig(
        dim_latent=shared["latent"].pop(),
        ff_mult=shared["ff_mult"].pop(),
        rotary_dim=shared["rotary"].pop() if shared["rotary"] else ClvpConfig().rotary_dim,
        **sizes,
    )


# ---------------------------------------------------------------------------------------------------------------
# State dicts and files
# ---------------------------------------------------------------------------------------------------------------


def _require_hf_clvp(state: Mapping[str, Any], source: str) -> None:
    if not any(_is_clvp_key(key) for key in state):
        kind = guess_checkpoint_kind(state)
        prefixes = sorted({key.split(".")[0] for key in state})[:8]
        found = f"it looks like {kind}" if kind else f"its keys start with {prefixes}"
        hint = ""
        if kind and "clvp2" in kind:
            hint = " For the original file use tortoise_clvp.weights.original_clvp.load_clvp_original."
        raise CheckpointError(
            f"{source} is not a Hugging Face CLVP checkpoint (no text_encoder_model.* / speech_encoder_model.* / "
            f"logit_scale keys): {found}. Pass the right file for this slot.{hint}"
        )


def clvp_state_from_hf(
    state: Mapping[str, torch.Tensor], config: ClvpConfig, source: str = "the Hugging Face CLVP state dict"
) -> dict[str, torch.Tensor]:
    """Check the CLVP part of a ``ClvpModelForConditionalGeneration`` state dict and rename it to `ClvpModel`'s keys.

    Autoregressive keys (``conditioning_encoder.*``, ``speech_decoder_model.*``) are skipped; any other key that is
    not a CLVP parameter is reported as unexpected. Rotary ``inv_freq`` buffers are checked, then dropped.
    """
    _require_hf_clvp(state, source)
    clvp = {k: v for k, v in state.items() if not k.startswith(HF_AUTOREGRESSIVE_PREFIXES)}
    for tower in _HF_TOWERS:
        key = _rotary_key(tower)
        if key in clvp:
            check_rotary_buffer(clvp.pop(key), config.rotary_dim, key, source)
    with torch.device("meta"):
        ours = {k: v.shape for k, v in ClvpModel(config).state_dict().items()}
    mapping = clvp_hf_key_map(config)
    if set(mapping.values()) != set(ours):
        raise AssertionError(f"HF CLVP key map out of date: {sorted(set(ours) ^ set(mapping.values()))[:8]}")
    expected = {hf: ours[name] for hf, name in mapping.items()}
    check_state_dict(expected, clvp, f"{source} (Hugging Face CLVP)")
    return {mapping[key]: tensor for key, tensor in clvp.items()}


def read_hf_clvp_state(
    path: str | Path, keep: Callable[[str], bool] = _is_clvp_key, meta: bool = False
) -> dict[str, torch.Tensor]:
    """The tensors of a HF checkpoint whose names pass `keep` (default: the CLVP scorer's): a folder
    (model.safetensors, a sharded index, or pytorch_model.bin) or one weights file. Safetensors files are read
    lazily, so tensors that are not kept are never loaded (a ``.bin`` is read whole); with `meta`, only shapes are
    read (meta tensors)."""
    path = Path(path)
    if path.is_dir():
        if (path / SAFETENSORS_FILE).is_file():
            return read_safetensors(path / SAFETENSORS_FILE, keep, meta)
        if (path / SAFETENSORS_INDEX).is_file():
            weight_map = read_json(path / SAFETENSORS_INDEX).get("weight_map", {})
            shards = sorted({shard for key, shard in weight_map.items() if keep(key)})
            if not shards:
                raise CheckpointError(f"{path / SAFETENSORS_INDEX} lists none of the tensors needed; re-download the model")
            state: dict[str, torch.Tensor] = {}
            for shard in shards:
                state.update(read_safetensors(path / shard, keep, meta))
            return state
        if (path / TORCH_FILE).is_file():
            return read_torch_checkpoint(path / TORCH_FILE, meta)
        raise CheckpointError(
            f"no weights found in {path}: looked for {SAFETENSORS_FILE}, {SAFETENSORS_INDEX} and {TORCH_FILE}"
        )
    if path.suffix == ".safetensors":
        return read_safetensors(path, keep, meta)
    return read_torch_checkpoint(path, meta)


def load_clvp_hf(
    path_or_state: StateSource, config: ClvpConfig | Mapping[str, Any] | None = None, source: str | None = None
) -> ClvpModel:
    """Load the CLVP scorer of a HF ``ClvpModelForConditionalGeneration`` checkpoint into an eval-mode `ClvpModel`.

    ``path_or_state``: a folder saved by ``save_pretrained``, one weights file, or a state dict (called `source` in
    messages; meta tensors give a meta model).
    ``config``: a `ClvpConfig`, a HF config dict, or None: then the folder's (or the file's sibling) config.json is
    read, and failing that the sizes are read from the tensor shapes.
    """
    if isinstance(path_or_state, (str, Path)):
        path = Path(path_or_state)
        if not path.exists():
            raise CheckpointError(
                f"checkpoint not found: {path}. Download the model files or pass the right directory."
            )
        source, state = str(path), read_hf_clvp_state(path)
        config_file = (path if path.is_dir() else path.parent) / CONFIG_FILE
        if config is None and config_file.is_file():
            config = config_file  # type: ignore[assignment]
    elif isinstance(path_or_state, Mapping):
        source, state = source or "the given state dict", dict(path_or_state)
    else:
        raise TypeError(f"expected a checkpoint path or a state dict, got {type(path_or_state).__name__}")

    _require_hf_clvp(state, source)
    from_json = config is not None and not isinstance(config, ClvpConfig)
    if config is None:
        config = clvp_config_from_hf_state(state, source)
    elif from_json:
        config = clvp_config_from_hf(config)  # type: ignore[arg-type]
    assert isinstance(config, ClvpConfig)
    try:
        mapped = clvp_state_from_hf(state, config, source)
    except CheckpointError as exc:
        embedding = state.get("speech_encoder_model.token_embedding.weight")
        if from_json and embedding is not None and embedding.shape[0] != config.num_speech_tokens:
            raise CheckpointError(
                f"{exc}\nHint: config.json says speech_config.vocab_size={config.num_speech_tokens}"
                f"{' (transformers default)' if config.num_speech_tokens == _HF_DEFAULT_SPEECH_VOCAB else ''}, "
                f"but the weights have {embedding.shape[0]} speech codes; set speech_config.vocab_size to "
                f"{embedding.shape[0]}."
            ) from None
        raise
    with torch.device("meta"):
        model = ClvpModel(config)
    return load_into_meta_model(model, mapped, f"{source} (Hugging Face CLVP)")
