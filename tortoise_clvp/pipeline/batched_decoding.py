"""Continuous batching: the candidate rows of many requests decoded together, one decode step for all of them.

`BatchedDecoder.sample_candidates` takes the arguments of `pipeline.decoding.sample_candidates` and returns codes
of the same shape; give it to `TextToSpeech` and every call, from any thread, joins one shared decode. One
decoder thread owns the model's per-row KV cache (`RowKVCache`) and loops:

1. admit: a waiting request's next batch takes free rows; its prompt (conditioning latent, text, start token) is
   prefilled once into each of them;
2. sample: each batch draws its rows' next tokens from its own logits with its own request's generator
   (`sampling.next_tokens`, in the order `decoding.sample_batch` draws them), so what one request draws never
   depends on the others;
3. retire: a batch whose rows all stopped (or reached `max_new_tokens`) leaves, and the rows behind it move up;
4. step: one `decode_step` over every remaining row, each at its own position.

A request's batches (`DecodingOptions.batch_sizes`) run one after another with its generator carried over, as in
`sample_candidates`, while rows of different requests share each step. The linear layers see every row at once;
attention runs per batch over exactly its rows' own positions, so a row's numbers do not depend on which rows share
its step: the same seed gives the same tokens alone or batched (tests/test_batched_decoding.py checks it).
"""

from __future__ import annotations

import threading
from dataclasses import dataclass, field
from typing import Callable

import torch
from torch import Tensor

from ..errors import OptionsError, TortoiseClvpError
from ..models.autoregressive import AutoregressiveModel
from .decoding import DecodingOptions, check_lengths
from .sampling import initial_seen, next_tokens

DEFAULT_MAX_ROWS = 64  # rows decoded together at most: the cache holds this many sequences (memory grows with it)
POLL_S = 0.05  # how often a waiting caller checks whether it should stop


class DecoderClosed(TortoiseClvpError):
    """The shared decoder was shut down (the server is stopping) before the request finished."""


@dataclass(eq=False)
class _Request:
    """One `sample_candidates` call: its prompt, options, generator and the batches still to run."""

    prompt: Tensor  # (1, P, C): conditioning latent, wrapped text and the start token's embedding
    options: DecodingOptions
    generator: torch.Generator | None
    batches: list[int]  # row counts still to run, in order
    results: list[Tensor] = field(default_factory=list)  # finished batches' codes, (rows, max_new_tokens) each
    running: bool = False  # one of its batches holds rows now
    step: int = 0  # the running batch: tokens sampled per row so far
    stopped: int = 0  # the running batch: rows that stopped
    withdrawn: bool = False
    error: BaseException | None = None
    changed: threading.Condition = field(default_factory=threading.Condition)

    @property
    def done(self) -> bool:
        return self.error is not None or (not self.batches and not self.running)


@dataclass(eq=False)
class _Batch:
    """A request's batch while it holds rows [first, first + rows) of the cache."""

    request: _Request
    rows: int
    first: int
    prefix_len: int
    logits: Tensor  # (rows, V): the next token's logits
    seen: Tensor  # (rows, V) bool: tokens each row emitted (the repetition penalty's memory)
    finished: Tensor  # (rows,) bool
    codes: Tensor  # (rows, max_new_tokens), stop-padded
    step: int = 0  # tokens sampled so far
    last: Tensor | None = None  # (rows,) the tokens sampled last, fed to the next step

    @property
    def done(self) -> bool:
        return self.step == self.request.options.max_new_tokens or bool(self.finished.all())


@dataclass(frozen=True)
class DecoderStats:
    """Counters since the decoder started: decode steps run, speech tokens sampled (rows still speaking, per
    step), batches finished; and now: rows in the running batch, requests waiting for rows."""

    steps: int
    tokens: int
    batches: int
    active_rows: int
    waiting: int


class BatchedDecoder:
    """Samples speech-token candidates for concurrent callers in one shared, continuously batched decode.

    model: the decoder every caller uses (its per-row cache is owned by this object's thread from now on).
    max_rows: rows decoded together at most; a request's batch waits until that many rows are free.
    max_len: positions per row (prompt + tokens); default the longest text and token budget the model takes.
    threads: torch threads of the decoder thread (None: torch's default; see `serve.settings.ServeSettings.torch_threads`
    for why the server gives it 1).
    """

    def __init__(self, model: AutoregressiveModel, max_rows: int = DEFAULT_MAX_ROWS, max_len: int | None = None,
                 threads: int | None = None):
        if max_rows < 1:
            raise OptionsError(f"max_rows must be >= 1, got {max_rows}")
        if threads is not None and threads < 1:
            raise OptionsError(f"threads must be >= 1, got {threads}")
        config = model.config
        self.model = model
        self.max_rows = max_rows
        self.threads = threads
        # conditioning latent + text start + text + text stop + mel start, then the generated codes (the buffers'
        # size: attention reads only each row's own positions)
        self.max_len = max_len or config.max_text_tokens + 4 + config.mel_positions
        self._waiting: list[_Request] = []
        self._active: list[_Batch] = []
        self._lock = threading.Condition()
        self._closed = False
        self._steps = self._tokens = self._batches = 0
        self._capacity = 0  # rows the cache holds now (it grows by doubling, up to max_rows)
        self._thread = threading.Thread(target=self._run, name="batched-decoder", daemon=True)
        self._thread.start()

    # callers ------------------------------------------------------------------------------------------------------
    def sample_candidates(
        self,
        model: AutoregressiveModel,
        cond_latent: Tensor,
        text_ids: Tensor,
        options: DecodingOptions,
        generator: torch.Generator | None = None,
        on_batch: Callable[[int, int], None] | None = None,
        on_step: Callable[[int, int], None] | None = None,
    ) -> Tensor:
        """`decoding.sample_candidates`, decoded together with every other caller's rows: conditioning latent (C,)
        or (1, C), text ids (T,) -> codes (N, max_new_tokens), stop-padded. Blocks until this request's rows are
        done. The callbacks run in the calling thread: `on_batch(done, total)` as its batches finish and
        `on_step(tokens, finished)` (counted as `sample_candidates` counts them) every POLL_S while it waits, even
        while it waits for free rows. If a callback raises, the request leaves the decode at the next step and the
        exception propagates: that is how a caller cancels."""
        if model is not self.model:
            raise OptionsError("this BatchedDecoder decodes with another model than the one passed in")
        check_lengths(model, text_ids, options)
        batches = options.batch_sizes()
        if max(batches) > self.max_rows:
            raise OptionsError(
                f"batch_size {max(batches)} is more rows than the shared decoder takes ({self.max_rows}); "
                "lower the batch size or raise max_rows"
            )
        start_token = torch.full((1, 1), model.config.tokens.mel_start, device=model.device)
        with torch.no_grad():
            text = model.wrap_text(text_ids.reshape(1, -1).to(model.device))
            prompt = model.embed_prompt(cond_latent.reshape(1, -1).to(model.device, model.dtype), text)
            start = model.embed_mel(start_token, torch.zeros(1, dtype=torch.long, device=model.device))
        prefix = torch.cat([prompt, start.to(prompt.dtype)], dim=1)  # (1, P + 1, C)
        if prefix.shape[1] + options.max_new_tokens > self.max_len:
            raise OptionsError(
                f"prompt and token budget need {prefix.shape[1] + options.max_new_tokens} positions; the shared "
                f"decoder holds {self.max_len} per row"
            )
        request = _Request(prefix, options, generator, list(batches))
        with self._lock:
            if self._closed:
                raise DecoderClosed("the shared decoder is shut down")
            self._waiting.append(request)
            self._lock.notify()
        try:
            return self._wait(request, batches, on_batch, on_step)
        except BaseException:
            self._withdraw(request)
            raise

    def _wait(
        self,
        request: _Request,
        batches: list[int],
        on_batch: Callable[[int, int], None] | None,
        on_step: Callable[[int, int], None] | None,
    ) -> Tensor:
        reported = 0
        while True:
            with request.changed:
                if not request.done and len(request.results) == reported:
                    request.changed.wait(POLL_S)
                finished, error = len(request.results), request.error
                step, stopped = request.step, request.stopped
            if error is not None:
                raise error
            for index in range(reported, finished):
                if on_step is not None:
                    on_step((index + 1) * request.options.max_new_tokens, sum(batches[: index + 1]))
                if on_batch is not None:
                    on_batch(index + 1, len(batches))
            reported = finished
            if finished == len(batches):
                return torch.cat(request.results, dim=0)
            if on_step is not None:  # the running batch so far (or nothing yet, while it waits for rows)
                on_step(finished * request.options.max_new_tokens + step, sum(batches[:finished]) + stopped)

    def _withdraw(self, request: _Request) -> None:
        with self._lock:
            request.withdrawn = True
            if request in self._waiting and not request.running:
                self._waiting.remove(request)

    def stats(self) -> DecoderStats:
        with self._lock:
            rows = sum(batch.rows for batch in self._active)
            waiting = sum(1 for request in self._waiting if not request.running)
            return DecoderStats(self._steps, self._tokens, self._batches, rows, waiting)

    def close(self, timeout: float | None = None) -> None:
        """Stop the decoder thread; requests still waiting or running get DecoderClosed."""
        with self._lock:
            self._closed = True
            self._lock.notify()
        self._thread.join(timeout)

    # decoder thread -----------------------------------------------------------------------------------------------
    def _run(self) -> None:
        torch.set_grad_enabled(False)
        if self.threads is not None:
            torch.set_num_threads(self.threads)  # this thread's own OpenMP team only
        while True:
            with self._lock:
                while not self._closed and not self._active and not self._admissible():
                    self._lock.wait()
                if self._closed:
                    break
            try:
                self._iteration()
            except Exception as error:  # noqa: BLE001 - the callers get the error; the decoder carries on
                self._fail_active(error)
        self._fail_all(DecoderClosed("the shared decoder was shut down before this request finished"))
        self.model.release_cache()

    def _admissible(self) -> bool:
        return any(not request.running and request.batches and not request.withdrawn for request in self._waiting)

    def _iteration(self) -> None:
        self._retire([batch for batch in self._active if batch.request.withdrawn])
        with self._lock:
            self._waiting = [r for r in self._waiting if not (r.withdrawn and not r.running)]
        self._admit()
        for batch in self._active:
            self._sample(batch)
        self._retire([batch for batch in self._active if batch.done])
        if self._active:
            self._step()

    def _admit(self) -> None:
        with self._lock:
            used = sum(batch.rows for batch in self._active)
            admitted = []
            for request in self._waiting:
                if request.running or not request.batches or request.withdrawn:
                    continue
                rows = request.batches[0]
                if used + rows > self.max_rows:
                    break  # first come, first served: a later, smaller batch does not overtake this one
                request.batches.pop(0)
                request.running = True
                admitted.append((request, rows, used))
                used += rows
        if not admitted:
            return
        self._capacity = max(self._capacity, min(self.max_rows, max(used, 2 * self._capacity)))  # grow rarely
        self.model.setup_row_cache(self._capacity, self.max_len)
        for request, rows, first in admitted:
            logits = self.model.prefill_rows(request.prompt, slice(first, first + rows)).expand(rows, -1)  # (rows, V)
            options, device = request.options, logits.device
            stop = self.model.config.tokens.mel_stop
            self._active.append(
                _Batch(
                    request, rows, first, request.prompt.shape[1], logits,
                    initial_seen(rows, logits.shape[-1], options.sampling, device),
                    torch.zeros(rows, dtype=torch.bool, device=device),
                    torch.full((rows, options.max_new_tokens), stop, dtype=torch.long, device=device),
                )
            )

    def _sample(self, batch: _Batch) -> None:
        """Draw the batch's next tokens (rows,) from its logits, with its request's generator."""
        options, stop = batch.request.options, self.model.config.tokens.mel_stop
        forbid_stop = batch.step < options.min_new_tokens
        tokens = next_tokens(batch.logits, batch.seen, options.sampling, batch.request.generator, forbid_stop)
        tokens = tokens.masked_fill(batch.finished, stop)
        batch.codes[:, batch.step] = tokens
        batch.seen[torch.arange(batch.rows, device=tokens.device), tokens] = True
        self._tokens += int((~batch.finished).sum())
        batch.finished |= tokens == stop
        batch.step += 1
        batch.last = tokens
        batch.request.step, batch.request.stopped = batch.step, int(batch.finished.sum())

    def _retire(self, leaving: list[_Batch]) -> None:
        """Batches that are done (or withdrawn) leave: finished codes go to their request, the rows behind move up."""
        if not leaving:
            return
        for batch in leaving:
            request = batch.request
            with request.changed:
                if not request.withdrawn:
                    request.results.append(batch.codes.cpu())
                    self._batches += 1
                request.running = False
                request.step = request.stopped = 0
                request.changed.notify_all()
            with self._lock:
                if (request.done or request.withdrawn) and request in self._waiting:
                    self._waiting.remove(request)
        kept = [batch for batch in self._active if batch not in leaving]
        rows, first = [], 0
        for batch in kept:
            rows.append(torch.arange(batch.first, batch.first + batch.rows))
            batch.first, first = first, first + batch.rows
        if kept:  # positions held: the prompt and the tokens fed so far
            length = max(batch.prefix_len + batch.step for batch in kept)
            self.model.keep_cache_rows(torch.cat(rows).to(self.model.device), length)
        self._active = kept

    def _step(self) -> None:
        """One decode step over every active row, each at its own position -> each batch's next logits."""
        device = self.model.device
        tokens, mel, cache = [], [], []
        for batch in self._active:
            offset = 2 if batch.request.options.mel_positions == "kv_cache_quirk" else 1  # as sample_batch
            sampled = batch.step - 1  # the token just sampled is the sampled-th (0-based) of its row
            tokens.append(batch.last)
            mel.append(torch.full((batch.rows,), sampled + offset, dtype=torch.long, device=device))
            cache.append(torch.full((batch.rows,), batch.prefix_len + sampled, dtype=torch.long, device=device))
        logits = self.model.decode_step(torch.cat(tokens), torch.cat(mel), torch.cat(cache))  # (B, V)
        self._steps += 1
        for batch in self._active:
            batch.logits = logits[batch.first : batch.first + batch.rows]

    def _fail_active(self, error: BaseException) -> None:
        for batch in self._active:
            self._fail(batch.request, error)
        self._active = []
        self.model.release_cache()
        self._capacity = 0

    def _fail_all(self, error: BaseException) -> None:
        self._fail_active(error)
        with self._lock:
            for request in self._waiting:
                self._fail(request, error)
            self._waiting = []

    def _fail(self, request: _Request, error: BaseException) -> None:
        with request.changed:
            request.error = error
            request.running = False
            request.changed.notify_all()
        with self._lock:
            if request in self._waiting:
                self._waiting.remove(request)
