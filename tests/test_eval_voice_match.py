"""Voice matching: clip features (log-mel and pitch statistics) and nearest-centroid identification, on synthetic
voices that differ in pitch and timbre."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch

from tortoise_clvp.eval.voice_match import VoiceMatcher, accuracy_by_voice, clip_features

RATE = 24000
VOICES = {"low_bright": (105.0, 0.9), "high_dark": (210.0, 0.5), "mid": (150.0, 0.7)}  # pitch (Hz), harmonic decay


def voice_clip(voice: str, seed: int, seconds: float = 1.5) -> torch.Tensor:
    """A harmonic voice at its pitch (+-10% vibrato) whose harmonics fall off at its rate, in syllable bursts."""
    pitch, decay = VOICES[voice]
    rng = np.random.default_rng(seed)
    t = np.arange(int(seconds * RATE)) / RATE
    f0 = pitch * (1.0 + 0.1 * np.sin(2 * np.pi * (2.0 + rng.random()) * t))
    phase = 2 * np.pi * np.cumsum(f0) / RATE
    wave = sum(decay**h * np.sin(h * phase + rng.uniform(0, 2 * np.pi)) for h in range(1, 20))
    wave = wave * np.clip(np.sin(2 * np.pi * (3.0 + rng.random()) * t), 0.05, None) + 0.01 * rng.standard_normal(t.shape)
    return torch.from_numpy(0.5 * wave / np.abs(wave).max()).float()


def test_features_hold_the_pitch_and_the_spectrum():
    features = clip_features(voice_clip("low_bright", 0), RATE)
    assert features.shape == (202,) and torch.isfinite(features).all()
    assert math.exp(features[200]) == pytest.approx(105.0, rel=0.1)  # median pitch
    resampled = clip_features(torch.from_numpy(np.interp(np.arange(0, 36000, 24000 / 22050), np.arange(36000),
                                                         voice_clip("low_bright", 0).numpy())).float(), 22050)
    assert math.exp(resampled[200]) == pytest.approx(105.0, rel=0.1)  # any input rate


def test_clips_are_matched_to_their_own_voice():
    references = {voice: [clip_features(voice_clip(voice, seed), RATE) for seed in range(3)] for voice in VOICES}
    matcher = VoiceMatcher.from_references(references)
    unseen = [(voice, clip_features(voice_clip(voice, seed), RATE)) for voice in VOICES for seed in range(10, 14)]
    assert accuracy_by_voice(matcher, unseen) == {voice: 1.0 for voice in sorted(VOICES)}
    swapped = [("mid", features) for voice, features in unseen if voice == "high_dark"]
    assert accuracy_by_voice(matcher, swapped) == {"mid": 0.0}


def test_bad_inputs_are_clear_errors():
    with pytest.raises(ValueError, match="at least 2048"):
        clip_features(torch.zeros(100), RATE)
    with pytest.raises(ValueError, match="finite"):
        clip_features(torch.full((RATE,), float("nan")), RATE)
    with pytest.raises(ValueError, match="reference clip for every voice"):
        VoiceMatcher.from_references({"a": []})
