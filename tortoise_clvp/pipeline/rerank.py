"""CLVP reranking: score every candidate against the text and rank them, best first."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Callable

import torch
from torch import Tensor

from ..errors import OptionsError
from ..models.clvp import ClvpModel


@dataclass(frozen=True)
class RankedCandidates:
    """Candidates in sampling order with their CLVP scores; `order` lists indices best first."""

    codes: Tensor  # (N, L) fixed codes, what CLVP scored
    scores: Tensor  # (N,)
    order: Tensor  # (N,) indices into codes, descending score

    def best(self, k: int) -> Tensor:
        """Indices of the k best candidates, best first."""
        if not 1 <= k <= len(self.order):
            raise OptionsError(f"asked for the {k} best of {len(self.order)} candidates; choose 1..{len(self.order)}")
        return self.order[:k]


@torch.inference_mode()
def score_candidates(
    clvp: ClvpModel,
    text_ids: Tensor,
    codes: Tensor,
    batch_size: int = 16,
    on_batch: Callable[[int, int], None] | None = None,
) -> Tensor:
    """CLVP scores of fixed candidates (N, L) against one text (T,) -> (N,).

    The text is encoded once; candidates go through the speech encoder `batch_size` at a time.
    """
    if batch_size < 1:
        raise OptionsError(f"batch_size must be >= 1, got {batch_size}")
    device = clvp.temperature.device
    text_latent = clvp.text_latents(text_ids.reshape(1, -1).to(device))  # (1, D)
    starts = range(0, codes.shape[0], batch_size)
    scores = []
    for done, start in enumerate(starts, 1):
        speech_latent = clvp.speech_latents(codes[start : start + batch_size].to(device))  # (b, D)
        scores.append(clvp.score(text_latent, speech_latent).float().cpu())
        if on_batch is not None:
            on_batch(done, len(starts))
    return torch.cat(scores)


def rank(codes: Tensor, scores: Tensor) -> RankedCandidates:
    """Sort candidates by score, descending (ties keep sampling order)."""
    order = torch.sort(scores, descending=True, stable=True).indices
    return RankedCandidates(codes=codes, scores=scores, order=order)
