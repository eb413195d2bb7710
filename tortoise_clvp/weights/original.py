"""What the four original Tortoise checkpoints (the released ``.pth`` files) share on their way into our modules.

Each ``original_<part>.py`` describes one file as an `OriginalFormat`:
- ``plain_state``: unwrap the file's state dict and check it is this slot's file (else say what it looks like),
- ``config_from_state``: sizes read from tensor shapes, so a released file loads without typing them,
- ``state_from_original``: every key and shape checked *in the file's own names* (so an error points at what is
  really in the file), then renamed and reshaped into ours through an explicit key map built from the config.
`load_part` runs them in that order and loads the result strictly into a model built on the meta device.

Every failure is a `CheckpointError` that says what was wrong, never a torch traceback.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable, Mapping, Union

import torch
from torch import nn

from ..errors import CheckpointError
from .strict import load_into_meta_model, read_torch_checkpoint

StateSource = Union[str, Path, Mapping[str, torch.Tensor]]

# (what the file is, key prefixes that must all occur in it). Used only to say what a wrong file looks like.
CHECKPOINT_SIGNATURES: tuple[tuple[str, tuple[str, ...]], ...] = (
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
HF_SIGNATURE = CHECKPOINT_SIGNATURES[-1][0]


@dataclass(frozen=True)
class OriginalFormat:
    """How one original checkpoint file becomes one of our models (see the module docstring)."""

    filename: str  # its name in a release folder, e.g. "autoregressive.pth"
    label: str  # what it is, for error messages
    model_class: type[nn.Module]
    plain_state: Callable[[Mapping[str, Any], str], Mapping[str, Any]]
    config_from_state: Callable[[Mapping[str, Any], str], Any]
    state_from_original: Callable[[Mapping[str, Any], Any, str], dict[str, torch.Tensor]]


def load_part(
    fmt: OriginalFormat, path_or_state: StateSource, config: Any = None, source: str | None = None
) -> nn.Module:
    """Read -> check -> config -> map -> load: an eval-mode float32 model from an original checkpoint (a path or an
    already-read state dict, called `source` in messages). With ``config=None`` the sizes come from the tensor
    shapes. A state of meta tensors gives a meta model: every key and shape is checked without reading any data."""
    state, where = read_state(path_or_state)
    source = source or where
    state = fmt.plain_state(state, source)
    if config is None:
        config = fmt.config_from_state(state, source)
    mapped = fmt.state_from_original(state, config, source)
    with torch.device("meta"):
        model = fmt.model_class(config)
    return load_into_meta_model(model, {k: v.contiguous() for k, v in mapped.items()}, f"{source} ({fmt.label})")


def read_state(path_or_state: StateSource) -> tuple[dict[str, Any], str]:
    """A state dict and a description of where it came from (for error messages)."""
    if isinstance(path_or_state, (str, Path)):
        return read_torch_checkpoint(path_or_state), str(path_or_state)
    if isinstance(path_or_state, Mapping):
        return dict(path_or_state), "the given state dict"
    raise TypeError(f"expected a checkpoint path or a state dict, got {type(path_or_state).__name__}")


def guess_checkpoint_kind(state: Mapping[str, Any]) -> str | None:
    """Name the known checkpoint whose key prefixes all occur in ``state`` (None when nothing fits)."""
    keys = list(state)
    for name, prefixes in CHECKPOINT_SIGNATURES:
        if all(any(key == p or key.startswith(p) for key in keys) for p in prefixes):
            return name
    return None


def wrong_slot(state: Mapping[str, Any], source: str, wanted: str, hint: str = "") -> CheckpointError:
    """The error for a file that is not `wanted`: what it looks like instead."""
    kind = guess_checkpoint_kind(state)
    found = f"it looks like {kind}" if kind else f"its keys start with {sorted({k.split('.')[0] for k in state})[:8]}"
    return CheckpointError(f"{source} is not {wanted}: {found}. Pass the right file for this slot.{hint}")


def require_tensors(state: Mapping[str, Any], source: str, wanted: str) -> None:
    """`state` must be a non-empty plain state dict of tensors; otherwise say what it is instead."""
    if not state:
        raise CheckpointError(f"{source} is not {wanted}: it holds no tensors at all.")
    if not all(isinstance(v, torch.Tensor) for v in state.values()):
        kind = guess_checkpoint_kind(state)
        raise CheckpointError(
            f"{source} is not {wanted}: it holds a wrapper with entries {sorted(state)[:8]} instead of a plain state "
            f"dict of tensors{f' (it looks like {kind})' if kind else ''}. Pass the right file for this slot."
        )


def deinterleave_heads(tensor: torch.Tensor, heads: int) -> torch.Tensor:
    """Attention qkv rows stored per head, [q_h k_h v_h] for each head h (the original's conv attention blocks),
    -> [q of all heads; k; v], the order our attention splits."""
    per_head = tensor.shape[0] // (3 * heads)
    return tensor.reshape(heads, 3, per_head, *tensor.shape[1:]).transpose(0, 1).reshape(tensor.shape)
