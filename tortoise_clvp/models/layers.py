"""Layers shared by the decoder's conditioning encoder and the diffusion decoder."""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import Tensor, nn


def group_norm_groups(channels: int) -> int:
    """The original's GroupNorm group count: 32, fewer for narrow layers, halved until it divides."""
    groups = 8 if channels <= 16 else 16 if channels <= 64 else 32
    while channels % groups:
        groups //= 2
    return groups


class GroupNorm32(nn.GroupNorm):
    """GroupNorm computed in float32 whatever the input and parameter dtype (the original's GroupNorm32).

    With `mask` (B, 1, T), 1 on real frames and 0 on padding, the statistics come from the real frames only, so a
    padded row is normalised as it would be alone (what batching rows of different lengths needs)."""

    def forward(self, x: Tensor, mask: Tensor | None = None) -> Tensor:
        weight = None if self.weight is None else self.weight.float()
        bias = None if self.bias is None else self.bias.float()
        if mask is None:
            return F.group_norm(x.float(), self.num_groups, weight, bias, self.eps).to(x.dtype)
        b, c, t = x.shape
        groups = x.float().view(b, self.num_groups, c // self.num_groups, t)
        keep = mask.float().view(b, 1, 1, t)
        count = keep.sum(dim=(2, 3), keepdim=True) * (c // self.num_groups)
        mean = (groups * keep).sum(dim=(2, 3), keepdim=True) / count
        variance = ((groups - mean).square() * keep).sum(dim=(2, 3), keepdim=True) / count
        h = ((groups - mean) * torch.rsqrt(variance + self.eps)).view(b, c, t)
        if weight is not None:
            h = h * weight[:, None] + bias[:, None]
        return h.to(x.dtype)


def norm(channels: int) -> GroupNorm32:
    """The original's `normalization(channels)`."""
    return GroupNorm32(group_norm_groups(channels), channels)
