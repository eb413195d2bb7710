"""A tiny corpus in a work folder, made of synthesized speech-like clips, for the waveform stages' tests.

Each voice is the same synthesizer with its own seed (its own pitch and rhythm); every utterance is written at
22.05 and 24 kHz like the corpus stage writes it, with metadata.jsonl in the corpus stage's format.
"""

from __future__ import annotations

from pathlib import Path

import soundfile
from conftest import synth_speech

from tortoise_clvp.frontend.mel import CONDITIONING_SAMPLE_RATE, OUTPUT_SAMPLE_RATE
from tortoise_clvp.train.config import METADATA_FILE, TRAIN_SPLIT, VALID_SPLIT
from tortoise_clvp.train.metadata import Utterance, corpus_dir, wav_paths, write_metadata

TINY_VOICES = ("low", "high")
TRAIN_PER_VOICE = 3
VALID_PER_VOICE = 1
TEXTS = ("Hello, this is a test.", "Good morning, and welcome to the show.", "Pick the best three.", "Good night!")


def write_tiny_corpus(work_dir: Path) -> list[Utterance]:
    """Write WORK_DIR/corpus (metadata.jsonl, wavs_22k/, wavs_24k/) and return its utterances."""
    folder = corpus_dir(work_dir)
    utterances = []
    for v, voice in enumerate(TINY_VOICES):
        for n in range(TRAIN_PER_VOICE + VALID_PER_VOICE):
            split = TRAIN_SPLIT if n < TRAIN_PER_VOICE else VALID_SPLIT
            seconds, seed = 1.6 + 0.4 * n, 100 * v + n
            utterance_id = f"{voice}_{n}"
            paths = wav_paths(utterance_id)
            for path, rate in zip(paths, (CONDITIONING_SAMPLE_RATE, OUTPUT_SAMPLE_RATE)):
                (folder / path).parent.mkdir(parents=True, exist_ok=True)
                soundfile.write(str(folder / path), synth_speech(seconds, rate, seed, peak=0.4), rate, subtype="PCM_16")
            utterances.append(Utterance(utterance_id, TEXTS[n], voice, split, seconds, *paths))
    write_metadata(folder / METADATA_FILE, utterances)
    return utterances
