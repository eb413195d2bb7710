"""Every training setting in one place: one frozen dataclass per stage, gathered in `RecipeConfig`.

`RecipeConfig()` is the full recipe that makes the bundled model; `RecipeConfig.smoke()` runs every stage at toy
scale (a handful of sentences, a few steps each) so a test can prove the whole recipe in about two minutes.
Stage functions take the whole `RecipeConfig` and read their own part.
"""

from __future__ import annotations

from dataclasses import dataclass, field, replace
from typing import Callable

# Work folder layout (relative to WORK_DIR), shared by every stage.
CORPUS_DIR = "corpus"  # metadata.jsonl, wavs_22k/, wavs_24k/
METADATA_FILE = "metadata.jsonl"
TOKENIZER_DIR = "tokenizer"  # tokenizer.json, mel_norms.pth
CODES_DIR = "codes"  # the discrete VAE's checkpoint and every utterance's speech codes
AUTOREGRESSIVE_DIR = "autoregressive"
CLVP_DIR = "clvp"
DIFFUSION_DIR = "diffusion"
VOCODER_DIR = "vocoder"
EXPORT_DIR = "export"

# A stage reports to the caller (the CLI draws it): (what, done, total, metrics such as loss or items/s).
TrainProgress = Callable[[str, int, int, dict[str, float]], None]

# Splits written into metadata.jsonl
TRAIN_SPLIT = "train"  # training voices, training sentences
VALID_SPLIT = "valid"  # training voices, held-out sentences (never trained on)
UNSEEN_VOICE_SPLIT = "unseen_voice"  # held-out voices (cloning tests), held-out sentences


@dataclass(frozen=True)
class CorpusConfig:
    """How many sentences, which voices, and the split."""

    seed: int = 1234


@dataclass(frozen=True)
class TokenizerConfig:
    """The text BPE and the mel normalisation statistics."""

    vocab_size: int = 255


@dataclass(frozen=True)
class RecipeConfig:
    """The whole recipe, stage by stage."""

    seed: int = 1234
    corpus: CorpusConfig = field(default_factory=CorpusConfig)
    tokenizer: TokenizerConfig = field(default_factory=TokenizerConfig)

    @classmethod
    def smoke(cls) -> "RecipeConfig":
        """Every stage at toy scale: proves the recipe end to end in about two minutes on 2 cores."""
        full = cls()
        return replace(full, corpus=replace(full.corpus), tokenizer=replace(full.tokenizer))
