"""Layers shared by the decoder's conditioning encoder and the diffusion decoder."""

from __future__ import annotations

import torch.nn.functional as F
from torch import Tensor, nn


def group_norm_groups(channels: int) -> int:
    """The original's GroupNorm group count: 32, fewer for narrow layers, halved until it divides."""
    groups = 8 if channels <= 16 else 16 if channels <= 64 else 32
    while channels % groups:
        groups //= 2
    return groups


class GroupNorm32(nn.GroupNorm):
    """GroupNorm computed in float32 whatever the input and parameter dtype (the original's GroupNorm32)."""

    def forward(self, x: Tensor) -> Tensor:
        weight = None if self.weight is None else self.weight.float()
        bias = None if self.bias is None else self.bias.float()
        return F.group_norm(x.float(), self.num_groups, weight, bias, self.eps).to(x.dtype)


def norm(channels: int) -> GroupNorm32:
    """The original's `normalization(channels)`."""
    return GroupNorm32(group_norm_groups(channels), channels)
