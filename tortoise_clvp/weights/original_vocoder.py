"""Tortoise's vocoder.pth (UnivNet) -> `UnivNetVocoder`, with weight norm folded into plain weights.

The released file is ``{'model_g': state_dict}``; every convolution in it is weight-normalised, stored as a pair
``weight_g`` (gain, shape (out, 1, 1)) and ``weight_v`` (direction, the weight's shape). Tortoise removes the weight
norm right after loading (``eval(inference=True)``); here it is folded once, in the loader:

    weight = v * (g / ||v||)      # norm over every dim but 0, per output row (torch's weight_norm default, dim=0)

Also accepted: a bare state dict, one whose weight norm was already removed (plain ``weight``), and one saved with
``torch.nn.utils.parametrizations.weight_norm`` (``parametrizations.weight.original0`` = g, ``original1`` = v).

As for the other original files: an explicit key map built from the config, the config from the constructor's
kwargs or from tensor shapes, every key and shape checked in the file's own names, clear `CheckpointError`s;
`load_vocoder_original` runs them through `original.load_part`.
"""

from __future__ import annotations

import math
import re
from typing import Any, Mapping

import torch

from ..config import VocoderConfig
from ..errors import CheckpointError
from ..models.vocoder import KPNET_RESIDUAL_BLOCKS, UnivNetVocoder
from .original import (
    OriginalFormat,
    StateSource,
    load_part,
    require_tensors,
    wrong_slot,
)
from .strict import check_state_dict, shape_of

VOCODER_CHECKPOINT = "vocoder.pth"
GENERATOR_ENTRY = "model_g"  # vocoder.pth wraps the generator's state dict in {'model_g': ...}

# how a weight-normalised conv stores its weight: (gain key, direction key) after the module prefix
WEIGHT_NORM_KEYS = ("weight_g", "weight_v")  # torch.nn.utils.weight_norm (the released file)
PARAMETRIZED_KEYS = ("parametrizations.weight.original0", "parametrizations.weight.original1")  # the newer API
PLAIN_KEY = "weight"
LAYOUTS = ("weight_norm", "parametrized", "plain")

# UnivNetGenerator's constructor kwargs -> our field names (the rest are spelled the same)
_RENAMED_KWARGS = {"lReLU_slope": "leaky_relu_slope", "n_mel_channels": "mel_channels"}


# ---------------------------------------------------------------------------------------------------------------
# Key map
# ---------------------------------------------------------------------------------------------------------------


def vocoder_conv_map(config: VocoderConfig) -> dict[str, str]:
    """Every convolution of the original (its module path) -> its path in `UnivNetVocoder`.

    Each has a weight (weight-normalised in the file) and a bias. Inside the original's ``nn.Sequential``s the conv
    sits after a LeakyReLU (``convt_pre.1``, ``conv_blocks.j.1``, ``conv_post.1``) or a Dropout
    (``residual_convs.r.1`` and ``.3``).
    """
    mapping = {"conv_pre": "noise_conv", "conv_post.1": "output_conv"}
    for b in range(len(config.strides)):
        theirs, ours = f"res_stack.{b}", f"blocks.{b}"
        mapping[f"{theirs}.convt_pre.1"] = f"{ours}.upsample"
        for j in range(len(config.dilations)):
            mapping[f"{theirs}.conv_blocks.{j}.1"] = f"{ours}.convs.{j}"
        kp_theirs, kp_ours = f"{theirs}.kernel_predictor", f"{ours}.kernel_predictor"
        mapping[f"{kp_theirs}.input_conv.0"] = f"{kp_ours}.input_conv"
        for r in range(KPNET_RESIDUAL_BLOCKS):
            mapping[f"{kp_theirs}.residual_convs.{r}.1"] = f"{kp_ours}.residual_convs.{r}.0"
            mapping[f"{kp_theirs}.residual_convs.{r}.3"] = f"{kp_ours}.residual_convs.{r}.1"
        for name in ("kernel_conv", "bias_conv"):
            mapping[f"{kp_theirs}.{name}"] = f"{kp_ours}.{name}"
    return mapping


def vocoder_key_map(config: VocoderConfig) -> dict[str, str]:
    """Every tensor of a weight-norm-free vocoder state dict (original name) -> its name in `UnivNetVocoder`."""
    return {
        f"{theirs}.{param}": f"{ours}.{param}"
        for theirs, ours in vocoder_conv_map(config).items()
        for param in (PLAIN_KEY, "bias")
    }


def _stored_weight_keys(prefix: str, layout: str) -> tuple[str, ...]:
    """The file's key(s) for one conv weight: (gain, direction) or (weight,)."""
    if layout == "weight_norm":
        return tuple(f"{prefix}.{k}" for k in WEIGHT_NORM_KEYS)
    if layout == "parametrized":
        return tuple(f"{prefix}.{k}" for k in PARAMETRIZED_KEYS)
    return (f"{prefix}.{PLAIN_KEY}",)


def weight_layout(state: Mapping[str, Any]) -> str:
    """How the convolution weights are stored: 'weight_norm' (g/v pairs), 'parametrized' or 'plain'."""
    if any(key.endswith(tuple(f".{k}" for k in WEIGHT_NORM_KEYS)) for key in state):
        return "weight_norm"
    if any(".parametrizations.weight.original" in key for key in state):
        return "parametrized"
    return "plain"


# ---------------------------------------------------------------------------------------------------------------
# Weight norm
# ---------------------------------------------------------------------------------------------------------------


def gain_shape(weight_shape: tuple[int, ...]) -> tuple[int, ...]:
    """Shape of weight_norm's g for a weight (dim=0): one gain per row along dim 0, singleton elsewhere."""
    return (weight_shape[0],) + (1,) * (len(weight_shape) - 1)


def fold_weight_norm(g: torch.Tensor, v: torch.Tensor) -> torch.Tensor:
    """weight = v * (g / ||v||), the norm over every dim but 0 (torch.nn.utils.weight_norm, dim=0), in float32.

    For a ConvTranspose1d (weight (in, out, k)) dim 0 is the input channel, exactly as torch does it.
    """
    if tuple(g.shape) != gain_shape(tuple(v.shape)):
        raise ValueError(f"weight-norm gain {list(g.shape)} does not fit direction {list(v.shape)}")
    v, g = v.float(), g.float()
    norm = torch.linalg.vector_norm(v, dim=tuple(range(1, v.dim())), keepdim=True)
    return v * (g / norm)


def kernel_rows_to_ours(tensor: torch.Tensor, config: VocoderConfig) -> torch.Tensor:
    """kernel_conv weight or bias rows: the original's (layer, in, out, tap) order -> ours (layer, out, in, tap).

    With this order each frame's predicted kernel is a contiguous (2C, C * k) matrix (see `KernelPredictor`).
    """
    channels = config.channel_size
    rows = tensor.view(len(config.dilations), channels, 2 * channels, config.lvc_kernel_size, *tensor.shape[1:])
    return rows.transpose(1, 2).reshape(tensor.shape)


# ---------------------------------------------------------------------------------------------------------------
# Configs
# ---------------------------------------------------------------------------------------------------------------


def vocoder_config_from_original_kwargs(kwargs: Mapping[str, Any]) -> VocoderConfig:
    """A `VocoderConfig` from ``UnivNetGenerator(**kwargs)`` arguments (unknown names are rejected)."""
    return VocoderConfig.from_dict({_RENAMED_KWARGS.get(k, k): v for k, v in kwargs.items()})


def _weight_shape(state: Mapping[str, Any], prefix: str, source: str) -> tuple[int, ...]:
    """A conv weight's shape whatever the layout (plain weight, weight_v, or parametrization original1)."""
    for key in (f"{prefix}.{PLAIN_KEY}", f"{prefix}.{WEIGHT_NORM_KEYS[1]}", f"{prefix}.{PARAMETRIZED_KEYS[1]}"):
        if key in state:
            return shape_of(state, key, source)
    return shape_of(state, f"{prefix}.{PLAIN_KEY}", source)  # raises: the size-defining key is missing


def vocoder_config_from_state(state: Mapping[str, Any], source: str = "the vocoder state dict") -> VocoderConfig:
    """Sizes of a vocoder state dict (any weight layout, wrapper or not), read from its tensor shapes.

    Not stored in the file: the LeakyReLU slope (0.2 kept) and the dilation values; their count is, and the released
    (1, 3, 9, 27) is assumed when it is 4; other counts need a config.
    """
    state = _plain_vocoder(state, source)
    channels, noise_dim, _ = _weight_shape(state, "conv_pre", source)
    blocks = sorted({int(m.group(1)) for key in state if (m := re.match(r"res_stack\.(\d+)\.convt_pre\.", key))})
    if blocks != list(range(len(blocks))) or not blocks:
        raise CheckpointError(f"{source}: the upsampling blocks res_stack.* are not numbered 0..n-1 (found {blocks})")
    strides = tuple(_weight_shape(state, f"res_stack.{b}.convt_pre.1", source)[2] // 2 for b in blocks)
    layers = len({int(m.group(1)) for key in state if (m := re.match(r"res_stack\.0\.conv_blocks\.(\d+)\.", key))})
    released = VocoderConfig.RELEASED
    if layers != len(released.dilations):
        raise CheckpointError(
            f"{source} has {layers} LVC layers per block; dilations cannot be read from weight shapes and only the "
            f"released {released.dilations} are known. Pass a VocoderConfig that names them."
        )
    predictor = "res_stack.0.kernel_predictor"
    hidden, mel_channels, _ = _weight_shape(state, f"{predictor}.input_conv.0", source)
    kernel_channels, _, kpnet_conv_size = _weight_shape(state, f"{predictor}.kernel_conv", source)
    per_tap = layers * channels * 2 * channels
    if kernel_channels % per_tap:
        raise CheckpointError(
            f"{source}: kernel_conv has {kernel_channels} output channels, not a multiple of "
            f"layers x C x 2C = {per_tap}; the file does not fit UnivNet's layout"
        )
    return VocoderConfig(
        noise_dim=noise_dim,
        channel_size=channels,
        dilations=released.dilations,
        strides=strides,
        leaky_relu_slope=released.leaky_relu_slope,
        kpnet_conv_size=kpnet_conv_size,
        kpnet_hidden_channels=hidden,
        lvc_kernel_size=kernel_channels // per_tap,
        hop_length=math.prod(strides),
        mel_channels=mel_channels,
    )


# ---------------------------------------------------------------------------------------------------------------
# Checking, folding, loading
# ---------------------------------------------------------------------------------------------------------------


def _plain_vocoder(state: Mapping[str, Any], source: str) -> Mapping[str, Any]:
    """vocoder.pth's ``{'model_g': state_dict}`` -> the state dict (a bare state dict passes through), checked to be
    a UnivNet generator's."""
    if GENERATOR_ENTRY in state and isinstance(state[GENERATOR_ENTRY], Mapping):
        state = state[GENERATOR_ENTRY]
    elif state and all(isinstance(v, Mapping) for v in state.values()):
        raise CheckpointError(
            f"{source} is not a vocoder checkpoint ({VOCODER_CHECKPOINT}): it is a wrapper with entries "
            f"{sorted(state)[:8]} and no {GENERATOR_ENTRY!r}. Pass the right file for this slot."
        )
    wanted = f"a UnivNet vocoder checkpoint ({VOCODER_CHECKPOINT})"
    require_tensors(state, source, wanted)
    if not (any(k.startswith("conv_pre.") for k in state) and any(k.startswith("res_stack.") for k in state)):
        raise wrong_slot(state, source, wanted)
    return state


def vocoder_state_from_original(
    state: Mapping[str, Any], config: VocoderConfig, source: str = "the vocoder state dict"
) -> dict[str, torch.Tensor]:
    """Check a vocoder state dict against ``config`` (every key and shape, in the file's own names), fold its
    weight norm, put kernel_conv's rows in our order (`kernel_rows_to_ours`) and rename it to `UnivNetVocoder`'s
    keys."""
    state = _plain_vocoder(state, source)
    layout = weight_layout(state)
    with torch.device("meta"):
        ours = {k: tuple(v.shape) for k, v in UnivNetVocoder(config).state_dict().items()}
    conv_map = vocoder_conv_map(config)
    mapped_names = set(vocoder_key_map(config).values())
    if mapped_names != set(ours):  # the key map and the model must describe the same parameters
        raise AssertionError(f"vocoder key map out of date: {sorted(set(ours) ^ mapped_names)[:8]}")
    expected: dict[str, tuple[int, ...]] = {}
    for theirs, our_prefix in conv_map.items():
        weight_shape = ours[f"{our_prefix}.{PLAIN_KEY}"]
        stored = _stored_weight_keys(theirs, layout)
        if len(stored) == 2:
            expected[stored[0]], expected[stored[1]] = gain_shape(weight_shape), weight_shape
        else:
            expected[stored[0]] = weight_shape
        expected[f"{theirs}.bias"] = ours[f"{our_prefix}.bias"]
    layout_note = {"weight_norm": "weight_g/weight_v", "parametrized": "parametrized weight norm", "plain": "plain"}
    check_state_dict(expected, state, f"{source} (UnivNet vocoder, {layout_note[layout]} weights)")
    converted: dict[str, torch.Tensor] = {}
    for theirs, our_prefix in conv_map.items():
        stored = _stored_weight_keys(theirs, layout)
        weight = fold_weight_norm(state[stored[0]], state[stored[1]]) if len(stored) == 2 else state[stored[0]]
        bias = state[f"{theirs}.bias"]
        if theirs.endswith(".kernel_predictor.kernel_conv"):
            weight, bias = kernel_rows_to_ours(weight, config), kernel_rows_to_ours(bias, config)
        converted[f"{our_prefix}.{PLAIN_KEY}"] = weight
        converted[f"{our_prefix}.bias"] = bias
    return converted


FORMAT = OriginalFormat(VOCODER_CHECKPOINT, "UnivNet vocoder", UnivNetVocoder, _plain_vocoder,
                        vocoder_config_from_state, vocoder_state_from_original)


def load_vocoder_original(path_or_state: StateSource, config: VocoderConfig | None = None) -> UnivNetVocoder:
    """Load Tortoise's vocoder.pth (a path, the ``{'model_g': ...}`` dict or a bare state dict) into an eval-mode
    float32 `UnivNetVocoder` with weight norm folded. With ``config=None`` the sizes come from the tensor shapes."""
    return load_part(FORMAT, path_or_state, config)
