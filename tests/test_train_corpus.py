"""The corpus stage: a tiny synthetic corpus renders, is reproducible, and resumes to the same result."""

from __future__ import annotations

import shutil
from dataclasses import replace
from pathlib import Path

import numpy as np
import pytest
import soundfile

from tortoise_clvp.frontend.text import english_cleaners
from tortoise_clvp.train import engines
from tortoise_clvp.train.config import (
    METADATA_FILE,
    SMOKE_VOICES,
    TRAIN_SPLIT,
    UNSEEN_ROLE,
    UNSEEN_VOICE_SPLIT,
    VALID_SPLIT,
    RecipeConfig,
)
from tortoise_clvp.train import corpus
from tortoise_clvp.train.corpus import PLAN_FILE, VOICES_FILE, PlannedUtterance, plan_corpus, run_corpus
from tortoise_clvp.train.engines import EngineError, check_engines
from tortoise_clvp.train.metadata import CorpusError, load_metadata, read_metadata

pytestmark = pytest.mark.skipif(
    shutil.which("espeak-ng") is None or shutil.which("sox") is None,
    reason="the corpus voices need espeak-ng and sox (apt-get install espeak-ng sox)",
)

SMOKE = RecipeConfig.smoke()
# smaller than the smoke corpus, and in several chunks so a build can stop between them
TINY = replace(SMOKE, corpus=replace(SMOKE.corpus, train_sentences=6, valid_sentences=2, unseen_sentences=2, chunk_size=4))


class Interrupted(Exception):
    pass


def ignore(*_):
    pass


def build(work_dir: Path, config: RecipeConfig = TINY) -> Path:
    run_corpus(work_dir, config, ignore)
    return work_dir / "corpus"


def snapshot(folder: Path) -> tuple[str, dict[str, bytes]]:
    """metadata.jsonl and every wav's bytes."""
    wavs = {str(path.relative_to(folder)): path.read_bytes() for path in sorted(folder.glob("wavs_*/*.wav"))}
    return (folder / METADATA_FILE).read_text(encoding="utf-8"), wavs


@pytest.fixture(scope="module")
def tiny_corpus(tmp_path_factory) -> Path:
    return build(tmp_path_factory.mktemp("corpus") / "work")


def test_corpus_renders_every_split_with_its_voices(tiny_corpus: Path):
    utterances = read_metadata(tiny_corpus.parent)
    plan = plan_corpus(TINY.corpus, TINY.seed)
    assert [u.id for u in utterances] == [p.id for p in plan]
    unseen_voices = {v.name for v in SMOKE_VOICES if v.role == UNSEEN_ROLE}
    by_split = {split: [u for u in utterances if u.split == split] for split in (TRAIN_SPLIT, VALID_SPLIT, UNSEEN_VOICE_SPLIT)}
    assert len({u.text for u in by_split[TRAIN_SPLIT]}) == 6
    assert len({u.text for u in by_split[VALID_SPLIT]}) == 2 and len(by_split[VALID_SPLIT]) == 2
    assert {u.voice for u in by_split[UNSEEN_VOICE_SPLIT]} == unseen_voices
    assert not unseen_voices & {u.voice for u in by_split[TRAIN_SPLIT] + by_split[VALID_SPLIT]}
    train_texts = {u.text for u in by_split[TRAIN_SPLIT]}
    assert not train_texts & {u.text for u in by_split[VALID_SPLIT] + by_split[UNSEEN_VOICE_SPLIT]}
    for utterance in utterances:
        info_22k = soundfile.info(str(tiny_corpus / utterance.wav_22k))
        info_24k = soundfile.info(str(tiny_corpus / utterance.wav_24k))
        assert (info_22k.samplerate, info_22k.channels, info_24k.samplerate, info_24k.channels) == (22050, 1, 24000, 1)
        assert utterance.duration == pytest.approx(info_22k.duration, abs=1e-3)
        assert info_24k.duration == pytest.approx(info_22k.duration, abs=0.01)
        assert 0.5 < utterance.duration < 15
        audio, _ = soundfile.read(str(tiny_corpus / utterance.wav_22k))
        assert 0.3 < abs(audio).max() <= 0.951  # levelled, below the peak limit
    voices = (tiny_corpus / VOICES_FILE).read_text(encoding="utf-8")
    assert "WordNet 3.0" in voices and "CC0" in voices and '"role": "unseen"' in voices


def test_corpus_is_reproducible(tiny_corpus: Path, tmp_path: Path):
    assert snapshot(build(tmp_path / "again")) == snapshot(tiny_corpus)


def test_interrupted_corpus_resumes_to_the_same_result(tiny_corpus: Path, tmp_path: Path):
    work = tmp_path / "resumed"
    seen = []

    def stop_after_two_chunks(what, done, total, metrics):
        seen.append(done)
        if len(seen) == 3:  # the start report, then two finished chunks
            raise Interrupted

    with pytest.raises(Interrupted):
        run_corpus(work, TINY, stop_after_two_chunks)
    partial = load_metadata(work / "corpus" / METADATA_FILE)
    assert len(partial) == 2 * TINY.corpus.chunk_size < len(read_metadata(tiny_corpus.parent))
    (work / "corpus" / partial[0].wav_24k).unlink()  # a lost file is rendered again
    reports = []
    run_corpus(work, TINY, lambda *args: reports.append(args))
    assert reports[0][1] == TINY.corpus.chunk_size  # the intact chunk was skipped, not rendered again
    assert snapshot(work / "corpus") == snapshot(tiny_corpus)


def test_rerun_with_other_settings_is_refused(tiny_corpus: Path, tmp_path: Path):
    work = tmp_path / "work"
    shutil.copytree(tiny_corpus, work / "corpus")
    other = replace(TINY, seed=TINY.seed + 1)
    with pytest.raises(CorpusError, match="other corpus settings.*seed"):
        run_corpus(work, other, ignore)
    assert (work / "corpus" / PLAN_FILE).is_file()


def test_engines_speak_the_cleaned_text(monkeypatch, tmp_path: Path):
    """The audio says what the model reads: numbers and abbreviations as the cleaners spell them."""
    heard = []

    class Recorder:
        def start_chunk(self, seed):
            pass

        def speak(self, voice, text):
            heard.append(text)
            return np.sin(np.arange(22050) / 10).astype(np.float32) * 0.5, 22050

    monkeypatch.setattr(corpus, "_SYNTHESIZER", Recorder())
    for sub in ("wavs_22k", "wavs_24k"):
        (tmp_path / sub).mkdir()
    item = PlannedUtterance("x", "Dr. Smith paid $5 on May 3rd.", SMOKE_VOICES[0], TRAIN_SPLIT)
    [entry] = corpus.render_chunk([item], 0, tmp_path)
    assert heard == ["doctor smith paid five dollars on may third."]
    assert entry.text == item.text and entry.duration == pytest.approx(1.0, abs=0.02)


def test_missing_engine_says_what_to_install(monkeypatch):
    monkeypatch.setattr(engines.shutil, "which", lambda program: None)
    with pytest.raises(EngineError, match="espeak-ng.*apt-get install espeak-ng sox"):
        check_engines(SMOKE_VOICES)
