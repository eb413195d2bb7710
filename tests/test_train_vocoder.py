"""The vocoder stage: its spectral losses on analytic cases, segments whose mel is the whole clip's, and training in
a work folder that writes a loadable vocoder and resumes exactly where an interrupted run stopped."""

from __future__ import annotations

import json
import math
from dataclasses import replace
from pathlib import Path

import pytest
import soundfile
import torch
from train_work_dir import make_work_dir

from tortoise_clvp.frontend.mel import univnet_mel
from tortoise_clvp.models.vocoder import UnivNetVocoder
from tortoise_clvp.train.config import TRAIN_SPLIT, VALID_SPLIT, VOCODER_DIR, RecipeConfig
from tortoise_clvp.train.loop import CHECKPOINT_FILE, METRICS_FILE, initial_model, step_generator
from tortoise_clvp.train.metadata import CorpusError, corpus_dir
from tortoise_clvp.train.stft_loss import log_mel, spectral_losses
from tortoise_clvp.train.vocoder import (
    corpus_clips,
    load_segment,
    load_vocoder,
    read_samples,
    run_vocoder,
    training_batch,
    training_loss,
)

SMOKE = RecipeConfig.smoke()
# four steps, a checkpoint every second one, evaluated at the end
FOUR_STEPS = replace(SMOKE, vocoder=replace(SMOKE.vocoder, loop=replace(SMOKE.vocoder.loop, steps=4, eval_every=4)))


class Interrupted(Exception):
    pass


def ignore(*_) -> None:
    pass


@pytest.fixture(scope="module")
def tiny_work(tmp_path_factory) -> Path:
    return make_work_dir(tmp_path_factory.mktemp("vocoder") / "work")


def fresh_work(tiny_work: Path, tmp_path: Path) -> Path:
    """A work folder holding only the tiny corpus (each training test starts from scratch)."""
    work = tmp_path / "work"
    work.mkdir(parents=True)
    (work / "corpus").symlink_to(corpus_dir(tiny_work))
    return work


# losses --------------------------------------------------------------------------------------------------------------
def test_loss_mel_is_the_univnet_mel():
    audio = torch.randn(2, 6000) * 0.2
    torch.testing.assert_close(log_mel(audio), univnet_mel(audio), atol=1e-3, rtol=0)


def test_losses_are_zero_for_identical_audio():
    audio = torch.randn(2, 4096) * 0.3
    losses = spectral_losses(audio, audio.clone())
    assert losses.spectral_convergence.item() == 0.0
    assert losses.log_magnitude.item() == 0.0
    assert losses.mel_l1.item() == 0.0


@pytest.mark.parametrize("gain", [0.5, 2.0])
def test_scaled_audio_gives_analytic_losses(gain):
    """Scaling audio by g scales every magnitude by g: spectral convergence |1 - g|, log magnitude |log g|."""
    target = torch.randn(2, 4096) * 0.2  # loud enough that no bin reaches the magnitude floor
    losses = spectral_losses(gain * target, target)
    assert losses.spectral_convergence.item() == pytest.approx(abs(1 - gain), rel=1e-4)
    assert losses.log_magnitude.item() == pytest.approx(abs(math.log(gain)), rel=1e-4)


@pytest.mark.parametrize("level", [0.0, 1e-6])
def test_losses_have_finite_gradients_on_near_silence(level):
    """A silent (or nearly silent) prediction gets finite gradients, and non-zero ones unless exactly silent."""
    predicted = (torch.randn(1, 4096) * level).requires_grad_()
    spectral_losses(predicted, torch.randn(1, 4096) * 0.1).total(1.0).backward()
    assert torch.isfinite(predicted.grad).all()
    assert (predicted.grad.abs().sum() > 0) == (level > 0)


def test_losses_reject_mismatched_shapes():
    with pytest.raises(ValueError, match="differ in shape"):
        spectral_losses(torch.zeros(1, 4096), torch.zeros(1, 4000))


# data ----------------------------------------------------------------------------------------------------------------
def test_segment_mel_is_the_whole_clips_mel(tiny_work):
    clip = corpus_clips(tiny_work, TRAIN_SPLIT)[0]
    whole = read_samples(clip, 0, clip.samples)
    audio, mel = load_segment(clip, start_frame=20, frames=16)
    assert torch.equal(audio, whole[20 * 256 : 36 * 256])
    torch.testing.assert_close(mel, univnet_mel(whole)[:, 20:36], atol=1e-4, rtol=0)  # float rounding only


def test_batches_are_seeded(tiny_work):
    clips, config = corpus_clips(tiny_work, TRAIN_SPLIT), SMOKE.vocoder
    first = training_batch(clips, config, step_generator(1, 5))
    again = training_batch(clips, config, step_generator(1, 5))
    other = training_batch(clips, config, step_generator(1, 6))
    frames = config.segment_frames
    assert [tuple(t.shape) for t in first] == [(2, frames * 256), (2, 100, frames), (2, config.model.noise_dim, frames)]
    assert all(torch.equal(a, b) for a, b in zip(first, again))
    assert not torch.equal(first[0], other[0])


def test_clips_at_the_wrong_rate_are_refused(tiny_work, tmp_path):
    work = fresh_work(tiny_work, tmp_path)
    (work / "corpus").unlink()
    (work / "corpus").mkdir()
    metadata = (corpus_dir(tiny_work) / "metadata.jsonl").read_text()
    (work / "corpus" / "metadata.jsonl").write_text(metadata)
    first = json.loads(metadata.splitlines()[0])
    (work / "corpus" / first["wav_24k"]).parent.mkdir(parents=True)
    soundfile.write(str(work / "corpus" / first["wav_24k"]), torch.zeros(22050).numpy(), 22050)
    with pytest.raises(CorpusError, match="22050 Hz"):
        corpus_clips(work, first["split"])


# training ------------------------------------------------------------------------------------------------------------
@pytest.fixture(scope="module")
def trained(tiny_work, tmp_path_factory) -> tuple[Path, list]:
    """A work folder after four uninterrupted steps, and the progress reports they made."""
    work = fresh_work(tiny_work, tmp_path_factory.mktemp("trained"))
    reports = []
    run_vocoder(work, FOUR_STEPS, lambda what, done, total, metrics: reports.append((what, done, total, metrics)))
    return work, reports


def test_training_writes_a_loadable_vocoder(trained):
    work, reports = trained
    assert [done for _, done, _, _ in reports[:4]] == [1, 2, 3, 4]
    assert {"loss", "stft", "mel_l1", "audio_s_per_s"} <= set(reports[0][3])
    assert "valid_mel_l1" in reports[-1][3]
    metrics = json.loads((work / VOCODER_DIR / METRICS_FILE).read_text())
    assert metrics["finished"] and metrics["best_step"] == 4 and len(metrics["history"]) == 1
    vocoder = load_vocoder(work)
    assert isinstance(vocoder, UnivNetVocoder) and vocoder.config == FOUR_STEPS.vocoder.model
    audio = vocoder.inference(torch.full((1, 100, 12), -5.0), torch.Generator().manual_seed(0))
    assert audio.shape == (1, 1, 12 * 256) and torch.isfinite(audio).all()


def test_resumed_training_equals_uninterrupted(tiny_work, trained, tmp_path):
    straight, _ = trained
    resumed = fresh_work(tiny_work, tmp_path)

    def stop_after_checkpoint(what, done, total, metrics):
        if done == FOUR_STEPS.vocoder.loop.checkpoint_every:
            raise Interrupted

    with pytest.raises(Interrupted):
        run_vocoder(resumed, FOUR_STEPS, stop_after_checkpoint)
    saved = torch.load(resumed / VOCODER_DIR / CHECKPOINT_FILE, weights_only=True)
    assert saved["state"]["step"] == 2 and not saved["state"]["finished"]
    run_vocoder(resumed, FOUR_STEPS, ignore)

    first, second = load_vocoder(straight).state_dict(), load_vocoder(resumed).state_dict()
    assert all(torch.equal(first[name], second[name]) for name in first)
    assert evaluations(straight) == evaluations(resumed)


def evaluations(work: Path) -> list[dict]:
    """The stage's held-out metrics, without their wall times."""
    history = json.loads((work / VOCODER_DIR / METRICS_FILE).read_text())["history"]
    return [{name: value for name, value in entry.items() if name != "seconds"} for entry in history]


def test_a_finished_stage_does_not_train_again(trained):
    work, _ = trained
    before = (work / VOCODER_DIR / "vocoder.safetensors").read_bytes()
    steps = []
    run_vocoder(work, FOUR_STEPS, lambda what, done, total, metrics: steps.append(done))
    assert steps == [4]  # one final report, no training
    assert (work / VOCODER_DIR / "vocoder.safetensors").read_bytes() == before


def test_a_checkpoint_of_another_size_is_refused(trained):
    work, _ = trained
    wider_model = replace(FOUR_STEPS.vocoder.model, channel_size=6)
    wider = replace(FOUR_STEPS, vocoder=replace(FOUR_STEPS.vocoder, model=wider_model))
    with pytest.raises(Exception, match="another size"):
        run_vocoder(work, wider, ignore)


def test_steps_on_one_batch_lower_its_loss(tiny_work):
    """The loss trains the model: twenty steps on one batch bring its loss down (a model a little wider than the
    smoke one, whose four channels learn too noisily to show it in twenty steps)."""
    config = replace(SMOKE.vocoder, model=replace(SMOKE.vocoder.model, channel_size=8))
    model = initial_model(UnivNetVocoder, config.model, "vocoder", SMOKE.seed)
    batch = training_batch(corpus_clips(tiny_work, TRAIN_SPLIT), config, step_generator(0, 0))
    optimizer = torch.optim.Adam(model.parameters(), lr=1e-3)
    losses = []
    for _ in range(20):
        loss, _ = training_loss(model, config, batch)
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()
        losses.append(loss.item())
    assert losses[-1] < 0.9 * losses[0], losses


def test_a_corpus_without_valid_clips_is_refused(tiny_work, tmp_path):
    work = tmp_path / "work"
    (work / "corpus").mkdir(parents=True)
    lines = (corpus_dir(tiny_work) / "metadata.jsonl").read_text().splitlines()
    kept = [line for line in lines if json.loads(line)["split"] != VALID_SPLIT]
    (work / "corpus" / "metadata.jsonl").write_text("\n".join(kept) + "\n")
    for folder in ("wavs_22k", "wavs_24k"):
        (work / "corpus" / folder).symlink_to(corpus_dir(tiny_work) / folder)
    with pytest.raises(CorpusError, match="no validation clips"):
        run_vocoder(work, FOUR_STEPS, ignore)
