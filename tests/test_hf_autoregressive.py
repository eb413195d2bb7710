"""Live parity with transformers' CLVP decoder: same random weights through our HF loader, same outputs."""

from __future__ import annotations

import pytest
import torch

from tortoise_clvp.config import TOKENS
from tortoise_clvp.errors import CheckpointError
from tortoise_clvp.pipeline.decoding import DecodingOptions, sample_candidates
from tortoise_clvp.pipeline.sampling import SamplingOptions
from tortoise_clvp.weights.hf_autoregressive import (
    autoregressive_config_from_hf,
    load_autoregressive_hf,
)

transformers = pytest.importorskip("transformers")

DIM, HEADS, LAYERS = 64, 4, 2


@pytest.fixture(scope="module")
def hf_model():
    config = transformers.ClvpConfig(
        text_config=dict(hidden_size=32, intermediate_size=64, projection_dim=16, num_hidden_layers=1, num_attention_heads=2),
        speech_config=dict(hidden_size=32, intermediate_size=64, projection_dim=16, num_hidden_layers=1, num_attention_heads=2, vocab_size=8192),
        decoder_config=dict(hidden_size=DIM, num_hidden_layers=LAYERS, num_attention_heads=HEADS, max_text_tokens=40, max_position_embeddings=70),
    )
    torch.manual_seed(123)
    model = transformers.ClvpModelForConditionalGeneration(config).eval()
    with torch.no_grad():  # GPT-2's 0.02 init makes a decoder that ignores its context; spread the weights out
        for name, param in model.named_parameters():
            if param.dim() >= 2:
                param.normal_(0, 1 / param.shape[-1] ** 0.5 if "embed" not in name else 0.5)
            else:
                param.normal_(1.0 if "norm" in name and name.endswith("weight") else 0.0, 0.1)
    return model


@pytest.fixture(scope="module")
def ours(hf_model):
    return load_autoregressive_hf(hf_model.state_dict(), hf_model.config.to_dict())


def _inputs():
    generator = torch.Generator().manual_seed(5)
    mel = torch.randn(2, 80, 60, generator=generator)
    text = torch.randint(3, 255, (2, 9), generator=generator)
    return mel, text


def test_config_is_read_from_hf_config(hf_model):
    config = autoregressive_config_from_hf(hf_model.config.to_dict())
    assert (config.model_dim, config.heads, config.layers) == (DIM, HEADS, LAYERS)
    assert config.mel_positions == 70 and config.text_positions == 40


def test_conditioning_embeddings_match(hf_model, ours):
    mel, text = _inputs()
    with torch.no_grad():
        theirs = hf_model.conditioning_encoder(input_features=mel, input_ids=text)
        mine = ours.embed_prompt(ours.conditioning_encoder(mel), ours.wrap_text(text))
    torch.testing.assert_close(mine, theirs, atol=1e-4, rtol=1e-4)


@pytest.mark.parametrize("penalty", [1.0, 2.0])
def test_greedy_ids_and_logits_match(hf_model, ours, penalty):
    """HF's decoder uses the kv-cache position convention and needs the explicit attention mask (README)."""
    mel, text = _inputs()
    steps = 12
    with torch.no_grad():
        embeds = hf_model.conditioning_encoder(input_features=mel[:1], input_ids=text[:1])
        out = hf_model.speech_decoder_model.generate(
            conditioning_embeds=embeds,
            attention_mask=torch.ones(1, embeds.shape[1] + 1, dtype=torch.long),
            do_sample=False,
            max_new_tokens=steps,
            repetition_penalty=penalty,
            eos_token_id=TOKENS.mel_stop,
            pad_token_id=TOKENS.mel_stop,
            return_dict_in_generate=True,
            output_logits=True,
        )
    theirs = out.sequences[:, 1:]  # HF returns the start token first
    # HF's penalty sees its own input ids (the start token, then what was generated); ours sees what was
    # generated. The ids agree unless the start token itself would win, which this model never makes it do.
    sampling = SamplingOptions(do_sample=False, repetition_penalty=penalty)
    options = DecodingOptions(sampling=sampling, num_candidates=1, batch_size=1, max_new_tokens=steps, mel_positions="kv_cache_quirk")
    latent = ours.conditioning_encoder(mel[:1])[0]
    mine = sample_candidates(ours, latent, text[0], options)[:, : theirs.shape[1]]
    assert torch.equal(mine, theirs)
    prompt = ours.embed_prompt(latent[None], ours.wrap_text(text[:1]))
    ours.setup_cache(1, prompt.shape[1] + steps + 1)
    start = ours.embed_mel(torch.full((1, 1), TOKENS.mel_start), torch.zeros(1, dtype=torch.long))
    logits = [ours.prefill(torch.cat([prompt, start], 1))]
    for step in range(1, len(out.logits)):
        logits.append(ours.decode_step(theirs[0, step - 1 : step], step + 1, prompt.shape[1] + step))
    ours.release_cache()
    torch.testing.assert_close(torch.cat(logits), torch.cat(out.logits), atol=1e-4, rtol=1e-4)


def test_missing_decoder_is_a_clear_error(hf_model):
    state = {k: v for k, v in hf_model.state_dict().items() if not k.startswith("speech_decoder_model")}
    with pytest.raises(CheckpointError, match="speech_decoder_model"):
        load_autoregressive_hf(state, hf_model.config.to_dict())


def test_misshaped_and_missing_keys_are_listed(hf_model):
    state = dict(hf_model.state_dict())
    del state["speech_decoder_model.final_norm.bias"]
    state["speech_decoder_model.lm_head.bias"] = torch.zeros(3)
    with pytest.raises(CheckpointError, match=r"missing keys \(1\).*final_norm.bias(.|\n)*mis-shaped.*lm_head.bias"):
        load_autoregressive_hf(state, hf_model.config.to_dict())
