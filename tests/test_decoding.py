"""The candidate loop: the original's greedy and seeded generations (exact ids, parity), and its options on a tiny
seeded decoder (seeds, batches, lengths, faithful mode, errors)."""

from __future__ import annotations

import json
import re
from dataclasses import replace

import pytest
import torch

from tortoise_clvp.config import TOKENS
from tortoise_clvp.errors import InputTextError, OptionsError
from tortoise_clvp.pipeline.decoding import (
    FAITHFUL_DECODING,
    DecodingOptions,
    sample_candidates,
)
from tortoise_clvp.pipeline.sampling import FAITHFUL_SAMPLING, SamplingOptions

GREEDY_CASES = {  # fixture name -> (mel position convention, repetition penalty)
    "greedy_kv": ("kv_cache_quirk", 1.0),
    "greedy_nokv": ("contiguous", 1.0),
    "greedy_kv_reppen2": ("kv_cache_quirk", 2.0),
}


def _greedy(max_new_tokens: int, positions: str, penalty: float) -> DecodingOptions:
    sampling = SamplingOptions(do_sample=False, repetition_penalty=penalty, penalize_prompt_ids=True)
    return DecodingOptions(sampling=sampling, num_candidates=1, batch_size=1, max_new_tokens=max_new_tokens, mel_positions=positions)


def _max_new_tokens(meta) -> int:
    """The one max_generate_length the fixture's generations were made with (read from its descriptions)."""
    lengths = set(re.findall(r"max_generate_length=(\d+)", json.dumps(meta["inference"])))
    assert len(lengths) == 1, lengths
    return int(lengths.pop())


@pytest.mark.parametrize("name", sorted(GREEDY_CASES))
def test_greedy_generation_matches_original(ar_fixture, name):
    model, cases, meta = ar_fixture
    positions, penalty = GREEDY_CASES[name]
    expected = cases[f"inference.{name}.out"]
    options = _greedy(_max_new_tokens(meta), positions, penalty)
    text = cases["inference.in.text_tokens"][0]
    rows = [sample_candidates(model, latent, text, options) for latent in cases["inference.in.cond_latents"]]
    got = torch.cat(rows)
    assert torch.equal(got[:, : expected.shape[1]], expected)
    assert (got[:, expected.shape[1] :] == TOKENS.mel_stop).all()


def test_greedy_from_a_clip_latent_matches_original(ar_fixture):
    model, cases, meta = ar_fixture
    expected = cases["inference.greedy_kv_from_clip0.out"]
    options = _greedy(_max_new_tokens(meta), "kv_cache_quirk", 1.0)
    got = sample_candidates(model, cases["inference.greedy_kv_from_clip0.cond_latent"], cases["inference.in.text_tokens"][0], options)
    assert torch.equal(got[:, : expected.shape[1]], expected)


def test_first_step_logits_match_original(ar_fixture):
    model, cases, _ = ar_fixture
    expected = cases["inference.greedy_kv.step_logits_first3"]  # (rows, steps, V)
    ids = cases["inference.greedy_kv.out"]
    text = model.wrap_text(cases["inference.in.text_tokens"])
    start = torch.full((1, 1), TOKENS.mel_start)
    for row, latent in enumerate(cases["inference.in.cond_latents"]):
        prompt = model.embed_prompt(latent[None], text)
        model.setup_cache(1, prompt.shape[1] + expected.shape[1])
        logits = [model.prefill(torch.cat([prompt, model.embed_mel(start, torch.zeros(1, dtype=torch.long))], 1))]
        for step in range(1, expected.shape[1]):
            logits.append(model.decode_step(ids[row, step - 1 : step], step + 1, prompt.shape[1] + step))
        model.release_cache()
        torch.testing.assert_close(torch.cat(logits), expected[row], atol=1e-4, rtol=1e-4)


def test_seeded_sampling_matches_original(ar_fixture):
    """Same seed, same draw order (one multinomial over the batch per step) -> the original's ids."""
    model, cases, meta = ar_fixture
    expected = cases["inference.sample_kv.out"]
    seed = int(re.search(r"manual_seed\((\d+)\)", meta["inference"]["sample_kv"]).group(1))
    options = DecodingOptions(
        sampling=FAITHFUL_SAMPLING,
        num_candidates=expected.shape[0],
        batch_size=expected.shape[0],
        max_new_tokens=_max_new_tokens(meta),
        mel_positions="kv_cache_quirk",
    )
    latent = cases["inference.in.cond_latents"][:1]
    got = sample_candidates(model, latent, cases["inference.in.text_tokens"][0], options, torch.Generator().manual_seed(seed))
    assert torch.equal(got[:, : expected.shape[1]], expected)


@pytest.fixture(scope="module")
def tiny(tiny_models):
    """(decoder, conditioning latent, text ids) of the tiny seeded models."""
    decoder = tiny_models["autoregressive"]
    latent = torch.randn(decoder.config.model_dim, generator=torch.Generator().manual_seed(0))
    return decoder, latent, torch.tensor([20, 31, 2, 45, 0])


def test_same_seed_same_candidates_and_batches_cover_all(tiny):
    options = DecodingOptions(num_candidates=5, batch_size=2, max_new_tokens=12)
    first = sample_candidates(*tiny, options, torch.Generator().manual_seed(7))
    second = sample_candidates(*tiny, options, torch.Generator().manual_seed(7))
    other = sample_candidates(*tiny, options, torch.Generator().manual_seed(8))
    assert first.shape == (5, 12) and torch.equal(first, second) and not torch.equal(first, other)
    assert DecodingOptions(num_candidates=5, batch_size=2).batch_sizes() == [2, 2, 1]
    sampling = SamplingOptions(temperature=0.5)
    fewer = DecodingOptions(sampling=sampling, num_candidates=16, batch_size=8).with_candidates(3)
    assert (fewer.num_candidates, fewer.batch_size, fewer.sampling) == (3, 3, sampling)  # batches shrink to fit
    assert DecodingOptions(num_candidates=4, batch_size=4).with_candidates(32).batch_size == 4  # and never grow


def test_stopped_rows_are_padded_with_the_stop_token(tiny):
    codes = sample_candidates(*tiny, DecodingOptions(num_candidates=8, max_new_tokens=40), torch.Generator().manual_seed(1))
    stopped = (codes == TOKENS.mel_stop).int().cummax(dim=1).values.bool()  # from each row's first stop on
    assert stopped[:, -1].any() and not stopped[:, 0].all(), "the tiny decoder should stop some rows, not all at once"
    assert (codes[stopped] == TOKENS.mel_stop).all() and (codes[~stopped] < TOKENS.mel_start).all()


@pytest.mark.parametrize("penalty", [1.0, 2.0])
def test_min_new_tokens_forces_length(tiny, penalty):
    sampling = SamplingOptions(repetition_penalty=penalty)
    free = DecodingOptions(sampling=sampling, num_candidates=4, batch_size=4, max_new_tokens=30)
    assert (sample_candidates(*tiny, free, torch.Generator().manual_seed(0)) == TOKENS.mel_stop).any(), \
        "without min_new_tokens some rows stop early, so the check below means something"
    forced = replace(free, min_new_tokens=30)
    assert not (sample_candidates(*tiny, forced, torch.Generator().manual_seed(0)) == TOKENS.mel_stop).any()


def test_faithful_decoding_drops_the_remainder_and_samples_differently(tiny):
    """FAITHFUL_DECODING runs num_candidates // batch_size full batches (the rest dropped) and samples with top-k 50 and
    the prompt ids penalised: the same seed gives other candidates than the default options."""
    faithful = replace(FAITHFUL_DECODING, num_candidates=5, batch_size=2, max_new_tokens=10)
    default = DecodingOptions(num_candidates=5, batch_size=2, max_new_tokens=10)
    assert faithful.sampling == FAITHFUL_SAMPLING and FAITHFUL_SAMPLING.top_k == 50
    assert FAITHFUL_SAMPLING.penalize_prompt_ids and not default.sampling.penalize_prompt_ids
    assert default.sampling.top_k is None
    dropped = sample_candidates(*tiny, faithful, torch.Generator().manual_seed(3))
    kept = sample_candidates(*tiny, default, torch.Generator().manual_seed(3))
    assert dropped.shape == (4, 10) and kept.shape == (5, 10)
    assert not torch.equal(dropped, kept[:4])
    assert FAITHFUL_DECODING.batch_sizes() == [16]
    assert replace(FAITHFUL_DECODING, num_candidates=40).batch_sizes() == [16, 16]


def test_text_too_long_or_empty_is_a_clear_error(tiny):
    model, latent, _ = tiny
    with pytest.raises(InputTextError, match=f"at most {model.config.max_text_tokens}"):
        sample_candidates(model, latent, torch.ones(model.config.max_text_tokens + 1, dtype=torch.long), DecodingOptions(max_new_tokens=4))
    with pytest.raises(InputTextError, match="no tokens"):
        sample_candidates(model, latent, torch.zeros(0, dtype=torch.long), DecodingOptions(max_new_tokens=4))
    with pytest.raises(OptionsError, match=f"max_new_tokens <= {model.config.mel_positions - 1}"):
        sample_candidates(model, latent, torch.ones(3, dtype=torch.long), DecodingOptions(max_new_tokens=model.config.mel_positions))
    sample_candidates(model, latent, torch.ones(model.config.max_text_tokens, dtype=torch.long), DecodingOptions(
        num_candidates=1, max_new_tokens=model.config.mel_positions - 1, min_new_tokens=model.config.mel_positions - 1))


@pytest.mark.parametrize(
    "kwargs",
    [dict(num_candidates=0), dict(batch_size=0), dict(max_new_tokens=0), dict(min_new_tokens=9, max_new_tokens=4),
     dict(mel_positions="sideways"), dict(num_candidates=2, batch_size=4, drop_remainder=True)],
)
def test_bad_decoding_options_are_rejected(kwargs):
    with pytest.raises(OptionsError):
        DecodingOptions(**kwargs)
