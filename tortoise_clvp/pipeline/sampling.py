"""Turning decoder logits into the next speech token: repetition penalty, temperature, top-k, top-p.

The order is the one Tortoise got from transformers 4.31 (its logits processors, then its warpers): penalty,
then (optionally) a ban on the stop token, then temperature, top-k and top-p, then one `torch.multinomial` draw
per step.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
from torch import Tensor

from ..config import mel_start_stop
from ..errors import OptionsError

FAKE_PROMPT_ID = 1  # the original feeds transformers' generate() a prompt of 1s, which the penalty then counts as seen


@dataclass(frozen=True)
class SamplingOptions:
    """How each next token is chosen.

    temperature: > 0; below 1 sharpens the distribution (Tortoise: 0.8).
    top_p: in (0, 1]; keep the smallest set of tokens whose probability reaches top_p (Tortoise: 0.8).
    top_k: keep only the k most likely tokens; None keeps all. The original silently used 50
        (transformers' default); `FAITHFUL_SAMPLING` restores that.
    repetition_penalty: >= 1; divides positive (multiplies negative) logits of tokens already emitted.
    penalize_prompt_ids: the original also penalises its fake prompt ids (1 and the start token 8192),
        an accident of how it calls transformers; on in `FAITHFUL_SAMPLING` only.
    do_sample: False picks the highest processed score (greedy), skipping temperature/top-k/top-p.
    """

    temperature: float = 0.8
    top_p: float = 0.8
    top_k: int | None = None
    repetition_penalty: float = 2.0
    penalize_prompt_ids: bool = False
    do_sample: bool = True

    def __post_init__(self) -> None:
        if not self.temperature > 0:
            raise OptionsError(f"temperature must be > 0, got {self.temperature}; use do_sample=False for greedy")
        if not 0 < self.top_p <= 1:
            raise OptionsError(f"top_p must be in (0, 1], got {self.top_p}")
        if self.top_k is not None and self.top_k < 1:
            raise OptionsError(f"top_k must be >= 1 or None, got {self.top_k}")
        if not self.repetition_penalty > 0:
            raise OptionsError(f"repetition_penalty must be > 0 (1 disables it), got {self.repetition_penalty}")


FAITHFUL_SAMPLING = SamplingOptions(top_k=50, penalize_prompt_ids=True)


def initial_seen(rows: int, vocab: int, options: SamplingOptions, device: torch.device) -> Tensor:
    """(rows, vocab) bool mask of the ids the repetition penalty treats as already emitted (vocab: the decoder's
    number_mel_codes, which also places its start token)."""
    seen = torch.zeros(rows, vocab, dtype=torch.bool, device=device)
    if options.penalize_prompt_ids:
        seen[:, [FAKE_PROMPT_ID, mel_start_stop(vocab)[0]]] = True
    return seen


def apply_repetition_penalty(logits: Tensor, seen: Tensor, penalty: float) -> Tensor:
    if penalty == 1.0:
        return logits
    penalised = torch.where(logits < 0, logits * penalty, logits / penalty)
    return torch.where(seen, penalised, logits)


def apply_top_k(scores: Tensor, k: int) -> Tensor:
    k = min(k, scores.shape[-1])
    kth_best = torch.topk(scores, k, dim=-1).values[:, -1:]
    return scores.masked_fill(scores < kth_best, float("-inf"))


def apply_top_p(scores: Tensor, top_p: float) -> Tensor:
    """Drop the least likely tokens whose cumulative probability stays within 1 - top_p (the best one always stays)."""
    if top_p >= 1.0:
        return scores
    ascending, order = torch.sort(scores, dim=-1)
    cumulative = ascending.softmax(dim=-1).cumsum(dim=-1)
    drop_sorted = cumulative <= 1 - top_p
    drop_sorted[:, -1] = False
    drop = drop_sorted.scatter(1, order, drop_sorted)
    return scores.masked_fill(drop, float("-inf"))


def draw_from_uniforms(probs: Tensor, uniforms: Tensor) -> Tensor:
    """Inverse-CDF sampling: probabilities (B, V) and one uniform number in [0, 1) per row (B,) -> ids (B,).

    Each row's id depends only on its own probabilities and its own number, whichever rows share the batch (what
    `torch.multinomial` with one generator cannot promise). An id of zero probability is never chosen.
    """
    cdf = probs.cumsum(dim=-1)  # (B, V)
    chosen = torch.searchsorted(cdf, (uniforms.to(cdf.dtype) * cdf[:, -1]).unsqueeze(1), right=True).squeeze(1)
    last_possible = probs.shape[-1] - 1 - (probs.flip(-1) > 0).int().argmax(dim=-1)  # rounding must not pass it
    return torch.minimum(chosen, last_possible)


def next_tokens(
    logits: Tensor,
    seen: Tensor,
    options: SamplingOptions,
    generator: torch.Generator | None = None,
    forbid_stop: bool = False,
    uniforms: Tensor | None = None,
) -> Tensor:
    """Logits (B, V) -> chosen ids (B,). The start token is never chosen; `forbid_stop` also bans the stop token
    (used to force a minimum length). Both are the last two of the V ids (`config.mel_start_stop`).

    The draw is `torch.multinomial` with `generator`, or, given `uniforms` (B,) in [0, 1), `draw_from_uniforms`
    (row-keyed draws: a row's token does not depend on the other rows; `pipeline.pruning` needs that)."""
    scores = apply_repetition_penalty(logits.float(), seen, options.repetition_penalty)
    # out of place: `logits` may be a broadcast view shared by every row. The start token is never a speech
    # code (CLVP has no embedding for it); a trained decoder gives it no mass, an untrained one might.
    start, stop = mel_start_stop(logits.shape[-1])
    banned = [start, stop] if forbid_stop else [start]
    scores = scores.index_fill(1, torch.tensor(banned, device=scores.device), float("-inf"))
    if not options.do_sample:
        return scores.argmax(dim=-1)
    scores = scores / options.temperature
    if options.top_k is not None:
        scores = apply_top_k(scores, options.top_k)
    scores = apply_top_p(scores, options.top_p)
    probs = scores.softmax(dim=-1)
    if uniforms is not None:
        return draw_from_uniforms(probs, uniforms)
    return torch.multinomial(probs, 1, generator=generator).squeeze(1)
