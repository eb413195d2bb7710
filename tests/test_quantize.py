"""int8 dynamic quantization: quantized models load and run close to float32, and anything the kernels cannot
take (another device, another dtype, packed layers, compile) is refused with a message saying what to do."""

from __future__ import annotations

import copy

import pytest
import torch
from torch import nn

from tortoise_clvp.errors import OptionsError
from tortoise_clvp.models.packed_linear import pack_linears
from tortoise_clvp.models.quantize import quantize_linears
from tortoise_clvp.pipeline.decoding import DecodingOptions


def _linears(module: nn.Module) -> int:
    return sum(type(m) is nn.Linear for m in module.modules())


def test_a_quantized_linear_stays_close_to_float32():
    torch.manual_seed(0)
    model = nn.Sequential(nn.Linear(256, 512), nn.ReLU(), nn.Linear(512, 64))
    x = torch.randn(8, 256)
    want = model(x)
    assert quantize_linears(model) == 2 and _linears(model) == 0
    got = model(x)
    assert got.dtype == torch.float32 and got.shape == want.shape
    assert not torch.equal(got, want)  # it really computes in int8 ...
    assert (got - want).norm() / want.norm() < 0.02  # ... to within rounding of 8-bit per-channel weights


def test_quantized_models_load_and_run(tiny_model_dir, speech_clip):
    from tortoise_clvp.api import TextToSpeech

    options = DecodingOptions(num_candidates=4, batch_size=4, max_new_tokens=16)
    plain = TextToSpeech.from_local(tiny_model_dir)
    quantized = TextToSpeech.from_local(tiny_model_dir, quantize="int8")
    assert _linears(quantized.models.autoregressive) == 0 and _linears(quantized.models.clvp) == 0
    conditioning = plain.get_conditioning([speech_clip])
    result = quantized.candidates("Good morning.", conditioning, options, seed=0)
    assert result.raw_codes.shape == (4, 16) and torch.isfinite(result.ranked.scores).all()
    # CLVP's scores of the same candidates move by rounding only
    from tortoise_clvp.pipeline.rerank import score_candidates

    float_scores = score_candidates(plain.models.clvp, result.text_ids, result.ranked.codes)
    assert result.ranked.scores == pytest.approx(float_scores.tolist(), abs=0.05 * float(float_scores.abs().max()) + 1e-3)


def test_unsupported_device_dtype_and_layers_are_refused(tiny_models):
    decoder = tiny_models["autoregressive"]
    with pytest.raises(OptionsError, match="CPU only.*meta"):
        quantize_linears(copy.deepcopy(decoder).to("meta"))
    with pytest.raises(OptionsError, match="float32 weights; this model is bfloat16"):
        quantize_linears(copy.deepcopy(decoder).to(torch.bfloat16))
    packed = copy.deepcopy(decoder)
    if pack_linears(packed):  # where this PyTorch has oneDNN's packed linear ops
        with pytest.raises(OptionsError, match="no plain linear layers"):
            quantize_linears(packed)
    with pytest.raises(OptionsError, match="unknown quantization 'int4'"):
        quantize_linears(copy.deepcopy(decoder), "int4")


def test_loading_refuses_what_the_kernels_cannot_take(tiny_model_dir):
    from tortoise_clvp.api import TextToSpeech

    with pytest.raises(OptionsError, match="float32"):
        TextToSpeech.from_local(tiny_model_dir, dtype="bfloat16", quantize="int8")
    with pytest.raises(OptionsError, match="choose one"):
        TextToSpeech.from_local(tiny_model_dir, compile=True, quantize="int8")
