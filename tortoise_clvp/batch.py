"""Batch synthesis of a JSONL manifest: one audio file per line, resumable, on a local pool of workers or on Ray.

Manifest: one JSON object per line with ``id`` (letters, digits, ``_``, ``-``, ``.``; it names the output file),
``text`` (any length: long texts go sentence by sentence through the long-text path), ``voice`` (a named voice,
``random``, ``a&b``, or a clip or folder path), and optionally ``preset``, ``seed`` and ``format`` (wav, flac,
ogg; default wav).

Outputs, all written atomically (a temporary file renamed into place): ``DIR/<id>.<format>``, one record per item
in ``DIR/.records/<id>.json`` (written after its audio), and ``DIR/results.jsonl``, the records of every manifest
line in manifest order: ``id``, ``path``, ``duration`` (seconds of audio), ``seconds`` (synthesis time),
``seed``, ``scores`` (the CLVP score of the candidate chosen for each sentence), or ``id`` and ``error``.
``results.jsonl`` is rewritten every few seconds and at the end.

Resuming: an item whose record says it succeeded for the same text, voice, preset, seed and format, and whose
audio file exists, is skipped; failed items run again. A bad line or a failed item is recorded with its error and
the others go on.

Where the work runs:

* `LocalPool`: one process, the models loaded once, `workers` items at a time sharing one batched decoder
  (`serve.scheduler.Scheduler`), exactly as the server runs requests.
* `RayPool`: `workers` Ray actors (one CPU each by default), each loading the models once and running the same
  `Synthesizer`; items are spread over them, and a dead actor restarts (loading the models again) while Ray runs
  its unfinished items again, up to `retries` times. ``address="local"`` starts a local Ray instance; a cluster address
  (``ray start --head`` prints it) joins that cluster; None joins the instance this process is already connected
  to (or starts one).
"""

from __future__ import annotations

import concurrent.futures
import hashlib
import json
import os
import re
import threading
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any, Callable, Iterator, Sequence

from .atomic import write_bytes_atomic
from .errors import OptionsError, TortoiseClvpError, describe
from .presets import PRESETS
from .seeds import seed_or_draw
from .voices import AUDIO_SUFFIXES

RESULTS_NAME = "results.jsonl"
RECORDS_DIR = ".records"
DEFAULT_FORMAT = "wav"
FORMATS = tuple(suffix.lstrip(".") for suffix in AUDIO_SUFFIXES)
RESULTS_EVERY_S = 5.0  # results.jsonl is rewritten at most this often while a run goes on
DEFAULT_RETRIES = 2  # extra attempts for an item whose Ray worker died (Ray reruns it on the restarted actor)
_ID = re.compile(r"[A-Za-z0-9_][A-Za-z0-9_.-]{0,127}")
_FIELDS = {"id", "text", "voice", "preset", "seed", "format"}


class ManifestError(TortoiseClvpError):
    """The manifest cannot be read at all (missing, not UTF-8); single bad lines are recorded instead."""


@dataclass(frozen=True)
class Item:
    """One manifest line, checked. `seed` None: drawn when the item runs (and recorded); `preset` None: the model's
    own default (`TextToSpeech.default_preset`)."""

    id: str
    text: str
    voice: str
    preset: str | None = None
    seed: int | None = None
    format: str = DEFAULT_FORMAT

    @property
    def fingerprint(self) -> str:
        """What makes a finished item's output valid for this line (changing any field reruns it)."""
        return hashlib.sha256(json.dumps(asdict(self), sort_keys=True).encode()).hexdigest()[:16]

    @property
    def filename(self) -> str:
        return f"{self.id}.{self.format}"


@dataclass(frozen=True)
class ItemResult:
    """A spoken item, as a worker hands it back: the (samples,) float32 audio and what the record needs."""

    waveform: Any  # numpy float32 (samples,): light to ship from a Ray worker
    sample_rate: int
    seed: int
    scores: list[float]
    seconds: float


@dataclass(frozen=True)
class BatchEvent:
    """Progress: `kind` is 'skipped' (finished before), 'done' or 'failed'; `done` of `total` items are settled."""

    kind: str
    id: str
    done: int
    total: int
    detail: str = ""


@dataclass
class BatchSummary:
    """How a run went: items written now, skipped as already finished, failed (bad lines included)."""

    written: int = 0
    skipped: int = 0
    failed: int = 0
    results_path: Path | None = None
    failures: dict[str, str] = field(default_factory=dict)


# Manifest ---------------------------------------------------------------------------------------------------------
def _check_line(line: str, seen: set[str]) -> Item:
    try:
        data = json.loads(line)
    except ValueError as error:
        raise OptionsError(f"not JSON ({error})") from None
    if not isinstance(data, dict):
        raise OptionsError("not a JSON object")
    unknown = sorted(set(data) - _FIELDS)
    if unknown:
        raise OptionsError(f"unknown field(s) {', '.join(unknown)}; use {', '.join(sorted(_FIELDS))}")
    item_id = data.get("id")
    if not isinstance(item_id, str) or not _ID.fullmatch(item_id):
        raise OptionsError(f"id {item_id!r} must be 1-128 letters, digits, '_', '-' or '.' (it names the output file)")
    if item_id in seen:
        raise OptionsError(f"id {item_id!r} appears twice in the manifest")
    for name in ("text", "voice"):
        if not isinstance(data.get(name), str) or not data[name].strip():
            raise OptionsError(f"{name} must be a non-empty string")
    preset = data.get("preset")
    if preset is not None and preset not in PRESETS:
        raise OptionsError(f"unknown preset {preset!r}; choose one of {', '.join(PRESETS)}")
    seed = data.get("seed")
    if seed is not None:
        seed_or_draw(seed)  # checks the range
    fmt = data.get("format", DEFAULT_FORMAT)
    if fmt not in FORMATS:
        raise OptionsError(f"format {fmt!r} is not one of {', '.join(FORMATS)}")
    return Item(item_id, data["text"], data["voice"].strip(), preset, seed, fmt)


def read_manifest(path: str | os.PathLike) -> tuple[list[Item], list[dict]]:
    """The manifest's items, and an error record for every bad line (``{"id", "line", "error"}``)."""
    path = Path(path)
    try:
        lines = path.read_text(encoding="utf-8").splitlines()
    except FileNotFoundError:
        raise ManifestError(f"manifest {path} not found") from None
    except (OSError, UnicodeDecodeError) as error:
        raise ManifestError(f"cannot read manifest {path} ({describe(error)}); it must be UTF-8 JSON lines") from None
    items, problems, seen = [], [], set()
    for number, line in enumerate(lines, 1):
        if not line.strip():
            continue
        try:
            item = _check_line(line, seen)
        except TortoiseClvpError as error:
            problems.append((number, line, str(error)))
            continue
        seen.add(item.id)
        items.append(item)
    bad = []
    for number, line, error in problems:  # keyed by the line's own id where that is usable, else line-N
        given = _given_id(line)
        key = given if given is not None and _ID.fullmatch(given) and given not in seen else f"line-{number}"
        seen.add(key)
        bad.append({"id": key, "line": number, "error": error})
    return items, bad


def _given_id(line: str) -> str | None:
    try:
        value = json.loads(line).get("id")
    except (ValueError, AttributeError):
        return None
    return value if isinstance(value, str) else None


# Synthesis --------------------------------------------------------------------------------------------------------
class Synthesizer:
    """Models loaded once, a `Scheduler` over them (items running together share the batched decoder), and voice
    conditionings cached per voice: speaks items, from any number of threads."""

    def __init__(self, tts, workers: int = 2, voices_dirs: Sequence[Path] = (), cache_dir: Path | None = None):
        from .serve.scheduler import Scheduler
        from .serve.settings import ServeSettings

        settings = ServeSettings(workers=workers, max_queue=workers * 4, timeout_s=7 * 24 * 3600.0)
        self.scheduler = Scheduler(tts, settings)
        self.voices_dirs, self.cache_dir = tuple(voices_dirs), cache_dir
        self._voices: dict[str, Any] = {}
        self._lock = threading.Lock()

    def _conditioning(self, voice: str, seed: int):
        from .voices import RANDOM_VOICE, voice_latents

        if voice == RANDOM_VOICE:
            return voice_latents(self.scheduler.tts, voice, seed=seed).conditioning
        with self._lock:
            known = self._voices.get(voice)
        if known is None:
            known = voice_latents(self.scheduler.tts, voice, self.cache_dir, extra_dirs=self.voices_dirs).conditioning
            with self._lock:
                self._voices[voice] = known
        return known

    def speak(self, item: Item) -> ItemResult:
        """Speak one item (blocking); TortoiseClvpError for what the item got wrong."""
        import queue

        import numpy as np

        from .presets import preset
        from .serve.scheduler import AudioChunk, JobDone, JobFailed, SpeechJob

        start = time.monotonic()
        seed = seed_or_draw(item.seed)
        options = preset(item.preset or self.scheduler.tts.default_preset)
        job = SpeechJob(item.text, self._conditioning(item.voice, seed), self.scheduler.fitted(options), seed)
        events: queue.Queue = queue.Queue()
        self.scheduler.submit(job, events.put)
        pieces, scores, rate = [], [], 0
        while True:
            event = events.get()
            if isinstance(event, JobFailed):
                raise event.error
            if isinstance(event, JobDone):
                break
            assert isinstance(event, AudioChunk)
            pieces.append(event.samples.numpy())
            scores.append(event.score)
            rate = event.sample_rate
        return ItemResult(np.concatenate(pieces).astype(np.float32), rate, seed, scores, time.monotonic() - start)

    def close(self) -> None:
        self.scheduler.close()


# Where the work runs ----------------------------------------------------------------------------------------------
Outcome = tuple[Item, "ItemResult | BaseException"]


class LocalPool:
    """`workers` items at a time in this process, over one Synthesizer (models loaded once)."""

    def __init__(self, tts, workers: int = 2, voices_dirs: Sequence[Path] = (), cache_dir: Path | None = None):
        self.workers = workers
        self.synthesizer = Synthesizer(tts, workers, voices_dirs, cache_dir)

    def run(self, items: Sequence[Item]) -> Iterator[Outcome]:
        """Each item with its result or error, in the order they finish."""
        with concurrent.futures.ThreadPoolExecutor(self.workers, thread_name_prefix="batch") as pool:
            futures = {pool.submit(self.synthesizer.speak, item): item for item in items}
            try:
                for future in concurrent.futures.as_completed(futures):
                    error = future.exception()
                    yield futures[future], error if error is not None else future.result()
            finally:
                for future in futures:
                    future.cancel()

    def close(self) -> None:
        self.synthesizer.close()


class _RayWorker:
    """A Ray actor: loads the models once, then speaks items (`concurrency` at a time, batched together)."""

    def __init__(self, models_dir: str | None, device: str, concurrency: int, voices_dirs: tuple, cache_dir: str | None):
        from .api import TextToSpeech

        tts = TextToSpeech.from_pretrained(models_dir, device)
        self.synthesizer = Synthesizer(tts, concurrency, [Path(d) for d in voices_dirs],
                                       None if cache_dir is None else Path(cache_dir))

    def speak(self, item: Item) -> ItemResult:
        return self.synthesizer.speak(item)

    def pid(self) -> int:
        return os.getpid()


class RayPool:
    """`workers` Ray actors, each with the models loaded once, running `concurrency` items at a time; a dead actor
    restarts and its unfinished items run again, up to `retries` times. See the module notes for `address`."""

    def __init__(
        self,
        models_dir: str | os.PathLike | None,
        address: str | None = None,
        workers: int = 2,
        device: str = "cpu",
        concurrency: int = 1,
        retries: int = DEFAULT_RETRIES,
        voices_dirs: Sequence[Path] = (),
        cache_dir: Path | None = None,
        cpus_per_worker: float = 1.0,
    ):
        try:
            import ray
        except ImportError:
            raise OptionsError("Ray is not installed: pip install 'tortoise-clvp[ray]'") from None
        self.ray, self.retries = ray, retries
        if not ray.is_initialized():
            if address == "local":
                ray.init(include_dashboard=False, log_to_driver=False)
            else:
                ray.init(address=address, include_dashboard=False, log_to_driver=False)
        # a dead actor restarts (loading the models again) and Ray runs its unfinished items on it again
        actor = ray.remote(num_cpus=cpus_per_worker, max_restarts=-1, max_task_retries=retries,
                           max_concurrency=concurrency + 1)(_RayWorker)
        folder = None if models_dir is None else str(Path(models_dir).resolve())
        self.actors = [
            actor.remote(folder, device, concurrency, tuple(str(d) for d in voices_dirs),
                         None if cache_dir is None else str(cache_dir))
            for _ in range(workers)
        ]
        self.slots = concurrency

    def pids(self) -> list[int]:
        """The worker processes' ids (waits until the actors are up)."""
        return self.ray.get([actor.pid.remote() for actor in self.actors])

    def run(self, items: Sequence[Item]) -> Iterator[Outcome]:
        """Each item with its result or error, in the order they finish; `slots` items in flight per actor."""
        ray = self.ray
        from ray.exceptions import RayActorError, RayTaskError

        pending = list(reversed(items))
        running: dict[Any, tuple[Item, int]] = {}  # object ref -> (item, actor index)
        load = [0] * len(self.actors)
        while pending or running:
            while pending and min(load) < self.slots:
                index = min(range(len(self.actors)), key=load.__getitem__)
                item = pending.pop()
                running[self.actors[index].speak.remote(item)] = (item, index)
                load[index] += 1
            ready, _ = ray.wait(list(running), num_returns=1)
            item, index = running.pop(ready[0])
            load[index] -= 1
            try:
                yield item, ray.get(ready[0])
            except RayTaskError as error:  # the item itself failed inside the worker
                yield item, error.cause if isinstance(error.cause, BaseException) else error
            except RayActorError as error:  # its worker kept dying: Ray's retries are used up
                yield item, TortoiseClvpError(f"its worker died {self.retries + 1} times ({describe(error)})")

    def close(self) -> None:
        for actor in self.actors:
            self.ray.kill(actor)


# The run ----------------------------------------------------------------------------------------------------------
class _Results:
    """The output folder: item records (one file each, atomic) and results.jsonl rebuilt from them."""

    def __init__(self, out: Path, order: list[str]):
        self.out, self.order = out, order
        self.records_dir = out / RECORDS_DIR
        self.records_dir.mkdir(parents=True, exist_ok=True)
        self.records: dict[str, dict] = {}
        for path in self.records_dir.glob("*.json"):
            try:
                record = json.loads(path.read_text(encoding="utf-8"))
            except (OSError, ValueError):
                continue  # unreadable: the item runs again
            if isinstance(record, dict) and isinstance(record.get("id"), str):
                self.records[record["id"]] = record
        self.written_at = 0.0

    def finished(self, item: Item) -> bool:
        record = self.records.get(item.id)
        return (record is not None and "error" not in record and record.get("item") == item.fingerprint
                and (self.out / item.filename).is_file())

    def record(self, record: dict) -> None:
        self.records[record["id"]] = record
        write_bytes_atomic(self.records_dir / f"{record['id']}.json", json.dumps(record).encode("utf-8"))
        if time.monotonic() - self.written_at > RESULTS_EVERY_S:
            self.write()

    def write(self) -> Path:
        lines = [json.dumps({k: v for k, v in self.records[i].items() if k != "item"}, ensure_ascii=False)
                 for i in self.order if i in self.records]
        path = write_bytes_atomic(self.out / RESULTS_NAME, ("\n".join(lines) + "\n" if lines else "").encode("utf-8"))
        self.written_at = time.monotonic()
        return path


def run_batch(
    manifest: str | os.PathLike,
    out: str | os.PathLike,
    pool: LocalPool | RayPool,
    progress: Callable[[BatchEvent], None] | None = None,
) -> BatchSummary:
    """Speak every manifest line not finished before into `out` (see the module notes); returns a summary."""
    from .frontend.audio import save_audio

    items, bad = read_manifest(manifest)
    out = Path(out)
    try:
        out.mkdir(parents=True, exist_ok=True)
    except OSError as error:
        raise OptionsError(f"cannot create the output folder {out} ({describe(error)})") from None
    order = [*(item.id for item in items), *(b["id"] for b in bad)]
    results, summary = _Results(out, order), BatchSummary()
    total = len(items) + len(bad)
    settled = 0

    def report(kind: str, item_id: str, detail: str = "") -> None:
        if progress is not None:
            progress(BatchEvent(kind, item_id, settled, total, detail))

    for record in bad:
        results.record(record)
        settled += 1
        summary.failed += 1
        summary.failures[record["id"]] = record["error"]
        report("failed", record["id"], record["error"])
    todo = []
    for item in items:
        if results.finished(item):
            settled += 1
            summary.skipped += 1
            report("skipped", item.id)
        else:
            todo.append(item)

    for item, outcome in pool.run(todo):
        settled += 1
        if isinstance(outcome, ItemResult):
            path = save_audio(out / item.filename, outcome.waveform, outcome.sample_rate)
            results.record({
                "id": item.id, "path": str(path), "duration": len(outcome.waveform) / outcome.sample_rate,
                "seconds": round(outcome.seconds, 3), "seed": outcome.seed, "scores": outcome.scores,
                "item": item.fingerprint,
            })
            summary.written += 1
            report("done", item.id)
        else:
            message = str(outcome) if isinstance(outcome, TortoiseClvpError) else describe(outcome)
            results.record({"id": item.id, "error": message, "item": item.fingerprint})
            summary.failed += 1
            summary.failures[item.id] = message
            report("failed", item.id, message)
    summary.results_path = results.write()
    return summary

