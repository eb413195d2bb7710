"""The text tokenizer: a byte-pair vocabulary trained on cleaned text, with Tortoise's conventions; and the
tokenizer stage, which writes it and the conditioning mel norms into WORK_DIR/tokenizer.

The result loads unchanged through `frontend.text.BpeTokenizer`: ids 0-2 are `[STOP]`, `[UNK]`, `[SPACE]`,
then the characters the English cleaners can produce, then the learned merges, at most 255 ids in all (id 255 is
the decoder's text start token). Spaces are spoken as `[SPACE]` tokens, so words never merge across them.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Iterable

from ..atomic import write_bytes_atomic
from ..config import TOKENS, AutoregressiveConfig
from ..frontend.text import TOKENIZER_FILENAME, english_cleaners
from .config import TOKENIZER_DIR, TRAIN_SPLIT, RecipeConfig, TrainProgress

SPECIAL_TOKENS = ("[STOP]", "[UNK]", "[SPACE]")  # in id order: TOKENS.text_stop, unknown, TOKENS.space
# every character english_cleaners can leave: letters, and the punctuation Tortoise's vocabulary spells out
ALPHABET = tuple("!'(),-./:;?") + tuple("abcdefghijklmnopqrstuvwxyz")
MAX_VOCAB = AutoregressiveConfig.RELEASED.number_text_tokens  # 255: id 255 is the text start token
MIN_VOCAB = len(SPECIAL_TOKENS) + len(ALPHABET)


def train_tokenizer(texts: Iterable[str], destination: str | os.PathLike[str], vocab_size: int = MAX_VOCAB) -> Path:
    """Learn a BPE vocabulary of `vocab_size` ids from raw sentences and write it as a tokenizer.json.

    `destination` is the file, or a folder to hold `tokenizer.json`; it is written atomically.
    """
    from tokenizers import Tokenizer, models, pre_tokenizers, trainers

    if not MIN_VOCAB <= vocab_size <= MAX_VOCAB:
        raise ValueError(f"vocab_size must be from {MIN_VOCAB} (specials + alphabet) to {MAX_VOCAB}, got {vocab_size}")
    assert (TOKENS.text_stop, TOKENS.space) == (0, 2), "SPECIAL_TOKENS assumes Tortoise's special ids"
    cleaned = [english_cleaners(text).replace(" ", SPECIAL_TOKENS[2]) for text in texts]
    if not cleaned:
        raise ValueError("no text to train the tokenizer on")
    tokenizer = Tokenizer(models.BPE(unk_token=SPECIAL_TOKENS[1]))
    tokenizer.pre_tokenizer = pre_tokenizers.Whitespace()
    trainer = trainers.BpeTrainer(
        vocab_size=vocab_size,
        special_tokens=list(SPECIAL_TOKENS),
        initial_alphabet=list(ALPHABET),
        limit_alphabet=len(ALPHABET),
        show_progress=False,
    )
    tokenizer.train_from_iterator(cleaned, trainer=trainer)
    path = Path(destination)
    if path.is_dir():
        path = path / TOKENIZER_FILENAME
    write_bytes_atomic(path, tokenizer.to_str(pretty=True).encode("utf-8"))
    return path


STAGE = "tokenizer"


def run_tokenizer(work_dir: Path, config: RecipeConfig, progress: TrainProgress) -> None:
    """Write WORK_DIR/tokenizer/tokenizer.json (BPE of the training sentences) and mel_norms.pth (from training
    audio). Each file is skipped when it exists: rerunning after an interruption finishes the other."""
    import random

    from ..weights.model_dir import MEL_NORMS_FILE
    from .mel_norms import compute_mel_norms, save_mel_norms
    from .metadata import corpus_dir, read_metadata

    train = [u for u in read_metadata(work_dir) if u.split == TRAIN_SPLIT]
    if not train:
        raise ValueError(f"the corpus in {corpus_dir(work_dir)} has no training utterances; rerun the corpus stage")
    folder = Path(work_dir) / TOKENIZER_DIR
    folder.mkdir(parents=True, exist_ok=True)
    if config.init_dir is not None:  # fine-tuning: the ids and norms the init model was trained with, not new ones
        for name in (TOKENIZER_FILENAME, MEL_NORMS_FILE):
            if not (folder / name).is_file():
                write_bytes_atomic(folder / name, (Path(config.init_dir) / name).read_bytes())
        progress(STAGE, 1, 1, {})
        return
    if not (folder / TOKENIZER_FILENAME).is_file():
        progress(STAGE, 0, 1, {"sentences": len({u.text for u in train})})
        train_tokenizer(sorted({u.text for u in train}), folder / TOKENIZER_FILENAME, config.tokenizer.vocab_size)
    progress(STAGE, 1, 1, {})
    if (folder / MEL_NORMS_FILE).is_file():
        return
    clips = sorted(train, key=lambda u: u.id)
    clips = random.Random(f"{config.seed}-mel-norms").sample(clips, min(len(clips), config.tokenizer.mel_norm_clips))
    paths = [corpus_dir(work_dir) / u.wav_22k for u in clips]
    norms = compute_mel_norms(paths, lambda done: progress("mel norms", done, len(paths), {}))
    save_mel_norms(folder / MEL_NORMS_FILE, norms)
