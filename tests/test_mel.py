"""The two mel spectrograms, their filter banks and the mel norms.

Parity tests compare with the original's outputs; their clip names, keys and shapes all come from the reference
folder's audio_cases.json. The other tests use a synthesized clip and the tiny model's mel norms.
"""

from __future__ import annotations

import pytest
import torch
from conftest import read_json

from tortoise_clvp.errors import CheckpointError
from tortoise_clvp.frontend import mel
from tortoise_clvp.frontend.audio import load_audio

ATOL = 1e-4
FILTER_ATOL = 1e-7


@pytest.fixture(scope="module")
def mel_norms_path(reference_dir):
    return reference_dir / "tortoise" / "mel_norms.pth"


@pytest.fixture(scope="module")
def mel_norms(mel_norms_path):
    return mel.load_mel_norms(mel_norms_path)


@pytest.fixture(scope="module")
def own_mel_norms_path(tiny_assets):
    return tiny_assets / "mel_norms.pth"


@pytest.fixture(scope="module")
def own_mel_norms(own_mel_norms_path):
    return mel.load_mel_norms(own_mel_norms_path)


@pytest.fixture(scope="module")
def wav_22k(speech_clip):
    """(1, N) synthesized speech at 22.05 kHz."""
    return load_audio(speech_clip, mel.CONDITIONING_SAMPLE_RATE)


def _present(audio_cases, audio_tensors, what):
    """(clip, key) for every clip that has a '<clip>.<what>' tensor."""
    return [(clip, f"{clip['name']}.{what}") for clip in audio_cases["clips"] if f"{clip['name']}.{what}" in audio_tensors]


def _clip_22k(clip, audio_tensors, reference_dir):
    """The recorded load_audio(path, 22050) where the folder has it, else load_audio's (tested in test_audio)."""
    key = f"{clip['name']}.load_audio_22050"
    if key in audio_tensors:
        return audio_tensors[key]
    return load_audio(reference_dir / clip["file"], mel.CONDITIONING_SAMPLE_RATE)


def _expected_shape(audio_cases, key):
    return tuple(audio_cases["tensors"][key]["shape"])


# Filter banks -------------------------------------------------------------------------------------------------------
def test_conditioning_filters_match_torchaudio_fbanks(audio_tensors):
    expected = audio_tensors["filters.torchaudio_mel_fbanks_80"]  # (freqs, mels) as torchaudio lays it out
    filters = mel.conditioning_mel_filters()
    assert filters.shape == expected.T.shape == (mel.CONDITIONING_N_MELS, mel.N_FREQS)
    torch.testing.assert_close(filters, expected.T, atol=FILTER_ATOL, rtol=0)


def test_univnet_filters_match_librosa_slaney_basis(audio_tensors):
    expected = audio_tensors["filters.librosa_mel_basis_100"]
    filters = mel.univnet_mel_filters()
    assert filters.shape == expected.shape == (mel.UNIVNET_N_MELS, mel.N_FREQS)
    torch.testing.assert_close(filters, expected, atol=FILTER_ATOL, rtol=0)


def test_constant_tensors_are_cached_per_device_and_dtype():
    assert mel.conditioning_mel_filters() is mel.conditioning_mel_filters()
    assert mel.univnet_mel_filters("cpu", torch.float32) is mel.univnet_mel_filters("cpu", torch.float32)
    assert mel.windowed_dft_basis() is mel.windowed_dft_basis()
    double = mel.univnet_mel_filters("cpu", torch.float64)
    assert double.dtype == torch.float64
    torch.testing.assert_close(double.float(), mel.univnet_mel_filters("cpu", torch.float32), atol=1e-8, rtol=0)


def test_windowed_dft_basis_is_a_windowed_dft():
    basis = mel.windowed_dft_basis(dtype=torch.float64)[:, 0]
    signal = torch.randn(mel.N_FFT, dtype=torch.float64, generator=torch.Generator().manual_seed(0))
    spectrum = torch.fft.rfft(signal * mel.hann_window(dtype=torch.float64))
    torch.testing.assert_close(basis[: mel.N_FREQS] @ signal, spectrum.real)
    torch.testing.assert_close(basis[mel.N_FREQS :] @ signal, -spectrum.imag)


# Mel norms ----------------------------------------------------------------------------------------------------------
def test_mel_norms_match(mel_norms, audio_tensors):
    assert mel_norms.dtype == torch.float32 and mel_norms.shape == audio_tensors["mel_norms"].shape
    torch.testing.assert_close(mel_norms, audio_tensors["mel_norms"], atol=0, rtol=0)


def test_mel_norms_missing_file(tmp_path):
    with pytest.raises(CheckpointError, match="not found"):
        mel.load_mel_norms(tmp_path / "mel_norms.pth")


def test_mel_norms_directory(tmp_path):
    with pytest.raises(CheckpointError, match="directory"):
        mel.load_mel_norms(tmp_path)


@pytest.mark.parametrize("content", [b"", b"definitely not a torch file" * 10])
def test_mel_norms_corrupt_file(tmp_path, content):
    path = tmp_path / "mel_norms.pth"
    path.write_bytes(content)
    with pytest.raises(CheckpointError, match="cannot read"):
        mel.load_mel_norms(path)


def test_mel_norms_truncated_file(tmp_path, own_mel_norms_path):
    path = tmp_path / "mel_norms.pth"
    path.write_bytes(own_mel_norms_path.read_bytes()[:100])
    with pytest.raises(CheckpointError):
        mel.load_mel_norms(path)


@pytest.mark.parametrize(
    "payload, message",
    [
        (torch.ones(81), "shape"),
        (torch.ones(80, 1), "shape"),
        (torch.ones(80, dtype=torch.int64), "floats"),
        ({"norms": torch.ones(80)}, "not a tensor"),
        (torch.zeros(80), "zero or non-finite"),
        (torch.full((80,), float("nan")), "zero or non-finite"),
    ],
)
def test_mel_norms_wrong_content(tmp_path, payload, message):
    path = tmp_path / "mel_norms.pth"
    torch.save(payload, path)
    with pytest.raises(CheckpointError, match=message):
        mel.load_mel_norms(path)


def test_mel_norms_refuses_pickled_code(tmp_path):
    path = tmp_path / "mel_norms.pth"
    torch.save(torch.nn.Linear(2, 2), path)  # a module is not loadable with weights_only=True
    with pytest.raises(CheckpointError):
        mel.load_mel_norms(path)


# Conditioning mel ---------------------------------------------------------------------------------------------------
def test_conditioning_mel_of_every_clip(audio_cases, audio_tensors, mel_norms, reference_dir):
    present = _present(audio_cases, audio_tensors, "torch_mel_full")
    assert present, "no torch_mel_full audio_cases in the reference folder"
    for clip, key in present:
        wav = _clip_22k(clip, audio_tensors, reference_dir)
        got = mel.conditioning_mel(wav, mel_norms)
        assert tuple(got.shape) == _expected_shape(audio_cases, key), clip["name"]
        torch.testing.assert_close(got, audio_tensors[key], atol=ATOL, rtol=0, msg=clip["name"])


def test_conditioning_mel_batch_and_shapes(wav_22k, own_mel_norms):
    wav, mel_norms = wav_22k[0], own_mel_norms
    single = mel.conditioning_mel(wav, mel_norms)
    assert single.dim() == 2 and single.shape[0] == mel.CONDITIONING_N_MELS
    assert single.shape[1] == wav.shape[0] // mel.HOP_LENGTH + 1
    batch = torch.stack([wav, wav.flip(0) * 0.5])
    both = mel.conditioning_mel(batch, mel_norms)
    torch.testing.assert_close(both[0], single, atol=1e-5, rtol=0)
    torch.testing.assert_close(both[1], mel.conditioning_mel(batch[1], mel_norms), atol=1e-5, rtol=0)
    torch.testing.assert_close(mel.conditioning_mel(batch[:, None], mel_norms), both, atol=0, rtol=0)


def test_conditioning_mel_float64(audio_cases, audio_tensors, mel_norms, reference_dir):
    clip, key = _present(audio_cases, audio_tensors, "torch_mel_full")[0]
    wav = _clip_22k(clip, audio_tensors, reference_dir)
    got = mel.conditioning_mel(wav.double(), mel_norms)
    assert got.dtype == torch.float64
    torch.testing.assert_close(got.float(), audio_tensors[key], atol=1e-3, rtol=0)


# UnivNet mel --------------------------------------------------------------------------------------------------------
def test_univnet_mel_of_every_clip_present(audio_cases, audio_tensors, reference_dir):
    present = _present(audio_cases, audio_tensors, "univnet_mel_of_load_audio_24000")
    assert present, "no univnet_mel_of_load_audio_24000 audio_cases in the reference folder"
    for clip, key in present:
        wav = load_audio(reference_dir / clip["file"], mel.OUTPUT_SAMPLE_RATE)
        got = mel.univnet_mel(wav)
        assert tuple(got.shape) == _expected_shape(audio_cases, key), clip["name"]
        torch.testing.assert_close(got, audio_tensors[key], atol=ATOL, rtol=0, msg=clip["name"])


def test_univnet_mel_batch_clamps_and_frames():
    gen = torch.Generator().manual_seed(1)
    wav = torch.randn(3, 5000, generator=gen) * 0.3
    batch = mel.univnet_mel(wav)
    assert batch.shape == (3, mel.UNIVNET_N_MELS, 5000 // mel.HOP_LENGTH + 1)
    torch.testing.assert_close(batch[1], mel.univnet_mel(wav[1]), atol=1e-5, rtol=0)
    torch.testing.assert_close(mel.univnet_mel(wav[:, None]), batch, atol=0, rtol=0)
    loud = wav * 20
    torch.testing.assert_close(mel.univnet_mel(loud), mel.univnet_mel(loud.clamp(-1, 1)), atol=0, rtol=0)
    assert mel.univnet_mel(torch.zeros(2048)).eq(mel.TACOTRON_MEL_MIN).all()


def test_univnet_mel_matches_an_fft_stft():
    """The DFT convolution is the STFT: away from the log floor the two agree closely."""
    t = torch.arange(24000, dtype=torch.float64) / mel.OUTPUT_SAMPLE_RATE
    wav = 0.4 * torch.sin(2 * torch.pi * 440 * t) + 0.2 * torch.sin(2 * torch.pi * 3100 * t)
    padded = torch.nn.functional.pad(wav[None, None], (512, 512), mode="reflect")[0]
    window = mel.hann_window(dtype=torch.float64)
    spec = torch.stft(padded, 1024, 256, window=window, center=False, return_complex=True).abs()
    reference = torch.log(torch.clamp(mel.univnet_mel_filters(dtype=torch.float64) @ spec, min=1e-5))[0]
    torch.testing.assert_close(mel.univnet_mel(wav), reference, atol=1e-9, rtol=0)
    torch.testing.assert_close(mel.univnet_mel(wav.float()).double(), reference, atol=2e-3, rtol=0)


def test_too_short_audio_is_refused(own_mel_norms):
    with pytest.raises(ValueError, match="samples"):
        mel.univnet_mel(torch.zeros(mel.N_FFT // 2))
    with pytest.raises(ValueError, match="samples"):
        mel.conditioning_mel(torch.zeros(1, 100), own_mel_norms)
    with pytest.raises(ValueError, match="shape"):
        mel.univnet_mel(torch.zeros(2, 2, 4096))


# Tacotron normalisation ---------------------------------------------------------------------------------------------
def test_tacotron_constants_match_the_original(reference_dir):
    constants = read_json(reference_dir / "tortoise" / "constants.json")
    assert mel.TACOTRON_MEL_MIN == constants["TACOTRON_MEL_MIN"]
    assert mel.TACOTRON_MEL_MAX == constants["TACOTRON_MEL_MAX"]


def test_tacotron_normalisation():
    ends = torch.tensor([mel.TACOTRON_MEL_MIN, mel.TACOTRON_MEL_MAX])
    torch.testing.assert_close(mel.normalize_tacotron_mel(ends), torch.tensor([-1.0, 1.0]))
    x = torch.linspace(-1.5, 1.5, 31)
    torch.testing.assert_close(mel.normalize_tacotron_mel(mel.denormalize_tacotron_mel(x)), x)


# Devices ------------------------------------------------------------------------------------------------------------
@pytest.mark.cuda
def test_mels_on_cuda(wav_22k, own_mel_norms):
    wav = wav_22k
    got = mel.conditioning_mel(wav.cuda(), own_mel_norms.cuda())
    assert got.is_cuda
    torch.testing.assert_close(got.cpu(), mel.conditioning_mel(wav, own_mel_norms), atol=1e-3, rtol=0)
    uni = mel.univnet_mel(wav.cuda())
    assert uni.is_cuda
    torch.testing.assert_close(uni.cpu(), mel.univnet_mel(wav), atol=1e-2, rtol=0)
