"""The shared diffusion thread: callers from many threads batched together, each getting the mel it would get
alone; the p-sampler alone; cancellation, option groups and shutdown."""

from __future__ import annotations

import threading

import pytest
import torch

from tortoise_clvp.errors import OptionsError
from tortoise_clvp.pipeline import batched_diffusion
from tortoise_clvp.pipeline.batched_diffusion import BatchedDiffusion, DiffusionClosed
from tortoise_clvp.pipeline.diffusion import latents_to_mel
from tortoise_clvp.pipeline.samplers import SamplerOptions

DPM = SamplerOptions(sampler="dpm++2m", steps=3)


@pytest.fixture(scope="module")
def diffusion(tiny_models):
    return tiny_models["diffusion"]


def _inputs(diffusion, frames: int, seed: int):
    generator = torch.Generator().manual_seed(seed)
    return (torch.randn(frames, diffusion.config.in_latent_channels, generator=generator),
            torch.randn(2 * diffusion.config.model_channels, generator=generator))


class _HeldFirstBatch:
    """Wraps `latents_to_mels` so the first batch waits until `release` is set: calls made meanwhile queue up."""

    def __init__(self, monkeypatch):
        self.started, self.release = threading.Event(), threading.Event()
        self.batch_sizes = []
        original = batched_diffusion.latents_to_mels

        def held(model, requests, options, progress=None):
            self.batch_sizes.append(len(requests))
            if len(self.batch_sizes) == 1:
                self.started.set()
                assert self.release.wait(30)
            return original(model, requests, options, progress)

        monkeypatch.setattr(batched_diffusion, "latents_to_mels", held)


def _call_in_thread(shared, diffusion, frames, seed, options, results, progress=None):
    def run():
        latents, cond = _inputs(diffusion, frames, seed)
        try:
            results[seed] = shared.latents_to_mel(diffusion, latents, cond, options, torch.Generator().manual_seed(seed), progress)
        except BaseException as error:  # noqa: BLE001 - the test inspects it
            results[seed] = error

    thread = threading.Thread(target=run)
    thread.start()
    return thread


def _wait_queued(shared, count):
    for _ in range(600):
        with shared._lock:
            if len(shared._waiting) >= count:
                return
        threading.Event().wait(0.01)
    raise AssertionError(f"{count} calls never queued")


def test_callers_that_arrive_together_share_one_batch_and_get_their_own_mels(diffusion, monkeypatch):
    held = _HeldFirstBatch(monkeypatch)
    shared = BatchedDiffusion(diffusion)
    results = {}
    try:
        first = _call_in_thread(shared, diffusion, 12, 0, DPM, results)
        assert held.started.wait(30)
        others = [_call_in_thread(shared, diffusion, frames, seed, DPM, results) for frames, seed in ((7, 1), (20, 2), (15, 3))]
        _wait_queued(shared, 3)
        held.release.set()
        for thread in [first, *others]:
            thread.join(30)
    finally:
        shared.close(5)
    assert held.batch_sizes == [1, 3]
    assert shared.stats().batches == 2 and shared.stats().rows == 4
    for frames, seed in ((12, 0), (7, 1), (20, 2), (15, 3)):
        latents, cond = _inputs(diffusion, frames, seed)
        alone = latents_to_mel(diffusion, latents, cond, DPM, torch.Generator().manual_seed(seed))
        torch.testing.assert_close(results[seed], alone, atol=2e-3, rtol=0)


def test_calls_with_other_options_wait_for_their_own_batch(diffusion, monkeypatch):
    held = _HeldFirstBatch(monkeypatch)
    shared = BatchedDiffusion(diffusion)
    results = {}
    other = SamplerOptions(sampler="dpm++2m", steps=2)
    try:
        first = _call_in_thread(shared, diffusion, 6, 0, DPM, results)
        assert held.started.wait(30)
        threads = []
        for seed, options in ((1, other), (2, DPM), (3, other)):  # queued in this order, one after another
            threads.append(_call_in_thread(shared, diffusion, 6, seed, options, results))
            _wait_queued(shared, seed)
        held.release.set()
        for thread in [first, *threads]:
            thread.join(30)
    finally:
        shared.close(5)
    assert held.batch_sizes == [1, 2, 1]  # the oldest's options first: steps 2 (seeds 1 and 3), then seed 2
    assert all(isinstance(results[seed], torch.Tensor) for seed in range(4))


def test_the_p_sampler_runs_alone_in_the_callers_thread(diffusion):
    shared = BatchedDiffusion(diffusion)
    options = SamplerOptions(sampler="p", steps=3)
    latents, cond = _inputs(diffusion, 9, 5)
    try:
        mel = shared.latents_to_mel(diffusion, latents, cond, options, torch.Generator().manual_seed(5))
    finally:
        shared.close(5)
    assert torch.equal(mel, latents_to_mel(diffusion, latents, cond, options, torch.Generator().manual_seed(5)))
    assert shared.stats().batches == 0


def test_a_caller_whose_progress_raises_leaves_and_the_others_go_on(diffusion, monkeypatch):
    held = _HeldFirstBatch(monkeypatch)
    shared = BatchedDiffusion(diffusion)
    results = {}

    def cancel(done, total):
        raise KeyboardInterrupt("client went away")

    try:
        first = _call_in_thread(shared, diffusion, 6, 0, DPM, results)
        assert held.started.wait(30)
        leaving = _call_in_thread(shared, diffusion, 6, 1, DPM, results, progress=cancel)
        staying = _call_in_thread(shared, diffusion, 6, 2, DPM, results)
        leaving.join(30)
        assert isinstance(results[1], KeyboardInterrupt)
        _wait_queued(shared, 1)
        held.release.set()
        for thread in (first, staying):
            thread.join(30)
    finally:
        shared.close(5)
    assert held.batch_sizes == [1, 1]  # the one that left never ran
    assert isinstance(results[2], torch.Tensor)


def test_progress_reaches_every_step_and_a_wrong_model_is_refused(diffusion, tiny_model_dir):
    shared = BatchedDiffusion(diffusion)
    latents, cond = _inputs(diffusion, 6, 0)
    seen = []
    try:
        shared.latents_to_mel(diffusion, latents, cond, DPM, torch.Generator().manual_seed(0), lambda d, t: seen.append((d, t)))
        other = type(diffusion)(diffusion.config).eval()
        with pytest.raises(OptionsError, match="another model"):
            shared.latents_to_mel(other, latents, cond, DPM)
    finally:
        shared.close(5)
    assert seen[-1] == (3, 3) and [d for d, _ in seen] == sorted(d for d, _ in seen) and {t for _, t in seen} == {3}
    with pytest.raises(OptionsError, match="max_rows"):
        BatchedDiffusion(diffusion, max_rows=0)
    with pytest.raises(OptionsError, match="threads"):
        BatchedDiffusion(diffusion, threads=0)


def test_closing_refuses_new_calls_and_fails_waiting_ones(diffusion, monkeypatch):
    held = _HeldFirstBatch(monkeypatch)
    shared = BatchedDiffusion(diffusion)
    results = {}
    first = _call_in_thread(shared, diffusion, 6, 0, DPM, results)
    assert held.started.wait(30)
    waiting = _call_in_thread(shared, diffusion, 6, 1, DPM, results)
    _wait_queued(shared, 1)
    closer = threading.Thread(target=shared.close, args=(10,))
    closer.start()
    waiting.join(30)
    assert isinstance(results[1], DiffusionClosed)
    held.release.set()
    closer.join(30)
    first.join(30)
    assert isinstance(results[0], torch.Tensor)  # the running batch finished
    latents, cond = _inputs(diffusion, 6, 2)
    with pytest.raises(DiffusionClosed):
        shared.latents_to_mel(diffusion, latents, cond, DPM)
