"""A diagonal guide for the decoder's reading of the text: the guided attention loss of Tachibana et al. (2017,
"Efficiently trainable text-to-speech ... with guided attention"), applied to a few heads of one decoder layer.

Speech follows its text in order, so the code at relative position n/N should mostly attend to the text near relative
position t/T. A decoder-only model has no cross-attention to guide, but its mel positions attend to the text
positions in the same self-attention; for the guided heads, the loss is the attention mass of each mel position
that falls OUTSIDE a Gaussian band around the diagonal:

    loss = mean over heads and mel positions of  1 - sum_t A[n, t] * exp(-((n + 1/2)/N - (t + 1/2)/T)^2 / (2 sigma^2))

(t runs over the text positions, start and stop included; mass on the conditioning slot or on earlier codes counts
as outside). 0 means every guided head reads the text exactly along the diagonal. Its held-out value is reported
whatever the weight, as a measure of how sharply the decoder aligns speech with text.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import torch
from torch import Tensor


@dataclass(frozen=True)
class RowLayout:
    """Where a teacher-forced row keeps its text and its mel queries: text keys at [text_start, text_end), the
    positions that predict codes at [mel_start, mel_end)."""

    text_start: int
    text_end: int
    mel_start: int
    mel_end: int


def diagonal_band(queries: int, keys: int, sigma: float) -> Tensor:
    """(queries, keys) weights in (0, 1]: 1 on the diagonal of relative positions, falling off as a Gaussian."""
    n = (torch.arange(queries, dtype=torch.float32) + 0.5) / queries
    t = (torch.arange(keys, dtype=torch.float32) + 0.5) / keys
    return torch.exp(-((n[:, None] - t[None]) ** 2) / (2 * sigma**2))


def attention_probabilities(q: Tensor, k: Tensor) -> Tensor:
    """Causal softmax attention (B, H, L, L) of queries and keys (B, H, L, d), as the decoder computes it."""
    length = q.shape[2]
    scores = (q @ k.transpose(-1, -2)) / math.sqrt(q.shape[-1])
    causal = torch.ones(length, length, dtype=torch.bool, device=q.device).tril()
    return scores.masked_fill(~causal, float("-inf")).softmax(dim=-1)


def head_attention(qkv: Tensor, heads: int, first: int) -> Tensor:
    """The causal attention (B, first, L, L) of the first `first` of `heads` heads, from a layer's fused query, key,
    value projection (B, L, 3 * C) (the decoder's `SelfAttention.qkv` output)."""
    b, length, width = qkv.shape
    q, k, _ = qkv.view(b, length, 3, heads, width // (3 * heads))[:, :, :, :first].permute(2, 0, 3, 1, 4)
    return attention_probabilities(q, k)


def off_diagonal_mass(attention: Tensor, layouts: list[RowLayout], sigma: float) -> Tensor:
    """The guide's loss: attention (B, H, L, L) of the guided heads, each row's layout -> the mean over rows, heads
    and mel positions of the attention mass outside the diagonal band (a scalar in [0, 1])."""
    per_row = []
    for row, layout in enumerate(layouts):
        mel = slice(layout.mel_start, layout.mel_end)
        text = slice(layout.text_start, layout.text_end)
        band = diagonal_band(layout.mel_end - layout.mel_start, layout.text_end - layout.text_start, sigma)
        inside = (attention[row, :, mel, text] * band.to(attention.device)).sum(dim=-1)  # (H, queries)
        per_row.append(1 - inside.mean())
    return torch.stack(per_row).mean()
