"""The diffusion decoder: autoregressive latents (or mel codes) + a voice's conditioning -> mel spectrogram.

Inference-only re-implementation of Tortoise's `DiffusionTts` (no dropout, layer drop or training-time
unconditioning). Work is split the way a sampler needs it:

- `get_conditioning(cond_mels)`: once per voice -> conditioning latent (B, 2C).
- `timestep_independent(latents_or_codes, cond_latent, frames)`: once per generation -> aligned embeddings (B, C, T);
  `unconditioned_embeddings(batch, frames)` is the conditioning-free counterpart (classifier-free guidance).
- `forward(x, timesteps, embeddings)`: once per denoising step -> (B, 2 * mel bands, T) = [eps; variance].
  Rows are independent, so conditioned and unconditioned rows can share one batch.

A decoder of our own may predict v = sqrt(abar) eps - sqrt(1 - abar) x0 instead (``prediction="v"``); `forward`
turns it into eps = sqrt(1 - abar) x + sqrt(abar) v, so samplers see the same output either way. Why: at high noise
an epsilon network must reproduce its input almost exactly (x0 is ~1/sqrt(abar) times its error), which a small,
briefly trained network does not; a v network gets that identity for free.

Every attention block is the original's `AttentionBlock` with T5-style relative position bias, run through
`scaled_dot_product_attention`; GroupNorm always computes in float32 like the original's GroupNorm32.
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from ..config import DiffusionConfig
from ..pipeline.samplers import linear_betas
from .layers import norm

# Block counts the original hard-codes (not constructor arguments).
CODE_CONVERTER_BLOCKS = 3
LATENT_CONDITIONER_BLOCKS = 4
CONTEXTUAL_EMBEDDER_BLOCKS = 5
TIMESTEP_INTEGRATOR_LAYERS = 3
TAIL_RESBLOCKS = 3


def output_frames(num_codes: int) -> int:
    """Mel frames (24 kHz, hop 256) the decoder produces for `num_codes` speech tokens (1024 samples at 22.05 kHz)."""
    return num_codes * 4 * 24000 // 22050


def timestep_embedding(timesteps: Tensor, dim: int, max_period: float = 10000.0) -> Tensor:
    """Sinusoidal embedding of (B,) timesteps -> (B, dim) float32, laid out [cos | sin] like the original."""
    half = dim // 2
    freqs = torch.exp(-math.log(max_period) * torch.arange(half, dtype=torch.float32) / half).to(timesteps.device)
    args = timesteps[:, None].float() * freqs[None]  # (B, half)
    emb = torch.cat([torch.cos(args), torch.sin(args)], dim=-1)
    if dim % 2:
        emb = F.pad(emb, (0, 1))
    return emb


def relative_position_buckets(offsets: Tensor, num_buckets: int, max_distance: int) -> Tensor:
    """T5's bidirectional relative position buckets of `offsets` = query position - key position (any shape).

    Half the buckets are for keys after the query; in each half, distances below a quarter of the buckets get
    their own bucket, longer ones share log-spaced buckets up to `max_distance`.
    """
    half = num_buckets // 2
    bucket = (offsets < 0).long() * half  # keys after the query use the upper half
    n = offsets.abs()
    exact = half // 2
    # float32 arithmetic as in the original, so the boundaries between log buckets round the same way
    large = exact + (torch.log(n.float().clamp(min=1) / exact) / math.log(max_distance / exact) * (half - exact)).long()
    large = large.clamp(max=half - 1)
    return bucket + torch.where(n < exact, n, large)


class AttentionBlock(nn.Module):
    """Pre-norm self-attention over time on (B, C, T), residual, with a learned relative position bias per head."""

    def __init__(self, channels: int, heads: int, buckets: int, max_distance: int):
        super().__init__()
        self.heads = heads
        self.max_distance = max_distance
        self.norm = norm(channels)
        # the original's 1x1 convs, as channels-last linears: q, k, v then come out with unit stride in the head
        # dim (scaled_dot_product_attention's fused kernel needs it) and the CPU fast path can pack the weights
        self.qkv = nn.Linear(channels, 3 * channels)  # rows [q all heads; k; v] (the loader de-interleaves)
        self.proj_out = nn.Linear(channels, channels)
        self.rel_bias = nn.Embedding(buckets, heads)

    def position_bias(self, length: int) -> Tensor:
        """(H, T, T) additive attention bias. The original adds bias * sqrt(head_dim) to q.k / sqrt(head_dim).

        The bias depends only on query - key, so it is looked up for the 2T - 1 offsets and laid out as a
        Toeplitz matrix (no T x T bucket computation)."""
        offsets = torch.arange(length - 1, -length, -1, device=self.rel_bias.weight.device)  # query - key, m = 0..2T-2
        buckets = relative_position_buckets(offsets, self.rel_bias.num_embeddings, self.max_distance)  # (2T-1,)
        head_dim = self.proj_out.in_features // self.heads
        table = self.rel_bias(buckets).t() * head_dim**0.5  # (H, 2T-1); column m holds key - query = m - (T-1)
        return table.unfold(1, length, 1).flip(1)  # (H, T, T): [h, i, j] = table[h, T-1-i+j]

    def forward(self, x: Tensor, mask: Tensor | None = None) -> Tensor:
        """x (B, C, T); `mask` (B, 1, T) marks each row's real frames: padding is neither normalised over nor
        attended to."""
        b, c, t = x.shape
        h = self.norm(x, mask).transpose(1, 2)  # (B, T, C)
        qkv = self.qkv(h)  # (B, T, 3C)
        q, k, v = qkv.view(b, t, 3, self.heads, c // self.heads).permute(2, 0, 3, 1, 4)  # each (B, H, T, d)
        bias = self.position_bias(t).to(q.dtype).expand(b, -1, -1, -1)  # (B, H, T, T)
        if mask is not None:  # keys past a row's end get no weight
            bias = bias.masked_fill(mask[:, None] == 0, float("-inf"))
        h = F.scaled_dot_product_attention(q, k, v, attn_mask=bias)  # (B, H, T, d)
        h = h.transpose(1, 2).reshape(b, t, c)
        return x + self.proj_out(h).transpose(1, 2)


class ResBlock(nn.Module):
    """Residual conv block whose second norm is scaled and shifted by the timestep embedding."""

    def __init__(self, channels: int):
        super().__init__()
        self.in_norm = norm(channels)
        self.in_conv = nn.Conv1d(channels, channels, 1)
        self.emb_proj = nn.Linear(channels, 2 * channels)
        self.out_norm = norm(channels)
        self.out_conv = nn.Conv1d(channels, channels, 3, padding=1)

    def forward(self, x: Tensor, time_emb: Tensor, mask: Tensor | None = None) -> Tensor:
        h = self.in_conv(F.silu(self.in_norm(x, mask)))
        scale, shift = self.emb_proj(F.silu(time_emb)).to(h.dtype).unsqueeze(-1).chunk(2, dim=1)  # each (B, C, 1)
        h = F.silu(self.out_norm(h, mask) * (1 + scale) + shift)
        return x + self.out_conv(h if mask is None else h * mask)  # the conv sees zeros past the end, as alone


class DiffusionLayer(nn.Module):
    def __init__(self, config: DiffusionConfig):
        super().__init__()
        self.res = ResBlock(config.model_channels)
        self.attn = _attention(config, config.model_channels)

    def forward(self, x: Tensor, time_emb: Tensor, mask: Tensor | None = None) -> Tensor:
        return self.attn(self.res(x, time_emb, mask), mask)


def _attention(config: DiffusionConfig, channels: int) -> AttentionBlock:
    return AttentionBlock(channels, config.num_heads, config.rel_pos_buckets, config.rel_pos_max_distance)


class DiffusionModel(nn.Module):
    """Tortoise's diffusion decoder (`DiffusionTts`), inference only.

    A sampler computes once: ``cond = get_conditioning(mels)`` per voice and
    ``emb = timestep_independent(latents, cond, frames)`` per generation (plus
    ``unconditioned_embeddings(batch, frames)`` for guidance); then per step ``forward(x, t, emb)``.
    """

    def __init__(self, config: DiffusionConfig):
        super().__init__()
        self.config = config
        c = config.model_channels
        # conditioning encoder: reference mels -> (B, 2C, T/4) -> mean over time
        self.cond_conv1 = nn.Conv1d(config.in_channels, c, 3, padding=1, stride=2)
        self.cond_conv2 = nn.Conv1d(c, 2 * c, 3, padding=1, stride=2)
        self.cond_blocks = nn.Sequential(*(_attention(config, 2 * c) for _ in range(CONTEXTUAL_EMBEDDER_BLOCKS)))
        # aligned input: autoregressive latents or mel codes -> (B, C, M)
        self.latent_conv = nn.Conv1d(config.in_latent_channels, c, 3, padding=1)
        self.latent_blocks = nn.Sequential(*(_attention(config, c) for _ in range(LATENT_CONDITIONER_BLOCKS)))
        self.code_embedding = nn.Embedding(config.in_tokens, c)
        self.code_blocks = nn.Sequential(*(_attention(config, c) for _ in range(CODE_CONVERTER_BLOCKS)))
        self.code_norm = norm(c)
        # stands in for the aligned embeddings in the conditioning-free (guidance) pass
        self.unconditioned_embedding = nn.Parameter(torch.zeros(1, c, 1))
        self.mel_head = nn.Conv1d(c, config.in_channels, 3, padding=1)  # the training-time aux mel prediction
        # denoiser
        self.time_in = nn.Linear(c, c)
        self.time_out = nn.Linear(c, c)
        self.integrator = nn.ModuleList(DiffusionLayer(config) for _ in range(TIMESTEP_INTEGRATOR_LAYERS))
        self.input_conv = nn.Conv1d(config.in_channels, c, 3, padding=1)
        self.merge_conv = nn.Conv1d(2 * c, c, 1)
        self.layers = nn.ModuleList(DiffusionLayer(config) for _ in range(config.num_layers))
        self.tail = nn.ModuleList(ResBlock(c) for _ in range(TAIL_RESBLOCKS))
        self.out_norm = norm(c)
        self.out_conv = nn.Conv1d(c, config.out_channels, 3, padding=1)
        if config.prediction == "v":  # abar of every trained timestep; derived, so not part of the weights
            alphas_cumprod = torch.from_numpy((1.0 - linear_betas()).cumprod()).float()
            self.register_buffer("alphas_cumprod", alphas_cumprod, persistent=False)

    @property
    def device(self) -> torch.device:
        return self.input_conv.weight.device

    @property
    def dtype(self) -> torch.dtype:
        return self.input_conv.weight.dtype

    # once per voice ---------------------------------------------------------------------------------------------
    def get_conditioning(self, cond_mels: Tensor) -> Tensor:
        """Diffusion mels (B, clips, 100, T) -> conditioning latent (B, 2C): every clip encoded, the clips'
        frames concatenated, then one mean over time. A 3-D input is (B, 100, T), one clip per row,
        as in the original."""
        if cond_mels.dim() == 3:
            cond_mels = cond_mels.unsqueeze(1)
        b, n, m, t = cond_mels.shape
        h = self.cond_conv2(self.cond_conv1(cond_mels.reshape(b * n, m, t).to(self.dtype)))  # (B*clips, 2C, T/4)
        h = self.cond_blocks(h)
        h = h.view(b, n, h.shape[1], h.shape[2]).transpose(1, 2).reshape(b, h.shape[1], -1)  # (B, 2C, clips*T/4)
        return h.mean(dim=-1)

    # once per generation ----------------------------------------------------------------------------------------
    def timestep_independent(self, aligned: Tensor, conditioning_latent: Tensor, expected_seq_len: int) -> Tensor:
        """Aligned input -> embeddings (B, C, expected_seq_len) reused at every denoising step.

        `aligned` is float latents (B, M, in_latent_channels) from the autoregressive model, or integer mel codes
        (B, M). `conditioning_latent` (B or 1, 2C) from `get_conditioning` scales and shifts the normalised
        embeddings; they are then stretched to the output length by nearest-neighbour interpolation.
        """
        if aligned.is_floating_point():
            h = self.latent_blocks(self.latent_conv(aligned.transpose(1, 2).to(self.dtype)))  # (B, C, M)
        else:
            h = self.code_blocks(self.code_embedding(aligned).transpose(1, 2))  # (B, C, M)
        scale, shift = conditioning_latent.to(h.dtype).unsqueeze(-1).chunk(2, dim=1)  # each (B, C, 1)
        h = self.code_norm(h) * (1 + scale) + shift
        return F.interpolate(h, size=expected_seq_len, mode="nearest")  # (B, C, T)

    def unconditioned_embeddings(self, batch: int, expected_seq_len: int) -> Tensor:
        """The conditioning-free embeddings (B, C, T): the learned `unconditioned_embedding` at every frame
        (what the original uses with ``conditioning_free=True``; independent of latents and voice)."""
        return self.unconditioned_embedding.expand(batch, -1, expected_seq_len)

    def with_unconditioned(self, embeddings: Tensor) -> Tensor:
        """Conditioned embeddings (B, C, T) -> (2B, C, T): those rows, then as many conditioning-free rows.
        One `forward` on ``(cat([x, x]), cat([t, t]), this)`` gives both halves of a classifier-free-guidance
        step (the row order of `diffusion_sampler.stacked_denoiser`)."""
        b, _, t = embeddings.shape
        return torch.cat([embeddings, self.unconditioned_embeddings(b, t).to(embeddings.dtype)])

    def predict_mel(self, embeddings: Tensor) -> Tensor:
        """The original's ``return_code_pred`` output: a mel guess (B, 100, T) straight from the aligned embeddings
        (a training-time auxiliary head; not used by sampling)."""
        return self.mel_head(embeddings)

    # once per step ----------------------------------------------------------------------------------------------
    def compile_forward(self) -> None:
        """Compile the denoiser, the part every diffusion step runs."""
        self.forward = torch.compile(self.forward, dynamic=True)

    def forward(self, x: Tensor, timesteps: Tensor, embeddings: Tensor, mask: Tensor | None = None) -> Tensor:
        """Noisy mel x (B, 100, T) at original timesteps (B,) (0..3999, i.e. `timestep_map[t]`) given per-row
        embeddings (B or 1, C, T) from `timestep_independent` / `unconditioned_embeddings` -> (B, 200, T):
        channels [:100] are eps (made from the network's v for ``prediction="v"``), [100:] the learned variance
        interpolation.

        `mask` (B, 1, T), 1 on each row's real frames: rows of different lengths padded to one T; each row's real
        frames then come out as that row alone would give them (to float rounding), its padding is garbage."""
        x = x.to(self.dtype)
        if embeddings.shape[0] != x.shape[0]:
            embeddings = embeddings.expand(x.shape[0], -1, -1)
        if mask is not None:
            mask = mask.to(self.dtype)
            x = x * mask
        time_emb = self.time_emb(timesteps)  # (B, C)
        code = embeddings.to(self.dtype)
        for layer in self.integrator:
            code = layer(code, time_emb, mask)
        h = self.merge_conv(torch.cat([self.input_conv(x), code], dim=1))  # (B, 2C, T) -> (B, C, T)
        for layer in self.layers:
            h = layer(h, time_emb, mask)
        for block in self.tail:
            h = block(h, time_emb, mask)
        h = F.silu(self.out_norm(h, mask))
        out = self.out_conv(h if mask is None else h * mask)
        if self.config.prediction == "v":
            bands = x.shape[1]
            abar = self.alphas_cumprod[timesteps].float()[:, None, None]  # (B, 1, 1)
            eps = (1 - abar).sqrt() * x.float() + abar.sqrt() * out[:, :bands].float()
            out = torch.cat([eps.to(out.dtype), out[:, bands:]], dim=1)
        return out

    def time_emb(self, timesteps: Tensor) -> Tensor:
        emb = timestep_embedding(timesteps, self.config.model_channels).to(self.dtype)
        return self.time_out(F.silu(self.time_in(emb)))
