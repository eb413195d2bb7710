"""Candidate clean-up and latent trimming, against the pipeline fixture and hand-made rows."""

from __future__ import annotations

import torch
from conftest import read_json, read_tensors

from tortoise_clvp.config import TOKENS
from tortoise_clvp.pipeline.trimming import (
    calm_trim_length,
    fix_speech_decoder_output,
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
