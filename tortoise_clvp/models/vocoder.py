"""UnivNet: the vocoder that turns the diffusion decoder's 100-band log-mel into 24 kHz audio.

Tortoise's ``UnivNetGenerator`` (from mindslab-ai/univnet), inference only, weight norm already folded into plain
convolution weights by the loader. Layout, for a mel of T frames and noise z of the same length:

    x = noise_conv(z)                                    # (B, C, T), reflect padding
    for stride in strides:                               # 8, 8, 4: T -> 8T -> 64T -> 256T samples
        x = upsample(leaky_relu(x))                      # transposed conv, (B, C, T * hop_so_far)
        kernels, biases = kernel_predictor(mel)          # one kernel set per mel frame and layer
        for dilation in dilations:                       # 1, 3, 9, 27
            h = leaky_relu(conv_dilated(leaky_relu(x)))
            h = location_variable_conv(h, kernels, biases)   # each frame's samples use that frame's kernel
            x = x + sigmoid(h[:, :C]) * tanh(h[:, C:])   # gated residual
    audio = tanh(output_conv(leaky_relu(x)))             # (B, 1, T * 256), reflect padding

``inference`` adds what Tortoise's ``UnivNetGenerator.inference`` does around it: pad the mel
with 10 near-silent frames, draw the noise, and trim those frames' audio off again.

Speed notes (CPU, same numbers as the original to float tolerance):
- the location-variable convolution is one batched matmul per layer (each frame's unfolded window of samples
  against that frame's kernel) instead of a 6-D einsum;
- the kernel predictor's two output convs run as matmuls over unfolded frames, so the kernels come out frame-major,
  and ``kernel_conv``'s rows are stored in (layer, out, in, tap) order (the loader permutes the original's
  (layer, in, out, tap) once), so no per-call rearranging copy of the large kernel tensor is needed;
- weight norm is folded at load, not recomputed on every call.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from ..config import VocoderConfig

# the original's inference padding: frames of this log-mel value are appended so the last real frame has no
# edge artefact
INFERENCE_PAD_FRAMES = 10
INFERENCE_PAD_VALUE = -11.5129  # the original's literal, ~ log(1e-5) = TACOTRON_MEL_MIN (-11.512925)
AUDIO_LIMIT = 1.0  # the waveform is clamped to [-AUDIO_LIMIT, AUDIO_LIMIT]

NOISE_CONV_SIZE = 7  # noise_conv and output_conv kernels (reflect padding)
OUTPUT_CONV_SIZE = 7
KPNET_INPUT_CONV_SIZE = 5  # first conv of the kernel predictor
KPNET_RESIDUAL_BLOCKS = 3


def _same_padding(kernel_size: int, dilation: int = 1) -> int:
    return dilation * (kernel_size - 1) // 2


def conv1d_frame_major(x: torch.Tensor, conv: nn.Conv1d) -> torch.Tensor:
    """A stride-1 'same' `conv` on x (B, C_in, L) computed as one matmul over unfolded windows -> (B, L, C_out).

    Equal to ``conv(x).transpose(1, 2)`` but lands frame-major with no transposing copy of the (large) output.
    """
    batch, in_channels, frames = x.shape
    size, pad = conv.kernel_size[0], conv.padding[0]
    windows = F.pad(x, (pad, pad)).unfold(2, size, 1)  # (B, C_in, L, size), a view
    windows = windows.transpose(1, 2).reshape(batch, frames, in_channels * size)  # rows (C_in, tap), as the weight
    return F.linear(windows, conv.weight.view(conv.out_channels, in_channels * size), conv.bias)


class KernelPredictor(nn.Module):
    """Predicts, from the mel, one convolution kernel and bias per mel frame for every LVC layer of a block.

    ``kernel_conv``'s output channels are ordered (layer, out, in, tap), so each frame's kernel for a layer is a
    contiguous (2C, C * k) matrix. The original orders them (layer, in, out, tap); the loader permutes its rows.
    """

    def __init__(self, config: VocoderConfig) -> None:
        super().__init__()
        hidden, size = config.kpnet_hidden_channels, config.kpnet_conv_size
        self.layers = len(config.dilations)
        self.in_channels = config.channel_size
        self.out_channels = 2 * config.channel_size  # sigmoid half + tanh half of the gate
        self.kernel_size = config.lvc_kernel_size
        self.slope = config.leaky_relu_slope
        self.input_conv = nn.Conv1d(
            config.mel_channels, hidden, KPNET_INPUT_CONV_SIZE, padding=_same_padding(KPNET_INPUT_CONV_SIZE)
        )
        self.residual_convs = nn.ModuleList(
            nn.ModuleList(nn.Conv1d(hidden, hidden, size, padding=_same_padding(size)) for _ in range(2))
            for _ in range(KPNET_RESIDUAL_BLOCKS)
        )
        kernel_channels = self.layers * self.out_channels * self.in_channels * self.kernel_size
        self.kernel_conv = nn.Conv1d(hidden, kernel_channels, size, padding=_same_padding(size))
        self.bias_conv = nn.Conv1d(hidden, self.layers * self.out_channels, size, padding=_same_padding(size))

    def forward(self, mel: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """mel (B, mel_channels, L) -> kernels (B, L, layers, 2C, C * k), biases (B, L, layers, 2C), frame-major."""
        batch, _, frames = mel.shape
        h = F.leaky_relu(self.input_conv(mel), self.slope)  # (B, hidden, L)
        for first, second in self.residual_convs:
            h = h + F.leaky_relu(second(F.leaky_relu(first(h), self.slope)), self.slope)
        kernels = conv1d_frame_major(h, self.kernel_conv)  # (B, L, layers * 2C * C * k)
        biases = conv1d_frame_major(h, self.bias_conv)  # (B, L, layers * 2C)
        shape = (batch, frames, self.layers, self.out_channels)
        return kernels.view(*shape, self.in_channels * self.kernel_size), biases.view(shape)


def location_variable_conv(x: torch.Tensor, kernels: torch.Tensor, biases: torch.Tensor) -> torch.Tensor:
    """Convolve each frame's stretch of samples with that frame's own kernel ('same' padding, dilation 1).

    x (B, C_in, L * hop), kernels (B, L, C_out, C_in * k) with columns (C_in, tap), biases (B, L, C_out)
    -> (B, C_out, L * hop). One batched matmul: every frame's unfolded window against its kernel.
    """
    batch, in_channels, samples = x.shape
    frames, out_channels = kernels.shape[1], kernels.shape[2]
    kernel_size = kernels.shape[3] // in_channels
    hop = samples // frames
    pad = _same_padding(kernel_size)
    windows = F.pad(x, (pad, pad)).unfold(2, hop + 2 * pad, hop).unfold(3, kernel_size, 1)  # (B, C_in, L, hop, k)
    windows = windows.permute(0, 2, 1, 4, 3).reshape(batch * frames, in_channels * kernel_size, hop)
    out = torch.baddbmm(
        biases.reshape(batch * frames, out_channels, 1),
        kernels.reshape(batch * frames, out_channels, in_channels * kernel_size),  # a view, no copy
        windows,
    )  # (B * L, C_out, hop)
    return out.view(batch, frames, out_channels, hop).transpose(1, 2).reshape(batch, out_channels, samples)


class LvcBlock(nn.Module):
    """Upsample by `stride`, then one gated location-variable convolution layer per dilation."""

    def __init__(self, config: VocoderConfig, stride: int) -> None:
        super().__init__()
        channels = config.channel_size
        self.slope = config.leaky_relu_slope
        # kernel 2 * stride; this padding makes the output exactly stride times longer for odd strides too
        self.upsample = nn.ConvTranspose1d(
            channels, channels, 2 * stride, stride=stride, padding=stride // 2 + stride % 2, output_padding=stride % 2
        )
        self.kernel_predictor = KernelPredictor(config)
        size = config.lvc_kernel_size
        self.convs = nn.ModuleList(
            nn.Conv1d(channels, channels, size, padding=_same_padding(size, d), dilation=d) for d in config.dilations
        )

    def forward(self, x: torch.Tensor, mel: torch.Tensor) -> torch.Tensor:
        """x (B, C, L * hop_in), mel (B, mel_channels, L) -> (B, C, L * hop_in * stride)."""
        channels = x.shape[1]
        x = self.upsample(F.leaky_relu(x, self.slope))
        kernels, biases = self.kernel_predictor(mel)  # (B, L, layers, 2C, C * k), (B, L, layers, 2C)
        for layer, conv in enumerate(self.convs):
            h = F.leaky_relu(conv(F.leaky_relu(x, self.slope)), self.slope)
            h = location_variable_conv(h, kernels[:, :, layer], biases[:, :, layer])  # (B, 2C, samples)
            x = x + torch.sigmoid(h[:, :channels]) * torch.tanh(h[:, channels:])
        return x


class UnivNetVocoder(nn.Module):
    """mel (B, 100, T) + noise (B, 64, T) -> waveform (B, 1, T * 256) at 24 kHz."""

    def __init__(self, config: VocoderConfig = VocoderConfig.RELEASED) -> None:
        super().__init__()
        self.config = config
        channels = config.channel_size
        self.noise_conv = nn.Conv1d(
            config.noise_dim, channels, NOISE_CONV_SIZE, padding=_same_padding(NOISE_CONV_SIZE), padding_mode="reflect"
        )
        self.blocks = nn.ModuleList(LvcBlock(config, stride) for stride in config.strides)
        self.output_conv = nn.Conv1d(
            channels, 1, OUTPUT_CONV_SIZE, padding=_same_padding(OUTPUT_CONV_SIZE), padding_mode="reflect"
        )

    def _check_mel(self, mel: torch.Tensor) -> None:
        bands = self.config.mel_channels
        if not isinstance(mel, torch.Tensor) or mel.dim() != 3 or mel.shape[1] != bands:
            shape = list(mel.shape) if isinstance(mel, torch.Tensor) else type(mel).__name__
            raise ValueError(f"the vocoder wants a mel of shape (batch, {bands}, frames), got {shape}")
        if mel.shape[0] == 0 or mel.shape[2] == 0:
            raise ValueError(f"the vocoder got an empty mel {list(mel.shape)}: there is nothing to speak")
        if not mel.is_floating_point():
            raise ValueError(f"the vocoder wants a floating-point mel, got {mel.dtype}")

    def forward(self, mel: torch.Tensor, z: torch.Tensor) -> torch.Tensor:
        """mel (B, mel_channels, T), z (B, noise_dim, T) -> (B, 1, T * hop_length), no padding, trimming or clamp."""
        self._check_mel(mel)
        if mel.shape[2] <= NOISE_CONV_SIZE // 2:  # reflect padding needs more frames than it pads
            raise ValueError(f"the vocoder's forward needs more than {NOISE_CONV_SIZE // 2} frames, got {mel.shape[2]}")
        expected = (mel.shape[0], self.config.noise_dim, mel.shape[2])
        if tuple(z.shape) != expected:
            raise ValueError(f"the vocoder's noise z must have shape {list(expected)}, got {list(z.shape)}")
        mel = mel.to(self.noise_conv.weight.dtype)
        x = self.noise_conv(z.to(mel.dtype))  # (B, C, T)
        for block in self.blocks:
            x = block(x, mel)  # (B, C, T * product of the strides so far)
        slope = self.config.leaky_relu_slope
        return torch.tanh(self.output_conv(F.leaky_relu(x, slope)))  # (B, 1, T * hop_length)

    def inference(
        self, mel: torch.Tensor, generator: torch.Generator | None = None, z: torch.Tensor | None = None
    ) -> torch.Tensor:
        """Tortoise's vocoding of a diffusion mel (B, mel_channels, T) -> waveform (B, 1, T * hop_length) in [-1, 1].

        Appends INFERENCE_PAD_FRAMES frames of INFERENCE_PAD_VALUE, draws z ~ N(0, 1) of shape
        (B, noise_dim, T + INFERENCE_PAD_FRAMES) from `generator` (the global RNG when None, as the original) unless
        `z` is given, runs the network, drops the padding's audio and clamps.
        """
        self._check_mel(mel)
        if z is not None and generator is not None:
            raise ValueError("pass either a noise tensor z or a generator to draw it from, not both")
        batch, bands, frames = mel.shape
        padding = mel.new_full((batch, bands, INFERENCE_PAD_FRAMES), INFERENCE_PAD_VALUE)
        padded = torch.cat([mel, padding], dim=2)  # (B, mel_channels, T + pad)
        if z is None:
            # like the original, the global RNG draws on the CPU (then moves), so a seed means the same noise anywhere
            device = generator.device if generator is not None else torch.device("cpu")
            z = torch.randn(batch, self.config.noise_dim, padded.shape[2], generator=generator, device=device)
            z = z.to(mel.device)
        audio = self.forward(padded, z)  # (B, 1, (T + pad) * hop)
        audio = audio[:, :, : frames * self.config.hop_length]
        return audio.clamp(-AUDIO_LIMIT, AUDIO_LIMIT)
