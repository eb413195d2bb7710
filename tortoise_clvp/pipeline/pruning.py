"""Early pruning: stop decoding hopeless candidates part of the way in and finish only the promising ones.

Every candidate is decoded up to a checkpoint (a fixed number of tokens, or a fraction of the length expected from
the text), scored there, and only the best `keep` fraction of all candidates is decoded to the end. The score is the
decoder's own mean log-probability of the tokens it sampled so far ("logprob"), or CLVP's score of the prefix
against the text ("clvp"). Candidates that stopped before the checkpoint are scored the same way and, if kept, are
already complete.

Work saved: batches run to the checkpoint as usual (`DecodingOptions.batch_size` rows each); the survivors of every
batch are then regrouped into full batches, so the finishing steps run over roughly `keep` times as many batches.
Each survivor's keys and values (positions after the shared prompt) are copied out of the cache at the checkpoint
and into the finishing batch's cache (memory: rows x layers x 2 x checkpoint x model width, e.g. about 12 MB a row
at 50 tokens for the released decoder).

Reproducibility. Random draws are row-keyed: one uniform number per candidate and step, all drawn from the seed up
front (`sampling.draw_from_uniforms`), so a candidate's random numbers do not depend on the batch it is decoded in.
Up to the checkpoint a candidate's computation is exactly that of the unpruned run (`prune=None`, same seed): same
batch, same numbers, so its checkpoint score can be replayed afterwards from `PrunedCandidates.logprobs`
(`mean_logprob`). After the cut a kept candidate is decoded in a batch of other rows, and a matrix product over
another number of rows may round its logits differently in the last bits (~1e-6 in the log-probabilities): its
tokens are those of the unpruned run unless one of its uniform numbers falls within that rounding of a boundary of
the cumulative distribution, which the tests (and the benchmark's checks) have not met; tests/test_pruning.py checks
the tokens one for one. The unpruned run of this module is not `decoding.sample_candidates` (which draws with
`torch.multinomial`): both sample the same distribution, with different random numbers.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Literal

import torch
import torch.nn.functional as F
from torch import Tensor

from ..config import TokenIds
from ..errors import OptionsError
from ..models.autoregressive import AutoregressiveModel
from ..models.clvp import ClvpModel
from .decoding import DecodingOptions, check_lengths
from .rerank import score_candidates
from .sampling import initial_seen, next_tokens
from .trimming import fix_speech_decoder_output

PruneScore = Literal["logprob", "clvp"]
SPEECH_TOKENS_PER_CHARACTER = 1.27  # median over the training corpus's 6640 clips (cleaned characters, 21.5 tokens/s)


def expected_speech_tokens(cleaned_text: str) -> int:
    """Speech tokens a text of this many cleaned characters usually takes (the corpus median rate)."""
    return max(1, round(SPEECH_TOKENS_PER_CHARACTER * len(cleaned_text)))


@dataclass(frozen=True)
class PruneOptions:
    """Where to prune and how much to keep.

    at_tokens: checkpoint after this many tokens per candidate (e.g. 40, ~2 s of speech); or
    at_fraction: checkpoint at this fraction of the length expected from the text (e.g. 0.25); give exactly one.
    keep: fraction of the candidates finished, in (0, 1]: round(keep x candidates), at least 1.
    score: "logprob" (the decoder's mean log-probability of its own tokens so far) or "clvp" (CLVP on the prefix).
    """

    at_tokens: int | None = None
    at_fraction: float | None = None
    keep: float = 0.25
    score: PruneScore = "logprob"

    def __post_init__(self) -> None:
        if (self.at_tokens is None) == (self.at_fraction is None):
            raise OptionsError("give exactly one of at_tokens and at_fraction for the pruning checkpoint")
        if self.at_tokens is not None and self.at_tokens < 1:
            raise OptionsError(f"at_tokens must be >= 1, got {self.at_tokens}")
        if self.at_fraction is not None and not 0 < self.at_fraction <= 1:
            raise OptionsError(f"at_fraction must be in (0, 1], got {self.at_fraction}")
        if not 0 < self.keep <= 1:
            raise OptionsError(f"keep must be in (0, 1], got {self.keep}")
        if self.score not in ("logprob", "clvp"):
            raise OptionsError(f"score must be 'logprob' or 'clvp', got {self.score!r}")

    def kept(self, candidates: int) -> int:
        return max(1, round(self.keep * candidates))

    def checkpoint(self, expected_tokens: int | None) -> int:
        """Tokens per candidate before the cut."""
        if self.at_tokens is not None:
            return self.at_tokens
        if expected_tokens is None:
            raise OptionsError("at_fraction needs the expected length (expected_speech_tokens of the text)")
        return max(1, math.ceil(self.at_fraction * expected_tokens))


@dataclass(frozen=True)
class PrunedCandidates:
    """The finished candidates and how they were chosen.

    codes: (K, max_new_tokens) stop-padded, the kept candidates in candidate order. kept: (K,) their numbers among
    all N. logprobs: (K, max_new_tokens) the decoder's log-probability of each sampled token (0 after the stop).
    checkpoint_scores: (N,) every candidate's score at the checkpoint (higher is better). checkpoint: tokens
    decoded before the cut. steps: decode steps run (batch-steps: one per batch per token).
    """

    codes: Tensor
    kept: Tensor
    logprobs: Tensor
    checkpoint_scores: Tensor
    checkpoint: int
    steps: int


@dataclass
class _Rows:
    """Decoding state of some candidates: the rows of one batch, between steps."""

    index: Tensor  # (R,) candidate numbers: rows of the uniform table
    codes: Tensor  # (R, max_new_tokens) stop-padded
    finished: Tensor  # (R,) bool
    logprobs: Tensor  # (R, max_new_tokens) log-probability of each token sampled (up to and including the stop)


class _Decoder:
    """The decode loop of `decoding.sample_batch` with row-keyed draws, able to pause at a step and resume the
    paused rows in another batch."""

    def __init__(self, model: AutoregressiveModel, prefix: Tensor, options: DecodingOptions, uniforms: Tensor):
        self.model, self.prefix, self.options, self.uniforms = model, prefix, options, uniforms
        self.prefix_len = prefix.shape[1]
        self.offset = 2 if options.mel_positions == "kv_cache_quirk" else 1
        self.steps = 0

    def run(self, rows: _Rows, logits: Tensor, step: int, until: int) -> int:
        """Sample from `logits` at `step` on, decoding, until step `until` (the last token sampled but not yet fed
        back), the budget, or every row stopped; returns the step reached."""
        options, model = self.options, self.model
        stop = model.config.tokens.mel_stop
        seen = initial_seen(len(rows.index), logits.shape[-1], options.sampling, logits.device)
        seen.scatter_(1, rows.codes[:, :step], True)
        row = torch.arange(len(rows.index), device=logits.device)
        while True:
            forbid_stop = step < options.min_new_tokens
            tokens = next_tokens(logits, seen, options.sampling, None, forbid_stop, self.uniforms[rows.index, step])
            tokens = tokens.masked_fill(rows.finished, stop)
            rows.logprobs[:, step] = torch.where(rows.finished, 0.0, F.log_softmax(logits.float(), dim=-1)[row, tokens])
            rows.codes[:, step] = tokens
            seen[row, tokens] = True
            rows.finished |= tokens == stop
            step += 1
            if step in (until, options.max_new_tokens) or bool(rows.finished.all()):
                return step
            logits = model.decode_step(tokens, step - 1 + self.offset, self.prefix_len + step - 1)
            self.steps += 1

    def start(self, rows: _Rows) -> Tensor:
        """A new batch: the prompt prefilled once for all its rows -> the first step's logits (R, V)."""
        self.model.setup_cache(len(rows.index), self.prefix_len + self.options.max_new_tokens)
        return self.model.prefill(self.prefix).expand(len(rows.index), -1)

    def resume(self, rows: _Rows, saved: list[tuple[Tensor, Tensor]], step: int) -> Tensor:
        """Paused rows in a new batch: prompt prefilled, their cached positions restored, the last sampled token
        fed -> the logits of `step`."""
        self.start(rows)
        self.model.load_cache_rows(self.prefix_len, saved)
        self.steps += 1
        return self.model.decode_step(rows.codes[:, step - 1], step - 1 + self.offset, self.prefix_len + step - 1)


@dataclass
class _Survivor:
    """A candidate still in the running after its batch reached the checkpoint."""

    index: int
    score: float
    codes: Tensor  # (max_new_tokens,)
    logprobs: Tensor  # (max_new_tokens,)
    finished: bool
    cache: list[tuple[Tensor, Tensor]] | None  # per layer (1, H, checkpoint - 1, d); None once finished


def _fresh_rows(first: int, count: int, options: DecodingOptions, stop: int, device: torch.device) -> _Rows:
    return _Rows(torch.arange(first, first + count, device=device),
                 torch.full((count, options.max_new_tokens), stop, dtype=torch.long, device=device),
                 torch.zeros(count, dtype=torch.bool, device=device),
                 torch.zeros(count, options.max_new_tokens, device=device))


def mean_logprob(logprobs: Tensor, codes: Tensor, stop: int, upto: int) -> Tensor:
    """Mean log-probability (R,) of each candidate's tokens among its first `upto`, the stop token included and the
    padding after it not: the "logprob" checkpoint score, also computable afterwards from `PrunedCandidates`."""
    stops = (codes[:, :upto] == stop).long()
    live = (stops.cumsum(dim=1) - stops) == 0  # no stop before this position
    return (logprobs[:, :upto].sum(dim=1) / live.sum(dim=1).clamp(min=1)).float()


def _scores(rows: _Rows, step: int, prune: PruneOptions | None, clvp: ClvpModel | None, text_ids: Tensor,
            tokens: TokenIds) -> Tensor:
    """Each row's checkpoint score (R,), higher is better (zeros without pruning)."""
    if prune is None:
        return torch.zeros(len(rows.index))
    if prune.score == "logprob":
        return mean_logprob(rows.logprobs, rows.codes, tokens.mel_stop, step).cpu()
    prefix = fix_speech_decoder_output(rows.codes[:, :step], tokens)
    return score_candidates(clvp, text_ids, prefix.cpu()).float()


@torch.no_grad()
def sample_pruned(
    model: AutoregressiveModel,
    cond_latent: Tensor,
    text_ids: Tensor,
    options: DecodingOptions,
    prune: PruneOptions | None,
    generator: torch.Generator | None = None,
    clvp: ClvpModel | None = None,
    expected_tokens: int | None = None,
) -> PrunedCandidates:
    """Sample `options.num_candidates` candidates, finishing only the best `prune.keep` of them (all with None).

    Arguments as `decoding.sample_candidates`; `clvp` is needed for `score="clvp"`, `expected_tokens` for
    `at_fraction` (`expected_speech_tokens`). A batch whose candidates all stop before the checkpoint is scored
    when they stop.
    """
    check_lengths(model, text_ids, options)
    if prune is not None and prune.score == "clvp" and clvp is None:
        raise OptionsError("pruning by CLVP score needs the CLVP model")
    device, tokens = model.device, model.config.tokens
    total = sum(options.batch_sizes())
    budget = options.max_new_tokens
    checkpoint = budget if prune is None else min(prune.checkpoint(expected_tokens), budget)
    keep = total if prune is None else prune.kept(total)
    uniforms = torch.rand((total, budget), generator=generator, device=device)
    text = model.wrap_text(text_ids.reshape(1, -1).to(device))
    prompt = model.embed_prompt(cond_latent.reshape(1, -1).to(device, model.dtype), text)
    start_token = model.embed_mel(torch.full((1, 1), tokens.mel_start, device=device),
                                  torch.zeros(1, dtype=torch.long, device=device))
    decoder = _Decoder(model, torch.cat([prompt, start_token.to(prompt.dtype)], dim=1), options, uniforms)
    scores = torch.empty(total)
    pool: list[_Survivor] = []
    try:
        first = 0
        for count in options.batch_sizes():  # every candidate up to the checkpoint, batch by batch
            rows = _fresh_rows(first, count, options, tokens.mel_stop, device)
            first += count
            step = decoder.run(rows, decoder.start(rows), 0, checkpoint)
            batch_scores = _scores(rows, step, prune, clvp, text_ids, tokens)
            scores[first - count : first] = batch_scores
            paused = ~rows.finished & (step < budget)
            cache = model.cache_rows(torch.arange(count, device=device), decoder.prefix_len,
                                     decoder.prefix_len + step - 1) if bool(paused.any()) else None
            for r in range(count):
                own = None if cache is None or not paused[r] else [(k[r : r + 1], v[r : r + 1]) for k, v in cache]
                pool.append(_Survivor(first - count + r, float(batch_scores[r]), rows.codes[r], rows.logprobs[r],
                                      not paused[r], own))
            pool = sorted(pool, key=lambda s: (-s.score, s.index))[:keep]  # the best so far; ties: the earlier
        pool.sort(key=lambda s: s.index)
        unfinished = [s for s in pool if not s.finished]
        for start in range(0, len(unfinished), options.batch_size):  # the survivors, regrouped into full batches
            group = unfinished[start : start + options.batch_size]
            rows = _Rows(torch.tensor([s.index for s in group], device=device), torch.stack([s.codes for s in group]),
                         torch.zeros(len(group), dtype=torch.bool, device=device),
                         torch.stack([s.logprobs for s in group]))
            saved = [(torch.cat([s.cache[layer][0] for s in group]), torch.cat([s.cache[layer][1] for s in group]))
                     for layer in range(len(group[0].cache))]
            decoder.run(rows, decoder.resume(rows, saved, checkpoint), checkpoint, budget)
            for survivor, codes, logprobs in zip(group, rows.codes, rows.logprobs):
                survivor.codes, survivor.logprobs = codes, logprobs
    finally:
        model.release_cache()
    return PrunedCandidates(torch.stack([s.codes for s in pool]), torch.tensor([s.index for s in pool]),
                            torch.stack([s.logprobs for s in pool]).cpu(), scores, checkpoint, decoder.steps)
