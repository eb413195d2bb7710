"""CLVP: the contrastive text/speech scorer that reranks Tortoise's speech-token candidates.

Two encoders of the same shape, one over text ids and one over speech codes, each mean-pooled and projected
to a shared latent space; the score of a (text, speech) pair is their cosine similarity times
``exp(temperature)``. Inference only: no dropout, no token masking, no loss.

Encoder layout (the x-transformers ``Encoder`` Tortoise trained with ``use_rmsnorm, ff_glu, rotary_pos_emb``):

    x = embedding(ids)
    repeat depth times:
        x = x + attention(rmsnorm(x))       # rotary on the first `rotary_dim` channels of q, k AND v
        x = x + geglu_feedforward(rmsnorm(x))
    latent = to_latent(mean_over_positions(layernorm(x)))

Quirks copied from the original on purpose:
- every head is ``dim_head`` (64) wide whatever the model width, so q/k/v map ``dim -> heads * 64``;
- RMSNorm is ``x / max(||x|| * dim**-0.5, 1e-8) * g`` (a clamp, not an epsilon under the root);
- the mean runs over every position, padding included (the original masks nothing in eval mode);
- there are no position embeddings besides rotary.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from ..config import ClvpConfig

ROTARY_BASE = 10000.0
RMSNORM_MIN = 1e-8
LAYERNORM_EPS = 1e-5  # nn.LayerNorm's default, which the original's final norm uses


def rotary_inv_freq(rotary_dim: int, device: torch.device | str | None = None) -> torch.Tensor:
    """Inverse frequencies of the rotary embedding, ``(rotary_dim // 2,)``, computed as the original does."""
    exponents = torch.arange(0, rotary_dim, 2, device=device).float() / rotary_dim
    return 1.0 / (ROTARY_BASE**exponents)


def rotary_cos_sin(seq_len: int, rotary_dim: int, device: torch.device, dtype: torch.dtype):
    """cos and sin of the rotation angles for positions 0..seq_len-1, each ``(seq_len, rotary_dim)``."""
    positions = torch.arange(seq_len, device=device).float()
    freqs = torch.outer(positions, rotary_inv_freq(rotary_dim, device))  # (T, rotary_dim / 2)
    angles = torch.cat((freqs, freqs), dim=-1)  # (T, rotary_dim): the two halves share frequencies
    return angles.cos().to(dtype), angles.sin().to(dtype)


def apply_rotary(x: torch.Tensor, cos: torch.Tensor, sin: torch.Tensor) -> torch.Tensor:
    """Rotate the first ``cos.shape[-1]`` channels of ``x (B, H, T, D)``; the rest pass through."""
    rotary_dim = cos.shape[-1]
    x_rot, x_pass = x[..., :rotary_dim], x[..., rotary_dim:]
    first, second = x_rot.chunk(2, dim=-1)
    rotated = torch.cat((-second, first), dim=-1)  # "rotate half": (a, b) -> (-b, a) across the two halves
    return torch.cat((x_rot * cos + rotated * sin, x_pass), dim=-1)


class RMSNorm(nn.Module):
    """x-transformers' RMSNorm: ``x / max(||x|| / sqrt(dim), 1e-8) * weight``."""

    def __init__(self, dim: int):
        super().__init__()
        self.scale = dim**-0.5
        self.weight = nn.Parameter(torch.ones(dim))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        rms = x.norm(dim=-1, keepdim=True) * self.scale
        return x / rms.clamp(min=RMSNORM_MIN) * self.weight


class SelfAttention(nn.Module):
    """Bidirectional multi-head attention with partial rotary embedding on q, k and v."""

    def __init__(self, dim: int, heads: int, dim_head: int):
        super().__init__()
        self.heads = heads
        self.dim_head = dim_head
        inner = heads * dim_head  # not `dim`: x-transformers fixes the head width, not the head count
        self.q_proj = nn.Linear(dim, inner, bias=False)
        self.k_proj = nn.Linear(dim, inner, bias=False)
        self.v_proj = nn.Linear(dim, inner, bias=False)
        self.out_proj = nn.Linear(inner, dim)

    def forward(self, x: torch.Tensor, cos: torch.Tensor, sin: torch.Tensor) -> torch.Tensor:
        batch, seq_len, _ = x.shape

        def split_heads(t: torch.Tensor) -> torch.Tensor:
            # (B, T, H * Dh) -> (B, H, T, Dh)
            return t.view(batch, seq_len, self.heads, self.dim_head).transpose(1, 2)

        q, k, v = (apply_rotary(split_heads(proj(x)), cos, sin) for proj in (self.q_proj, self.k_proj, self.v_proj))
        out = F.scaled_dot_product_attention(q, k, v)  # (B, H, T, Dh), scale Dh**-0.5, no mask
        out = out.transpose(1, 2).reshape(batch, seq_len, self.heads * self.dim_head)  # (B, T, H * Dh)
        return self.out_proj(out)


class GegluFeedForward(nn.Module):
    """``proj_out(a * gelu(gate))`` where ``(a, gate) = proj_in(x)`` split in halves; inner width ``dim * mult``."""

    def __init__(self, dim: int, mult: int):
        super().__init__()
        inner = dim * mult
        self.proj_in = nn.Linear(dim, inner * 2)
        self.proj_out = nn.Linear(inner, dim)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        a, gate = self.proj_in(x).chunk(2, dim=-1)
        return self.proj_out(a * F.gelu(gate))


class EncoderBlock(nn.Module):
    """Pre-norm attention then pre-norm feed-forward, each with a residual connection."""

    def __init__(self, dim: int, heads: int, dim_head: int, ff_mult: int):
        super().__init__()
        self.attn_norm = RMSNorm(dim)
        self.attn = SelfAttention(dim, heads, dim_head)
        self.ff_norm = RMSNorm(dim)
        self.ff = GegluFeedForward(dim, ff_mult)

    def forward(self, x: torch.Tensor, cos: torch.Tensor, sin: torch.Tensor) -> torch.Tensor:
        x = x + self.attn(self.attn_norm(x), cos, sin)
        return x + self.ff(self.ff_norm(x))


class ClvpEncoder(nn.Module):
    """Token ids ``(B, T)`` -> unnormalised latent ``(B, dim_latent)``."""

    def __init__(
        self,
        *,
        vocab_size: int,
        dim: int,
        depth: int,
        heads: int,
        dim_latent: int,
        dim_head: int,
        ff_mult: int,
        rotary_dim: int,
    ):
        super().__init__()
        if rotary_dim % 2 or not 0 < rotary_dim <= dim_head:
            raise ValueError(f"rotary_dim must be even and in (0, dim_head={dim_head}], got {rotary_dim}")
        self.vocab_size = vocab_size
        self.rotary_dim = rotary_dim
        self.token_embedding = nn.Embedding(vocab_size, dim)
        self.blocks = nn.ModuleList(EncoderBlock(dim, heads, dim_head, ff_mult) for _ in range(depth))
        self.final_norm = nn.LayerNorm(dim, eps=LAYERNORM_EPS)
        self.to_latent = nn.Linear(dim, dim_latent, bias=False)

    def hidden_states(self, ids: torch.Tensor) -> torch.Tensor:
        """Final-normed hidden states ``(B, T, dim)``."""
        x = self.token_embedding(ids)  # (B, T, dim)
        cos, sin = rotary_cos_sin(ids.shape[1], self.rotary_dim, x.device, x.dtype)
        for block in self.blocks:
            x = block(x, cos, sin)
        return self.final_norm(x)

    def forward(self, ids: torch.Tensor) -> torch.Tensor:
        pooled = self.hidden_states(ids).mean(dim=1)  # (B, dim): every position counts, padding included
        return self.to_latent(pooled)


def _check_ids(ids: torch.Tensor, vocab_size: int, what: str) -> None:
    if ids.dim() != 2:
        raise ValueError(f"{what} must be a (batch, length) tensor of ids, got shape {tuple(ids.shape)}")
    if ids.dtype not in (torch.int64, torch.int32):
        raise ValueError(f"{what} must hold integer ids, got dtype {ids.dtype}")
    if ids.shape[1] == 0:
        raise ValueError(f"{what} is empty (length 0); CLVP needs at least one token")
    if ids.numel() and ids.device.type != "meta":
        low, high = int(ids.min()), int(ids.max())
        if low < 0 or high >= vocab_size:
            raise ValueError(
                f"{what} holds ids outside [0, {vocab_size}) (min {low}, max {high}); "
                "speech codes must be fixed (stop token replaced) before CLVP scores them"
            )


class ClvpModel(nn.Module):
    """CLVP scorer: ``similarity(text, codes) = cos(text_latent, speech_latent) * exp(temperature)``."""

    def __init__(self, config: ClvpConfig):
        super().__init__()
        self.config = config
        shared = dict(dim_latent=config.dim_latent, dim_head=config.dim_head, ff_mult=config.ff_mult,
                      rotary_dim=config.rotary_dim)
        self.text_encoder = ClvpEncoder(
            vocab_size=config.num_text_tokens, dim=config.dim_text, depth=config.text_enc_depth,
            heads=config.text_heads, **shared,
        )
        self.speech_encoder = ClvpEncoder(
            vocab_size=config.num_speech_tokens, dim=config.dim_speech, depth=config.speech_enc_depth,
            heads=config.speech_heads, **shared,
        )
        self.temperature = nn.Parameter(torch.tensor(1.0))  # log of the similarity scale (the original's init value)

    def text_latents(self, text_ids: torch.Tensor) -> torch.Tensor:
        """``(B, T)`` text ids (Tortoise appends one 0 to the BPE ids) -> unnormalised ``(B, dim_latent)``."""
        _check_ids(text_ids, self.text_encoder.vocab_size, "text_ids")
        return self.text_encoder(text_ids)

    def speech_latents(self, codes: torch.Tensor) -> torch.Tensor:
        """``(B, S)`` fixed speech codes -> unnormalised ``(B, dim_latent)``."""
        _check_ids(codes, self.speech_encoder.vocab_size, "codes")
        return self.speech_encoder(codes)

    def score(self, text_latent: torch.Tensor, speech_latent: torch.Tensor) -> torch.Tensor:
        """Scaled cosine similarity of latents that broadcast against each other.

        ``text_latent (1, L)`` or ``(L,)`` against ``speech_latent (N, L)`` scores N candidates against one text
        without re-encoding it; ``(B, L)`` against ``(B, L)`` scores row by row. Returns ``(N,)`` / ``(B,)``.
        """
        text = F.normalize(text_latent, p=2, dim=-1)
        speech = F.normalize(speech_latent, p=2, dim=-1)
        return (text * speech).sum(dim=-1) * self.temperature.exp()

    def similarity(self, text_ids: torch.Tensor, codes: torch.Tensor) -> torch.Tensor:
        """Row-wise score of ``text_ids (B, T)`` against ``codes (B, S)`` -> ``(B,)`` (the original eval forward)."""
        if text_ids.shape[0] != codes.shape[0]:
            raise ValueError(f"batch sizes differ: text_ids {text_ids.shape[0]}, codes {codes.shape[0]}")
        return self.score(self.text_latents(text_ids), self.speech_latents(codes))

    def forward(self, text_ids: torch.Tensor, codes: torch.Tensor) -> torch.Tensor:
        return self.similarity(text_ids, codes)
