"""Logit processing: hand-made cases and live parity with transformers' own processors."""

from __future__ import annotations

from dataclasses import replace

import pytest
import torch

from tortoise_clvp.config import TOKENS
from tortoise_clvp.errors import OptionsError
from tortoise_clvp.pipeline.sampling import (
    FAITHFUL_SAMPLING,
    FAKE_PROMPT_ID,
    SamplingOptions,
    apply_repetition_penalty,
    apply_top_k,
    apply_top_p,
    initial_seen,
    next_tokens,
)


def test_repetition_penalty_divides_positive_and_multiplies_negative():
    logits = torch.tensor([[2.0, -2.0, 1.0]])
    seen = torch.tensor([[True, True, False]])
    assert torch.equal(apply_repetition_penalty(logits, seen, 2.0), torch.tensor([[1.0, -4.0, 1.0]]))


def test_top_p_keeps_smallest_set_reaching_p_and_always_the_best():
    scores = torch.log(torch.tensor([[0.5, 0.3, 0.15, 0.05]]))
    kept = torch.isfinite(apply_top_p(scores, 0.8))
    assert kept.tolist() == [[True, True, False, False]]
    assert torch.isfinite(apply_top_p(scores, 1e-6)).tolist() == [[True, False, False, False]]


def test_top_k_keeps_k_best():
    scores = torch.tensor([[0.1, 3.0, 2.0, -1.0]])
    assert torch.isfinite(apply_top_k(scores, 2)).tolist() == [[False, True, True, False]]


def test_prompt_ids_are_seen_only_in_faithful_mode():
    assert not initial_seen(2, 8194, SamplingOptions(), torch.device("cpu")).any()
    seen = initial_seen(2, 8194, SamplingOptions(penalize_prompt_ids=True), torch.device("cpu"))
    assert seen[:, FAKE_PROMPT_ID].all() and seen[:, TOKENS.mel_start].all() and seen.sum() == 4


def test_faithful_sampling_keeps_only_the_50_best_and_penalises_the_prompt_ids():
    """What FAITHFUL_SAMPLING claims to restore: transformers' silent top_k=50, and the penalty on the fake prompt."""
    vocab, rows = 8194, 256
    logits = torch.zeros(rows, vocab)
    logits[:, 100:150] = 0.5  # the 50 best, together far below top_p's 0.8 of the mass
    seen = torch.zeros(rows, vocab, dtype=torch.bool)
    best = lambda ids: ((ids >= 100) & (ids < 150)).float().mean().item()  # noqa: E731
    assert best(next_tokens(logits, seen, SamplingOptions(), torch.Generator().manual_seed(0))) < 0.1
    assert best(next_tokens(logits, seen, FAITHFUL_SAMPLING, torch.Generator().manual_seed(0))) == 1.0

    logits = torch.zeros(1, vocab)
    logits[0, FAKE_PROMPT_ID], logits[0, 7] = 3.0, 2.0
    for options, expected in ((SamplingOptions(do_sample=False), FAKE_PROMPT_ID),
                              (replace(FAITHFUL_SAMPLING, do_sample=False), 7)):  # 3.0 / 2 < 2.0
        seen = initial_seen(1, vocab, options, torch.device("cpu"))
        assert next_tokens(logits, seen, options).item() == expected


def test_forbid_stop_bans_the_stop_token():
    logits = torch.full((3, 8194), -5.0)
    logits[:, TOKENS.mel_stop] = 10.0
    seen = torch.zeros_like(logits, dtype=torch.bool)
    greedy = SamplingOptions(do_sample=False)
    assert (next_tokens(logits, seen, greedy) == TOKENS.mel_stop).all()
    assert (next_tokens(logits, seen, greedy, forbid_stop=True) != TOKENS.mel_stop).all()


@pytest.mark.parametrize("kwargs", [dict(temperature=0), dict(top_p=0), dict(top_p=1.5), dict(top_k=0), dict(repetition_penalty=0)])
def test_bad_sampling_options_are_rejected(kwargs):
    with pytest.raises(OptionsError):
        SamplingOptions(**kwargs)


def test_processors_match_transformers():
    """Penalty -> temperature -> top-k -> top-p as transformers' processors compute them."""
    pytest.importorskip("transformers")
    from transformers.generation.logits_process import (
        RepetitionPenaltyLogitsProcessor,
        TemperatureLogitsWarper,
        TopKLogitsWarper,
        TopPLogitsWarper,
    )

    torch.manual_seed(0)
    logits = torch.randn(4, 8194) * 3
    input_ids = torch.randint(0, 8194, (4, 20))
    seen = torch.zeros_like(logits, dtype=torch.bool).scatter_(1, input_ids, True)
    theirs = RepetitionPenaltyLogitsProcessor(2.0)(input_ids, logits.clone())
    theirs = TemperatureLogitsWarper(0.8)(input_ids, theirs)
    theirs = TopKLogitsWarper(50)(input_ids, theirs)
    theirs = TopPLogitsWarper(0.8)(input_ids, theirs)
    ours = apply_top_p(apply_top_k(apply_repetition_penalty(logits, seen, 2.0) / 0.8, 50), 0.8)
    assert torch.equal(torch.isfinite(ours), torch.isfinite(theirs))
    torch.testing.assert_close(ours[torch.isfinite(ours)], theirs[torch.isfinite(theirs)])
