"""Which voice a clip sounds like: a nearest-centroid speaker identifier on log-mel and pitch statistics.

A clip's features are the mean and the standard deviation over its voiced frames of its 100-band log-mel (the
vocoder's mel at 24 kHz; frames more than SILENCE_RANGE below the clip's loudest are dropped), plus the median and
the spread (inter-quartile range) of its log pitch. A voice's centroid is the mean feature of its reference clips;
every dimension is standardised by its spread across all reference clips, and a clip goes to the nearest centroid.

The identifier is built from reference audio only (never from the clips it judges), so it can be used to check
that generated speech sounds like the voice it was conditioned on rather than another one. It needs no training
and no extra dependency; it is crude (a recording channel or a vocoder's colouring moves the features too), which
is why its accuracy on the reference voices' own held-out audio is reported beside any score it gives.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Mapping, Sequence

import torch
import torchaudio.functional as AF
from torch import Tensor

from ..frontend.mel import OUTPUT_SAMPLE_RATE, univnet_mel

SILENCE_RANGE = 4.0  # natural-log mel units (about 35 dB) below the loudest frame: quieter frames are silence
PITCH_RANGE_HZ = (60.0, 500.0)
MIN_SAMPLES = 2048  # shorter clips carry no usable statistics


def clip_features(audio: Tensor, sample_rate: int) -> Tensor:
    """(N,) float samples at any rate -> (2 * 100 + 2,) features: log-mel mean and std over the voiced frames, log
    pitch median and inter-quartile range."""
    wav = audio.detach().float().reshape(-1).cpu()
    if sample_rate != OUTPUT_SAMPLE_RATE:
        wav = AF.resample(wav, sample_rate, OUTPUT_SAMPLE_RATE)
    if wav.numel() < MIN_SAMPLES or not torch.isfinite(wav).all():
        raise ValueError(f"a clip for voice matching needs at least {MIN_SAMPLES} finite samples at 24 kHz")
    mel = univnet_mel(wav)  # (100, T)
    loudness = mel.mean(dim=0)
    frames = mel[:, loudness > loudness.max() - SILENCE_RANGE]
    pitch = AF.detect_pitch_frequency(wav[None], OUTPUT_SAMPLE_RATE, freq_low=int(PITCH_RANGE_HZ[0]))[0]
    pitch = pitch[(pitch >= PITCH_RANGE_HZ[0]) & (pitch <= PITCH_RANGE_HZ[1])]
    log_pitch = pitch.log() if pitch.numel() else torch.zeros(1)
    quartiles = torch.quantile(log_pitch, torch.tensor([0.25, 0.5, 0.75]))
    spread = frames.std(dim=1) if frames.shape[1] > 1 else torch.zeros(frames.shape[0])
    return torch.cat([frames.mean(dim=1), spread, quartiles[1:2], quartiles[2:] - quartiles[:1]])


@dataclass(frozen=True)
class VoiceMatcher:
    """Nearest-centroid identification among the voices it was built from (`from_references`)."""

    voices: tuple[str, ...]
    centroids: Tensor  # (V, D), standardised
    scale: Tensor  # (D,) the reference features' spread

    @classmethod
    def from_references(cls, references: Mapping[str, Sequence[Tensor]]) -> "VoiceMatcher":
        """voice name -> the `clip_features` of its reference clips (at least one voice, one clip each)."""
        if not references or any(len(clips) == 0 for clips in references.values()):
            raise ValueError("voice matching needs at least one reference clip for every voice")
        voices = tuple(sorted(references))
        every = torch.stack([features for voice in voices for features in references[voice]])
        scale = every.std(dim=0).clamp_min(1e-6) if len(every) > 1 else torch.ones(every.shape[1])
        centroids = torch.stack([torch.stack(list(references[voice])).mean(dim=0) for voice in voices]) / scale
        return cls(voices, centroids, scale)

    def identify(self, features: Tensor) -> str:
        """The voice whose centroid is nearest to a clip's `clip_features`."""
        distances = ((self.centroids - features / self.scale) ** 2).sum(dim=1)
        return self.voices[int(distances.argmin())]


def accuracy_by_voice(matcher: VoiceMatcher, labelled: Sequence[tuple[str, Tensor]]) -> dict[str, float]:
    """(true voice, features) pairs -> the share identified as their true voice, per voice (voices seen only)."""
    hits: dict[str, list[bool]] = {}
    for voice, features in labelled:
        hits.setdefault(voice, []).append(matcher.identify(features) == voice)
    return {voice: sum(results) / len(results) for voice, results in sorted(hits.items())}
