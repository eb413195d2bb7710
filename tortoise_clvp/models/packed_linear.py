"""CPU fast path: linear layers whose weights oneDNN reorders once, for fast small-batch decoding.

PyTorch's default fp32 GEMM on x86 (MKL) repacks the weight matrix on every call; when a decode step multiplies
a handful of rows by a large matrix, that repacking costs more than the product itself (and MKL is slower
still on non-Intel CPUs). oneDNN can reorder a weight once into its blocked layout and reuse it. Same math:
results agree with `nn.Linear` to float rounding. Applied only where it exists: CPU, float32, a PyTorch
built with oneDNN's linear ops; elsewhere modules are left as they are.
"""

from __future__ import annotations

import torch
from torch import Tensor, nn

_ROWS_HINT = 16  # rows per call oneDNN tunes the layout for; decode batches are a few to a few dozen rows


def _ops_available() -> bool:
    ops = torch.ops.mkldnn
    return torch.backends.mkldnn.is_available() and all(
        hasattr(ops, name) for name in ("_reorder_linear_weight", "_linear_pointwise")
    )


class PackedLinear(nn.Module):
    """An inference-only `nn.Linear` holding its weight in oneDNN's reordered layout (not saved in state dicts)."""

    def __init__(self, linear: nn.Linear):
        super().__init__()
        self.in_features, self.out_features = linear.in_features, linear.out_features
        packed = torch.ops.mkldnn._reorder_linear_weight(linear.weight.detach(), _ROWS_HINT)
        self.register_buffer("packed_weight", packed, persistent=False)
        self.bias = None if linear.bias is None else nn.Parameter(linear.bias.detach(), requires_grad=False)

    def forward(self, x: Tensor) -> Tensor:
        return torch.ops.mkldnn._linear_pointwise(x, self.packed_weight, self.bias, "none", [], "")

    def extra_repr(self) -> str:
        return f"in_features={self.in_features}, out_features={self.out_features}, bias={self.bias is not None}"


def pack_linears(module: nn.Module) -> int:
    """Swap every CPU float32 `nn.Linear` inside `module` for a `PackedLinear`, in place; returns how many.

    Do it after loading and before inference: packed weights are not part of `state_dict()`.
    """
    if not _ops_available():
        return 0
    swaps = [
        (parent, name, child)
        for parent in module.modules()
        for name, child in parent.named_children()
        if type(child) is nn.Linear and child.weight.device.type == "cpu" and child.weight.dtype == torch.float32
    ]
    for parent, name, child in swaps:
        setattr(parent, name, PackedLinear(child))
    return len(swaps)
