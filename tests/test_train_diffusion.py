"""The diffusion stage: the hybrid loss against closed forms, the convention it trains is the one every sampler
reads, examples made and cut as inference makes them, dropped conditioning, and training in a work folder that
resumes exactly, lowers the held-out loss, and exports a model that speaks."""

from __future__ import annotations

import json
import math
import shutil
from dataclasses import replace
from pathlib import Path

import pytest
import torch
from train_work_dir import no_progress, prepared_work_dir

from tortoise_clvp import TextToSpeech
from tortoise_clvp.config import DiffusionConfig
from tortoise_clvp.frontend.audio import load_audio
from tortoise_clvp.frontend.mel import CONDITIONING_SAMPLE_RATE, load_mel_norms
from tortoise_clvp.frontend.text import BpeTokenizer
from tortoise_clvp.models.diffusion import output_frames
from tortoise_clvp.pipeline.conditioning import diffusion_conditioning_mel
from tortoise_clvp.pipeline.samplers import SAMPLERS, SamplerOptions, sample
from tortoise_clvp.pipeline.trimming import calm_trim_length, fix_speech_decoder_output
from tortoise_clvp.train.autoregressive import ArData, load_decoder
from tortoise_clvp.train.codes import MEL_NORMS_FILE, load_codes
from tortoise_clvp.train.config import DIFFUSION_DIR, EXPORT_DIR, TOKENIZER_DIR, RecipeConfig
from tortoise_clvp.train.diffusion import (
    load_diffusion_decoder,
    new_diffusion_model,
    run_diffusion,
    training_data,
    training_loss,
)
from tortoise_clvp.train.diffusion_examples import SILENCE
from tortoise_clvp.train.diffusion_loss import (
    discretized_gaussian_log_likelihood,
    diffusion_losses,
    normal_kl,
    q_sample,
    training_schedule,
)
from tortoise_clvp.train.export import run_export
from tortoise_clvp.train.loop import CHECKPOINT_FILE, METRICS_FILE, step_generator
from tortoise_clvp.train.mel_cache import load_mel_cache, voice_conditioning
from tortoise_clvp.train.metadata import corpus_dir, read_metadata
from tortoise_clvp.train.vocoder import run_vocoder

SMOKE = RecipeConfig.smoke()
FOUR_STEPS = replace(
    SMOKE, diffusion=replace(SMOKE.diffusion, loop=replace(SMOKE.diffusion.loop, steps=4, eval_every=4))
)
BANDS, FRAMES = 100, 12


class Interrupted(Exception):
    pass


def exact_output(schedule, x_start: torch.Tensor, x_t: torch.Tensor, t: torch.Tensor) -> torch.Tensor:
    """What a perfect network outputs for data that is always `x_start`: the true epsilon, and the variance value
    -1 (the posterior's own variance)."""
    abar = schedule.alphas_cumprod[t].float().view(-1, 1, 1)
    eps = (x_t - abar.sqrt() * x_start) / (1 - abar).sqrt()
    return torch.cat([eps, -torch.ones_like(eps)], dim=1)


def fixed_mel(rows: int = 1) -> torch.Tensor:
    bands = torch.linspace(0, 1, BANDS)[:, None]
    time = torch.linspace(0, 1, FRAMES)[None]
    return (0.8 * torch.sin(2 * math.pi * (2 * bands + time)))[None].expand(rows, -1, -1)


# the loss -------------------------------------------------------------------------------------------------------------
def test_q_sample_is_the_closed_form():
    schedule = training_schedule()
    x_start, noise, t = fixed_mel(3), torch.randn(3, BANDS, FRAMES), torch.tensor([0, 1999, 3999])
    abar = torch.tensor([float(schedule.alphas_cumprod[i]) for i in t]).view(-1, 1, 1)
    torch.testing.assert_close(q_sample(schedule, x_start, t, noise), abar.sqrt() * x_start + (1 - abar).sqrt() * noise)


def test_normal_kl_matches_torch_distributions():
    mean1, mean2, logvar1, logvar2 = torch.randn(4, 10).unbind()
    first = torch.distributions.Normal(mean1, (0.5 * logvar1).exp())
    second = torch.distributions.Normal(mean2, (0.5 * logvar2).exp())
    expected = torch.distributions.kl_divergence(first, second)
    torch.testing.assert_close(normal_kl(mean1, logvar1, mean2, logvar2), expected)


@pytest.mark.parametrize("mean, log_scale", [(0.0, -1.0), (0.3, -4.0), (-0.9, 0.5)])
def test_the_discretized_likelihood_is_a_distribution_over_the_levels(mean, log_scale):
    levels = torch.linspace(-1, 1, 256)
    probabilities = discretized_gaussian_log_likelihood(levels, torch.tensor(mean), torch.tensor(log_scale)).exp()
    assert probabilities.sum().item() == pytest.approx(1.0, abs=1e-4)


def test_a_perfect_network_has_zero_loss():
    schedule = training_schedule()
    t = torch.tensor([0, 1, 10, 500, 2000, 3999])
    x_start, noise = fixed_mel(len(t)), torch.randn(len(t), BANDS, FRAMES)
    x_t = q_sample(schedule, x_start, t, noise)
    losses = diffusion_losses(schedule, exact_output(schedule, x_start, x_t, t), x_start, x_t, t, noise)
    assert losses.mse.max().item() < 1e-6
    assert losses.vb[1:].abs().max().item() < 1e-6  # t > 0: the KL to the true posterior
    # t = 0: -log2 of the probability of x_0's bin (half-width 1/255) under N(x_0, the clipped posterior variance)
    std = math.exp(0.5 * float(schedule.posterior_log_variance_clipped[0]))
    assert losses.vb[0].item() == pytest.approx(-math.log2(math.erf(1 / 255 / (std * math.sqrt(2)))), rel=1e-3)


def test_a_v_network_is_scored_on_its_v_error():
    """For a decoder that predicts v, the MSE is the mean squared error of v itself (its eps error is sqrt(abar)
    times smaller), from the lowest to the highest noise."""
    schedule = training_schedule()
    t = torch.tensor([0, 10, 2000, 3999])
    x_start, noise = fixed_mel(len(t)), torch.randn(len(t), BANDS, FRAMES)
    x_t = q_sample(schedule, x_start, t, noise)
    abar = schedule.alphas_cumprod[t].float().view(-1, 1, 1)
    v = abar.sqrt() * noise - (1 - abar).sqrt() * x_start
    error = 0.1 * torch.randn_like(v)
    eps = (1 - abar).sqrt() * x_t + abar.sqrt() * (v + error)  # what `DiffusionModel.forward` makes of v + error
    output = torch.cat([eps, -torch.ones_like(eps)], dim=1)
    losses = diffusion_losses(schedule, output, x_start, x_t, t, noise, prediction="v")
    torch.testing.assert_close(losses.mse, (error**2).mean(dim=(1, 2)), rtol=1e-3, atol=1e-6)
    epsilon_losses = diffusion_losses(schedule, output, x_start, x_t, t, noise)
    torch.testing.assert_close(epsilon_losses.mse, losses.mse * abar.flatten(), rtol=1e-3, atol=1e-9)


def test_the_variance_term_trains_only_the_variance():
    schedule = training_schedule()
    t = torch.tensor([5, 3000])
    x_start, noise = fixed_mel(2), torch.randn(2, BANDS, FRAMES)
    x_t = q_sample(schedule, x_start, t, noise)
    output = torch.randn(2, 2 * BANDS, FRAMES, requires_grad=True)
    diffusion_losses(schedule, output, x_start, x_t, t, noise).vb.sum().backward()
    assert output.grad[:, :BANDS].abs().max() == 0 and output.grad[:, BANDS:].abs().max() > 0


@pytest.mark.parametrize("sampler", SAMPLERS)
def test_what_the_loss_trains_is_what_the_samplers_read(sampler):
    """The network output that makes the training loss zero (exact eps, the posterior variance) takes every sampler
    from noise to the data: timesteps, scaling and the variance range mean the same on both sides."""
    schedule, x_start = training_schedule(), fixed_mel()

    def denoise(x, t):
        return exact_output(schedule, x_start, x, t)

    options = SamplerOptions(sampler=sampler, steps=20, cond_free=False)
    made = sample(denoise, (1, BANDS, FRAMES), options, generator=torch.Generator().manual_seed(0))
    torch.testing.assert_close(made, x_start, atol=1e-3, rtol=0)


# the model and the data ---------------------------------------------------------------------------------------------
def test_a_new_model_predicts_zero():
    model = new_diffusion_model(DiffusionConfig(model_channels=32, num_layers=1, num_heads=2, in_latent_channels=8))
    embeddings = model.timestep_independent(torch.randn(1, 5, 8), torch.randn(1, 64), FRAMES)
    assert model(torch.randn(2, BANDS, FRAMES), torch.tensor([3, 3000]), embeddings).abs().max() == 0


def test_a_new_v_model_predicts_the_noise_the_input_holds():
    """A new v decoder predicts v = 0, i.e. eps = sqrt(1 - abar) x and x0 = sqrt(abar) x: at high noise its x0 is
    near zero rather than the amplified error of a near-identity epsilon network."""
    config = DiffusionConfig(model_channels=32, num_layers=1, num_heads=2, in_latent_channels=8, prediction="v")
    model = new_diffusion_model(config)
    embeddings = model.timestep_independent(torch.randn(1, 5, 8), torch.randn(1, 64), FRAMES)
    x, t = torch.randn(2, BANDS, FRAMES), torch.tensor([3, 3000])
    output = model(x, t, embeddings)
    abar = training_schedule().alphas_cumprod[t].float().view(-1, 1, 1)
    torch.testing.assert_close(output[:, :BANDS], (1 - abar).sqrt() * x)
    assert output[:, BANDS:].abs().max() == 0
    # the schedule it converts with is derived, not stored: the weights have the epsilon decoder's layout
    epsilon_model = new_diffusion_model(replace(config, prediction="epsilon"))
    assert model.state_dict().keys() == epsilon_model.state_dict().keys()


def test_an_unknown_prediction_is_refused():
    with pytest.raises(ValueError, match="prediction must be one of"):
        DiffusionConfig(prediction="x0")


@pytest.fixture(scope="module")
def decoder_work(tmp_path_factory) -> Path:
    """A tiny work folder whose codes and decoder are trained (read-only)."""
    return prepared_work_dir(tmp_path_factory, ("codes", "autoregressive"))


def fresh_work(decoder_work: Path, tmp_path: Path) -> Path:
    work = tmp_path / "work"
    shutil.copytree(decoder_work, work)
    return work


@pytest.fixture(scope="module")
def prepared(decoder_work, tmp_path_factory):
    work = fresh_work(decoder_work, tmp_path_factory.mktemp("prepared"))
    batches, held_out = training_data(work, SMOKE, load_decoder(work), no_progress)
    return work, batches, held_out


def test_examples_are_cut_as_inference_cuts_them(prepared):
    work, batches, _ = prepared
    decoder = load_decoder(work)
    tokens = decoder.config.tokens
    norms = load_mel_norms(work / TOKENIZER_DIR / MEL_NORMS_FILE)
    tokenizer = BpeTokenizer(work / TOKENIZER_DIR)
    data = ArData(read_metadata(work), tokenizer, load_codes(work), load_mel_cache(work, norms))
    examples = batches.examples
    for position in (0, 3):
        index = examples.indices[position]
        codes = data.codes.codes(index)
        # a candidate as sampling leaves it: the codes, the stop, anything after
        raw = torch.cat([codes, torch.full((20,), tokens.mel_stop)])[None]
        fixed = fix_speech_decoder_output(raw, tokens)
        cut = calm_trim_length(fixed[0], tokens)
        pool = [i for i in data.pools[data.utterances[index].voice] if i != index]
        clips = SMOKE.autoregressive.conditioning_clips
        conditioning = voice_conditioning(data.mels, pool, clips, step_generator(SMOKE.seed, index))
        voice = decoder.get_conditioning(conditioning[None])
        with torch.no_grad():
            expected = decoder.speech_latents(voice, data.texts[index][None], fixed)[0, :cut]
        latents, mel = examples.latents(position), examples.mel(position)
        assert latents.shape[0] == cut and cut <= len(codes) + tokens.calm_run_to_trim - 1
        torch.testing.assert_close(latents, expected, atol=2e-3, rtol=1e-3)  # stored as float16
        assert mel.shape == (BANDS, output_frames(cut)) and mel.min() >= -1 and mel.max() <= 1
        assert (mel[:, -1] == SILENCE).all()  # the calm frames after the speech are silence


def test_conditioning_mels_are_the_inference_ones(prepared):
    """Every voice has reference clips, and their conditioning mels are `diffusion_conditioning_mel`'s."""
    work, batches, _ = prepared
    references, utterances = batches.references, read_metadata(work)
    assert set(references.voices) == {u.voice for u in utterances}
    assert len(references.indices) == len(set(references.indices)) == 3 * SMOKE.diffusion.reference_clips
    for r in (0, len(references.indices) - 1):
        clip = load_audio(corpus_dir(work) / utterances[references.indices[r]].wav_22k, CONDITIONING_SAMPLE_RATE)
        assert utterances[references.indices[r]].voice == references.voices[r]
        torch.testing.assert_close(references.mel(r), diffusion_conditioning_mel(clip), atol=1e-2, rtol=0)  # float16
    position = 0
    others = batches.others[position]
    assert batches.examples.indices[position] not in [references.indices[r] for r in others]


def test_at_most_max_examples_training_utterances_are_prepared(decoder_work, prepared, tmp_path):
    _, every, _ = prepared
    assert len(every.positions) > 3  # the tiny corpus has more training utterances than the cap below
    work = fresh_work(decoder_work, tmp_path)
    capped = replace(SMOKE, diffusion=replace(SMOKE.diffusion, max_examples=3))
    batches, _ = training_data(work, capped, load_decoder(work), no_progress)
    assert batches.positions == [0, 1, 2]  # the first three training utterances, in corpus order
    assert batches.examples.indices[:3] == every.examples.indices[:3]


def test_examples_made_by_another_decoder_are_rebuilt(prepared, tmp_path):
    """A decoder trained on after the examples were built makes other latents: its examples are rebuilt, not reused;
    the same decoder reuses them as stored."""
    work, batches, _ = prepared
    work = fresh_work(work, tmp_path)
    decoder = load_decoder(work)
    assert torch.equal(training_data(work, SMOKE, decoder, no_progress)[0].examples.latents(0),
                       batches.examples.latents(0))
    with torch.no_grad():
        for parameter in decoder.parameters():
            parameter.mul_(1.5)
    rebuilt = training_data(work, SMOKE, decoder, no_progress)[0].examples
    assert rebuilt.indices == batches.examples.indices
    assert not torch.allclose(rebuilt.latents(0), batches.examples.latents(0), atol=1e-2)


def test_batches_are_seeded_windows(prepared):
    _, batches, _ = prepared
    first = batches.batch(2, step_generator(0, 2))
    again = batches.batch(2, step_generator(0, 2))
    assert all(torch.equal(a, b) for a, b in zip(first, again))
    latents, conditioning, mels = first
    window = latents.shape[1]
    assert window <= SMOKE.diffusion.max_codes and latents.shape[0] == SMOKE.diffusion.batch_size
    assert conditioning.shape[1:] == (1, BANDS, 401) and mels.shape[1:] == (BANDS, output_frames(window))


@pytest.mark.parametrize("prediction", ["epsilon", "v"])
def test_steps_on_one_batch_lower_its_loss(prepared, prediction):
    """The loss trains the model: twenty steps on one batch (the same timesteps, noise and dropped rows each time)
    bring its loss below half (a new epsilon model predicts zero: MSE 1)."""
    _, batches, _ = prepared
    sizes = replace(SMOKE.diffusion.model, in_latent_channels=batches.examples.latents(0).shape[1], prediction=prediction)
    torch.manual_seed(0)  # a seeded new model: the outcome must not depend on the tests run before it
    model = new_diffusion_model(sizes)
    batch = batches.batch(0, step_generator(0, 0))
    optimizer = torch.optim.Adam(model.parameters(), lr=1e-2)
    losses = []
    for _ in range(20):
        loss, _ = training_loss(model, SMOKE.diffusion, batch, step_generator(0, 1))
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()
        losses.append(loss.item())
    assert losses[-1] < 0.5 * losses[0], losses
    if prediction == "epsilon":
        assert losses[0] == pytest.approx(1.0, abs=0.15), losses


@pytest.mark.parametrize("rate", [0.0, 1.0])
def test_dropped_conditioning_uses_the_unconditioned_embedding(prepared, rate):
    _, batches, _ = prepared
    model = new_diffusion_model(replace(SMOKE.diffusion.model, in_latent_channels=batches.examples.latents(0).shape[1]))
    # zero-initialised outputs pass no gradient back: give them weights so every input's gradient shows
    torch.nn.init.normal_(model.out_conv.weight, std=0.1)
    config = replace(SMOKE.diffusion, unconditioned_rate=rate)
    loss, _ = training_loss(model, config, batches.batch(0, step_generator(0, 0)), step_generator(0, 1))
    loss.backward()
    unconditioned = model.unconditioned_embedding.grad
    latent_path = model.latent_conv.weight.grad
    assert (unconditioned is not None and unconditioned.abs().sum() > 0) == (rate == 1.0)
    assert (latent_path is not None and latent_path.abs().sum() > 0) == (rate == 0.0)


# training -------------------------------------------------------------------------------------------------------------
@pytest.fixture(scope="module")
def trained(decoder_work, tmp_path_factory) -> Path:
    work = fresh_work(decoder_work, tmp_path_factory.mktemp("trained"))
    run_diffusion(work, FOUR_STEPS, no_progress)
    return work


def test_training_writes_a_loadable_decoder(trained):
    metrics = json.loads((trained / DIFFUSION_DIR / METRICS_FILE).read_text())
    assert metrics["finished"] and metrics["best_step"] == 4
    assert {"loss", "mse", "vb", "sampled_mel_l1"} <= set(metrics["history"][0])
    model = load_diffusion_decoder(trained)
    assert model.config.in_latent_channels == load_decoder(trained).config.model_dim


def test_resumed_training_equals_uninterrupted(decoder_work, trained, tmp_path):
    resumed = fresh_work(decoder_work, tmp_path)

    def stop_after_checkpoint(what, done, total, metrics):
        if what == "diffusion" and done == FOUR_STEPS.diffusion.loop.checkpoint_every:
            raise Interrupted

    with pytest.raises(Interrupted):
        run_diffusion(resumed, FOUR_STEPS, stop_after_checkpoint)
    assert torch.load(resumed / DIFFUSION_DIR / CHECKPOINT_FILE, weights_only=True)["state"]["step"] == 2
    run_diffusion(resumed, FOUR_STEPS, no_progress)
    straight = (trained / DIFFUSION_DIR / "diffusion.safetensors").read_bytes()
    assert (resumed / DIFFUSION_DIR / "diffusion.safetensors").read_bytes() == straight


def test_the_export_speaks(tmp_path_factory, tmp_path):
    work = fresh_work(prepared_work_dir(tmp_path_factory, ("codes", "autoregressive", "clvp")), tmp_path)
    run_diffusion(work, SMOKE, no_progress)
    run_vocoder(work, SMOKE, no_progress)
    run_export(work, SMOKE, no_progress)
    tts = TextToSpeech.from_local(work / EXPORT_DIR)
    assert tts.models.diffusion.config.prediction == SMOKE.diffusion.model.prediction == "v"  # kept by the export
    voice = [corpus_dir(work) / "wavs_22k" / "v0_03.wav"]
    speech = tts.generate("Hello there.", voice, "ultra_fast_dpm", seed=1)
    again = tts.generate("Hello there.", voice, "ultra_fast_dpm", seed=1)
    assert speech.sample_rate == 24000 and speech.waveform.numel() > 0
    assert speech.waveform.abs().max() > 1e-3  # not silent
    assert torch.equal(speech.waveform, again.waveform)
