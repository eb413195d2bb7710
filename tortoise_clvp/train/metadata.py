"""The corpus's index: one JSON object per utterance in WORK_DIR/corpus/metadata.jsonl, read by every later stage.

Fields: id, text (as written: the model's text front end cleans it), voice, split (train / valid / unseen_voice),
duration (seconds), wav_22k and wav_24k (paths relative to the corpus folder, mono wavs at 22.05 and 24 kHz).
"""

from __future__ import annotations

import json
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Iterable

from ..atomic import write_bytes_atomic
from ..errors import TortoiseClvpError
from .config import CORPUS_DIR, METADATA_FILE

WAVS_22K_DIR = "wavs_22k"
WAVS_24K_DIR = "wavs_24k"


class CorpusError(TortoiseClvpError):
    """The corpus is missing, damaged, or cannot be built from what was given."""


@dataclass(frozen=True)
class Utterance:
    """One line of metadata.jsonl."""

    id: str
    text: str
    voice: str
    split: str
    duration: float
    wav_22k: str
    wav_24k: str


def corpus_dir(work_dir: Path) -> Path:
    """WORK_DIR/corpus."""
    return Path(work_dir) / CORPUS_DIR


def wav_paths(utterance_id: str) -> tuple[str, str]:
    """Where an utterance's 22.05 and 24 kHz wavs live, relative to the corpus folder."""
    return f"{WAVS_22K_DIR}/{utterance_id}.wav", f"{WAVS_24K_DIR}/{utterance_id}.wav"


def write_metadata(path: Path, utterances: Iterable[Utterance]) -> None:
    """Replace metadata.jsonl atomically with these utterances, one JSON object per line."""
    lines = (json.dumps(asdict(utterance), ensure_ascii=False) + "\n" for utterance in utterances)
    write_bytes_atomic(path, "".join(lines).encode("utf-8"))


def load_metadata(path: Path) -> list[Utterance]:
    """Every utterance of a metadata.jsonl; a missing file is an empty corpus, a damaged one a CorpusError."""
    if not path.is_file():
        return []
    utterances = []
    for number, line in enumerate(path.read_text(encoding="utf-8").splitlines(), 1):
        try:
            utterances.append(Utterance(**json.loads(line)))
        except (ValueError, TypeError) as error:
            raise CorpusError(
                f"{path} line {number} is not a corpus entry ({error}); delete the file and rerun the corpus stage"
            ) from None
    return utterances


def read_metadata(work_dir: Path) -> list[Utterance]:
    """The finished corpus of a work folder; raises CorpusError if the corpus stage has not run."""
    path = corpus_dir(work_dir) / METADATA_FILE
    utterances = load_metadata(path)
    if not utterances:
        raise CorpusError(f"no corpus in {path.parent}: run `clvp-tts train corpus {work_dir}` first")
    return utterances
