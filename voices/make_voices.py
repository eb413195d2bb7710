"""Make the bundled voices: every voice of the training corpus (FULL_VOICES in tortoise_clvp/train/config.py)
speaking two sentences that are not in the corpus, through the same engines, trimmed and levelled as the corpus is.

They are SYNTHETIC voices (Piper's en_US-joe-medium, whose training data is CC0, and espeak-ng), not recordings of
people. Voices with the "unseen" role were held out of training: the bundled model never heard them. Each voice is
one folder holding one 22.05 kHz mono FLAC clip. Needs the train extra and Debian's espeak-ng and sox:

    pip install -e '.[train]' && apt-get install espeak-ng sox && python voices/make_voices.py
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import soundfile

from tortoise_clvp.frontend.mel import CONDITIONING_SAMPLE_RATE
from tortoise_clvp.train.clips import training_clips
from tortoise_clvp.train.config import FULL_VOICES
from tortoise_clvp.train.engines import Synthesizer, check_engines

HERE = Path(__file__).resolve().parent
SENTENCES = (  # written for these clips: neither WordNet's nor the generator's
    "The lighthouse keeper climbed the stairs every evening, carrying a lamp and a thermos of sweet tea.",
    "On Thursday we counted twelve boats in the harbour, and every one of them was painted blue.",
)
PAUSE_SECONDS = 0.3
SEED = 7


def main() -> None:
    check_engines(FULL_VOICES)
    synthesizer = Synthesizer()
    pause = np.zeros(int(PAUSE_SECONDS * CONDITIONING_SAMPLE_RATE), dtype=np.float32)
    for number, voice in enumerate(FULL_VOICES):
        synthesizer.start_chunk(SEED + number)
        pieces = []
        for sentence in SENTENCES:
            samples, rate = synthesizer.speak(voice, sentence)
            pieces += [training_clips(samples, rate)[0][0].numpy(), pause]
        folder = HERE / voice.name
        folder.mkdir(exist_ok=True)
        for old in folder.glob("*"):
            old.unlink()
        soundfile.write(str(folder / "clip1.flac"), np.concatenate(pieces[:-1]), CONDITIONING_SAMPLE_RATE, subtype="PCM_16")
        print(f"{voice.name} ({voice.role}): {folder / 'clip1.flac'}")


if __name__ == "__main__":
    main()
