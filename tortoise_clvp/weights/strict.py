"""Strict checkpoint reading and loading shared by every format.

Every load maps every key explicitly and checks every shape; a failure raises one
`CheckpointError` listing the missing, unexpected and mis-shaped keys, never a torch traceback.
"""

from __future__ import annotations

from pathlib import Path
from typing import Mapping

import torch
from torch import nn

from ..errors import CheckpointError, describe

_LISTED = 12  # keys shown per category in an error message


def read_torch_checkpoint(path: str | Path) -> dict[str, torch.Tensor]:
    """Read a `.pth` state dict safely (`weights_only=True`, memory-mapped where the file allows it)."""
    path = Path(path)
    if not path.is_file():
        raise CheckpointError(f"checkpoint not found: {path}. Download the model files or pass the right directory.")
    try:
        try:
            obj = torch.load(path, map_location="cpu", weights_only=True, mmap=True)
        except RuntimeError as exc:
            if "mmap" not in str(exc):
                raise
            obj = torch.load(path, map_location="cpu", weights_only=True)  # legacy (non-zip) files cannot be mmapped
    except Exception as exc:  # noqa: BLE001 - the weights-only unpickler raises many types on garbage input
        raise CheckpointError(
            f"cannot read {path} as a PyTorch checkpoint ({describe(exc)}). "
            "The file is corrupt or truncated: download it again."
        ) from None
    if not isinstance(obj, Mapping) or not all(isinstance(v, torch.Tensor) for v in obj.values()):
        if isinstance(obj, Mapping) and all(isinstance(v, Mapping) for v in obj.values()):
            return dict(obj)  # a wrapper such as {'model_g': state_dict}; the caller unwraps it
        raise CheckpointError(f"{path} does not hold a state dict of tensors (found {type(obj).__name__}).")
    return dict(obj)


def shape_of(state: Mapping[str, torch.Tensor], key: str, source: str) -> tuple[int, ...]:
    """The shape of `state[key]`, or a clear error when a size-defining key is missing."""
    if key not in state:
        raise CheckpointError(
            f"{source}: cannot read the model sizes, key {key!r} is missing. "
            "The file is incomplete or for another slot; pass a config to see every mismatch."
        )
    return tuple(state[key].shape)


def _listing(title: str, items: list[str]) -> str:
    shown = ", ".join(items[:_LISTED])
    more = f" … and {len(items) - _LISTED} more" if len(items) > _LISTED else ""
    return f"\n  {title} ({len(items)}): {shown}{more}"


def check_state_dict(
    expected: Mapping[str, torch.Size | tuple[int, ...]],
    given: Mapping[str, torch.Tensor | torch.Size | tuple[int, ...]],
    what: str,
) -> None:
    """Raise `CheckpointError` unless `given` has exactly the keys and shapes of `expected`."""
    missing = sorted(set(expected) - set(given))
    unexpected = sorted(set(given) - set(expected))
    misshaped = []
    for key in sorted(set(expected) & set(given)):
        value = given[key]
        shape = tuple(value.shape) if isinstance(value, torch.Tensor) else tuple(value)
        if shape != tuple(expected[key]):
            misshaped.append(f"{key} {list(shape)} (model wants {list(expected[key])})")
    if missing or unexpected or misshaped:
        message = f"{what} does not match the model it is loaded into."
        if missing:
            message += _listing("missing keys", missing)
        if unexpected:
            message += _listing("unexpected keys", unexpected)
        if misshaped:
            message += _listing("mis-shaped keys", misshaped)
        message += "\nCheck that the file is the right checkpoint for this slot and that the model config matches it."
        raise CheckpointError(message)


def load_strict(module: nn.Module, state: Mapping[str, torch.Tensor], what: str) -> nn.Module:
    """Check `state` against `module`'s own state dict, then copy it in (dtype follows the module)."""
    expected = {k: v.shape for k, v in module.state_dict().items()}
    check_state_dict(expected, state, what)
    module.load_state_dict(dict(state), strict=True, assign=any(p.is_meta for p in module.parameters()))
    return module
