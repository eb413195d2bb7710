"""int8 dynamic quantization of linear layers, for CPU inference.

Every `nn.Linear` of a model becomes a dynamically quantized one: its weight stored once as int8, one scale per
output channel; at each call the input is quantized per batch from its own range, multiplied in int8 with int32
sums (fbgemm / oneDNN kernels), and scaled back to float32. Weights take a quarter of the memory and the products
run on int8 units; the price is rounding: logits and scores move a little, which may or may not change which token
is sampled or which candidate wins (benchmarks/best_of_n.py measures both).

Built on PyTorch's eager dynamic quantization (`torch.ao.quantization.quantize_dynamic` with per-channel weights),
whose kernels run on the CPU only and start from float32 weights: anything else is refused with a message saying so.
PyTorch marks `torch.ao.quantization` deprecated in favour of torchao; its warnings are silenced here, and a PyTorch
without it gives an OptionsError rather than a traceback.
"""

from __future__ import annotations

import warnings

import torch
from torch import nn

from ..errors import OptionsError

QUANTIZATIONS = ("int8",)


def quantize_linears(module: nn.Module, scheme: str = "int8") -> int:
    """Swap every `nn.Linear` inside `module` for a dynamically quantized int8 linear, in place; returns how many.

    Do it after loading and before inference (quantized layers hold no float weights and cannot be trained). Refused
    unless every weight of the module is float32 on the CPU and its linears are plain (not yet oneDNN-packed).
    """
    if scheme not in QUANTIZATIONS:
        raise OptionsError(f"unknown quantization {scheme!r}; choose one of {', '.join(QUANTIZATIONS)}")
    linears = [m for m in module.modules() if type(m) is nn.Linear]
    if not linears:
        raise OptionsError(
            f"{type(module).__name__} has no plain linear layers to quantize (already quantized or oneDNN-packed? "
            "quantize right after loading)"
        )
    for linear in linears:
        weight = linear.weight
        if weight.device.type != "cpu":
            raise OptionsError(
                f"int8 quantization runs on the CPU only (PyTorch's dynamic int8 kernels); this model is on "
                f"{weight.device.type}. Use device cpu, or drop the quantization."
            )
        if weight.dtype != torch.float32:
            raise OptionsError(
                f"int8 quantization starts from float32 weights; this model is {str(weight.dtype).replace('torch.', '')}. "
                "Load it in float32, or drop the quantization."
            )
    try:
        from torch.ao.quantization import per_channel_dynamic_qconfig, quantize_dynamic
    except ImportError as error:
        raise OptionsError(f"this PyTorch ({torch.__version__}) has no eager dynamic quantization: {error}") from None
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", DeprecationWarning)
        warnings.simplefilter("ignore", UserWarning)  # "quantize_per_channel ... deprecated"
        quantize_dynamic(module, {nn.Linear: per_channel_dynamic_qconfig}, dtype=torch.qint8, inplace=True)
    return len(linears)
