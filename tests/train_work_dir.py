"""A tiny training work folder for the model-stage tests: a corpus of synthesized speech-like clips (several
"voices" of different pitch), its metadata.jsonl, and a tokenizer and mel norms made from it, as the corpus and
tokenizer stages would leave them. Built in a tmp dir in a second or two; needs no audio engine."""

from __future__ import annotations

from pathlib import Path

import soundfile
from conftest import TOKENIZER_SENTENCES, synth_speech

from tortoise_clvp.frontend.mel import CONDITIONING_SAMPLE_RATE, OUTPUT_SAMPLE_RATE
from tortoise_clvp.train.config import CORPUS_DIR, METADATA_FILE, TOKENIZER_DIR, TRAIN_SPLIT, VALID_SPLIT
from tortoise_clvp.train.mel_norms import compute_mel_norms, save_mel_norms
from tortoise_clvp.train.metadata import Utterance, wav_paths, write_metadata
from tortoise_clvp.train.tokenizer import train_tokenizer

VOICES = 3
PER_VOICE = 6  # utterances per voice: the first VALID_PER_VOICE are held out
VALID_PER_VOICE = 2
TOKENIZER_VOCAB = 120


def make_work_dir(folder: Path) -> Path:
    """Write the tiny corpus, tokenizer.json and mel_norms.pth into `folder`; returns it."""
    corpus = folder / CORPUS_DIR
    utterances = []
    for voice in range(VOICES):
        for n in range(PER_VOICE):
            index = voice * PER_VOICE + n
            text = TOKENIZER_SENTENCES[index % len(TOKENIZER_SENTENCES)]
            seconds = 0.8 + 0.05 * len(text.split())
            utterance_id = f"v{voice}_{n:02d}"
            relative_22k, relative_24k = wav_paths(utterance_id)
            for relative, rate in ((relative_22k, CONDITIONING_SAMPLE_RATE), (relative_24k, OUTPUT_SAMPLE_RATE)):
                (corpus / relative).parent.mkdir(parents=True, exist_ok=True)
                soundfile.write(str(corpus / relative), synth_speech(seconds, rate, seed=100 * voice + n), rate)
            split = VALID_SPLIT if n < VALID_PER_VOICE else TRAIN_SPLIT
            utterances.append(Utterance(utterance_id, text, f"voice{voice}", split, seconds, relative_22k, relative_24k))
    write_metadata(corpus / METADATA_FILE, utterances)
    tokenizer = folder / TOKENIZER_DIR
    tokenizer.mkdir(parents=True, exist_ok=True)
    train_tokenizer(TOKENIZER_SENTENCES, tokenizer, vocab_size=TOKENIZER_VOCAB)
    norms = compute_mel_norms([corpus / u.wav_22k for u in utterances if u.split == TRAIN_SPLIT])
    save_mel_norms(tokenizer / "mel_norms.pth", norms)
    return folder


def no_progress(what: str, done: int, total: int, metrics: dict[str, float]) -> None:
    """A TrainProgress that checks what stages report and discards it."""
    assert isinstance(what, str) and 0 <= done <= max(total, done) and all(isinstance(v, float) for v in metrics.values())



def prepared_work_dir(tmp_path_factory, stages: tuple[str, ...]) -> Path:
    """A tiny work folder with `stages` run at smoke scale, built once per test session (read-only for callers:
    copy it before running anything that writes)."""
    from tortoise_clvp.train.config import RecipeConfig
    from tortoise_clvp.train.recipe import run_stage

    folder = tmp_path_factory.getbasetemp() / ("train_work_" + "_".join(stages))
    if (folder / ".ready").is_file():
        return folder
    make_work_dir(folder)
    for stage in stages:
        run_stage(stage, folder, RecipeConfig.smoke(), no_progress)
    (folder / ".ready").write_text("")
    return folder
