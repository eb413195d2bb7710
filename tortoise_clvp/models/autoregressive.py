"""The speech-token decoder: conditioning encoder, GPT-2 style transformer with a static KV cache, and heads.

One module holds what the original spreads over `UnifiedVoice`, `GPT2InferenceModel` and
`ConditioningEncoder`. Attention runs through `scaled_dot_product_attention`; decoding uses
`prefill` once per prompt and `decode_step` per token against preallocated cache buffers.
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from ..config import TOKENS, AutoregressiveConfig
from .layers import norm


class ConditioningAttention(nn.Module):
    """Pre-norm self-attention over mel frames, residual; works on (B, C, T) like the original's 1x1 convs."""

    def __init__(self, channels: int, heads: int):
        super().__init__()
        self.heads = heads
        self.norm = norm(channels)
        self.qkv = nn.Conv1d(channels, 3 * channels, 1)  # output rows laid out [q all heads; k; v]
        self.proj_out = nn.Conv1d(channels, channels, 1)

    def forward(self, x: Tensor) -> Tensor:
        b, c, t = x.shape
        qkv = self.qkv(self.norm(x))  # (B, 3C, T)
        # each (B, H, T, d), made contiguous: SDPA then takes its fused CPU kernel (5x faster forward + backward than
        # the unfused path strided views get, at 517 frames; the same numbers to 1e-6)
        q, k, v = (z.contiguous() for z in qkv.view(b, 3, self.heads, c // self.heads, t).transpose(-1, -2).unbind(1))
        h = F.scaled_dot_product_attention(q, k, v)  # (B, H, T, d)
        h = h.transpose(-1, -2).reshape(b, c, t)
        return x + self.proj_out(h)


class ConditioningEncoder(nn.Module):
    """Mel (B, 80, T) -> one vector per clip (B, C): the first frame after the attention stack (not a mean)."""

    def __init__(self, mel_channels: int, dim: int, heads: int, blocks: int):
        super().__init__()
        self.init = nn.Conv1d(mel_channels, dim, 1)
        self.blocks = nn.Sequential(*(ConditioningAttention(dim, heads) for _ in range(blocks)))

    def forward(self, mel: Tensor) -> Tensor:
        return self.blocks(self.init(mel))[:, :, 0]


class KVCache(nn.Module):
    """Static key/value buffers (B, H, max_len, d), written at the positions being computed. Left uninitialised:
    a position is always written before anything attends to it.

    A one-row write stands for every row. When it extends the front of the cache (the prompt, prefilled once for a
    batch of candidates) it is kept in row 0 only, as a prefix all rows share: decode steps then read the prompt's
    keys and values once per step instead of once per row. Any other write pattern first copies that prefix into
    every row.
    """

    def __init__(self, batch: int, heads: int, max_len: int, head_dim: int, dtype: torch.dtype, device: torch.device):
        super().__init__()
        shape = (batch, heads, max_len, head_dim)
        self.register_buffer("k", torch.empty(shape, dtype=dtype, device=device), persistent=False)
        self.register_buffer("v", torch.empty(shape, dtype=dtype, device=device), persistent=False)
        self.shared = 0  # positions [0, shared) hold the shared prefix, in row 0 only

    def update(self, start: int, k: Tensor, v: Tensor) -> tuple[Tensor, Tensor]:
        """Write k, v (rows, H, t, d) at `start`; return the keys and values (rows, H, start + t, d) they attend to
        (positions before `shared` are valid in row 0 only)."""
        rows, end = k.shape[0], start + k.shape[2]
        if start == 0:  # a new sequence: whatever was cached is stale
            self.shared = 0
        extends_prefix = rows == 1 and start == self.shared and self.k.shape[0] > 1
        if self.shared and not extends_prefix and (rows == 1 or start < self.shared or k.shape[2] > 1):
            self.k[1:, :, : self.shared] = self.k[:1, :, : self.shared]
            self.v[1:, :, : self.shared] = self.v[:1, :, : self.shared]
            self.shared = 0
        if extends_prefix:
            self.shared = end
            target = slice(0, 1)
        else:
            target = slice(None) if rows == 1 else slice(rows)  # a one-row write outside the prefix fills every row
        self.k[target, :, start:end] = k
        self.v[target, :, start:end] = v
        return self.k[:rows, :, :end], self.v[:rows, :, :end]

    def take_rows(self, rows: Tensor, start: int, end: int) -> tuple[Tensor, Tensor]:
        """Copies of rows `rows`' own keys and values (R, H, end - start, d) at positions [start, end), past the
        shared prefix."""
        if start < self.shared:
            raise ValueError(f"positions from {start} overlap the shared prefix (up to {self.shared})")
        return self.k[rows, :, start:end].clone(), self.v[rows, :, start:end].clone()

    def put_rows(self, start: int, k: Tensor, v: Tensor) -> None:
        """Write rows' own keys and values (R, H, t, d) into rows [0, R) at positions [start, start + t), past the
        shared prefix (which stays shared: the next decode step reads it once for all rows, as before)."""
        if start < self.shared:
            raise ValueError(f"positions from {start} overlap the shared prefix (up to {self.shared})")
        self.k[: k.shape[0], :, start : start + k.shape[2]] = k
        self.v[: v.shape[0], :, start : start + v.shape[2]] = v


class RowKVCache(nn.Module):
    """Key/value buffers (rows, H, max_len, d) in which every row holds its own sequence at its own length: for
    continuous batching, where the rows of different prompts decode together and join or leave between steps.

    A decode step writes one new position per row, row b at `start[b]`, into rows [0, B), then attends: neighbouring
    rows at the same position (one prompt's batch) attend together, each group over exactly its own positions. So a
    row's numbers never depend on which rows share the step, and no padding is read. Left uninitialised like
    `KVCache`: a row's positions are written before they are read. While `target` is set
    (`AutoregressiveModel.prefill_rows`), a one-row prompt is written into every row of that slice.
    """

    def __init__(self, rows: int, heads: int, max_len: int, head_dim: int, dtype: torch.dtype, device: torch.device):
        super().__init__()
        shape = (rows, heads, max_len, head_dim)
        self.register_buffer("k", torch.empty(shape, dtype=dtype, device=device), persistent=False)
        self.register_buffer("v", torch.empty(shape, dtype=dtype, device=device), persistent=False)
        self.target: slice | None = None

    def attend(self, q: Tensor, k: Tensor, v: Tensor, start: Tensor) -> Tensor:
        """Write k, v (B, H, t, d) at positions `start` (B,) and return the attention output (B, H, t, d)."""
        t = k.shape[2]
        if self.target is not None:  # one prompt (1, H, t, d) from position 0 into every row of the target slice
            if int(start[0]) != 0:
                raise ValueError("a prompt is prefilled into its rows from position 0")
            self.k[self.target, :, :t] = k
            self.v[self.target, :, :t] = v
            return F.scaled_dot_product_attention(q, k, v, is_causal=True)
        if t != 1:
            raise ValueError(f"a per-row decode step writes one position per row, got {t}")
        rows = torch.arange(k.shape[0], device=k.device)
        self.k[rows, :, start] = k[:, :, 0]
        self.v[rows, :, start] = v[:, :, 0]
        out, positions, first = torch.empty_like(q), start.tolist(), 0
        for end in range(1, len(positions) + 1):
            if end == len(positions) or positions[end] != positions[first]:
                length = positions[first] + 1
                out[first:end] = F.scaled_dot_product_attention(
                    q[first:end], self.k[first:end, :, :length], self.v[first:end, :, :length]
                )
                first = end
        return out

    def keep_rows(self, rows: Tensor, length: int) -> None:
        """Move rows `rows` (ascending) to the front, in order: the rows that stay when others leave. Only their first
        `length` positions (what they hold) are copied, and only for rows that actually move."""
        moved = (rows != torch.arange(rows.numel(), device=rows.device)).nonzero()
        if moved.numel():
            first = int(moved[0])
            self.k[first : rows.numel(), :, :length] = self.k[rows[first:], :, :length]
            self.v[first : rows.numel(), :, :length] = self.v[rows[first:], :, :length]


def shared_prefix_attention(q: Tensor, k: Tensor, v: Tensor, shared: int) -> Tensor:
    """One new position per row, q (B, H, 1, d), over keys/values (B, H, L, d) whose first `shared` positions are
    valid in row 0 only (the prompt every row shares). The prefix is read once for all rows."""
    q_heads = q.squeeze(2).transpose(0, 1)  # (H, B, d)
    prefix = torch.matmul(q_heads, k[0, :, :shared].transpose(1, 2))  # (H, B, P)
    own = torch.matmul(q, k[:, :, shared:].transpose(-1, -2)).squeeze(2).transpose(0, 1)  # (H, B, L - P)
    weights = torch.cat([prefix, own], dim=-1).mul_(q.shape[-1] ** -0.5).softmax(dim=-1)  # (H, B, L)
    out = torch.matmul(weights[..., :shared], v[0, :, :shared]).transpose(0, 1)  # (B, H, d)
    own_weights = weights[..., shared:].transpose(0, 1).unsqueeze(2)  # (B, H, 1, L - P)
    return out.unsqueeze(2) + torch.matmul(own_weights, v[:, :, shared:])  # (B, H, 1, d)


class SelfAttention(nn.Module):
    def __init__(self, dim: int, heads: int):
        super().__init__()
        self.heads = heads
        self.qkv = nn.Linear(dim, 3 * dim)
        self.proj = nn.Linear(dim, dim)
        self.cache: KVCache | None = None

    def forward(self, x: Tensor, start: int | None) -> Tensor:
        """`start` is the cache position of x's first row, or None for a plain causal pass without cache."""
        b, t, c = x.shape
        q, k, v = self.qkv(x).view(b, t, 3, self.heads, c // self.heads).permute(2, 0, 3, 1, 4)  # each (B, H, T, d)
        if isinstance(start, Tensor):  # one position per row over a RowKVCache (continuous batching)
            y = self.cache.attend(q, k, v, start)
            return self.proj(y.transpose(1, 2).reshape(b, t, c))
        shared = 0
        if start is not None and self.cache is not None:
            k, v = self.cache.update(start, k, v)
            shared = self.cache.shared if b > 1 else 0  # b > 1 with a shared prefix: one new position per row
        if shared:
            y = shared_prefix_attention(q, k, v, shared)
        elif t == 1:
            y = F.scaled_dot_product_attention(q, k, v)  # one new row sees everything before it
        elif k.shape[2] == t:
            y = F.scaled_dot_product_attention(q, k, v, is_causal=True)
        else:  # a chunk appended after cached rows: row i sees cache + chunk[: i + 1]
            mask = torch.ones(t, k.shape[2], dtype=torch.bool, device=x.device).tril(k.shape[2] - t)
            y = F.scaled_dot_product_attention(q, k, v, attn_mask=mask)
        return self.proj(y.transpose(1, 2).reshape(b, t, c))


_TWO_SQRT_2_OVER_PI = 2 * math.sqrt(2 / math.pi)


def gelu_new(x: Tensor) -> Tensor:
    """GPT-2's tanh-approximate GELU, 0.5 x (1 + tanh(z)) with z = sqrt(2/pi) (x + 0.044715 x^3).

    On CPU in float32 it is computed as the same function x * sigmoid(2z): a CPU tanh costs about three sigmoids,
    and this is ~3% of a 16-candidate decode step. Elsewhere (one fused kernel on GPUs; bf16/fp16 rounding; and in
    training, where the in-place form would break autograd) PyTorch's own op is used.
    """
    if x.device.type != "cpu" or x.dtype != torch.float32 or (x.requires_grad and torch.is_grad_enabled()):
        return F.gelu(x, approximate="tanh")
    z = x * x
    z.mul_(0.044715 * _TWO_SQRT_2_OVER_PI).add_(_TWO_SQRT_2_OVER_PI).mul_(x)
    return z.sigmoid_().mul_(x)


class MLP(nn.Module):
    def __init__(self, dim: int):
        super().__init__()
        self.fc = nn.Linear(dim, 4 * dim)
        self.proj = nn.Linear(4 * dim, dim)

    def forward(self, x: Tensor) -> Tensor:
        return self.proj(gelu_new(self.fc(x)))


def train_dropout(x: Tensor, p: float, training: bool) -> Tensor:
    """Dropout in training mode only; inference never pays for the call."""
    return F.dropout(x, p, training=True) if training and p > 0 else x


class Block(nn.Module):
    def __init__(self, config: AutoregressiveConfig):
        super().__init__()
        self.dropout = config.dropout
        self.ln_1 = nn.LayerNorm(config.model_dim, eps=config.layer_norm_eps)
        self.attn = SelfAttention(config.model_dim, config.heads)
        self.ln_2 = nn.LayerNorm(config.model_dim, eps=config.layer_norm_eps)
        self.mlp = MLP(config.model_dim)

    def forward(self, x: Tensor, start: int | None) -> Tensor:
        x = x + train_dropout(self.attn(self.ln_1(x), start), self.dropout, self.training)
        return x + train_dropout(self.mlp(self.ln_2(x)), self.dropout, self.training)


class AutoregressiveModel(nn.Module):
    """Tortoise's speech-token decoder. Sequence layout: [conditioning latent, text (start..stop), mel codes].

    The original's text head (a training-only next-text-token predictor) is not kept: inference never uses it.
    """

    def __init__(self, config: AutoregressiveConfig):
        super().__init__()
        self.config = config
        dim = config.model_dim
        self.conditioning_encoder = ConditioningEncoder(
            config.mel_channels, dim, config.heads, config.conditioning_attn_blocks
        )
        self.text_embedding = nn.Embedding(config.text_vocab, dim)
        self.text_pos = nn.Embedding(config.text_positions, dim)
        self.mel_embedding = nn.Embedding(config.number_mel_codes, dim)
        self.mel_pos = nn.Embedding(config.mel_positions, dim)
        self.blocks = nn.ModuleList(Block(config) for _ in range(config.layers))
        self.ln_f = nn.LayerNorm(dim, eps=config.layer_norm_eps)
        self.final_norm = nn.LayerNorm(dim, eps=config.layer_norm_eps)
        self.mel_head = nn.Linear(dim, config.number_mel_codes)

    @property
    def device(self) -> torch.device:
        return self.mel_embedding.weight.device

    @property
    def dtype(self) -> torch.dtype:
        """The compute dtype (embeddings are never packed or quantised, so they tell it)."""
        return self.mel_embedding.weight.dtype

    # conditioning -----------------------------------------------------------------------------------------------
    def get_conditioning(self, mels: Tensor) -> Tensor:
        """Conditioning mels (B, clips, 80, T) or (clips, 80, T) -> latent (B, C) averaged over clips."""
        if mels.dim() == 3:
            mels = mels.unsqueeze(1)
        b, n, m, t = mels.shape
        latents = self.conditioning_encoder(mels.reshape(b * n, m, t))  # (B*clips, C)
        return latents.view(b, n, -1).mean(dim=1)

    # embeddings -------------------------------------------------------------------------------------------------
    def embed_prompt(self, cond_latent: Tensor, text_ids: Tensor) -> Tensor:
        """(B, C) latent and (B, T) text ids already wrapped in start/stop -> prompt (B, 1 + T, C)."""
        positions = torch.arange(text_ids.shape[1], device=text_ids.device)
        text = self.text_embedding(text_ids) + self.text_pos(positions)
        return torch.cat([cond_latent.unsqueeze(1).to(text.dtype), text], dim=1)

    def embed_mel(self, codes: Tensor, positions: Tensor) -> Tensor:
        """(B, M) codes at mel positions (M,) -> (B, M, C)."""
        return self.mel_embedding(codes) + self.mel_pos(positions)

    def wrap_text(self, text_ids: Tensor) -> Tensor:
        """(B, T) ids -> (B, T + 2) with the start and stop text tokens the decoder was trained with."""
        text_ids = F.pad(text_ids, (1, 0), value=TOKENS.text_start)
        return F.pad(text_ids, (0, 1), value=TOKENS.text_stop)

    # transformer ------------------------------------------------------------------------------------------------
    def transformer(self, x: Tensor, start: int | None = None) -> Tensor:
        """(B, T, C) embeddings -> (B, T, C) hidden states after GPT-2's ln_f."""
        x = train_dropout(x, self.config.dropout, self.training)
        for block in self.blocks:
            x = block(x, start)
        return self.ln_f(x)

    def mel_logits(self, hidden: Tensor) -> Tensor:
        return self.mel_head(self.final_norm(hidden))

    # static KV cache --------------------------------------------------------------------------------------------
    def setup_cache(self, batch: int, max_len: int) -> None:
        """Allocate (or reuse) cache buffers for `batch` rows and sequences up to `max_len` positions."""
        first = self.blocks[0].attn.cache
        if isinstance(first, KVCache) and first.k.shape[0] == batch and first.k.shape[2] >= max_len:
            return
        for block in self.blocks:
            block.attn.cache = KVCache(batch, self.config.heads, max_len, self.config.head_dim, self.dtype, self.device)

    def release_cache(self) -> None:
        for block in self.blocks:
            block.attn.cache = None

    def cache_rows(self, rows: Tensor, start: int, end: int) -> list[tuple[Tensor, Tensor]]:
        """Static cache: per layer, copies of rows `rows`' keys and values at positions [start, end) (after the
        shared prompt), to continue those rows later in another batch (`load_cache_rows`)."""
        return [block.attn.cache.take_rows(rows, start, end) for block in self.blocks]

    def load_cache_rows(self, start: int, saved: list[tuple[Tensor, Tensor]]) -> None:
        """Static cache, prompt already prefilled: write `cache_rows`' copies (R rows) into rows [0, R) from `start`."""
        for block, (k, v) in zip(self.blocks, saved):
            block.attn.cache.put_rows(start, k, v)

    def setup_row_cache(self, rows: int, max_len: int) -> None:
        """Per-row cache buffers (`RowKVCache`) for at least `rows` rows and `max_len` positions; growing one keeps
        what its rows hold."""
        first = self.blocks[0].attn.cache
        if isinstance(first, RowKVCache) and first.k.shape[0] >= rows and first.k.shape[2] >= max_len:
            return
        for block in self.blocks:
            old = block.attn.cache
            cache = RowKVCache(rows, self.config.heads, max_len, self.config.head_dim, self.dtype, self.device)
            if isinstance(old, RowKVCache):
                kept, length = min(rows, old.k.shape[0]), min(max_len, old.k.shape[2])
                cache.k[:kept, :, :length] = old.k[:kept, :, :length]
                cache.v[:kept, :, :length] = old.v[:kept, :, :length]
            block.attn.cache = cache

    @torch.no_grad()
    def prefill_rows(self, x: Tensor, rows: slice) -> Tensor:
        """Run one prompt (1, P, C) into every row of `rows` of the per-row cache, from position 0; return its last
        position's mel logits (1, V)."""
        for block in self.blocks:
            block.attn.cache.target = rows
        try:
            return self.prefill(x, torch.zeros(1, dtype=torch.long, device=x.device))
        finally:
            for block in self.blocks:
                block.attn.cache.target = None

    def keep_cache_rows(self, rows: Tensor, length: int) -> None:
        """Per-row cache: move rows `rows` (ascending), holding at most `length` positions, to the front, in order
        (the others left the batch)."""
        for block in self.blocks:
            block.attn.cache.keep_rows(rows, length)

    @torch.no_grad()
    def prefill(self, x: Tensor, start: int = 0) -> Tensor:
        """Run embeddings (B, T, C) into the cache from `start`; return the last row's mel logits (B, V)."""
        hidden = self.transformer(x, start)
        return self.mel_logits(hidden[:, -1])

    @torch.no_grad()
    def decode_step(self, codes: Tensor, mel_position: int | Tensor, cache_position: int | Tensor) -> Tensor:
        """One new code per row (B,) at `mel_position`, stored at `cache_position` -> mel logits (B, V).

        With a per-row cache (`setup_row_cache`) both positions are (B,) tensors, one per row."""
        if isinstance(mel_position, Tensor):
            positions = mel_position.reshape(-1, 1)  # (B, 1): each row at its own mel position
        else:
            positions = torch.tensor([mel_position], device=codes.device)
        x = self.embed_mel(codes.unsqueeze(1), positions)  # (B, 1, C)
        return self.mel_logits(self.transformer(x, cache_position)[:, 0])

    def compile_decode_step(self) -> None:
        """Compile the per-token step, the hot loop (prefill runs once per batch and stays eager)."""
        self.decode_step = torch.compile(self.decode_step, dynamic=True)

    # teacher forcing --------------------------------------------------------------------------------------------
    def teacher_forced(self, cond_latent: Tensor, text_ids: Tensor, codes: Tensor) -> tuple[Tensor, Tensor]:
        """The original's training-style pass: returns final-normed hidden states for text and mel parts.

        `text_ids` (B, T) and `codes` (B, M) are raw; start/stop tokens are added here. Returns
        (text_hidden (B, T + 2, C), mel_hidden (B, M + 2, C)), with the original's alignment: both are read
        from the sequence shifted by the conditioning slot, so row j predicts input j + 1.
        """
        text = self.wrap_text(text_ids)
        tokens = self.config.tokens
        codes = F.pad(F.pad(codes, (0, 1), value=tokens.mel_stop), (1, 0), value=tokens.mel_start)
        prompt = self.embed_prompt(cond_latent, text)
        mel = self.embed_mel(codes, torch.arange(codes.shape[1], device=codes.device))
        hidden = self.final_norm(self.transformer(torch.cat([prompt, mel], dim=1))[:, 1:])  # (B, T+M+4, C)
        return hidden[:, : text.shape[1]], hidden[:, -codes.shape[1] :]

    def speech_latents(self, cond_latent: Tensor, text_ids: Tensor, codes: Tensor) -> Tensor:
        """Latents the diffusion decoder is conditioned on: (B, M, C) for codes (B, M): the hidden states
        that predict each code (the start token's and every code's but the last), as the original slices them."""
        return self.teacher_forced(cond_latent, text_ids, codes)[1][:, :-2]

