"""The vocoder stage: a small UnivNet trained on random segments of the corpus's 24 kHz audio.

Each step draws `batch_size` segments of `segment_frames` mel frames (x 256 samples) from the training clips, computes
their 100-band UnivNet log-mel exactly as the whole clip's mel would be at those frames (the segment is read with
two frames of audio context each side, the STFT's reach), and trains the generator to turn mel + Gaussian noise back
into the audio with the multi-resolution STFT loss plus the mel L1 loss (`stft_loss.py`). There is no
discriminator: see `VocoderTrainConfig` for why.

The generator is `models.vocoder.UnivNetVocoder` itself, with plain (not weight-normalised) convolution weights: the
layout the native loader reads, so the exported state dict is the trained one as it is.

Every `eval_every` steps the model vocodes the full ground-truth mels of `valid_clips` held-out clips the way
inference does (`UnivNetVocoder.inference`, fixed noise) and is scored against their audio; the best weights so
far are kept. Batches and noise are drawn from generators seeded by (seed, step), so a run resumed from its
checkpoint continues exactly as an uninterrupted one.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import numpy as np
import soundfile
import torch
from torch import Tensor

from ..config import VocoderConfig
from ..frontend.mel import HOP_LENGTH, N_FFT, OUTPUT_SAMPLE_RATE, univnet_mel
from ..models.vocoder import UnivNetVocoder
from .config import TRAIN_SPLIT, VALID_SPLIT, VOCODER_DIR, RecipeConfig, TrainProgress, VocoderTrainConfig
from .loop import SELECTION_METRIC, StageRun, initial_model, load_trained, step_generator
from .metadata import CorpusError, corpus_dir, read_metadata
from .stft_loss import spectral_losses

STAGE = "vocoder"
CONTEXT_SAMPLES = N_FFT // 2  # audio the STFT reads on each side of a frame's centre
CONTEXT_FRAMES = CONTEXT_SAMPLES // HOP_LENGTH  # mel frames that context spans (2)
VALID_SEED_OFFSET = 1  # the validation noise: its own stream, the same at every evaluation


@dataclass(frozen=True)
class Clip:
    """One 24 kHz training or validation clip: where it is and how many samples it has."""

    path: Path
    samples: int

    @property
    def frames(self) -> int:
        """Mel frames of the whole clip (``univnet_mel``'s N // 256 + 1)."""
        return self.samples // HOP_LENGTH + 1


def corpus_clips(work_dir: Path, split: str) -> list[Clip]:
    """The 24 kHz clips of one split of the corpus, in metadata order; CorpusError for a missing or other-rate file."""
    folder = corpus_dir(work_dir)
    clips = []
    for utterance in read_metadata(work_dir):
        if utterance.split != split:
            continue
        path = folder / utterance.wav_24k
        try:
            info = soundfile.info(str(path))
        except (OSError, RuntimeError, soundfile.SoundFileError) as error:
            raise CorpusError(f"cannot read {path} ({error}); rerun the corpus stage") from None
        if info.samplerate != OUTPUT_SAMPLE_RATE or info.channels != 1:
            raise CorpusError(
                f"{path} is {info.samplerate} Hz, {info.channels} channel(s); the vocoder needs 24 kHz mono"
            )
        clips.append(Clip(path, info.frames))
    return clips


def read_samples(clip: Clip, start: int, stop: int) -> Tensor:
    """Samples [start, stop) of a clip as float32 (stop - start,), zero outside the clip."""
    inside = soundfile.read(str(clip.path), start=max(start, 0), stop=min(stop, clip.samples), dtype="float32")[0]
    out = np.zeros(stop - start, dtype=np.float32)
    offset = max(-start, 0)
    out[offset : offset + len(inside)] = inside
    return torch.from_numpy(out)


def load_segment(clip: Clip, start_frame: int, frames: int) -> tuple[Tensor, Tensor]:
    """A segment of `frames` mel frames from `start_frame`: (audio (frames * 256,), log-mel (100, frames)).

    The mel equals the whole clip's ``univnet_mel`` at those frames: the audio is read with CONTEXT_SAMPLES of
    context each side (zeros beyond the clip's ends, where the whole-clip mel reflects instead).
    """
    start = start_frame * HOP_LENGTH
    stop = start + frames * HOP_LENGTH
    audio = read_samples(clip, start - CONTEXT_SAMPLES, stop + CONTEXT_SAMPLES)
    mel = univnet_mel(audio)[:, CONTEXT_FRAMES : CONTEXT_FRAMES + frames]  # (100, frames)
    return audio[CONTEXT_SAMPLES:-CONTEXT_SAMPLES], mel


def training_batch(
    clips: list[Clip], config: VocoderTrainConfig, generator: torch.Generator
) -> tuple[Tensor, Tensor, Tensor]:
    """`batch_size` random segments: audio (B, frames * 256), mel (B, 100, frames), noise z (B, noise_dim, frames).

    Clips are drawn with probability proportional to their length (every second of audio alike); a clip shorter
    than a segment is zero-padded."""
    lengths = torch.tensor([clip.frames for clip in clips], dtype=torch.float64)
    chosen = torch.multinomial(lengths, config.batch_size, replacement=True, generator=generator).tolist()
    audio, mels = [], []
    for index in chosen:
        room = max(clips[index].frames - config.segment_frames, 0)
        start = int(torch.randint(room + 1, (), generator=generator))
        segment_audio, segment_mel = load_segment(clips[index], start, config.segment_frames)
        audio.append(segment_audio)
        mels.append(segment_mel)
    noise = torch.randn(config.batch_size, config.model.noise_dim, config.segment_frames, generator=generator)
    return torch.stack(audio), torch.stack(mels), noise


def training_loss(
    model: UnivNetVocoder, config: VocoderTrainConfig, batch: tuple[Tensor, Tensor, Tensor]
) -> tuple[Tensor, dict[str, float]]:
    """The loss of one batch (to minimise) and its terms."""
    audio, mel, noise = batch
    losses = spectral_losses(model(mel, noise)[:, 0], audio)
    return losses.total(config.mel_loss_weight), losses.as_floats()


@torch.no_grad()
def evaluate(model: UnivNetVocoder, clips: list[Clip], config: VocoderTrainConfig, seed: int) -> dict[str, float]:
    """Every loss term, averaged over `clips`, of vocoding each whole clip's ground-truth mel as inference does;
    "loss" is the training objective's combination of them."""
    generator = torch.Generator().manual_seed(seed + VALID_SEED_OFFSET)
    totals: dict[str, float] = {}
    for clip in clips:
        audio = read_samples(clip, 0, clip.samples)
        vocoded = model.inference(univnet_mel(audio)[None], generator)[:, 0, : clip.samples]  # (1, samples)
        losses = spectral_losses(vocoded, audio[None])
        terms = {SELECTION_METRIC: losses.total(config.mel_loss_weight).item(), **losses.as_floats()}
        for name, value in terms.items():
            totals[name] = totals.get(name, 0.0) + value / len(clips)
    return totals


def run_vocoder(work_dir: Path, config: RecipeConfig, progress: TrainProgress) -> None:
    """Train (or resume training) the vocoder into WORK_DIR/vocoder; the best weights go to the export."""
    work_dir = Path(work_dir)
    settings = config.vocoder
    train_clips = corpus_clips(work_dir, TRAIN_SPLIT)
    valid_clips = corpus_clips(work_dir, VALID_SPLIT)[: settings.valid_clips]
    if not train_clips:
        raise CorpusError(f"the corpus in {corpus_dir(work_dir)} has no training clips; rerun the corpus stage")
    if not valid_clips:
        raise CorpusError(f"the corpus in {corpus_dir(work_dir)} has no validation clips; rerun the corpus stage")
    model = initial_model(UnivNetVocoder, settings.model, STAGE, config.seed, config.init_dir)
    run = StageRun(work_dir / VOCODER_DIR, STAGE, model, settings.loop, progress)
    run.train(
        lambda step: training_loss(
            model, settings, training_batch(train_clips, settings, step_generator(config.seed, step))
        ),
        lambda evaluated: evaluate(evaluated, valid_clips, settings, config.seed),
        throughput_unit="audio_s_per_s",
        per_step=settings.batch_size * settings.segment_frames * HOP_LENGTH / OUTPUT_SAMPLE_RATE,
    )


def load_vocoder(work_dir: Path) -> UnivNetVocoder:
    """The best vocoder the stage wrote into WORK_DIR/vocoder (eval mode)."""
    return load_trained(Path(work_dir) / VOCODER_DIR, STAGE, UnivNetVocoder, VocoderConfig)
