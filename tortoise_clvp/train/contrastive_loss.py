"""CLVP's training loss: symmetric cross-entropy over an in-batch similarity matrix, as CLIP and CLAP train.

Row i of the (B, B) matrix scores text i against every speech of the batch, column j speech j against every text;
the true pairs lie on the diagonal. The loss is the mean of the row-wise (text -> speech) and the column-wise
(speech -> text) cross-entropies with the diagonal as the target class.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import Tensor


def symmetric_contrastive_loss(similarity: Tensor) -> Tensor:
    """(B, B) scaled similarities, texts as rows and speech as columns, true pairs on the diagonal -> scalar loss."""
    if similarity.dim() != 2 or similarity.shape[0] != similarity.shape[1] or similarity.shape[0] < 1:
        raise ValueError(f"need a square (B, B) similarity matrix, got shape {tuple(similarity.shape)}")
    targets = torch.arange(similarity.shape[0], device=similarity.device)
    return (F.cross_entropy(similarity, targets) + F.cross_entropy(similarity.T, targets)) / 2
