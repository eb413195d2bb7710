"""The tokenizer stage: a BPE of the training sentences that our text front end loads, and the corpus's mel norms."""

from __future__ import annotations

import io
import random
from dataclasses import replace
from pathlib import Path

import numpy as np
import pytest
import torch

from conftest import synth_speech
from tortoise_clvp.frontend.audio import load_audio, save_audio
from tortoise_clvp.frontend.mel import conditioning_mel, load_mel_norms
from tortoise_clvp.frontend.text import BpeTokenizer, english_cleaners
from tortoise_clvp.train.config import TRAIN_SPLIT, VALID_SPLIT, RecipeConfig
from tortoise_clvp.train.metadata import CorpusError, Utterance, corpus_dir, wav_paths, write_metadata
from tortoise_clvp.train.sentences import everyday_sentences
from tortoise_clvp.train.tokenizer import run_tokenizer

MEL_NORMS = "mel_norms.pth"


def fake_corpus(work_dir: Path, train: int = 120, valid: int = 30) -> list[Utterance]:
    """A corpus as the corpus stage writes it, with speech-like noise for audio (the tokenizer stage needs no voice)."""
    folder = corpus_dir(work_dir)
    for sub in wav_paths("x"):
        (folder / sub).parent.mkdir(parents=True, exist_ok=True)
    texts = everyday_sentences(random.Random(3), train + valid)
    utterances = []
    for index, text in enumerate(texts):
        uid = f"u{index:03d}"
        seconds = 0.6 + 0.1 * (index % 5)
        wav = synth_speech(seconds, 22050, seed=index, peak=0.2 + 0.1 * (index % 3))
        path_22k, path_24k = wav_paths(uid)
        save_audio(folder / path_22k, wav, 22050, "PCM_16")
        save_audio(folder / path_24k, wav, 24000, "PCM_16")  # content does not matter here
        split = TRAIN_SPLIT if index < train else VALID_SPLIT
        utterances.append(Utterance(uid, text, "v", split, seconds, path_22k, path_24k))
    write_metadata(folder / "metadata.jsonl", utterances)
    return utterances


@pytest.fixture(scope="module")
def trained(tmp_path_factory) -> tuple[Path, list[Utterance]]:
    work = tmp_path_factory.mktemp("tok") / "work"
    utterances = fake_corpus(work)
    run_tokenizer(work, RecipeConfig(), lambda *args: None)
    return work, utterances


def test_tokenizer_round_trips_held_out_sentences(trained):
    work, utterances = trained
    tokenizer = BpeTokenizer(work / "tokenizer")
    assert tokenizer.vocab_size <= 255
    held_out = [u.text for u in utterances if u.split == VALID_SPLIT]
    for text in held_out:
        ids = tokenizer.encode(text)
        assert tokenizer.decode(ids) == english_cleaners(text)
        assert len(ids) < len(english_cleaners(text))  # merges were learned and used


def test_tokenizer_learns_only_training_text(trained, tmp_path: Path):
    work, utterances = trained
    other = tmp_path / "work"
    fake_corpus(other)
    # the same training sentences, other held-out ones: the same vocabulary
    swapped = [replace(u, text="Zebras quizzically vex jumpy wombats.") if u.split == VALID_SPLIT else u for u in utterances]
    write_metadata(corpus_dir(other) / "metadata.jsonl", swapped)
    run_tokenizer(other, RecipeConfig(), lambda *args: None)
    assert (other / "tokenizer" / "tokenizer.json").read_bytes() == (work / "tokenizer" / "tokenizer.json").read_bytes()


def test_mel_norms_are_the_training_audio_band_means(trained):
    work, utterances = trained
    norms = load_mel_norms(work / "tokenizer" / MEL_NORMS)  # the format the front end reads
    assert norms.shape == (80,) and norms.dtype == torch.float32
    saved = torch.load(work / "tokenizer" / MEL_NORMS, weights_only=True)
    assert isinstance(saved, torch.Tensor) and saved.shape == (80,)  # a plain tensor, as Tortoise's file is
    assert (norms < 0).all()  # log energies below 1, as in Tortoise's own file
    train = [u for u in utterances if u.split == TRAIN_SPLIT]
    mels = [conditioning_mel(load_audio(corpus_dir(work) / u.wav_22k, 22050)[0], norms) for u in train]
    normalised = torch.cat(mels, dim=1).mean(dim=1)  # every band of the training audio averages 1 after dividing
    torch.testing.assert_close(normalised, torch.ones(80), atol=1e-4, rtol=1e-4)
    valid = [u for u in utterances if u.split == VALID_SPLIT]
    assert not np.allclose(  # held-out audio is not part of the statistic
        torch.cat([conditioning_mel(load_audio(corpus_dir(work) / u.wav_22k, 22050)[0], norms) for u in valid], 1)
        .mean(1).numpy(), 1.0, atol=1e-4)


def test_rerun_finishes_what_is_missing(trained, tmp_path: Path):
    work, _ = trained
    norms_path = work / "tokenizer" / MEL_NORMS
    before = norms_path.read_bytes()
    norms_path.unlink()
    reports = []
    run_tokenizer(work, RecipeConfig(), lambda *args: reports.append(args[0]))
    assert torch.equal(load_mel_norms(norms_path), torch.load(io.BytesIO(before), weights_only=True))
    assert "mel norms" in reports


def test_tokenizer_stage_needs_a_corpus(tmp_path: Path):
    with pytest.raises(CorpusError, match="clvp-tts train corpus"):
        run_tokenizer(tmp_path, RecipeConfig(), lambda *args: None)
