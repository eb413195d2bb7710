"""The corpus stage: sentences spoken by synthetic voices (or the user's own recordings) into WORK_DIR/corpus.

The plan (which sentence, which voice, which split) is drawn from the seed before anything is rendered, and cut
into chunks of `chunk_size` utterances, each with its own seed. Chunks are rendered by `workers` processes of one
thread each; after every finished chunk, metadata.jsonl is rewritten (atomically) with every finished utterance in
plan order. Rerunning the stage skips finished chunks and renders the rest, so an interrupted build ends exactly as
an uninterrupted one. Engines speak the cleaned text (`english_cleaners`), so the audio says what the model reads:
"Dr. Smith paid $5" is spoken "doctor smith paid five dollars".
"""

from __future__ import annotations

import json
import multiprocessing
import random
import time
from concurrent.futures import FIRST_COMPLETED, ProcessPoolExecutor, wait
from dataclasses import asdict, dataclass
from pathlib import Path

from ..atomic import write_bytes_atomic
from ..frontend.audio import save_audio
from ..frontend.mel import CONDITIONING_SAMPLE_RATE, OUTPUT_SAMPLE_RATE
from ..frontend.text import english_cleaners
from .clips import training_clips
from .config import (
    METADATA_FILE,
    TRAIN_ROLE,
    TRAIN_SPLIT,
    UNSEEN_ROLE,
    UNSEEN_VOICE_SPLIT,
    VALID_SPLIT,
    CorpusConfig,
    RecipeConfig,
    TrainProgress,
    VoiceSpec,
)
from .engines import ENGINE_LICENCES, EngineError, Synthesizer, check_engines
from .metadata import CorpusError, Utterance, corpus_dir, load_metadata, wav_paths, write_metadata
from .sentences import WORDNET_LICENCE, split_sentences

VOICES_FILE = "voices.json"
PLAN_FILE = "plan.json"  # the settings the corpus was planned with: a rerun with other settings is refused
PLAN_VERSION = 1
WAV_SUBTYPE = "PCM_16"
STAGE = "corpus"


@dataclass(frozen=True)
class PlannedUtterance:
    """One utterance to render: its id, sentence, voice and split."""

    id: str
    text: str
    voice: VoiceSpec
    split: str


def plan_corpus(config: CorpusConfig, seed: int) -> list[PlannedUtterance]:
    """Every utterance of the synthetic corpus in render order: valid, unseen-voice, then train sentences."""
    train_voices = [voice for voice in config.voices if voice.role == TRAIN_ROLE]
    unseen_voices = [voice for voice in config.voices if voice.role == UNSEEN_ROLE]
    if not train_voices or (config.unseen_sentences and not unseen_voices):
        raise CorpusError("the corpus needs at least one training voice, and an unseen voice for unseen sentences")
    if len({voice.name for voice in config.voices}) != len(config.voices):
        raise CorpusError("two corpus voices share a name; every voice needs its own")
    sentences = split_sentences(
        config.wordnet_dir,
        seed,
        config.train_sentences,
        config.valid_sentences,
        config.unseen_sentences,
        config.everyday_share,
        config.min_words,
        config.max_words,
    )
    rng = random.Random(f"{seed}-voices")
    weights = [voice.weight for voice in train_voices]

    def draw_voices(count: int) -> list[VoiceSpec]:
        chosen: list[VoiceSpec] = []
        while len(chosen) < count:
            voice = rng.choices(train_voices, weights)[0]
            if voice not in chosen:
                chosen.append(voice)
        return chosen

    plan = []
    for index, text in enumerate(sentences.valid):
        plan += [PlannedUtterance(f"valid{index:05d}_{v.name}", text, v, VALID_SPLIT) for v in draw_voices(1)]
    for index, text in enumerate(sentences.unseen):
        plan += [PlannedUtterance(f"unseen{index:05d}_{v.name}", text, v, UNSEEN_VOICE_SPLIT) for v in unseen_voices]
    for index, text in enumerate(sentences.train):
        count = min(len(train_voices), 2 if rng.random() < config.second_voice_rate else 1)
        plan += [PlannedUtterance(f"train{index:05d}_{v.name}", text, v, TRAIN_SPLIT) for v in draw_voices(count)]
    return plan


def chunk_seed(seed: int, index: int) -> int:
    """The seed of chunk `index`: independent of which process renders it, or when."""
    return random.Random(f"{seed}-chunk-{index}").getrandbits(31)


# Rendering (runs in worker processes) -------------------------------------------------------------------------------
_SYNTHESIZER: Synthesizer | None = None


def _init_worker() -> None:
    import torch

    torch.set_num_threads(1)


def render_chunk(chunk: list[PlannedUtterance], seed: int, folder: Path) -> list[Utterance]:
    """Speak, trim, level and resample every utterance of one chunk; write its wavs; return their entries."""
    global _SYNTHESIZER
    if _SYNTHESIZER is None:
        _SYNTHESIZER = Synthesizer()
    _SYNTHESIZER.start_chunk(seed)
    done = []
    for item in chunk:
        samples, rate = _SYNTHESIZER.speak(item.voice, english_cleaners(item.text))
        wav_22k, wav_24k = training_clips(samples, rate)
        if wav_22k.shape[-1] == 0:
            raise EngineError(f"voice {item.voice.name} produced silence for {item.text!r}")
        path_22k, path_24k = wav_paths(item.id)
        save_audio(folder / path_22k, wav_22k, CONDITIONING_SAMPLE_RATE, WAV_SUBTYPE)
        save_audio(folder / path_24k, wav_24k, OUTPUT_SAMPLE_RATE, WAV_SUBTYPE)
        duration = round(wav_22k.shape[-1] / CONDITIONING_SAMPLE_RATE, 4)
        done.append(Utterance(item.id, item.text, item.voice.name, item.split, duration, path_22k, path_24k))
    return done


# The stage ----------------------------------------------------------------------------------------------------------
def corpus_settings(config: CorpusConfig, seed: int) -> dict:
    """What decides the corpus's content (not how many workers render it)."""
    settings = asdict(config)
    settings.pop("workers")
    return json.loads(json.dumps({"version": PLAN_VERSION, "seed": seed, **settings}, default=str))


def claim_folder(folder: Path, settings: dict) -> None:
    """Create the corpus folder for these settings, or check that an existing one was made with the same ones."""
    path = folder / PLAN_FILE
    if path.is_file():
        previous = json.loads(path.read_text(encoding="utf-8"))
        if previous != settings:
            changed = sorted(key for key in settings.keys() | previous.keys() if settings.get(key) != previous.get(key))
            raise CorpusError(
                f"{folder} was built with other corpus settings (changed: {', '.join(changed)}); "
                f"use a new work folder, or delete {folder} to rebuild it"
            )
        return
    folder.mkdir(parents=True, exist_ok=True)
    write_bytes_atomic(path, json.dumps(settings, indent=1).encode("utf-8"))


def finished(folder: Path, utterances: list[Utterance]) -> dict[str, Utterance]:
    """The already written utterances whose audio is still on disk, by id."""
    return {u.id: u for u in utterances if (folder / u.wav_22k).is_file() and (folder / u.wav_24k).is_file()}


def _describe_voices(config: CorpusConfig) -> dict:
    return {
        "voices": [
            {"name": voice.name, "engine": voice.engine, "role": voice.role, "settings": asdict(voice)}
            for voice in config.voices
        ],
        "engines": {engine: ENGINE_LICENCES[engine] for engine in sorted({v.engine for v in config.voices})},
        "text": [WORDNET_LICENCE, "everyday sentences: generated by tortoise_clvp.train.sentences (this project)"],
    }


def run_corpus(work_dir: Path, config: RecipeConfig, progress: TrainProgress) -> None:
    """Build WORK_DIR/corpus (synthesized, or from `config.corpus.data_dir`); resumes where a previous run stopped."""
    if config.corpus.data_dir is not None:
        from .user_data import run_user_corpus

        run_user_corpus(work_dir, config, progress)
        return
    corpus = config.corpus
    folder = corpus_dir(work_dir)
    claim_folder(folder, corpus_settings(corpus, config.seed))
    write_bytes_atomic(folder / VOICES_FILE, json.dumps(_describe_voices(corpus), indent=1).encode("utf-8"))
    for sub in wav_paths("x"):
        (folder / sub).parent.mkdir(exist_ok=True)
    plan = plan_corpus(corpus, config.seed)
    chunks = [plan[start : start + corpus.chunk_size] for start in range(0, len(plan), corpus.chunk_size)]
    done = finished(folder, load_metadata(folder / METADATA_FILE))
    pending = [index for index, chunk in enumerate(chunks) if not all(item.id in done for item in chunk)]
    hours = sum(u.duration for u in done.values()) / 3600
    progress(STAGE, len(plan) - sum(len(chunks[i]) for i in pending), len(plan), {"hours": hours})
    if not pending:
        return
    check_engines({item.voice for index in pending for item in chunks[index]})
    started, rendered = time.monotonic(), 0

    def record(entries: list[Utterance]) -> None:
        nonlocal hours, rendered
        done.update((entry.id, entry) for entry in entries)
        write_metadata(folder / METADATA_FILE, (done[item.id] for item in plan if item.id in done))
        hours += sum(entry.duration for entry in entries) / 3600
        rendered += len(entries)
        rate = rendered / max(time.monotonic() - started, 1e-9)
        progress(STAGE, len(done), len(plan), {"hours": hours, "utterances_per_s": rate})

    if corpus.workers <= 1:
        for index in pending:
            record(render_chunk(chunks[index], chunk_seed(config.seed, index), folder))
        return
    context = multiprocessing.get_context("spawn")
    with ProcessPoolExecutor(corpus.workers, mp_context=context, initializer=_init_worker) as pool:
        futures = {pool.submit(render_chunk, chunks[i], chunk_seed(config.seed, i), folder) for i in pending}
        try:
            while futures:
                finished_now, futures = wait(futures, return_when=FIRST_COMPLETED)
                for future in finished_now:
                    record(future.result())
        except BaseException:
            for future in futures:
                future.cancel()
            raise
