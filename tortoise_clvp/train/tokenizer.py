"""The text tokenizer: a byte-pair vocabulary trained on cleaned text, with Tortoise's conventions.

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
