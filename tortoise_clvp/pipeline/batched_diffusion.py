"""Cross-request batching for the diffusion decoder: the candidates of many callers sampled in one batch.

`BatchedDiffusion.latents_to_mel` takes the arguments of `pipeline.diffusion.latents_to_mel` and returns the same
mel; give it to `TextToSpeech` (its `diffuser`) and every call, from any thread, joins a shared diffusion thread
that loops:

1. wait for callers;
2. take the oldest waiting call and every other one with the same sampler options (up to `max_rows`);
3. sample them together (`diffusion.latents_to_mels`: rows padded to the longest and masked, each row's initial
   noise from its own caller's generator), and hand each caller its mel.

Callers that arrive while a batch runs wait for the next one, so under load the batches fill by themselves and
nobody waits longer than one batch. Only samplers without per-step noise batch (`BATCHABLE_SAMPLERS`); a call with
the p-sampler runs alone in its own thread, as `latents_to_mel` would. A row's mel is what it would be alone, to
float rounding (tests/test_diffusion.py checks it).
"""

from __future__ import annotations

import threading
from dataclasses import dataclass, field
from typing import Callable

import torch
from torch import Tensor

from ..errors import OptionsError, TortoiseClvpError
from ..models.diffusion import DiffusionModel
from .diffusion import BATCHABLE_SAMPLERS, MelRequest, latents_to_mel, latents_to_mels
from .samplers import SamplerOptions

DEFAULT_MAX_ROWS = 16  # candidates sampled together at most (guidance doubles the rows the network sees)
POLL_S = 0.05  # how often a waiting caller reports progress and checks whether it should stop


class DiffusionClosed(TortoiseClvpError):
    """The shared diffusion decoder was shut down (the server is stopping) before the call finished."""


@dataclass(eq=False)
class _Call:
    request: MelRequest
    options: SamplerOptions
    steps_done: int = 0
    mel: Tensor | None = None
    error: BaseException | None = None
    finished: threading.Event = field(default_factory=threading.Event)


@dataclass(frozen=True)
class DiffusionStats:
    """Since start: batches sampled and the candidates in them (their mean is the batching achieved)."""

    batches: int
    rows: int


class BatchedDiffusion:
    """The shared diffusion thread over one `DiffusionModel`; see the module notes.

    max_rows: candidates sampled together at most. threads: torch threads of the diffusion thread (None: torch's
    default; see `serve.settings.ServeSettings.torch_threads` for why the server gives it 1).
    """

    def __init__(self, model: DiffusionModel, max_rows: int = DEFAULT_MAX_ROWS, threads: int | None = None):
        if max_rows < 1:
            raise OptionsError(f"max_rows must be >= 1, got {max_rows}")
        if threads is not None and threads < 1:
            raise OptionsError(f"threads must be >= 1, got {threads}")
        self.model, self.max_rows, self.threads = model, max_rows, threads
        self._waiting: list[_Call] = []
        self._lock = threading.Condition()
        self._closed = False
        self._batches = self._rows = 0
        self._thread = threading.Thread(target=self._run, name="shared-diffusion", daemon=True)
        self._thread.start()

    def latents_to_mel(
        self,
        model: DiffusionModel,
        latents: Tensor,
        conditioning_latent: Tensor,
        options: SamplerOptions,
        generator: torch.Generator | None = None,
        progress: Callable[[int, int], None] | None = None,
    ) -> Tensor:
        """`diffusion.latents_to_mel`, sampled together with other callers' candidates: latents (M, C) and the
        voice's diffusion latent -> mel (100, frames). Blocks until it is made. `progress(done, total)` runs in the
        calling thread every POLL_S while it waits (steps done so far, 0 while queued) and once at the end; if it
        raises, the call leaves and the exception propagates: that is how a caller cancels."""
        if model is not self.model:
            raise OptionsError("this BatchedDiffusion samples with another model than the one passed in")
        if options.sampler not in BATCHABLE_SAMPLERS:
            return latents_to_mel(model, latents, conditioning_latent, options, generator, progress)
        call = _Call(MelRequest(latents, conditioning_latent, generator), options)
        with self._lock:
            if self._closed:
                raise DiffusionClosed("the shared diffusion decoder is shut down")
            self._waiting.append(call)
            self._lock.notify()
        try:
            while not call.finished.wait(POLL_S if progress is not None else None):
                progress(call.steps_done, options.steps)  # also while it waits: the caller may cancel at any time
        except BaseException:
            with self._lock:  # not started yet: it leaves the queue (a running batch just finishes without it)
                if call in self._waiting:
                    self._waiting.remove(call)
            raise
        if call.error is not None:
            raise call.error
        if progress is not None:
            progress(options.steps, options.steps)
        return call.mel

    def stats(self) -> DiffusionStats:
        with self._lock:
            return DiffusionStats(self._batches, self._rows)

    def close(self, timeout: float | None = None) -> None:
        """Stop the thread; calls still waiting get DiffusionClosed (a running batch finishes first)."""
        with self._lock:
            self._closed = True
            waiting, self._waiting = self._waiting, []
            self._lock.notify_all()
        for call in waiting:
            call.error = DiffusionClosed("the shared diffusion decoder is shut down")
            call.finished.set()
        self._thread.join(timeout)

    def _run(self) -> None:
        if self.threads is not None:
            torch.set_num_threads(self.threads)  # this thread's own OpenMP team only
        while True:
            with self._lock:
                while not self._closed and not self._waiting:
                    self._lock.wait()
                if self._closed:
                    return
                options = self._waiting[0].options
                batch = [call for call in self._waiting if call.options == options][: self.max_rows]
                self._waiting = [call for call in self._waiting if call not in batch]
                self._batches += 1
                self._rows += len(batch)

            def report(done: int, _total: int, batch: list[_Call] = batch) -> None:
                for call in batch:
                    call.steps_done = done

            try:
                mels = latents_to_mels(self.model, [call.request for call in batch], options, report)
            except BaseException as error:  # noqa: BLE001 - handed to every caller of the batch; the thread goes on
                for call in batch:
                    call.error = error
                    call.finished.set()
                continue
            for call, mel in zip(batch, mels):
                call.mel = mel
                call.finished.set()
