"""Model dimensions and special token ids, one frozen dataclass per model.

The released Tortoise sizes are named once here (``*.RELEASED``); tests build tiny
models from the same classes with other numbers.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass, fields
from typing import Any, ClassVar


@dataclass(frozen=True)
class TokenIds:
    """Special ids shared by the text front end, the decoder, CLVP and trimming.

    The text ids are the tokenizer's conventions, the same for every model. The speech ids belong to a decoder and
    its codebook: `AutoregressiveConfig.tokens` gives each model's own; `TOKENS` holds the released model's.
    """

    text_start: int = 255
    text_stop: int = 0  # also the text padding id; tts() appends one before the AR adds its own
    space: int = 2  # '[SPACE]' in the BPE vocabulary
    mel_start: int = 8192  # the decoder's last two code rows: start (number_mel_codes - 2) ...
    mel_stop: int = 8193  # ... and stop (number_mel_codes - 1), also the padding id of finished candidates
    calm: int = 83  # the code of silence: what fix_speech_decoder_output writes after the stop token
    fix_tail: tuple[int, ...] = (45, 45, 248)  # the original overwrites each row's last three codes with these
    calm_run_to_trim: int = 9  # latents are cut at the 9th consecutive calm token (8 calm frames end the speech)


TOKENS = TokenIds()  # the released model's speech ids


def mel_start_stop(number_mel_codes: int) -> tuple[int, int]:
    """A decoder's start and stop tokens: the last two rows of its code vocabulary (8192, 8193 in the release)."""
    return number_mel_codes - 2, number_mel_codes - 1


class _FromDict:
    """Build a config from a JSON-style dict, rejecting unknown keys with a clear message."""

    @classmethod
    def from_dict(cls, values: dict[str, Any]):
        known = {f.name for f in fields(cls)}  # type: ignore[arg-type]
        unknown = sorted(set(values) - known)
        if unknown:
            raise ValueError(f"{cls.__name__}: unknown field(s) {unknown}; known fields are {sorted(known)}")
        converted = {k: tuple(v) if isinstance(v, list) else v for k, v in values.items()}
        return cls(**converted)  # type: ignore[call-arg]

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)  # type: ignore[call-overload]


@dataclass(frozen=True)
class AutoregressiveConfig(_FromDict):
    """Dimensions of the GPT-2 style speech-token decoder (`UnifiedVoice`) and its conditioning encoder."""

    layers: int = 30
    model_dim: int = 1024
    heads: int = 16
    max_text_tokens: int = 402
    max_mel_tokens: int = 604
    max_conditioning_inputs: int = 2
    number_text_tokens: int = 255  # the text embedding has number_text_tokens + 1 rows
    number_mel_codes: int = 8194
    mel_length_compression: int = 1024  # audio samples per speech token (22.05 kHz)
    mel_channels: int = 80  # conditioning mel bands
    conditioning_attn_blocks: int = 6
    layer_norm_eps: float = 1e-5
    calm_code: int = TOKENS.calm  # the code of silence in this model's codebook (see `tokens`)
    fix_tail: tuple[int, ...] = TOKENS.fix_tail  # what every stopped candidate's last codes are overwritten with
    dropout: float = 0.0  # on embeddings and residual branches, in training mode only (0 at inference)

    RELEASED: ClassVar["AutoregressiveConfig"]

    def __post_init__(self) -> None:
        if self.model_dim % self.heads:
            raise ValueError(f"model_dim {self.model_dim} is not divisible by heads {self.heads}")
        speech_codes = mel_start_stop(self.number_mel_codes)[0]  # codes below the start and stop tokens
        if speech_codes < 1:
            raise ValueError(f"number_mel_codes {self.number_mel_codes} leaves no speech codes besides start and stop")
        if not all(0 <= code < speech_codes for code in (self.calm_code, *self.fix_tail)):
            raise ValueError(
                f"calm_code {self.calm_code} and fix_tail {self.fix_tail} must be speech codes, in [0, {speech_codes})"
            )
        if not 0.0 <= self.dropout < 1.0:
            raise ValueError(f"dropout must be in [0, 1), got {self.dropout}")

    @property
    def tokens(self) -> TokenIds:
        """This model's special ids: start and stop are its last two code rows; calm and the tail from its config."""
        start, stop = mel_start_stop(self.number_mel_codes)
        return TokenIds(mel_start=start, mel_stop=stop, calm=self.calm_code, fix_tail=self.fix_tail)

    @property
    def text_vocab(self) -> int:
        return self.number_text_tokens + 1

    @property
    def mel_positions(self) -> int:
        """Rows of the learned mel position table (start + stop + conditioning slots)."""
        return self.max_mel_tokens + 2 + self.max_conditioning_inputs

    @property
    def text_positions(self) -> int:
        return self.max_text_tokens + 2

    @property
    def head_dim(self) -> int:
        return self.model_dim // self.heads


AutoregressiveConfig.RELEASED = AutoregressiveConfig()


@dataclass(frozen=True)
class ClvpConfig(_FromDict):
    """Dimensions of CLVP, the contrastive text/speech scorer (x-transformers encoders)."""

    dim_text: int = 768
    dim_speech: int = 768
    dim_latent: int = 768
    num_text_tokens: int = 256
    text_enc_depth: int = 20
    text_heads: int = 12
    num_speech_tokens: int = 8192
    speech_enc_depth: int = 20
    speech_heads: int = 12
    text_seq_len: int = 350
    speech_seq_len: int = 430
    dim_head: int = 64  # x-transformers' default: q/k/v project dim -> heads * 64, whatever dim is
    ff_mult: int = 2
    rotary_dim: int = 32  # rotary embedding on the first 32 channels of each head
    # How candidates are laid out for scoring (mean pooling sees the padding, so a scorer is only reliable on the
    # padding it was trained with). None: as sampled, padded to the decoder's whole token budget, as the original
    # scores them. An int: cut to the longest candidate's codes, its stop and the fixed tail, plus this many codes;
    # for scorers trained on such short padding (this package's recipe), and far cheaper.
    score_padding: int | None = None

    RELEASED: ClassVar["ClvpConfig"]

    def __post_init__(self) -> None:
        if self.score_padding is not None and self.score_padding < 0:
            raise ValueError(f"score_padding must be None or >= 0, got {self.score_padding}")


ClvpConfig.RELEASED = ClvpConfig()


DIFFUSION_PREDICTIONS = ("epsilon", "v")


@dataclass(frozen=True)
class DiffusionConfig(_FromDict):
    """Dimensions of the diffusion decoder (`DiffusionTts`): AR latents or codes -> mel spectrogram.

    Field names follow the original constructor. Block counts the original hard-codes (3 code converters,
    4 latent conditioners, 5 conditioning-encoder blocks, 3 timestep integrators, 3 tail res-blocks) are fixed.
    """

    model_channels: int = 1024
    num_layers: int = 10
    num_heads: int = 16
    in_channels: int = 100  # mel bands of the output (and of the conditioning mels)
    in_latent_channels: int = 1024  # width of the autoregressive latents it is conditioned on
    in_tokens: int = 8193  # rows of the code embedding (conditioning on raw mel codes)
    out_channels: int = 200  # eps and the learned variance, in_channels each
    rel_pos_buckets: int = 32  # T5-style relative position buckets of every attention block
    rel_pos_max_distance: int = 64
    # what the network's first out channels predict: "epsilon" (the original) or "v" (sqrt(abar) eps -
    # sqrt(1 - abar) x0, turned into epsilon inside `forward`, so every sampler runs either unchanged)
    prediction: str = "epsilon"

    RELEASED: ClassVar["DiffusionConfig"]

    def __post_init__(self) -> None:
        if self.model_channels % self.num_heads:
            raise ValueError(f"model_channels {self.model_channels} is not divisible by num_heads {self.num_heads}")
        if self.prediction not in DIFFUSION_PREDICTIONS:
            raise ValueError(f"prediction must be one of {DIFFUSION_PREDICTIONS}, got {self.prediction!r}")


DiffusionConfig.RELEASED = DiffusionConfig()


@dataclass(frozen=True)
class VocoderConfig(_FromDict):
    """Dimensions of the UnivNet vocoder (`UnivNetGenerator`): 100-band 24 kHz log-mel + noise -> waveform.

    Each stride is one upsampling block (location-variable convolutions); their product is the hop length.
    """

    noise_dim: int = 64  # channels of the Gaussian noise input z
    channel_size: int = 32  # width of the upsampling stack
    dilations: tuple[int, ...] = (1, 3, 9, 27)  # one gated LVC layer per dilation, in every block
    strides: tuple[int, ...] = (8, 8, 4)  # upsampling factor of each block
    leaky_relu_slope: float = 0.2
    kpnet_conv_size: int = 3  # kernel size of the kernel predictor's residual / output convs
    kpnet_hidden_channels: int = 64  # the original fixes this (KernelPredictor default)
    lvc_kernel_size: int = 3  # size of each predicted (location-variable) kernel; fixed in the original
    hop_length: int = 256  # output samples per mel frame (= product of strides)
    mel_channels: int = 100

    RELEASED: ClassVar["VocoderConfig"]

    def __post_init__(self) -> None:
        upsampling = 1
        for stride in self.strides:
            upsampling *= stride
        if upsampling != self.hop_length:
            raise ValueError(f"the strides {self.strides} upsample by {upsampling}, not by hop_length {self.hop_length}")
        if self.kpnet_conv_size % 2 == 0 or self.lvc_kernel_size % 2 == 0:
            raise ValueError("kpnet_conv_size and lvc_kernel_size must be odd ('same' padding)")


VocoderConfig.RELEASED = VocoderConfig()


@dataclass(frozen=True)
class DvaeConfig(_FromDict):
    """Dimensions of the discrete VAE that turns conditioning mels into speech codes (and back, for previews).

    Tortoise has no released one at inference (codes come from its decoder); ours is trained with the recipe. Each of
    the `downsamples` stride-2 stages halves the frame rate: 2 of them give one code per 4 mel frames (1024 samples at
    22.05 kHz, the decoder's `mel_length_compression`), about 21.5 codes per second.
    """

    mel_channels: int = 80
    channels: int = 192  # width of the convolution stacks
    res_blocks: int = 2  # residual blocks at every reduced frame rate, in the encoder and the decoder
    downsamples: int = 2
    codebook_size: int = 1024
    code_dim: int = 64  # width of a codebook vector

    def __post_init__(self) -> None:
        if min(self.mel_channels, self.channels, self.codebook_size, self.code_dim) < 1 or self.downsamples < 0:
            raise ValueError(f"every DvaeConfig size must be positive: {self}")

    @property
    def compression(self) -> int:
        """Mel frames per code."""
        return 2**self.downsamples
