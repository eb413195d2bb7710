"""The two log-mel spectrograms of Tortoise.

* The **conditioning mel** (80 bands, 22.05 kHz) feeds the autoregressive decoder's conditioning encoder, CLVP and
  CVVP. It is a power spectrogram (|STFT|^2) projected onto HTK-scale mel filters with slaney area normalisation,
  log-compressed, then divided band by band by the released ``mel_norms.pth`` vector.
* The **UnivNet mel** (100 bands, 24 kHz) conditions the diffusion decoder and is what the diffusion decoder produces
  for the vocoder. It is a magnitude spectrogram (|STFT|) projected onto slaney-scale, slaney-normalised filters
  (librosa's defaults), log-compressed, and not normalised; :func:`normalize_tacotron_mel` maps it to [-1, 1].

Both use a 1024-point periodic Hann window with hop 256 and 512 samples of reflect padding each side (as
``torch.stft(center=True)``), so a clip of N samples gives ``N // 256 + 1`` frames.

Filter banks and windows are built once per (device, dtype) and cached; treat the returned tensors as read-only.
"""

from __future__ import annotations

import functools
import math
import os
from pathlib import Path

import torch
import torch.nn.functional as F
import torchaudio.functional as AF

from tortoise_clvp.errors import CheckpointError

# Sample rates ------------------------------------------------------------------------------------------------------
CONDITIONING_SAMPLE_RATE = 22050  # voice clips are resampled to this for the AR decoder / CLVP conditioning mel
OUTPUT_SAMPLE_RATE = 24000  # the diffusion decoder's mel and the vocoder's audio live at this rate

# STFT shared by both mels ------------------------------------------------------------------------------------------
N_FFT = 1024  # FFT size and window length
HOP_LENGTH = 256  # samples between frames
N_FREQS = N_FFT // 2 + 1  # one-sided spectrum bins (513)
LOG_FLOOR = 1e-5  # mel energies are clamped to this before the log (log(1e-5) = TACOTRON_MEL_MIN)

# Conditioning mel (torchaudio MelSpectrogram in the original) ------------------------------------------------------
CONDITIONING_N_MELS = 80
CONDITIONING_F_MIN = 0.0
CONDITIONING_F_MAX = 8000.0

# UnivNet mel (TacotronSTFT in the original) -------------------------------------------------------------------------
UNIVNET_N_MELS = 100
UNIVNET_F_MIN = 0.0
UNIVNET_F_MAX = 12000.0

# Range used to map a UnivNet log-mel to [-1, 1] and back: the log floor and the largest value seen in training.
TACOTRON_MEL_MIN = -11.512925148010254  # == log(LOG_FLOOR) in float32
TACOTRON_MEL_MAX = 2.3143386840820312


# Cached constants ---------------------------------------------------------------------------------------------------
def _compute_dtype(dtype: torch.dtype) -> torch.dtype:
    """STFTs run in float32 (float64 when given float64); half-precision input is upcast."""
    return torch.float64 if dtype == torch.float64 else torch.float32


def _cached_constant(builder):
    """Cache a window or filter bank per (device, dtype), built outside inference mode even when first asked for
    inside it: a tensor made under `torch.inference_mode` can never join autograd, and training's spectral losses
    reuse these after inference code (voice conditioning) has filled the cache."""

    @functools.lru_cache(maxsize=None)
    @functools.wraps(builder)
    def build(*args, **kwargs):
        with torch.inference_mode(False):
            return builder(*args, **kwargs)

    return build


@_cached_constant
def hann_window(device: torch.device | str | None = None, dtype: torch.dtype = torch.float32) -> torch.Tensor:
    """The periodic Hann window of length N_FFT (scipy ``get_window('hann', fftbins=True)``)."""
    return torch.hann_window(N_FFT, periodic=True, dtype=torch.float64).to(device=device, dtype=dtype)


@_cached_constant
def conditioning_mel_filters(
    device: torch.device | str | None = None, dtype: torch.dtype = torch.float32
) -> torch.Tensor:
    """(80, 513) HTK-scale triangular filters with slaney (area) normalisation, 0-8 kHz at 22.05 kHz.

    Built by torchaudio in float32 exactly as the original's ``MelSpectrogram`` builds them, then moved.
    """
    filters = AF.melscale_fbanks(
        n_freqs=N_FREQS,
        f_min=CONDITIONING_F_MIN,
        f_max=CONDITIONING_F_MAX,
        n_mels=CONDITIONING_N_MELS,
        sample_rate=CONDITIONING_SAMPLE_RATE,
        norm="slaney",
        mel_scale="htk",
    )
    return filters.T.contiguous().to(device=device, dtype=dtype)


def _hz_to_slaney_mel(hz: torch.Tensor) -> torch.Tensor:
    """Slaney's Auditory Toolbox scale: linear (3 per 200 Hz) below 1 kHz, logarithmic (27 per octave/6.4) above."""
    linear = hz * 3.0 / 200.0
    log = 15.0 + torch.log(hz.clamp(min=1000.0) / 1000.0) * (27.0 / math.log(6.4))
    return torch.where(hz >= 1000.0, log, linear)


def _slaney_mel_to_hz(mel: torch.Tensor) -> torch.Tensor:
    linear = mel * 200.0 / 3.0
    log = 1000.0 * torch.exp((mel - 15.0) * (math.log(6.4) / 27.0))
    return torch.where(mel >= 15.0, log, linear)


@_cached_constant
def univnet_mel_filters(device: torch.device | str | None = None, dtype: torch.dtype = torch.float32) -> torch.Tensor:
    """(100, 513) slaney-scale triangular filters with slaney (area) normalisation, 0-12 kHz at 24 kHz.

    The same numbers as ``librosa.filters.mel(sr=24000, n_fft=1024, n_mels=100, fmin=0, fmax=12000)``: computed in
    float64 (as librosa does) and rounded once at the end.
    """
    fft_freqs = torch.linspace(0.0, OUTPUT_SAMPLE_RATE / 2, N_FREQS, dtype=torch.float64)
    mel_edges = torch.linspace(
        _hz_to_slaney_mel(torch.tensor(UNIVNET_F_MIN, dtype=torch.float64)).item(),
        _hz_to_slaney_mel(torch.tensor(UNIVNET_F_MAX, dtype=torch.float64)).item(),
        UNIVNET_N_MELS + 2,
        dtype=torch.float64,
    )
    hz_edges = _slaney_mel_to_hz(mel_edges)  # lower edge, centre, upper edge of every band, shared with neighbours
    widths = hz_edges.diff()
    distance = hz_edges[:, None] - fft_freqs[None, :]  # (bands + 2, freqs): edge minus bin frequency
    rising = -distance[:-2] / widths[:-1, None]
    falling = distance[2:] / widths[1:, None]
    triangles = torch.minimum(rising, falling).clamp(min=0.0)
    area_norm = 2.0 / (hz_edges[2:] - hz_edges[:-2])  # every triangle gets unit area in Hz
    return (triangles * area_norm[:, None]).to(device=device, dtype=dtype)


@_cached_constant
def windowed_dft_basis(device: torch.device | str | None = None, dtype: torch.dtype = torch.float32) -> torch.Tensor:
    """(2 * 513, 1, 1024) conv1d weight: Hann-windowed cos rows (real part) then sin rows (imaginary part, sign
    irrelevant for magnitudes) of the one-sided DFT.

    Each factor is rounded to ``dtype`` before they are multiplied, as the original multiplies a float32 basis by a
    float32 window, so float32 results match it to the last bits.
    """
    time = torch.arange(N_FFT, dtype=torch.float64)
    freq = torch.arange(N_FREQS, dtype=torch.float64)
    phase = 2 * math.pi * ((freq[:, None] * time[None, :]) % N_FFT) / N_FFT  # reduced mod N_FFT: exact angles
    rows = torch.cat([torch.cos(phase), torch.sin(phase)]).to(dtype)
    window = torch.hann_window(N_FFT, periodic=True, dtype=torch.float64).to(dtype)
    return (rows * window)[:, None, :].to(device)


# Helpers ------------------------------------------------------------------------------------------------------------
def _as_batch(wav: torch.Tensor) -> tuple[torch.Tensor, bool]:
    """Accept (N,), (B, N) or (B, 1, N); return (B, N) and whether the input was 1-D."""
    if wav.dim() == 3 and wav.shape[1] == 1:
        wav = wav[:, 0]
    if wav.dim() == 1:
        return wav[None], True
    if wav.dim() != 2:
        raise ValueError(f"expected audio of shape (N,), (B, N) or (B, 1, N), got {tuple(wav.shape)}")
    return wav, False


def _check_length(samples: int, what: str) -> None:
    if samples <= N_FFT // 2:
        raise ValueError(
            f"{what} needs more than {N_FFT // 2} audio samples for its reflect padding, got {samples}; "
            "pad the clip first (format_conditioning pads to 6 s)"
        )


def _log_compress(energies: torch.Tensor) -> torch.Tensor:
    return torch.log(torch.clamp(energies, min=LOG_FLOOR))


# Mels ---------------------------------------------------------------------------------------------------------------
def conditioning_mel(wav: torch.Tensor, mel_norms: torch.Tensor) -> torch.Tensor:
    """80-band log-mel of 22.05 kHz audio, divided by the mel norms (``TorchMelSpectrogram`` of the original).

    wav: (N,), (B, N) or (B, 1, N) samples in [-1, 1]. mel_norms: (80,) from :func:`load_mel_norms`.
    Returns (80, T) for 1-D input, else (B, 80, T), with T = N // 256 + 1, in the input's dtype.
    """
    batch, was_1d = _as_batch(wav)
    _check_length(batch.shape[-1], "conditioning_mel")
    dtype = _compute_dtype(batch.dtype)
    batch = batch.to(dtype)
    spec = torch.stft(
        batch,
        n_fft=N_FFT,
        hop_length=HOP_LENGTH,
        win_length=N_FFT,
        window=hann_window(batch.device, dtype),
        center=True,
        pad_mode="reflect",
        normalized=False,
        onesided=True,
        return_complex=True,
    )
    power = spec.abs().pow(2)
    mel = torch.matmul(conditioning_mel_filters(batch.device, dtype), power)
    norms = mel_norms.to(device=batch.device, dtype=dtype)
    mel = _log_compress(mel) / norms[:, None]
    mel = mel.to(wav.dtype) if wav.is_floating_point() else mel
    return mel[0] if was_1d else mel


def univnet_mel(wav: torch.Tensor) -> torch.Tensor:
    """100-band log-mel of 24 kHz audio, not normalised (``wav_to_univnet_mel(do_normalization=False)``).

    The audio is clamped to [-1, 1] first. wav: (N,), (B, N) or (B, 1, N).
    Returns (100, T) for 1-D input, else (B, 100, T), with T = N // 256 + 1, in the input's dtype.
    """
    batch, was_1d = _as_batch(wav)
    _check_length(batch.shape[-1], "univnet_mel")
    dtype = _compute_dtype(batch.dtype)
    batch = batch.to(dtype).clamp(-1.0, 1.0)
    padded = F.pad(batch[:, None], (N_FFT // 2, N_FFT // 2), mode="reflect")  # (B, 1, N + N_FFT)
    # A strided convolution with windowed DFT rows, as the original computes it. Mathematically this is
    # torch.stft(center=False) of the padded signal, but the bins near the log floor (quiet passages) are dominated by
    # float32 rounding, and an FFT rounds differently: up to 1e-3 apart in the log domain, against 1e-6 for this.
    # (On CUDA the convolution follows torch.backends.cudnn.allow_tf32, as the original's did.)
    spectrum = F.conv1d(padded, windowed_dft_basis(batch.device, dtype), stride=HOP_LENGTH)  # (B, 2 * N_FREQS, T)
    real, imag = spectrum[:, :N_FREQS], spectrum[:, N_FREQS:]
    magnitude = torch.sqrt(real**2 + imag**2)
    mel = _log_compress(torch.matmul(univnet_mel_filters(batch.device, dtype), magnitude))
    mel = mel.to(wav.dtype) if wav.is_floating_point() else mel
    return mel[0] if was_1d else mel


def normalize_tacotron_mel(mel: torch.Tensor) -> torch.Tensor:
    """Map a UnivNet log-mel from [TACOTRON_MEL_MIN, TACOTRON_MEL_MAX] to [-1, 1] (the diffusion decoder's space)."""
    return 2 * ((mel - TACOTRON_MEL_MIN) / (TACOTRON_MEL_MAX - TACOTRON_MEL_MIN)) - 1


def denormalize_tacotron_mel(norm_mel: torch.Tensor) -> torch.Tensor:
    """Inverse of :func:`normalize_tacotron_mel`: diffusion output back to a log-mel for the vocoder."""
    return ((norm_mel + 1) / 2) * (TACOTRON_MEL_MAX - TACOTRON_MEL_MIN) + TACOTRON_MEL_MIN


# Mel norms ----------------------------------------------------------------------------------------------------------
def load_mel_norms(path: str | os.PathLike) -> torch.Tensor:
    """Read the (80,) per-band divisors of the conditioning mel (``mel_norms.pth`` from Tortoise's data folder).

    Loaded with ``weights_only=True``; raises CheckpointError if the file is missing, unreadable, or not an
    80-element tensor of finite non-zero numbers. Returns a float32 CPU tensor.
    """
    path = Path(path)
    hint = "it is tortoise/data/mel_norms.pth from the Tortoise release; put it in your model directory"
    if path.is_dir():
        raise CheckpointError(f"mel norms path {path} is a directory; pass the mel_norms.pth file inside it")
    if not path.is_file():
        raise CheckpointError(f"mel norms file {path} not found; {hint}")
    try:
        norms = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as exc:  # torch raises RuntimeError, UnpicklingError, EOFError, ... for bad files
        raise CheckpointError(f"cannot read mel norms file {path} ({exc}); re-download it: {hint}") from exc
    if not isinstance(norms, torch.Tensor):
        raise CheckpointError(f"mel norms file {path} holds a {type(norms).__name__}, not a tensor; {hint}")
    if tuple(norms.shape) != (CONDITIONING_N_MELS,) or not norms.is_floating_point():
        raise CheckpointError(
            f"mel norms file {path} holds a {norms.dtype} tensor of shape {tuple(norms.shape)}, "
            f"expected ({CONDITIONING_N_MELS},) floats; {hint}"
        )
    norms = norms.to(torch.float32).contiguous()
    if not torch.isfinite(norms).all() or (norms == 0).any():
        raise CheckpointError(f"mel norms file {path} contains zero or non-finite values; {hint}")
    return norms
