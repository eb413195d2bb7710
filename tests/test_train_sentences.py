"""The corpus's text: WordNet example phrases tidied, everyday sentences our cleaners expand, a disjoint split."""

from __future__ import annotations

import random
from pathlib import Path

import pytest

from tortoise_clvp.frontend.text import english_cleaners
from tortoise_clvp.train.sentences import (
    WORDNET_FILES,
    CorpusTextError,
    everyday_sentences,
    split_sentences,
    tidy_sentence,
    wordnet_phrases,
)
from tortoise_clvp.train.tokenizer import ALPHABET

# data.* lines as WordNet writes them: a licence header indented by two spaces, then "offset ... | gloss; quotes"
WORDNET_LINES = [
    "  1 This software and database is being provided to you, the LICENSEE, by",
    '00001 03 n 01 car 0 000 | a motor vehicle; "we were at last able to buy a car"; "he needs a car to get to work"',
    '00002 03 n 01 van 0 000 | a truck; "the van (a big one) was red"; "the U.N. sent a van"; "DNA is in genes"',
    '00003 03 n 01 go 0 000 | to move; "go"; "they went home early, and we stayed"',
    "00004 03 n 01 nothing 0 000 | no examples here",
]


@pytest.fixture
def wordnet_dir(tmp_path: Path) -> Path:
    for index, name in enumerate(WORDNET_FILES):
        vehicle = ("car", "bike", "boat", "train")[index]  # each file its own phrases
        text = "\n".join(WORDNET_LINES[:1] + [line.replace("car", vehicle) for line in WORDNET_LINES[1:]])
        (tmp_path / name).write_text(text + "\n", encoding="utf-8")
    return tmp_path


@pytest.mark.parametrize(
    "phrase, expected",
    [
        ("we were at last able to buy a car", "We were at last able to buy a car."),
        ("how could you do such a thing?", "How could you do such a thing?"),
        ("  the rent was $400 , ", "The rent was $400."),
        ("go home", None),  # too short
        ("the van (a big one) was red", None),  # brackets
        ("the U.N. sent a van", None),  # dotted acronym
        ("DNA is in our genes", None),  # acronym
        ("he said -- nothing at all", None),  # dash as a pause
        ("it was 50% off today", None),  # a symbol the cleaners keep and the tokenizer cannot read
        (" ".join(["word"] * 21), None),  # too long
    ],
)
def test_tidy_sentence(phrase, expected):
    assert tidy_sentence(phrase, 3, 20) == expected


def test_wordnet_phrases_reads_the_quoted_examples(wordnet_dir: Path):
    phrases = wordnet_phrases(wordnet_dir, 3, 20)
    assert phrases[:3] == [
        "We were at last able to buy a car.",
        "He needs a car to get to work.",
        "They went home early, and we stayed.",
    ]
    assert len(phrases) == 3 * len(WORDNET_FILES)
    assert "We were at last able to buy a boat." in phrases


def test_missing_wordnet_says_what_to_install(tmp_path: Path):
    with pytest.raises(CorpusTextError, match="apt-get install wordnet-base"):
        wordnet_phrases(tmp_path, 3, 20)


def test_everyday_sentences_are_distinct_and_fully_speakable():
    sentences = everyday_sentences(random.Random(0), 400)
    assert len(set(sentences)) == 400
    speakable = set(ALPHABET) | {" "}
    for sentence in sentences:
        cleaned = english_cleaners(sentence)
        assert set(cleaned) <= speakable, sentence
        assert sentence[0].isupper() and sentence[-1] in ".?!"
    joined = " ".join(sentences)
    for feature in ("$", "Dr.", "?", "!", "1"):
        assert feature in joined  # money, abbreviations, questions, exclamations, numbers
    assert everyday_sentences(random.Random(0), 400) == sentences


def test_split_is_disjoint_seeded_and_sized(wordnet_dir: Path):
    split = split_sentences(wordnet_dir, seed=7, train=12, valid=3, unseen=2, everyday_share=0.5)
    assert (len(split.train), len(split.valid), len(split.unseen)) == (12, 3, 2)
    everything = split.train + split.valid + split.unseen
    assert len({english_cleaners(s) for s in everything}) == 17  # distinct, and so disjoint
    assert sum("They went home early" in s or "buy a" in s or "get to work" in s for s in everything) == 9  # WordNet
    assert split_sentences(wordnet_dir, 7, 12, 3, 2, 0.5) == split
    assert split_sentences(wordnet_dir, 8, 12, 3, 2, 0.5) != split


def test_split_too_large_for_the_sources(wordnet_dir: Path):
    with pytest.raises(CorpusTextError, match="only .* distinct sentences"):
        split_sentences(wordnet_dir, seed=0, train=500, valid=5, unseen=5, everyday_share=0.0)
