"""Early pruning: exactly the asked fraction is finished, and every kept candidate finishes with the tokens it gets in
the unpruned run of the same seed (row-keyed draws), on the tiny seeded decoder; its checkpoint score replays from the
unpruned run's log-probabilities."""

from __future__ import annotations

import math

import pytest
import torch

from tortoise_clvp.errors import OptionsError
from tortoise_clvp.pipeline.decoding import DecodingOptions
from tortoise_clvp.pipeline.pruning import (
    SPEECH_TOKENS_PER_CHARACTER,
    PruneOptions,
    expected_speech_tokens,
    mean_logprob,
    sample_pruned,
)
from tortoise_clvp.pipeline.sampling import draw_from_uniforms

TEXT = torch.tensor([5, 17, 30, 42, 8, 0])
OPTIONS = DecodingOptions(num_candidates=8, batch_size=4, max_new_tokens=30)


@pytest.fixture(scope="module")
def models(tiny_models):
    return tiny_models["autoregressive"], tiny_models["clvp"]


@pytest.fixture(scope="module")
def cond(models):
    return torch.randn(models[0].config.model_dim, generator=torch.Generator().manual_seed(0))


@pytest.fixture(scope="module")
def unpruned(models, cond):
    return sample_pruned(models[0], cond, TEXT, OPTIONS, None, torch.Generator().manual_seed(3))


def test_unpruned_run_finishes_every_candidate(unpruned, models):
    stop = models[0].config.tokens.mel_stop
    assert unpruned.kept.tolist() == list(range(8)) and unpruned.codes.shape == (8, 30)
    lengths = (unpruned.codes != stop).sum(dim=1)
    assert 0 < int(lengths.min()) < 30 and int(lengths.max()) == 30  # some stop early, some run to the budget
    # stop-padded after the first stop, as decoding.sample_candidates pads
    for row, length in zip(unpruned.codes, lengths.tolist()):
        assert (row[length:] == stop).all()


@pytest.mark.parametrize("score, keep, kept", [("logprob", 0.75, 6), ("clvp", 0.25, 2), ("logprob", 3 / 8, 3)])
def test_keeps_the_fraction_and_kept_rows_finish_as_unpruned(models, cond, unpruned, score, keep, kept):
    ar, clvp = models
    pruned = sample_pruned(ar, cond, TEXT, OPTIONS, PruneOptions(at_tokens=8, keep=keep, score=score),
                           torch.Generator().manual_seed(3), clvp=clvp)
    assert len(pruned.kept) == kept == round(keep * 8)
    assert pruned.kept.tolist() == sorted(set(pruned.kept.tolist()))
    # the kept are the best checkpoint scores (ties: the earlier candidate)
    scores = pruned.checkpoint_scores
    want = sorted(sorted(range(8), key=lambda i: (-float(scores[i]), i))[:kept])
    assert pruned.kept.tolist() == want
    # token for token what the unpruned run of the same seed gives those candidates (survivors regrouped across
    # batches: 6 kept -> a batch of 4 and one of 2; 3 kept -> one batch of 3)
    assert torch.equal(pruned.codes, unpruned.codes[pruned.kept])
    # up to the cut the very same computation; after it, a batch of other rows may round logits in the last bits
    assert torch.equal(pruned.logprobs[:, :8], unpruned.logprobs[pruned.kept, :8])
    assert torch.allclose(pruned.logprobs, unpruned.logprobs[pruned.kept], rtol=0, atol=1e-5)
    assert pruned.checkpoint == 8 and pruned.steps < unpruned.steps
    if score == "logprob":  # the cut can be replayed afterwards from the unpruned run's log-probabilities
        stop = ar.config.tokens.mel_stop
        assert torch.equal(mean_logprob(unpruned.logprobs, unpruned.codes, stop, 8), pruned.checkpoint_scores)


def test_checkpoint_scores_are_the_prefix_mean_log_probability(models, cond):
    ar, _ = models
    options = DecodingOptions(num_candidates=4, batch_size=4, max_new_tokens=40, min_new_tokens=6)
    pruned = sample_pruned(ar, cond, TEXT, options, PruneOptions(at_tokens=6, keep=1.0),
                           torch.Generator().manual_seed(5))
    # teacher-forced log-probabilities of each candidate's first 6 tokens, recomputed by a plain causal pass
    with torch.no_grad():
        prompt = ar.embed_prompt(cond.reshape(1, -1), ar.wrap_text(TEXT.reshape(1, -1)))
        for index in range(4):
            codes = pruned.codes[index, :6]
            start = torch.tensor([[ar.config.tokens.mel_start]])
            mel = ar.embed_mel(torch.cat([start, codes[None, :5]], dim=1), torch.arange(6))
            logits = ar.mel_logits(ar.transformer(torch.cat([prompt, mel], dim=1)))[0, -6:]
            want = logits.log_softmax(dim=-1)[torch.arange(6), codes].mean()
            assert float(pruned.checkpoint_scores[index]) == pytest.approx(float(want), abs=1e-4)


def test_a_checkpoint_past_the_budget_chooses_among_finished_candidates(models, cond, unpruned):
    pruned = sample_pruned(models[0], cond, TEXT, OPTIONS, PruneOptions(at_tokens=100, keep=0.5),
                           torch.Generator().manual_seed(3))
    assert pruned.checkpoint == 30 and len(pruned.kept) == 4
    assert torch.equal(pruned.codes, unpruned.codes[pruned.kept]) and pruned.steps == unpruned.steps


def test_checkpoint_from_the_expected_length():
    assert expected_speech_tokens("a" * 100) == round(100 * SPEECH_TOKENS_PER_CHARACTER)
    assert PruneOptions(at_fraction=0.25).checkpoint(expected_speech_tokens("a" * 100)) == math.ceil(0.25 * 127)
    assert PruneOptions(at_tokens=30).checkpoint(None) == 30
    with pytest.raises(OptionsError, match="expected length"):
        PruneOptions(at_fraction=0.5).checkpoint(None)


@pytest.mark.parametrize("kwargs, match", [
    ({}, "exactly one"), ({"at_tokens": 5, "at_fraction": 0.5}, "exactly one"), ({"at_tokens": 0}, "at_tokens"),
    ({"at_fraction": 1.5}, "at_fraction"), ({"at_tokens": 5, "keep": 0.0}, "keep"),
    ({"at_tokens": 5, "score": "both"}, "score"),
])
def test_bad_options_are_refused(kwargs, match):
    with pytest.raises(OptionsError, match=match):
        PruneOptions(**kwargs)


def test_clvp_scoring_needs_clvp(models, cond):
    with pytest.raises(OptionsError, match="CLVP model"):
        sample_pruned(models[0], cond, TEXT, OPTIONS, PruneOptions(at_tokens=5, score="clvp"))


def test_draws_from_uniforms_by_hand():
    probs = torch.tensor([[0.2, 0.0, 0.8], [0.0, 0.5, 0.5], [0.0, 0.0, 1.0]])
    assert draw_from_uniforms(probs, torch.tensor([0.1, 0.0, 0.0])).tolist() == [0, 1, 2]
    assert draw_from_uniforms(probs, torch.tensor([0.2, 0.5, 0.9999999])).tolist() == [2, 2, 2]  # 1 has no mass
    # a row's id depends on its own number only, whatever rows share the batch
    alone = draw_from_uniforms(probs[1:2], torch.tensor([0.7]))
    assert alone.tolist() == [draw_from_uniforms(probs, torch.tensor([0.3, 0.7, 0.1])).tolist()[1]]
    # never an id of zero probability, even at the top of the range
    assert draw_from_uniforms(torch.tensor([[0.3, 0.7, 0.0]]), torch.tensor([1.0 - 1e-9])).tolist() == [1]


def test_cache_rows_refuse_the_shared_prompt(models):
    ar, _ = models
    ar.setup_cache(4, 32)
    try:
        ar.prefill(torch.zeros(1, 5, ar.config.model_dim))
        with pytest.raises(ValueError, match="shared prefix"):
            ar.cache_rows(torch.arange(2), 3, 6)
        saved = ar.cache_rows(torch.arange(2), 5, 5)
        assert saved[0][0].shape == (2, ar.config.heads, 0, ar.config.head_dim)
    finally:
        ar.release_cache()
