"""The alignment guide's pieces: the diagonal band, the off-diagonal mass of hand-made attention, and attention
computed as the decoder computes it (the guide in the decoder's training: test_train_autoregressive.py)."""

from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F

from tortoise_clvp.train.alignment import (
    RowLayout,
    attention_probabilities,
    diagonal_band,
    head_attention,
    off_diagonal_mass,
)


def test_the_band_is_one_on_the_diagonal_and_falls_off():
    band = diagonal_band(6, 6, sigma=0.2)
    assert torch.allclose(band.diagonal(), torch.ones(6))
    assert band[0, 1] < 1 and band[0, 5] < band[0, 1] and torch.allclose(band, band.T)
    wide = diagonal_band(8, 4, sigma=0.2)  # twice as many queries as keys: queries 2i, 2i+1 sit around key i
    assert wide.argmax(dim=1).tolist() == [0, 0, 1, 1, 2, 2, 3, 3]


def _attention(length: int, rows: dict[int, int]) -> torch.Tensor:
    """(1, 1, L, L) attention where query q puts all its mass on key rows[q] (others on key 0)."""
    attention = torch.zeros(1, 1, length, length)
    attention[0, 0, :, 0] = 1
    for query, key in rows.items():
        attention[0, 0, query] = 0
        attention[0, 0, query, key] = 1
    return attention


def test_off_diagonal_mass_of_hand_made_attention():
    layout = RowLayout(text_start=1, text_end=5, mel_start=5, mel_end=9)  # 4 text keys, 4 mel queries
    along = _attention(9, {5: 1, 6: 2, 7: 3, 8: 4})
    assert off_diagonal_mass(along, [layout], 0.2).item() == pytest.approx(0.0, abs=1e-6)
    elsewhere = _attention(9, {})  # every query on the conditioning slot (key 0)
    assert off_diagonal_mass(elsewhere, [layout], 0.2).item() == pytest.approx(1.0)
    backwards = _attention(9, {5: 4, 6: 3, 7: 2, 8: 1})
    band = diagonal_band(4, 4, 0.2)
    expected = 1 - torch.stack([band[n, 3 - n] for n in range(4)]).mean()
    assert off_diagonal_mass(backwards, [layout], 0.2).item() == pytest.approx(expected.item())
    # rows average: one aligned row and one that is not
    both = torch.cat([along, elsewhere])
    assert off_diagonal_mass(both, [layout, layout], 0.2).item() == pytest.approx(0.5)


def test_attention_is_the_decoders_causal_attention():
    torch.manual_seed(0)
    q, k, v = torch.randn(3, 2, 3, 7, 8).unbind()
    attention = attention_probabilities(q, k)
    torch.testing.assert_close(attention @ v, F.scaled_dot_product_attention(q, k, v, is_causal=True))
    assert attention[..., 0, 1:].abs().max() == 0  # nothing from the future
    # from a fused projection laid out as the decoder's (B, L, [q | k | v] x heads x d): the first heads only
    qkv = torch.cat([x.transpose(1, 2).reshape(2, 7, 24) for x in (q, k, v)], dim=-1)
    torch.testing.assert_close(head_attention(qkv, heads=3, first=2), attention[:, :2])
