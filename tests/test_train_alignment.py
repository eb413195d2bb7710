"""The alignment guide: the diagonal band, the off-diagonal mass of hand-made attention, attention computed as the
decoder computes it, and the loss training the guided heads (and nothing after them) toward the diagonal."""

from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F

from tortoise_clvp.config import AutoregressiveConfig
from tortoise_clvp.train.alignment import (
    RowLayout,
    attention_probabilities,
    diagonal_band,
    head_attention,
    off_diagonal_mass,
)
from tortoise_clvp.train.autoregressive import AutoregressiveTraining
from tortoise_clvp.train.config import AlignmentGuide

CONFIG = AutoregressiveConfig(layers=2, model_dim=32, heads=2, max_text_tokens=20, max_mel_tokens=30,
                              number_mel_codes=18, conditioning_attn_blocks=1, calm_code=1, fix_tail=(1, 1, 1))


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


def _batch():
    cond = torch.randn(1, 80, 40, generator=torch.Generator().manual_seed(1))
    texts = [torch.tensor([5, 6, 7, 8, 0]), torch.tensor([9, 10, 0])]
    codes = [torch.tensor([3, 4, 5, 6, 7, 8, 9, 10]), torch.tensor([7, 8, 9, 10, 11])]
    return cond, torch.zeros(2, dtype=torch.long), texts, codes


def test_the_guide_trains_its_heads_toward_the_diagonal_and_nothing_after_them():
    torch.manual_seed(0)
    model = AutoregressiveTraining(CONFIG)
    guide = AlignmentGuide(layer=0, heads=1)
    batch = _batch()
    first = model(*batch, guide).off_diagonal
    first.backward()
    assert model.decoder.blocks[0].attn.qkv.weight.grad.abs().max() > 0
    assert all(p.grad is None for p in model.decoder.blocks[1].parameters())  # later layers do not shape it
    assert model.decoder.mel_head.weight.grad is None
    optimizer = torch.optim.Adam(model.parameters(), lr=1e-2)
    for _ in range(30):
        optimizer.zero_grad()
        loss = model(*batch, guide).off_diagonal
        loss.backward()
        optimizer.step()
    assert model(*batch, guide).off_diagonal.item() < 0.5 * first.item()


def test_without_a_guide_nothing_is_computed_and_a_guide_beyond_the_decoder_is_refused():
    model = AutoregressiveTraining(CONFIG)
    assert model(*_batch()).off_diagonal is None
    assert model.can_guide(AlignmentGuide(layer=1, heads=2)) and not model.can_guide(AlignmentGuide(layer=2))
    with pytest.raises(ValueError, match="reads layer 2 and 2 head"):
        model(*_batch(), AlignmentGuide(layer=2))
    with pytest.raises(ValueError, match="2 layers of 2 heads"):
        model(*_batch(), AlignmentGuide(layer=0, heads=3))
