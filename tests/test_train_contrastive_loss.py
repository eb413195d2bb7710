"""CLVP's symmetric contrastive loss against a hand-computed case."""

from __future__ import annotations

import math

import pytest
import torch

from tortoise_clvp.train.contrastive_loss import symmetric_contrastive_loss


def test_two_by_two_by_hand():
    similarity = torch.tensor([[2.0, 0.0], [1.0, 3.0]])
    # rows (text -> speech): -log softmax of the diagonal in each row
    rows = (-math.log(math.exp(2) / (math.exp(2) + 1)) - math.log(math.exp(3) / (math.exp(1) + math.exp(3)))) / 2
    # columns (speech -> text): column 0 is (2, 1), column 1 is (0, 3)
    columns = (-math.log(math.exp(2) / (math.exp(2) + math.exp(1))) - math.log(math.exp(3) / (1 + math.exp(3)))) / 2
    assert float(symmetric_contrastive_loss(similarity)) == pytest.approx((rows + columns) / 2, rel=1e-6)


def test_the_loss_is_symmetric_in_texts_and_speech_and_low_for_a_clear_diagonal():
    torch.manual_seed(0)
    similarity = torch.randn(5, 5)
    assert torch.allclose(symmetric_contrastive_loss(similarity), symmetric_contrastive_loss(similarity.T))
    assert float(symmetric_contrastive_loss(20 * torch.eye(4))) < 1e-6
    assert float(symmetric_contrastive_loss(torch.zeros(4, 4))) == pytest.approx(math.log(4))


def test_a_non_square_matrix_is_rejected():
    with pytest.raises(ValueError, match="square"):
        symmetric_contrastive_loss(torch.zeros(2, 3))
