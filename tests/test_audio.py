"""Loading, saving and conditioning crops of voice clips.

Parity tests compare with the original's outputs; their clip names, rates, seeds, crop starts and shapes all come
from the reference folder's audio_cases.json. The other tests use clips they synthesize.
"""

from __future__ import annotations

import os
import random

import numpy as np
import pytest
import soundfile
import torch
import torchaudio.functional as AF

from tortoise_clvp import atomic
from tortoise_clvp.errors import AudioError
from tortoise_clvp.frontend import audio
from tortoise_clvp.frontend.mel import CONDITIONING_SAMPLE_RATE, load_mel_norms
from tortoise_clvp.pipeline import conditioning

from conftest import CLIP_FORMATS

ATOL = 1e-4


@pytest.fixture(scope="module")
def mel_norms(reference_dir):
    return load_mel_norms(reference_dir / "tortoise" / "mel_norms.pth")


def _shape(audio_cases, key):
    return tuple(audio_cases["tensors"][key]["shape"])


def _clip_22k(clip, audio_tensors, reference_dir):
    """The recorded load_audio(path, 22050) where the folder has it, else our own (itself checked above)."""
    key = f"{clip['name']}.load_audio_22050"
    if key in audio_tensors:
        return audio_tensors[key]
    return audio.load_audio(reference_dir / clip["file"], CONDITIONING_SAMPLE_RATE)


def _load_audio_keys(audio_cases, audio_tensors):
    """(clip, rate, key) for every recorded '<clip>.load_audio_<rate>'."""
    found = []
    for clip in audio_cases["clips"]:
        prefix = f"{clip['name']}.load_audio_"
        for key in audio_tensors:
            if key.startswith(prefix) and key[len(prefix) :].isdigit():
                found.append((clip, int(key[len(prefix) :]), key))
    return found


# load_audio ---------------------------------------------------------------------------------------------------------
def test_load_audio_matches_every_recorded_clip(audio_cases, audio_tensors, reference_dir):
    found = _load_audio_keys(audio_cases, audio_tensors)
    assert found, "no load_audio audio_cases in the reference folder"
    for clip, rate, key in found:
        wav = audio.load_audio(reference_dir / clip["file"], rate)
        assert wav.dtype == torch.float32 and tuple(wav.shape) == _shape(audio_cases, key), key
        torch.testing.assert_close(wav, audio_tensors[key], atol=ATOL, rtol=0, msg=key)


def test_every_clip_loads_mono_clamped_and_resampled(speech_clips):
    for name, (seconds, file_rate, channels, _, peak) in CLIP_FORMATS.items():
        raw, rate = soundfile.read(str(speech_clips[name]), dtype="float32", always_2d=True)
        assert rate == file_rate and raw.shape == (int(seconds * file_rate), channels)
        wav = audio.load_audio(speech_clips[name], CONDITIONING_SAMPLE_RATE)
        assert wav.dtype == torch.float32 and wav.shape[0] == 1
        expected_len = -(-raw.shape[0] * CONDITIONING_SAMPLE_RATE // file_rate)
        assert wav.shape[1] == expected_len, name
        assert wav.abs().max() <= 1.0
        if peak > 1.0:  # the loud float clip: peaks above full scale are clipped
            assert np.abs(raw[:, 0]).max() > 1.0 and wav.abs().max() == 1.0
        else:
            assert 0.2 < wav.abs().max() < 1.0, name


def test_load_audio_keeps_channel_zero_not_a_mix(tmp_path):
    t = np.arange(8000, dtype=np.float32) / 8000
    left = 0.5 * np.sin(2 * np.pi * 220 * t)
    right = 0.25 * np.sin(2 * np.pi * 330 * t + 1.0)
    path = tmp_path / "stereo.wav"
    soundfile.write(str(path), np.stack([left, right], axis=1), 8000, subtype="FLOAT")
    wav = audio.load_audio(path, 8000)
    torch.testing.assert_close(wav, torch.from_numpy(left)[None], atol=0, rtol=0)


@pytest.mark.parametrize("subtype, read_as, scale", [("PCM_16", "int16", 2**15), ("PCM_32", "int32", 2**31)])
def test_load_audio_integer_scaling_is_exact(tmp_path, subtype, read_as, scale):
    rng = np.random.default_rng(0)
    info = np.iinfo(read_as)
    ints = rng.integers(info.min, info.max, size=3000, endpoint=True).astype(read_as)
    ints[:2] = [info.min, info.max]
    path = tmp_path / f"{subtype}.wav"
    soundfile.write(str(path), ints, 16000, subtype=subtype)
    wav = audio.load_audio(path, 16000)
    expected = torch.from_numpy(ints.astype(np.float32)) / scale  # the original's scipy read then divide
    torch.testing.assert_close(wav[0], expected.clamp(-1, 1), atol=0, rtol=0)
    assert wav.min() == -1.0


def test_load_audio_reads_flac_and_ogg(tmp_path):
    t = np.arange(16000, dtype=np.float32) / 16000
    tone = (0.3 * np.sin(2 * np.pi * 300 * t)).astype(np.float32)
    for name in ("clip.flac", "clip.ogg"):
        soundfile.write(str(tmp_path / name), tone, 16000)
        wav = audio.load_audio(tmp_path / name, 22050)
        assert wav.shape == (1, 22050) and wav.abs().max() > 0.2


def test_load_audio_accepts_str_paths(speech_clip):
    seconds, rate = CLIP_FORMATS["mono_22k"][:2]
    wav = audio.load_audio(str(speech_clip), rate)
    torch.testing.assert_close(wav, audio.load_audio(speech_clip, rate), atol=0, rtol=0)
    assert wav.shape == (1, int(seconds * rate))


# load_audio errors --------------------------------------------------------------------------------------------------
def test_load_audio_missing_file(tmp_path):
    with pytest.raises(AudioError, match="not found"):
        audio.load_audio(tmp_path / "nope.wav", 22050)


def test_load_audio_directory(tmp_path):
    with pytest.raises(AudioError, match="directory"):
        audio.load_audio(tmp_path, 22050)


@pytest.mark.parametrize("content", [b"", b"RIFF\x00\x00\x00\x00WAVEjunk" + bytes(range(256)) * 4])
def test_load_audio_corrupt_file(tmp_path, content):
    path = tmp_path / "broken.wav"
    path.write_bytes(content)
    with pytest.raises(AudioError, match="cannot decode"):
        audio.load_audio(path, 22050)


def test_load_audio_truncated_real_file(tmp_path, speech_clip):
    path = tmp_path / "cut.wav"
    path.write_bytes(speech_clip.read_bytes()[:30])
    with pytest.raises(AudioError):
        audio.load_audio(path, 22050)


def test_load_audio_zero_samples(tmp_path):
    path = tmp_path / "empty.wav"
    soundfile.write(str(path), np.zeros((0, 1), dtype=np.int16), 22050, subtype="PCM_16")
    with pytest.raises(AudioError, match="no samples"):
        audio.load_audio(path, 22050)


def test_load_audio_silent(tmp_path):
    path = tmp_path / "silence.wav"
    soundfile.write(str(path), np.zeros(4000, dtype=np.int16), 22050, subtype="PCM_16")
    with pytest.raises(AudioError, match="silent"):
        audio.load_audio(path, 22050)


def test_load_audio_non_finite(tmp_path):
    data = np.full(4000, 0.1, dtype=np.float32)
    data[10] = np.nan
    path = tmp_path / "nan.wav"
    soundfile.write(str(path), data, 22050, subtype="FLOAT")
    with pytest.raises(AudioError, match="NaN"):
        audio.load_audio(path, 22050)


@pytest.mark.parametrize("rate", [0, -22050, 22050.0, True])
def test_load_audio_bad_rate(speech_clip, rate):
    with pytest.raises(AudioError, match="sample_rate"):
        audio.load_audio(speech_clip, rate)


# Conditioning -------------------------------------------------------------------------------------------------------
def test_pad_or_trim():
    x = torch.arange(1.0, 6.0)[None]
    assert conditioning.pad_or_trim(x, 5) is x
    torch.testing.assert_close(conditioning.pad_or_trim(x, 3), x[:, :3])
    torch.testing.assert_close(conditioning.pad_or_trim(x, 7), torch.tensor([[1.0, 2, 3, 4, 5, 0, 0]]))


def test_format_conditioning_matches_every_clip(audio_cases, audio_tensors, mel_norms, reference_dir):
    checked = 0
    for clip in audio_cases["clips"]:
        key = f"{clip['name']}.format_conditioning"
        if key not in audio_tensors:
            continue
        wav = _clip_22k(clip, audio_tensors, reference_dir)
        seed = clip["format_conditioning_seed"]
        start = conditioning.conditioning_crop_start(wav.shape[-1], random.Random(seed))
        assert start == clip["format_conditioning_crop_start"], clip["name"]
        got = conditioning.format_conditioning(wav, mel_norms, random.Random(seed))
        assert tuple(got.shape) == _shape(audio_cases, key)
        torch.testing.assert_close(got, audio_tensors[key], atol=ATOL, rtol=0, msg=clip["name"])
        checked += 1
    assert checked


def test_format_conditioning_uses_global_random_without_rng(audio_cases, audio_tensors, mel_norms, reference_dir):
    cropped = [
        c for c in audio_cases["clips"]
        if c["format_conditioning_crop_start"] is not None and f"{c['name']}.format_conditioning" in audio_tensors
    ]
    if not cropped:
        pytest.skip("no clip in this reference folder is long enough to be cropped")
    clip = cropped[0]
    wav = _clip_22k(clip, audio_tensors, reference_dir)
    state = random.getstate()
    try:
        random.seed(clip["format_conditioning_seed"])
        got = conditioning.format_conditioning(wav, mel_norms)
    finally:
        random.setstate(state)
    torch.testing.assert_close(got, audio_tensors[f"{clip['name']}.format_conditioning"], atol=ATOL, rtol=0)


def test_crop_only_draws_when_needed():
    rng = random.Random(5)
    before = rng.getstate()
    short = torch.ones(1, conditioning.CONDITIONING_SAMPLES - 10)
    padded = conditioning.crop_conditioning(short, rng)
    assert padded.shape == (1, conditioning.CONDITIONING_SAMPLES) and padded[0, -10:].eq(0).all()
    exact = torch.ones(1, conditioning.CONDITIONING_SAMPLES)
    assert conditioning.crop_conditioning(exact, rng) is exact
    assert rng.getstate() == before  # neither consumed randomness, as in the original

    long = torch.arange(float(conditioning.CONDITIONING_SAMPLES + 100))[None]
    start = random.Random(5).randint(0, 100)
    cropped = conditioning.crop_conditioning(long, rng)
    assert cropped.shape == (1, conditioning.CONDITIONING_SAMPLES) and cropped[0, 0].item() == start


def test_format_conditioning_refuses_multichannel(tiny_assets):
    with pytest.raises(AudioError, match="mono"):
        conditioning.format_conditioning(torch.ones(2, 1000), load_mel_norms(tiny_assets / "mel_norms.pth"), random.Random(0))


def test_diffusion_conditioning_clip_and_mel(audio_cases, audio_tensors, reference_dir):
    checked = 0
    for clip in audio_cases["clips"]:
        name = clip["name"]
        wav = _clip_22k(clip, audio_tensors, reference_dir)
        resampled_key = f"{name}.resampled_24000"
        clip_24k = conditioning.diffusion_conditioning_clip(wav)
        assert clip_24k.shape == (1, conditioning.DIFFUSION_CONDITIONING_SAMPLES)
        if resampled_key in audio_tensors:
            assert tuple(audio_tensors[resampled_key].shape) == _shape(audio_cases, resampled_key)
            expected = conditioning.pad_or_trim(audio_tensors[resampled_key], conditioning.DIFFUSION_CONDITIONING_SAMPLES)
            torch.testing.assert_close(clip_24k, expected, atol=ATOL, rtol=0)
        key = f"{name}.diffusion_cond_mel"
        if key in audio_tensors:
            got = conditioning.diffusion_conditioning_mel(wav)
            assert tuple(got.shape) == _shape(audio_cases, key)
            torch.testing.assert_close(got, audio_tensors[key], atol=ATOL, rtol=0, msg=name)
            checked += 1
    assert checked


def test_diffusion_conditioning_pads_short_clips():
    wav = torch.full((1, 22050), 0.1)
    clip = conditioning.diffusion_conditioning_clip(wav)
    n_24k = AF.resample(wav, 22050, 24000).shape[-1]
    assert clip.shape == (1, conditioning.DIFFUSION_CONDITIONING_SAMPLES) and clip[0, n_24k:].eq(0).all()


# save_audio ---------------------------------------------------------------------------------------------------------
def _tone(seconds=0.25, rate=24000, channels=1):
    t = torch.arange(int(seconds * rate)) / rate
    return torch.stack([0.5 * torch.sin(2 * torch.pi * (200 + 100 * c) * t) for c in range(channels)])


def test_save_audio_round_trip(tmp_path):
    wav = _tone()
    out = audio.save_audio(tmp_path / "a.wav", wav, 24000)
    assert out == tmp_path / "a.wav"
    torch.testing.assert_close(audio.load_audio(out, 24000), wav, atol=0, rtol=0)
    flac = audio.save_audio(tmp_path / "a.flac", wav[0], 24000)
    torch.testing.assert_close(audio.load_audio(flac, 24000), wav, atol=2**-22, rtol=0)
    pcm = audio.save_audio(tmp_path / "b.wav", wav[None], 24000, subtype="PCM_16")
    assert soundfile.info(str(pcm)).subtype == "PCM_16"
    torch.testing.assert_close(audio.load_audio(pcm, 24000), wav, atol=2**-15, rtol=0)
    ogg = audio.save_audio(tmp_path / "a.ogg", wav, 24000)
    info = soundfile.info(str(ogg))
    assert info.samplerate == 24000 and info.frames == wav.shape[-1]
    assert sorted(p.name for p in tmp_path.iterdir()) == ["a.flac", "a.ogg", "a.wav", "b.wav"]


def test_save_audio_clamps_and_keeps_channels(tmp_path):
    wav = _tone(channels=2) * 3
    path = audio.save_audio(tmp_path / "loud.wav", wav, 16000)
    data, rate = soundfile.read(str(path), dtype="float32", always_2d=True)
    assert rate == 16000 and data.shape == (wav.shape[1], 2)
    assert np.abs(data).max() == 1.0


def test_save_audio_replaces_existing_file(tmp_path):
    path = tmp_path / "out.wav"
    path.write_bytes(b"old")
    audio.save_audio(path, _tone(), 24000)
    assert soundfile.info(str(path)).frames == _tone().shape[-1]
    assert os.listdir(tmp_path) == ["out.wav"]


@pytest.mark.parametrize("error", [RuntimeError("disk full"), OSError(28, "No space left on device"),
                                   KeyboardInterrupt()])
def test_failed_write_leaves_no_file_and_keeps_the_old_one(tmp_path, monkeypatch, error):
    path = tmp_path / "out.wav"
    path.write_bytes(b"previous take")

    def write_half_then_fail(stream, *args, **kwargs):
        stream.write(b"RIFF partial data")
        raise error

    monkeypatch.setattr(audio.soundfile, "write", write_half_then_fail)
    expected = AudioError if not isinstance(error, KeyboardInterrupt) else KeyboardInterrupt
    with pytest.raises(expected):
        audio.save_audio(path, _tone(), 24000)
    assert os.listdir(tmp_path) == ["out.wav"]
    assert path.read_bytes() == b"previous take"

    fresh = tmp_path / "new.wav"
    with pytest.raises(expected):
        audio.save_audio(fresh, _tone(), 24000)
    assert not fresh.exists() and os.listdir(tmp_path) == ["out.wav"]


def test_save_audio_unwritable_folder(tmp_path, monkeypatch):
    def refuse(path):
        raise PermissionError(13, "Permission denied")

    monkeypatch.setattr(atomic, "_create_temp_beside", refuse)
    with pytest.raises(AudioError, match="permissions"):
        audio.save_audio(tmp_path / "x.wav", _tone(), 24000)
    assert not any(tmp_path.iterdir())


def test_save_audio_bad_destinations(tmp_path):
    with pytest.raises(AudioError, match="does not exist"):
        audio.save_audio(tmp_path / "missing" / "x.wav", _tone(), 24000)
    with pytest.raises(AudioError, match="unknown suffix"):
        audio.save_audio(tmp_path / "x.mp4", _tone(), 24000)
    with pytest.raises(AudioError, match="unknown suffix"):
        audio.save_audio(tmp_path / "x", _tone(), 24000)
    (tmp_path / "d.wav").mkdir()
    with pytest.raises(AudioError, match="directory"):
        audio.save_audio(tmp_path / "d.wav", _tone(), 24000)
    with pytest.raises(AudioError, match="cannot hold"):
        audio.save_audio(tmp_path / "x.flac", _tone(), 24000, subtype="FLOAT")
    assert [p.name for p in tmp_path.iterdir()] == ["d.wav"]


@pytest.mark.parametrize(
    "wav, message",
    [
        (torch.zeros(1, 0), "zero samples"),
        (torch.zeros(2, 2, 10), "shaped"),
        (torch.tensor([0.0, float("nan")]), "NaN"),
    ],
)
def test_save_audio_bad_audio(tmp_path, wav, message):
    with pytest.raises(AudioError, match=message):
        audio.save_audio(tmp_path / "x.wav", wav, 24000)
    assert not any(tmp_path.iterdir())


def test_save_audio_bad_rate(tmp_path):
    with pytest.raises(AudioError, match="sample_rate"):
        audio.save_audio(tmp_path / "x.wav", _tone(), 0)
