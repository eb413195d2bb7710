"""CLVP's training loss: symmetric cross-entropy over an in-batch similarity matrix, as CLIP and CLAP train.

Row i of the (B, B) matrix scores text i against every speech of the batch, column j speech j against every text;
the true pairs lie on the diagonal. The loss is the mean of the row-wise (text -> speech) and the column-wise
(speech -> text) cross-entropies with the diagonal as the target class. Hard negatives (speech that matches no text)
can join the text -> speech side.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import Tensor


def symmetric_contrastive_loss(similarity: Tensor, negatives: Tensor | None = None) -> Tensor:
    """(B, B) scaled similarities, texts as rows and speech as columns, true pairs on the diagonal -> scalar loss.

    negatives: (B, K) scores of every text against K more speech items that belong to no text (hard negatives, such
    as corrupted copies of the batch's own speech); they join each row's text -> speech choice only."""
    if similarity.dim() != 2 or similarity.shape[0] != similarity.shape[1] or similarity.shape[0] < 1:
        raise ValueError(f"need a square (B, B) similarity matrix, got shape {tuple(similarity.shape)}")
    if negatives is not None and (negatives.dim() != 2 or negatives.shape[0] != similarity.shape[0]):
        raise ValueError(f"negatives must be (B, K) with B = {similarity.shape[0]}, got {tuple(negatives.shape)}")
    targets = torch.arange(similarity.shape[0], device=similarity.device)
    rows = similarity if negatives is None else torch.cat([similarity, negatives], dim=1)
    return (F.cross_entropy(rows, targets) + F.cross_entropy(similarity.T, targets)) / 2
