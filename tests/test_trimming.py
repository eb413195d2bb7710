"""Candidate clean-up and latent trimming, against the pipeline fixture and hand-made rows."""

from __future__ import annotations

import torch
from conftest import read_json, read_tensors

from tortoise_clvp.config import TOKENS
from tortoise_clvp.pipeline.trimming import (
    calm_trim_length,
    fix_speech_decoder_output,
    scoring_span,
    speech_lengths,
)

STOP, CALM = TOKENS.mel_stop, TOKENS.calm


def test_fix_matches_original_pipeline(reference_dir):
    cases = read_tensors(reference_dir / "pipeline_tiny" / "cases.safetensors")
    padded = cases["s3.padded_codes"]
    fixed = fix_speech_decoder_output(padded, TOKENS)
    assert torch.equal(fixed, cases["s4.fixed_codes"])
    assert torch.equal(padded, cases["s3.padded_codes"]), "input must not be modified"


def test_fix_rules_by_hand():
    codes = torch.tensor([
        [5, 6, 7, STOP, STOP, STOP, STOP, STOP],  # stop early: calm from the stop, then the tail
        [5, 6, 7, 8, 9, 10, 11, STOP],  # stop in the last three: the tail still overwrites
        [5, 6, 7, 8, 9, 10, 11, 12],  # no stop: unchanged
    ])
    fixed = fix_speech_decoder_output(codes, TOKENS)
    assert fixed.tolist() == [
        [5, 6, 7, CALM, CALM, *TOKENS.fix_tail],
        [5, 6, 7, 8, 9, *TOKENS.fix_tail],
        [5, 6, 7, 8, 9, 10, 11, 12],
    ]
    assert speech_lengths(codes, TOKENS).tolist() == [3, 7, 8]


def test_calm_trim_lengths_match_original_pipeline(reference_dir):
    meta = read_json(reference_dir / "pipeline_tiny" / "config.json")
    cases = read_tensors(reference_dir / "pipeline_tiny" / "cases.safetensors")
    best = cases["s5.best_codes"]
    assert [calm_trim_length(row, TOKENS) for row in best] == meta["s7_trimmed_lengths"]


def test_calm_trim_by_hand():
    run = [CALM] * TOKENS.calm_run_to_trim
    assert calm_trim_length(torch.tensor([1, 2, *run, 3]), TOKENS) == 2 + TOKENS.calm_run_to_trim - 1
    assert calm_trim_length(torch.tensor([1, CALM, CALM, 2]), TOKENS) == 4


def test_scoring_span_keeps_everything_without_score_padding():
    codes = torch.tensor([[5, STOP, STOP, STOP, STOP, STOP, STOP, STOP, STOP, STOP]])
    assert torch.equal(scoring_span(codes, TOKENS, None), codes)


def test_scoring_span_cuts_after_the_longest_candidate_its_stop_tail_and_padding():
    stops = [STOP] * 20
    codes = torch.tensor([[5, 6, *stops[:18]], [5, 6, 7, 8, *stops[:16]]])  # lengths 2 and 4, L = 20
    tail = len(TOKENS.fix_tail)
    for padding in (0, 3):
        cut = scoring_span(codes, TOKENS, padding)
        assert cut.shape == (2, 4 + 1 + tail + padding)
        assert torch.equal(cut, codes[:, : cut.shape[1]])
        fixed = fix_speech_decoder_output(cut, TOKENS)
        assert fixed[1].tolist() == [5, 6, 7, 8, *[CALM] * (1 + padding), *TOKENS.fix_tail]
    assert scoring_span(codes, TOKENS, 100).shape == codes.shape  # never longer than sampled


def test_scoring_span_keeps_every_position_when_a_candidate_never_stopped():
    codes = torch.tensor([[5, STOP, STOP, STOP, STOP, STOP, STOP, STOP], [5, 6, 7, 8, 9, 10, 11, 12]])
    assert torch.equal(scoring_span(codes, TOKENS, 0), codes)
