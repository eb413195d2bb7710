"""The engine behind the server (and the local batch pool): a bounded queue of speech jobs, worker threads that
speak them through the library, one shared decoder that batches every job's candidate rows and one shared
diffusion decoder that batches their chosen candidates.

Models are loaded once. Each job runs the long-text path (`longform.stream_speech`: sentence by sentence, one
voice conditioning, a seed per chunk) on a `TextToSpeech` whose sampling stage is the shared `BatchedDecoder` and
whose diffusion stage is the shared `BatchedDiffusion`: while one job reranks or vocodes, the candidate rows of
the others keep decoding together, rows of different jobs share every decode step, and jobs that reach diffusion
together are sampled in one batch. The same seed gives the same tokens as `clvp-tts speak` would, whatever else is
running, and the same audio to float rounding (a batched diffusion row is padded and masked).

Admission: at most `workers` jobs run and `max_queue` wait; beyond that `submit` raises `QueueFull` with a
Retry-After estimate. A job stops at its deadline (`JobTimeout`) or when cancelled (`JobCancelled`, e.g. its
client went away): the progress callback every stage reports through raises, which unwinds the job at the next
decode poll, CLVP batch or diffusion step.
"""

from __future__ import annotations

import math
import threading
import time
from collections import deque
from dataclasses import dataclass, replace
from typing import Callable, Union

import torch
from torch import Tensor

from ..api import TextToSpeech
from ..errors import TortoiseClvpError
from ..longform import stream_speech
from ..pipeline.batched_decoding import BatchedDecoder
from ..pipeline.batched_diffusion import BatchedDiffusion
from ..pipeline.conditioning import Conditioning
from ..presets import GenerationOptions
from . import metrics
from .settings import ServeSettings

OUTCOMES = ("ok", "bad_request", "rejected", "timeout", "cancelled", "error")
_LATENCY_SMOOTHING = 0.2  # weight of the newest job in the running mean that Retry-After is estimated from


class QueueFull(TortoiseClvpError):
    """Every worker is busy and the queue is full; `retry_after_s` says when to try again."""

    def __init__(self, message: str, retry_after_s: int):
        super().__init__(message)
        self.retry_after_s = retry_after_s


class JobCancelled(TortoiseClvpError):
    """The job was cancelled (its client went away) before it finished."""


class JobTimeout(TortoiseClvpError):
    """The job ran past its deadline."""


@dataclass(frozen=True)
class SpeechJob:
    """What to say: a text of any length (spoken chunk by chunk), a voice's conditioning, options, a seed, and how
    long its first chunk is (`longform.stream_speech`'s first_chunk_length; streamed answers speak the first
    sentence alone)."""

    text: str
    voice: Conditioning
    options: GenerationOptions
    seed: int
    first_chunk_length: int | None = None


@dataclass(frozen=True)
class AudioChunk:
    """The next piece of a job's audio: `samples` (n,) float at `sample_rate`, to play straight after the last one;
    `index` of `count` chunks (sentences); `score`: the CLVP score of the candidate chosen for it."""

    samples: Tensor
    sample_rate: int
    index: int
    count: int
    score: float


@dataclass(frozen=True)
class JobDone:
    """The job finished: its seed, the audio's length and how long it took from submission."""

    seed: int
    duration_s: float
    seconds: float


@dataclass(frozen=True)
class JobFailed:
    """The job stopped with `error` (a TortoiseClvpError for bad input, JobTimeout, JobCancelled, or a bug)."""

    error: BaseException


Event = Union[AudioChunk, JobDone, JobFailed]


class Job:
    """A submitted job: `cancel()` stops it; its events (AudioChunk..., then JobDone or JobFailed) go to `on_event`,
    called from a worker thread."""

    def __init__(self, spec: SpeechJob, on_event: Callable[[Event], None], deadline: float):
        self.spec, self.deadline = spec, deadline
        self.submitted = time.monotonic()
        self._on_event = on_event
        self._cancelled = threading.Event()

    def cancel(self) -> None:
        self._cancelled.set()

    @property
    def cancelled(self) -> bool:
        return self._cancelled.is_set()

    def check(self, *_progress: object) -> None:
        """Raise JobCancelled or JobTimeout if the job must stop; usable as the library's progress callback."""
        if self._cancelled.is_set():
            raise JobCancelled("the request was cancelled")
        if time.monotonic() > self.deadline:
            raise JobTimeout(f"the request took longer than {self.deadline - self.submitted:.0f} s and was stopped")

    def emit(self, event: Event) -> None:
        self._on_event(event)


def fit_token_budget(options: GenerationOptions, tts: TextToSpeech, max_tokens: int | None) -> GenerationOptions:
    """`options` with the token budget capped at what `tts`'s decoder position table takes (small models have fewer
    positions than the presets' 500 tokens) and at `max_tokens` (None: no further cap)."""
    limit = tts.models.autoregressive.config.mel_positions - 2  # the start token, and the quirk's slack
    limit = min(limit, max_tokens or limit)
    if options.decoding.max_new_tokens <= limit:
        return options
    return replace(options, decoding=replace(options.decoding, max_new_tokens=limit))


class Scheduler:
    """Runs SpeechJobs on `workers` threads over one shared decoder; see the module notes."""

    def __init__(self, tts: TextToSpeech, settings: ServeSettings = ServeSettings()):
        self.settings = settings
        self.decoder = BatchedDecoder(tts.models.autoregressive, settings.max_rows, threads=settings.torch_threads)
        self.diffusion = None
        if tts.models.diffusion is not None:
            self.diffusion = BatchedDiffusion(tts.models.diffusion, threads=settings.torch_threads)
        diffuser = tts.diffuser if self.diffusion is None else self.diffusion.latents_to_mel
        self.tts = TextToSpeech(tts.models, sampler=self.decoder.sample_candidates, diffuser=diffuser)
        self._queue: deque[Job] = deque()
        self._running = 0
        self._lock = threading.Condition()
        self._closed = False
        self._mean_seconds = 0.0
        self.requests = metrics.Counter("clvp_requests_total", "Speech requests by outcome.", ("outcome",))
        self.latency = metrics.Histogram("clvp_request_seconds", "Seconds from arrival to the last audio sample.")
        self.first_audio = metrics.Histogram("clvp_time_to_first_audio_seconds", "Seconds from arrival to the first audio chunk.")
        tokens_per_s = metrics.Rate(lambda: self.decoder.stats().tokens)
        self.metrics = [
            metrics.Gauge("clvp_queue_depth", "Requests waiting for a worker.", lambda: len(self._queue)),
            metrics.Gauge("clvp_requests_running", "Requests being synthesized.", lambda: self._running),
            self.requests,
            self.latency,
            self.first_audio,
            metrics.Gauge("clvp_decode_rows", "Candidate rows in the shared decode now.", lambda: self.decoder.stats().active_rows),
            metrics.Gauge("clvp_decode_steps_total", "Shared decode steps run.", lambda: self.decoder.stats().steps, "counter"),
            metrics.Gauge("clvp_decoded_tokens_total", "Speech tokens sampled.", lambda: self.decoder.stats().tokens, "counter"),
            metrics.Gauge("clvp_decode_tokens_per_second", f"Speech tokens sampled per second over the last {metrics.RATE_WINDOW_S:g} s.", tokens_per_s),
        ]
        if self.diffusion is not None:
            diffusion = self.diffusion
            self.metrics += [
                metrics.Gauge("clvp_diffusion_batches_total", "Shared diffusion batches sampled.", lambda: diffusion.stats().batches, "counter"),
                metrics.Gauge("clvp_diffusion_rows_total", "Candidates sampled in shared diffusion batches.", lambda: diffusion.stats().rows, "counter"),
            ]
        self._threads = [threading.Thread(target=self._work, name=f"speech-worker-{i}", daemon=True)
                         for i in range(settings.workers)]
        for thread in self._threads:
            thread.start()

    # callers ------------------------------------------------------------------------------------------------------
    def submit(self, spec: SpeechJob, on_event: Callable[[Event], None]) -> Job:
        """Queue a job, or raise QueueFull (counted as 'rejected') when workers and queue are all taken."""
        settings = self.settings
        job = Job(spec, on_event, time.monotonic() + settings.timeout_s)
        with self._lock:
            if self._closed:
                raise QueueFull("the server is shutting down", 1)
            if self._running + len(self._queue) >= settings.workers + settings.max_queue:
                self.requests.inc(1, "rejected")
                raise QueueFull(
                    f"the server is busy ({self._running} requests running, {len(self._queue)} waiting); try again later",
                    self._retry_after(),
                )
            self._queue.append(job)
            self._lock.notify()
        return job

    def fitted(self, options: GenerationOptions) -> GenerationOptions:
        """`fit_token_budget` with this server's model and `max_tokens`."""
        return fit_token_budget(options, self.tts, self.settings.max_tokens)

    def _retry_after(self) -> int:
        """Whole seconds until a worker is likely free: the mean job time, spread over the workers, per job ahead."""
        ahead = len(self._queue) + 1
        return max(1, math.ceil(self._mean_seconds * ahead / self.settings.workers))

    def render_metrics(self) -> str:
        return metrics.render(self.metrics)

    @property
    def queue_depth(self) -> int:
        return len(self._queue)

    def close(self) -> None:
        """Stop taking jobs, cancel the waiting ones, let running ones stop at their next check, stop the threads."""
        with self._lock:
            self._closed = True
            waiting, self._queue = list(self._queue), deque()
            self._lock.notify_all()
        for job in waiting:
            job.cancel()
            job.emit(JobFailed(JobCancelled("the server is shutting down")))
        for thread in self._threads:
            thread.join(timeout=5)
        self.decoder.close(timeout=5)
        if self.diffusion is not None:
            self.diffusion.close(timeout=5)

    # workers ------------------------------------------------------------------------------------------------------
    def _work(self) -> None:
        torch.set_num_threads(self.settings.torch_threads)  # see ServeSettings.torch_threads
        while True:
            with self._lock:
                while not self._queue and not self._closed:
                    self._lock.wait()
                if self._closed:
                    return
                job = self._queue.popleft()
                self._running += 1
            try:
                self._run(job)
            finally:
                with self._lock:
                    self._running -= 1

    def _run(self, job: Job) -> None:
        spec, outcome = job.spec, "ok"
        try:
            job.check()
            stream = stream_speech(self.tts, spec.text, spec.voice, spec.options, spec.seed, progress=job.check,
                                   first_chunk_length=spec.first_chunk_length)
            samples = 0
            for chunk in stream:
                job.check()
                if chunk.index == 0:
                    self.first_audio.observe(time.monotonic() - job.submitted)
                samples += chunk.piece.numel()
                score = float(chunk.scores[chunk.best[0]])
                job.emit(AudioChunk(chunk.piece, chunk.sample_rate, chunk.index, chunk.count, score))
            seconds = time.monotonic() - job.submitted
            self.latency.observe(seconds)
            with self._lock:
                self._mean_seconds += _LATENCY_SMOOTHING * (seconds - self._mean_seconds) if self._mean_seconds else seconds
            job.emit(JobDone(stream.seed, samples / stream.sample_rate, seconds))
        except JobCancelled as error:
            outcome = "cancelled"
            job.emit(JobFailed(error))
        except JobTimeout as error:
            outcome = "timeout"
            job.emit(JobFailed(error))
        except TortoiseClvpError as error:
            outcome = "bad_request"
            job.emit(JobFailed(error))
        except Exception as error:  # noqa: BLE001 - reported to the client as a server error, the worker goes on
            outcome = "error"
            job.emit(JobFailed(error))
        self.requests.inc(1, outcome)
