"""Strict checkpoint reading and loading shared by every format.

Every load maps every key explicitly and checks every shape; a failure raises one
`CheckpointError` listing the missing, unexpected and mis-shaped keys, never a torch traceback.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any, Callable, Mapping

import torch
from safetensors import SafetensorError, safe_open
from torch import nn

from ..errors import CheckpointError, describe

_LISTED = 12  # keys shown per category in an error message


# safetensors' dtype names -> torch's (for reading a file's shapes without its data)
_SAFETENSORS_DTYPES = {
    "F64": torch.float64, "F32": torch.float32, "F16": torch.float16, "BF16": torch.bfloat16,
    "I64": torch.int64, "I32": torch.int32, "I16": torch.int16, "I8": torch.int8, "U8": torch.uint8,
    "BOOL": torch.bool,
}


def to_meta(obj: Any) -> Any:
    """Tensors -> same-shape meta tensors (nested mappings kept): checks and model building on the result read no
    tensor data."""
    if isinstance(obj, torch.Tensor):
        return torch.empty(obj.shape, dtype=obj.dtype, device="meta")
    if isinstance(obj, Mapping):
        return {k: to_meta(v) for k, v in obj.items()}
    return obj


def read_torch_checkpoint(path: str | Path, meta: bool = False) -> dict[str, torch.Tensor]:
    """Read a `.pth` state dict safely (`weights_only=True`, memory-mapped where the file allows it).

    With `meta`, the tensors come back as meta tensors of the same shapes and dtypes (nothing is copied out of the
    memory-mapped file)."""
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
            obj = dict(obj)  # a wrapper such as {'model_g': state_dict}; the caller unwraps it
            return to_meta(obj) if meta else obj
        raise CheckpointError(f"{path} does not hold a state dict of tensors (found {type(obj).__name__}).")
    return to_meta(dict(obj)) if meta else dict(obj)


def read_safetensors(
    path: str | Path, keep: Callable[[str], bool] | None = None, meta: bool = False
) -> dict[str, torch.Tensor]:
    """The tensors of a `.safetensors` file whose names pass `keep` (all by default; the rest is never read).

    With `meta`, only the header is read: meta tensors of the stored shapes and dtypes. A truncated or foreign file
    is a `CheckpointError` either way (safetensors checks that the header covers the whole file)."""
    path = Path(path)
    if not path.is_file():
        raise CheckpointError(f"checkpoint not found: {path}. Download the model files or pass the right directory.")
    try:
        with safe_open(str(path), framework="pt", device="cpu") as handle:
            names = [name for name in handle.keys() if keep is None or keep(name)]
            if not meta:
                return {name: handle.get_tensor(name) for name in names}
            state = {}
            for name in names:
                stored = handle.get_slice(name)
                if stored.get_dtype() not in _SAFETENSORS_DTYPES:
                    raise ValueError(f"tensor {name} has unsupported dtype {stored.get_dtype()}")
                dtype = _SAFETENSORS_DTYPES[stored.get_dtype()]
                state[name] = torch.empty(stored.get_shape(), dtype=dtype, device="meta")
            return state
    except (SafetensorError, OSError, ValueError) as exc:
        raise CheckpointError(
            f"cannot read {path} as a safetensors file ({describe(exc)}). "
            "The file is corrupt or truncated: download or convert it again."
        ) from None


def read_json(path: str | Path, remedy: str = "restore or re-download it") -> dict[str, Any]:
    """A JSON object file (a config, a sharded index), or a clear error saying it is missing or unreadable and what
    to do (`remedy`)."""
    path = Path(path)
    if not path.is_file():
        raise CheckpointError(f"{path} not found; {remedy}")
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as exc:
        raise CheckpointError(f"cannot read {path} as JSON ({describe(exc)}); {remedy}") from None
    if not isinstance(data, dict):
        raise CheckpointError(f"{path} does not hold a JSON object; {remedy}")
    return data


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


def load_into_meta_model(model: nn.Module, state: Mapping[str, torch.Tensor], what: str) -> nn.Module:
    """Load `state` strictly into a model built on the meta device: its tensors become the parameters (float32,
    no second copy). Returns the model in eval mode without gradients. Meta tensors in give a meta model out: every
    key and shape checked, no data read (what `describe_model_dir` uses)."""
    state = {k: v.float() if v.is_floating_point() else v for k, v in state.items()}
    load_strict(model, state, what)
    return model.eval().requires_grad_(False)
