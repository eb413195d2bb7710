"""The corpus stage for your own recordings: an LJSpeech-style folder instead of synthetic voices.

The folder holds `metadata.csv` (UTF-8, one clip per line: `id|text`, `id|text|normalized text`, or
`id|text|normalized text|speaker`) and `wavs/ID.wav`. The text column is what the model learns to read (it goes
through the same English cleaners as at inference); the voice is the speaker column when given, else the folder's
name. Clips of any sample rate are resampled; like the synthetic corpus, silence is trimmed and loudness levelled.

Bad items are skipped, never fatal one by one: a missing, unreadable, silent, too short or too long clip; an empty
or unspeakable transcript; a duplicate id. Each is listed with its reason in WORK_DIR/corpus/rejected.jsonl and
counted in the progress; if nothing usable remains, the stage fails and says why for the first items.
"""

from __future__ import annotations

import json
import random
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import soundfile

from ..atomic import write_bytes_atomic
from ..errors import AudioError, InputTextError
from ..frontend.audio import save_audio
from ..frontend.mel import CONDITIONING_SAMPLE_RATE, OUTPUT_SAMPLE_RATE
from ..frontend.text import english_cleaners
from .clips import training_clips
from .config import METADATA_FILE, TRAIN_SPLIT, VALID_SPLIT, CorpusConfig, RecipeConfig, TrainProgress
from .corpus import WAV_SUBTYPE, claim_folder, corpus_settings, finished
from .metadata import CorpusError, Utterance, corpus_dir, load_metadata, wav_paths, write_metadata

METADATA_CSV = "metadata.csv"
WAVS_DIR = "wavs"
REJECTED_FILE = "rejected.jsonl"
STAGE = "corpus"
_FIELD_SEPARATOR = "|"
_SAFE_ID_CHARS = frozenset("abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ0123456789-_.")
_SHOWN_REASONS = 5


@dataclass(frozen=True)
class Rejected:
    """An item that was skipped, and why."""

    line: int
    id: str
    reason: str


@dataclass(frozen=True)
class _Row:
    line: int
    id: str
    text: str
    voice: str


def _text_problem(text: str) -> str | None:
    """Why a transcript cannot be trained on, or None if it can."""
    if not text.strip():
        return "empty transcript"
    try:
        cleaned = english_cleaners(text)
    except InputTextError as error:
        return f"unspeakable transcript: {error}"
    if not any(char.isalpha() for char in cleaned):
        return f"unspeakable transcript: no letter is left after cleaning ({cleaned!r}); write it out in words"
    return None


def read_rows(folder: Path) -> tuple[list[_Row], list[Rejected]]:
    """metadata.csv's usable rows (by their text alone) and the rejected ones."""
    path = folder / METADATA_CSV
    if not path.is_file():
        raise CorpusError(f"{folder} has no {METADATA_CSV}: --data needs an LJSpeech-style folder (metadata.csv, wavs/)")
    try:
        lines = path.read_text(encoding="utf-8-sig").splitlines()
    except UnicodeDecodeError as error:
        raise CorpusError(f"{path} is not UTF-8 text ({error}); save it as UTF-8") from None
    rows, rejected, seen = [], [], {}
    for number, line in enumerate(lines, 1):
        if not line.strip():
            continue
        fields = [field.strip() for field in line.split(_FIELD_SEPARATOR)]
        utterance_id = fields[0]
        reason = None
        if len(fields) < 2 or len(fields) > 4:
            reason = f"expected id|text, id|text|normalized or id|text|normalized|speaker, found {len(fields)} fields"
        elif not utterance_id or not set(utterance_id) <= _SAFE_ID_CHARS:
            reason = "the id must be non-empty letters, digits, '-', '_' or '.'"
        elif utterance_id in seen:
            reason = f"duplicate id (first on line {seen[utterance_id]})"
        else:
            reason = _text_problem(fields[1])
        if reason is not None:
            rejected.append(Rejected(number, utterance_id, reason))
            continue
        seen[utterance_id] = number
        voice = fields[3] if len(fields) == 4 and fields[3] else folder.name
        rows.append(_Row(number, utterance_id, fields[1], voice))
    return rows, rejected


def _clip_problem(path: Path, min_seconds: float, max_seconds: float) -> str | None:
    if not path.is_file():
        return f"missing clip {WAVS_DIR}/{path.name}"
    try:
        seconds = soundfile.info(str(path)).duration
    except (soundfile.SoundFileError, RuntimeError) as error:
        return f"unreadable clip ({error})"
    if seconds > max_seconds:
        return f"clip too long ({seconds:.1f} s > {max_seconds:g} s); split it into sentences"
    return None


def run_user_corpus(work_dir: Path, config: RecipeConfig, progress: TrainProgress) -> None:
    """Convert the folder `config.corpus.data_dir` into WORK_DIR/corpus; resumes like the synthetic corpus."""
    settings = config.corpus
    source = Path(settings.data_dir)
    folder = corpus_dir(work_dir)
    rows, rejected = read_rows(source)
    claim_folder(folder, corpus_settings(settings, config.seed))
    for sub in wav_paths("x"):
        (folder / sub).parent.mkdir(exist_ok=True)
    order = [row.id for row in rows]
    random.Random(f"{config.seed}-valid").shuffle(order)
    n_valid = max(1, round(len(order) * settings.valid_fraction)) if len(order) >= 2 else 0
    valid_ids = set(order[:n_valid])
    done = finished(folder, load_metadata(folder / METADATA_FILE))
    for number, row in enumerate(rows, 1):
        if row.id not in done:
            entry = _convert(row, source, folder, VALID_SPLIT if row.id in valid_ids else TRAIN_SPLIT, settings)
            if isinstance(entry, Rejected):
                rejected.append(entry)
            else:
                done[row.id] = entry
        if number % settings.chunk_size == 0 or number == len(rows):
            write_metadata(folder / METADATA_FILE, (done[row.id] for row in rows if row.id in done))
        progress(STAGE, number, len(rows), {"rejected": len(rejected)})
    rejected.sort(key=lambda item: item.line)
    report = "".join(json.dumps(item.__dict__, ensure_ascii=False) + "\n" for item in rejected)
    write_bytes_atomic(folder / REJECTED_FILE, report.encode("utf-8"))
    if not done:
        reasons = "; ".join(f"line {item.line} ({item.id or 'no id'}): {item.reason}" for item in rejected[:_SHOWN_REASONS])
        raise CorpusError(
            f"nothing usable in {source}: all {len(rejected)} item(s) were rejected, e.g. {reasons or 'no lines'}; "
            f"every reason is in {folder / REJECTED_FILE}"
        )


def _convert(row: _Row, source: Path, folder: Path, split: str, settings: CorpusConfig) -> Utterance | Rejected:
    """One item's two training clips written, or why it was rejected."""
    path = source / WAVS_DIR / f"{row.id}.wav"
    problem = _clip_problem(path, settings.min_clip_seconds, settings.max_clip_seconds)
    if problem is None:
        try:
            samples, rate = soundfile.read(str(path), dtype="float32", always_2d=True)
            if not np.isfinite(samples).all():
                raise AudioError("it holds NaN or infinite samples")
            wav_22k, wav_24k = training_clips(samples[:, 0], rate)
        except (soundfile.SoundFileError, RuntimeError, AudioError) as error:
            problem = f"unreadable clip ({error})"
        else:
            seconds = wav_22k.shape[-1] / CONDITIONING_SAMPLE_RATE
            if seconds < settings.min_clip_seconds:
                problem = f"empty clip: {seconds:.2f} s of sound after trimming silence (< {settings.min_clip_seconds:g} s)"
    if problem is not None:
        return Rejected(row.line, row.id, problem)
    path_22k, path_24k = wav_paths(row.id)
    save_audio(folder / path_22k, wav_22k, CONDITIONING_SAMPLE_RATE, WAV_SUBTYPE)
    save_audio(folder / path_24k, wav_24k, OUTPUT_SAMPLE_RATE, WAV_SUBTYPE)
    return Utterance(row.id, row.text, row.voice, split, round(seconds, 4), path_22k, path_24k)
