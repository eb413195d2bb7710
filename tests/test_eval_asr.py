"""Intelligibility scoring: the transcript normaliser and corpus-level WER / CER by hand."""

from __future__ import annotations

import pytest

from tortoise_clvp.eval.asr import edit_distance, error_rates, normalize


def test_numbers_and_punctuation_are_normalised_on_both_sides():
    assert normalize("I need 12 eggs, a cup of milk!") == "i need twelve eggs a cup of milk"
    assert normalize("  Twenty-one  guns.") == "twenty one guns"
    assert normalize("Dr. Smith's car") == "doctor smith's car"


def test_edit_distance_by_hand():
    assert edit_distance("kitten", "sitting") == 3
    assert edit_distance(["a", "b", "c"], ["a", "c"]) == 1
    assert edit_distance([], ["x", "y"]) == 2


def test_error_rates_are_summed_over_sentences():
    rates = error_rates(["the cat sat", "hello world"], ["the cat sat down", "hello word"])
    assert rates.wer == pytest.approx(2 / 5)  # one insertion, one substitution over five reference words
    assert rates.cer == pytest.approx((5 + 1) / (11 + 11))  # " down" inserted; "l" dropped
    assert rates.sentences == 2
    assert error_rates(["I need 12 eggs."], ["I need twelve eggs"]).wer == 0.0


def test_mismatched_lists_are_rejected():
    with pytest.raises(ValueError):
        error_rates(["a"], [])
