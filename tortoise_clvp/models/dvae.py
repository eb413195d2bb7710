"""The discrete VAE: conditioning mels (B, 80, T) <-> speech codes (B, T / 4).

Tortoise's speech tokens come from a discrete VAE like this one: a convolutional encoder that halves the frame rate
`downsamples` times, a nearest-neighbour codebook, and a convolutional decoder back to the mel. The decoder and CLVP
are trained on its codes; its own decoder turns codes back into a mel for previews (Griffin-Lim) before the
diffusion decoder exists.

Latents are centred and scaled channel by channel (a batch norm without learned scale, its running statistics
used at inference), then l2-normalised; codebook vectors are unit vectors too, so the nearest code is the one of
highest cosine similarity. Without the centring, a fresh encoder's outputs all point the same way and a single code
takes every frame; with a free scale, a few codes near the origin capture most of them. The codebook is a buffer, not a parameter: training keeps it as an exponential moving average of the latents
assigned to each code, and restarts codes nobody uses (`train.codes`). The forward pass is pure.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from ..config import DvaeConfig

DOWNSAMPLE_KERNEL = 4  # a stride-2 convolution with kernel 4 and padding 1 maps T frames to T / 2 exactly


class ResBlock(nn.Module):
    """x + conv1x1(relu(conv3(relu(x)))) on (B, C, T)."""

    def __init__(self, channels: int):
        super().__init__()
        self.conv = nn.Conv1d(channels, channels, 3, padding=1)
        self.mix = nn.Conv1d(channels, channels, 1)

    def forward(self, x: Tensor) -> Tensor:
        return x + self.mix(F.relu(self.conv(F.relu(x))))


def _res_stack(channels: int, blocks: int) -> list[nn.Module]:
    return [ResBlock(channels) for _ in range(blocks)]


class DiscreteVae(nn.Module):
    """Mel (B, mel_channels, T) with T a multiple of `config.compression` <-> codes (B, T / compression)."""

    def __init__(self, config: DvaeConfig):
        super().__init__()
        self.config = config
        width = config.channels
        # Residual blocks run only below the mel frame rate, where they cost a half or a quarter as much.
        encoder: list[nn.Module] = [nn.Conv1d(config.mel_channels, width, 3, padding=1)]
        for _ in range(config.downsamples):
            encoder += [nn.ReLU(), nn.Conv1d(width, width, DOWNSAMPLE_KERNEL, 2, padding=1), *_res_stack(width, config.res_blocks)]
        encoder += [nn.ReLU(), nn.Conv1d(width, config.code_dim, 1), nn.BatchNorm1d(config.code_dim, affine=False)]
        self.encoder = nn.Sequential(*encoder)
        decoder: list[nn.Module] = [nn.Conv1d(config.code_dim, width, 3, padding=1)]
        for _ in range(config.downsamples):
            decoder += [*_res_stack(width, config.res_blocks), nn.ReLU(), nn.ConvTranspose1d(width, width, DOWNSAMPLE_KERNEL, 2, padding=1)]
        decoder += [nn.ReLU(), nn.Conv1d(width, config.mel_channels, 3, padding=1)]
        self.decoder = nn.Sequential(*decoder)
        self.register_buffer("codebook", F.normalize(torch.randn(config.codebook_size, config.code_dim), dim=1))  # (K, D)

    def _check_mel(self, mel: Tensor) -> None:
        if mel.dim() != 3 or mel.shape[1] != self.config.mel_channels:
            raise ValueError(f"expected a mel (B, {self.config.mel_channels}, T), got shape {tuple(mel.shape)}")
        if mel.shape[2] == 0 or mel.shape[2] % self.config.compression:
            raise ValueError(
                f"the mel has {mel.shape[2]} frames; pad it to a positive multiple of {self.config.compression} "
                "(one code per that many frames) first"
            )

    def encode_latents(self, mel: Tensor) -> Tensor:
        """(B, mel_channels, T) -> unit-length latents (B, code_dim, T / compression)."""
        self._check_mel(mel)
        return F.normalize(self.encoder(mel), dim=1)

    def quantize(self, latents: Tensor) -> Tensor:
        """(B, code_dim, T') unit latents -> the nearest code of every latent (B, T') (highest cosine similarity)."""
        flat = latents.transpose(1, 2).reshape(-1, latents.shape[1])  # (B * T', D)
        return (flat @ self.codebook.T).argmax(dim=1).view(latents.shape[0], latents.shape[2])  # (B * T', K) -> codes

    def lookup(self, codes: Tensor) -> Tensor:
        """(B, T') codes -> their codebook vectors (B, code_dim, T')."""
        if codes.numel() and (int(codes.min()) < 0 or int(codes.max()) >= self.config.codebook_size):
            raise ValueError(f"codes must lie in [0, {self.config.codebook_size}), got {int(codes.min())}..{int(codes.max())}")
        return F.embedding(codes, self.codebook).transpose(1, 2)

    def encode(self, mel: Tensor) -> Tensor:
        """(B, mel_channels, T) -> codes (B, T / compression)."""
        return self.quantize(self.encode_latents(mel))

    def decode(self, codes: Tensor) -> Tensor:
        """(B, T') codes -> reconstructed mel (B, mel_channels, T' * compression)."""
        return self.decoder(self.lookup(codes))

    def forward(self, mel: Tensor) -> tuple[Tensor, Tensor, Tensor]:
        """Training pass: (reconstruction (B, mel_channels, T), latents (B, D, T'), codes (B, T')).

        Gradients reach the encoder straight through the quantiser: the decoder sees the codebook vectors, the
        encoder receives their gradient as if it had produced them.
        """
        latents = self.encode_latents(mel)
        codes = self.quantize(latents.detach())
        quantized = self.lookup(codes)
        straight_through = latents + (quantized - latents).detach()
        return self.decoder(straight_through), latents, codes
