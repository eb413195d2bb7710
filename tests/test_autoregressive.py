"""The decoder against the original's golden outputs, and the KV cache against the plain forward."""

from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F
from conftest import read_tensors

from tortoise_clvp.config import TOKENS, AutoregressiveConfig
from tortoise_clvp.models.autoregressive import AutoregressiveModel, gelu_new
from tortoise_clvp.models.layers import group_norm_groups

ATOL = 1e-4


def _conditioning_mels(reference_dir, meta) -> torch.Tensor:
    audio = read_tensors(reference_dir / "audio_cases.safetensors")
    keys = meta["get_conditioning_input"]["audio_cases_keys"]
    return torch.stack([audio[key][0] for key in keys], 0).unsqueeze(0)  # (1, clips, 80, T)


def test_conditioning_latent_matches_original(ar_fixture, reference_dir):
    model, cases, meta = ar_fixture
    mels = _conditioning_mels(reference_dir, meta)
    with torch.no_grad():
        torch.testing.assert_close(model.get_conditioning(mels), cases["get_conditioning.out"], atol=ATOL, rtol=ATOL)
        torch.testing.assert_close(model.get_conditioning(mels[0]), cases["get_conditioning_3d.out"], atol=ATOL, rtol=ATOL)


def _original_training_inputs(cases, clip_inputs: bool):
    """The original forward's input formatting: optional clipping, then stop tokens after each wav length."""
    text = cases["forward.in.text_inputs"]
    codes = cases["forward.in.mel_codes"].clone()
    text_lengths, wav_lengths = cases["forward.in.text_lengths"], cases["forward.in.wav_lengths"]
    if clip_inputs:
        text = text[:, : int(text_lengths.max())]
        codes = codes[:, : int(wav_lengths.max()) // 1024]
    for row, wav_length in enumerate(wav_lengths.tolist()):
        codes[row, wav_length // 1024 + 1 :] = TOKENS.mel_stop
    return text, codes


def test_teacher_forced_logits_and_losses_match_original(ar_fixture, reference_dir):
    model, cases, _ = ar_fixture
    text, codes = _original_training_inputs(cases, clip_inputs=True)
    cond = cases["forward.in.speech_conditioning_latent"]
    raw = torch.load(reference_dir / "models" / "ar_tiny" / "autoregressive.pth", weights_only=True)
    with torch.no_grad():
        text_hidden, mel_hidden = model.teacher_forced(cond, text, codes)
        text_logits = F.linear(text_hidden, raw["text_head.weight"], raw["text_head.bias"]).permute(0, 2, 1)
        mel_logits = model.mel_head(mel_hidden).permute(0, 2, 1)
    torch.testing.assert_close(text_logits, cases["forward.out.text_logits"], atol=ATOL, rtol=ATOL)
    torch.testing.assert_close(mel_logits, cases["forward.out.mel_logits"], atol=ATOL, rtol=ATOL)
    text_targets = F.pad(model.wrap_text(text)[:, 1:], (0, 1), value=TOKENS.text_stop)
    mel_targets = F.pad(F.pad(codes, (0, 1), value=TOKENS.mel_stop), (0, 1), value=TOKENS.mel_stop)
    torch.testing.assert_close(F.cross_entropy(text_logits, text_targets).reshape(1), cases["forward.out.loss_text"], atol=ATOL, rtol=ATOL)
    torch.testing.assert_close(F.cross_entropy(mel_logits, mel_targets).reshape(1), cases["forward.out.loss_mel"], atol=ATOL, rtol=ATOL)


@pytest.mark.parametrize("clip_inputs", [True, False])
def test_speech_latents_match_original(ar_fixture, clip_inputs):
    model, cases, _ = ar_fixture
    text, codes = _original_training_inputs(cases, clip_inputs)
    with torch.no_grad():
        latents = model.speech_latents(cases["forward.in.speech_conditioning_latent"], text, codes)
    expected = cases[f"forward.out.latent_clip_inputs_{str(clip_inputs).lower()}"]
    torch.testing.assert_close(latents, expected, atol=ATOL, rtol=ATOL)


def _random_model(seed: int, **overrides) -> AutoregressiveModel:
    torch.manual_seed(seed)
    config = AutoregressiveConfig(**{"layers": 3, "model_dim": 48, "heads": 6, "max_text_tokens": 30, "max_mel_tokens": 40, **overrides})
    model = AutoregressiveModel(config).eval()
    with torch.no_grad():
        for param in model.parameters():
            param.normal_(0, 1 / max(param.shape[-1], 1) ** 0.5)
    return model


def test_cached_decoding_equals_full_forward():
    """Prefill + one decode step per token gives the hidden states of one uncached causal pass."""
    model = _random_model(0)
    cond = torch.randn(2, 48)
    text = model.wrap_text(torch.randint(0, 255, (2, 7)))
    codes = torch.randint(0, 8192, (2, 9))
    positions = torch.arange(codes.shape[1])
    prompt = model.embed_prompt(cond, text)
    full = torch.cat([prompt, model.embed_mel(codes, positions)], dim=1)
    with torch.no_grad():
        expected = model.mel_logits(model.transformer(full))[:, prompt.shape[1] :]
        model.setup_cache(2, full.shape[1])
        first = model.prefill(torch.cat([prompt, model.embed_mel(codes[:, :1], positions[:1])], dim=1))
        steps = [model.decode_step(codes[:, i], i, prompt.shape[1] + i) for i in range(1, codes.shape[1])]
        model.release_cache()
    torch.testing.assert_close(torch.stack([first, *steps], dim=1), expected, atol=1e-5, rtol=1e-5)


def _decode(model: AutoregressiveModel, prompt: torch.Tensor, codes: torch.Tensor, rows: int) -> torch.Tensor:
    """Prefill `prompt` (1 or `rows` rows) into a `rows`-row cache, then one step per column of codes (rows, n)."""
    model.setup_cache(rows, prompt.shape[1] + codes.shape[1])
    first = model.prefill(prompt).expand(rows, -1)
    steps = [model.decode_step(codes[:, i], i + 1, prompt.shape[1] + i) for i in range(codes.shape[1])]
    model.release_cache()
    return torch.stack([first, *steps])


def _poison_cache(model: AutoregressiveModel) -> None:
    """Fill the (uninitialised) cache buffers with NaN: any read of a position not yet written shows up."""
    for block in model.blocks:
        block.attn.cache.k.fill_(float("nan"))
        block.attn.cache.v.fill_(float("nan"))


def test_shared_prompt_prefix_equals_a_copy_per_row():
    """A one-row prefill is kept once and shared by every row; decoding gives what a prompt copied per row gives."""
    model = _random_model(3)
    prompt = torch.randn(1, 7, 48)
    codes = torch.randint(0, 8192, (4, 6))
    with torch.no_grad():
        shared = _decode(model, prompt, codes, rows=4)
        copied = _decode(model, prompt.expand(4, -1, -1), codes, rows=4)
        assert model.blocks[0].attn.cache is None
        model.setup_cache(4, 13)
        _poison_cache(model)
        model.prefill(prompt)
        cache = model.blocks[0].attn.cache
        assert cache.shared == 7 and cache.k[1:, :, :7].isnan().all()  # stored in row 0 only, no copy per row
        poisoned = torch.stack([model.decode_step(codes[:, i], i + 1, 7 + i) for i in range(codes.shape[1])])
        model.release_cache()
    torch.testing.assert_close(shared, copied, atol=1e-5, rtol=1e-5)
    torch.testing.assert_close(poisoned, shared[1:], atol=1e-5, rtol=1e-5)


def test_shared_prefix_is_copied_out_before_other_writes():
    """A multi-row chunk after a shared prompt, and a fresh prompt in a reused cache, see the right keys."""
    model = _random_model(4)
    prompt, chunk, other = torch.randn(1, 5, 48), torch.randn(3, 2, 48), torch.randn(1, 4, 48)
    with torch.no_grad():
        model.setup_cache(3, 9)
        _poison_cache(model)
        model.prefill(prompt)
        chunked = model.prefill(chunk, start=5)
        expected = model.mel_logits(model.transformer(torch.cat([prompt.expand(3, -1, -1), chunk], 1))[:, -1])
        torch.testing.assert_close(chunked, expected, atol=1e-5, rtol=1e-5)
        assert model.blocks[0].attn.cache.shared == 0
        model.prefill(other)  # a new sequence in the same buffers
        step = model.decode_step(torch.tensor([1, 2, 3]), 1, 4)
        full = torch.cat([other.expand(3, -1, -1), model.embed_mel(torch.tensor([[1], [2], [3]]), torch.tensor([1]))], 1)
        torch.testing.assert_close(step, model.mel_logits(model.transformer(full)[:, -1]), atol=1e-5, rtol=1e-5)
        model.release_cache()


def test_compiled_decode_step_equals_eager():
    """`compile_decode_step` (what `compile=True` uses off CPU float32) changes speed, not results."""
    eager, compiled = _random_model(2), _random_model(2)
    compiled.compile_decode_step()
    prompt = torch.randn(1, 6, 48)
    codes = torch.randint(0, 8192, (2, 5))
    outputs = []
    with torch.no_grad():
        for model in (eager, compiled):
            model.setup_cache(2, prompt.shape[1] + codes.shape[1])
            model.prefill(prompt)
            outputs.append(torch.stack([model.decode_step(codes[:, i], i + 1, prompt.shape[1] + i) for i in range(5)]))
            model.release_cache()
    torch.testing.assert_close(outputs[1], outputs[0], atol=1e-5, rtol=1e-5)


def test_chunked_prefill_equals_single_prefill():
    model = _random_model(1)
    x = torch.randn(1, 12, 48)
    with torch.no_grad():
        model.setup_cache(1, 12)
        whole = model.prefill(x)
        model.setup_cache(1, 12)
        model.prefill(x[:, :5])
        chunked = model.prefill(x[:, 5:], start=5)
        model.release_cache()
    torch.testing.assert_close(chunked, whole, atol=1e-5, rtol=1e-5)


@pytest.mark.parametrize("channels,groups", [(16, 8), (48, 16), (64, 16), (80, 16), (1024, 32), (96, 32), (40, 8)])
def test_group_norm_groups_follow_the_original_rule(channels, groups):
    assert group_norm_groups(channels) == groups


def test_gelu_new_is_gpt2s_tanh_gelu():
    x = torch.cat([torch.randn(4096) * 3, torch.tensor([0.0, -0.0, 1e-30, -50.0, 50.0, 1e20, -1e20, float("inf"),
                                                      float("-inf")])])
    expected = F.gelu(x.double(), approximate="tanh")
    got = gelu_new(x)
    assert got.dtype == torch.float32
    torch.testing.assert_close(got.double(), expected, atol=1e-6, rtol=1e-6, equal_nan=True)  # -inf: NaN in both
    assert torch.isnan(gelu_new(torch.tensor([float("nan")]))).all()
    half = torch.randn(64, dtype=torch.bfloat16)
    assert torch.equal(gelu_new(half), F.gelu(half, approximate="tanh"))  # other dtypes: PyTorch's op as is
