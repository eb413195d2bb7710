"""Users' own data: an LJSpeech-style folder becomes the corpus; every bad item is reported and skipped."""

from __future__ import annotations

import json
from dataclasses import replace
from pathlib import Path

import numpy as np
import pytest
import soundfile

from conftest import synth_speech
from tortoise_clvp.train.config import METADATA_FILE, TRAIN_SPLIT, VALID_SPLIT, RecipeConfig
from tortoise_clvp.train.corpus import run_corpus
from tortoise_clvp.train.metadata import CorpusError, load_metadata, read_metadata
from tortoise_clvp.train.user_data import REJECTED_FILE

GOOD = {  # id -> (seconds, rate, channels)
    "good_22k": (1.5, 22050, 1),
    "good_44k_stereo": (1.2, 44100, 2),
    "good_16k": (1.0, 16000, 1),
    "good_speaker": (1.1, 22050, 1),
}
MAX_SECONDS = 3.0
# each bad row and the words its reason must contain
BAD = {
    "missing": "missing clip",
    "garbage": "unreadable clip",
    "silent": "empty clip",
    "too_long": "too long",
    "no_text": "empty transcript",
    "emoji": "unspeakable transcript",
    "good_22k": "duplicate id (first on line 1)",
    "bad fields": "must be non-empty letters",
    "x": "expected id|text",
}


def write_clip(path: Path, seconds: float, rate: int, channels: int = 1, seed: int = 0) -> None:
    wave = synth_speech(seconds, rate, seed)
    if channels > 1:
        wave = np.stack([wave] * channels, axis=1)
    soundfile.write(str(path), wave, rate, subtype="PCM_16")


@pytest.fixture
def data_dir(tmp_path: Path) -> Path:
    folder = tmp_path / "my_voice"
    wavs = folder / "wavs"
    wavs.mkdir(parents=True)
    for seed, (uid, (seconds, rate, channels)) in enumerate(GOOD.items()):
        write_clip(wavs / f"{uid}.wav", seconds, rate, channels, seed)
    (wavs / "garbage.wav").write_bytes(b"RIFF not really a wav file")
    soundfile.write(str(wavs / "silent.wav"), np.zeros(22050, dtype=np.float32), 22050)
    write_clip(wavs / "too_long.wav", MAX_SECONDS + 1, 22050)
    for uid in ("no_text", "emoji"):
        write_clip(wavs / f"{uid}.wav", 1.0, 22050)
    lines = [
        "good_22k|Dr. Smith paid $5 on May 3rd.|Doctor Smith paid five dollars on May third.",
        "good_44k_stereo|A stereo clip at 44.1 kHz.",
        "good_16k|A clip at sixteen kilohertz!",
        "good_speaker|Who said this?||alice",
        "missing|This clip does not exist.",
        "garbage|This clip is not audio.",
        "silent|This clip is all zeros.",
        "too_long|This clip is far too long.",
        "no_text|",
        "emoji|\U0001F642 ###",
        "good_22k|The same id again.",
        "bad fields|An id with a space.",
        "x|too|many|fields|here",
        "",
    ]
    (folder / "metadata.csv").write_text("\n".join(lines), encoding="utf-8")
    return folder


def config_for(data_dir: Path) -> RecipeConfig:
    smoke = RecipeConfig.smoke()
    return replace(smoke, corpus=replace(smoke.corpus, data_dir=data_dir, max_clip_seconds=MAX_SECONDS, valid_fraction=0.25))


def test_good_items_become_the_corpus_and_bad_ones_are_reported(data_dir: Path, tmp_path: Path):
    work = tmp_path / "work"
    reports = []
    run_corpus(work, config_for(data_dir), lambda *args: reports.append(args))
    utterances = {u.id: u for u in read_metadata(work)}
    assert set(utterances) == set(GOOD)
    assert utterances["good_22k"].text == "Dr. Smith paid $5 on May 3rd."  # the text column, not the normalized one
    assert utterances["good_speaker"].voice == "alice"
    assert {u.voice for uid, u in utterances.items() if uid != "good_speaker"} == {"my_voice"}
    assert sorted(u.split for u in utterances.values()) == [TRAIN_SPLIT] * 3 + [VALID_SPLIT]
    for uid, (seconds, _, _) in GOOD.items():
        u = utterances[uid]
        assert soundfile.info(str(work / "corpus" / u.wav_22k)).samplerate == 22050  # resampled, not refused
        assert soundfile.info(str(work / "corpus" / u.wav_24k)).samplerate == 24000
        assert 0.3 < u.duration <= seconds + 1e-3
    rejected = [json.loads(line) for line in (work / "corpus" / REJECTED_FILE).read_text(encoding="utf-8").splitlines()]
    assert len(rejected) == len(BAD)
    for row, (uid, words) in zip(rejected, BAD.items()):
        assert row["id"] == uid and words in row["reason"], row
    assert [row["line"] for row in rejected] == sorted(row["line"] for row in rejected)
    assert reports[-1][3]["rejected"] == len(BAD)


def test_rerun_skips_converted_items(data_dir: Path, tmp_path: Path):
    work = tmp_path / "work"
    config = config_for(data_dir)
    run_corpus(work, config, lambda *args: None)
    first = (work / "corpus" / METADATA_FILE).read_text(encoding="utf-8")
    wav = work / "corpus" / "wavs_22k" / "good_16k.wav"
    stamp = wav.stat().st_mtime_ns
    run_corpus(work, config, lambda *args: None)
    assert (work / "corpus" / METADATA_FILE).read_text(encoding="utf-8") == first
    assert wav.stat().st_mtime_ns == stamp


def test_nothing_usable_is_a_clear_error(tmp_path: Path):
    folder = tmp_path / "empty_voice"
    (folder / "wavs").mkdir(parents=True)
    (folder / "metadata.csv").write_text("a|Hello there.\nb|\n", encoding="utf-8")
    work = tmp_path / "work"
    with pytest.raises(CorpusError, match=r"nothing usable.*line 1 \(a\): missing clip.*line 2 \(b\): empty transcript"):
        run_corpus(work, config_for(folder), lambda *args: None)
    assert len((work / "corpus" / REJECTED_FILE).read_text(encoding="utf-8").splitlines()) == 2
    assert load_metadata(work / "corpus" / METADATA_FILE) == []


def test_folder_without_metadata_csv(tmp_path: Path):
    with pytest.raises(CorpusError, match="has no metadata.csv"):
        run_corpus(tmp_path / "work", config_for(tmp_path), lambda *args: None)
