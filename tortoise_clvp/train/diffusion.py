"""The diffusion stage: a small diffusion decoder trained to turn the trained decoder's latents into 24 kHz mels.

The examples (`diffusion_examples.py`) are prepared the way inference prepares the decoder's input: the true codes of
each utterance laid out as a sampled candidate (a stop, then `fix_speech_decoder_output`), teacher-forced through
the trained decoder (`speech_latents`) with a voice conditioning made of OTHER utterances of the voice, and cut at
the calm run (`calm_trim_length`); the target is the utterance's 24 kHz mel normalised as `latents_to_mel`
denormalises it, padded with silence over the calm frames. The diffusion decoder's own voice conditioning comes
from another utterance of the voice, so it learns the voice rather than the words.

A batch takes utterances of similar length (`BucketedBatches`) and one random window of the same number of codes
(at most `max_codes`) from each, with the mel frames those codes make. For `unconditioned_rate` of the rows the
aligned embeddings are replaced by the learned unconditioned embedding (`unconditioned_embeddings`), what the
conditioning-free pass of guidance feeds the network, so guidance works. The network learns epsilon and the
learned-range variance with improved DDPM's hybrid loss (`diffusion_loss.py`) over the 4000 timesteps every sampler
respaces, so the samplers run it unchanged. A new model starts as Tortoise's does: every residual branch's last
layer and the output layer at zero, so it begins as the identity plus a zero prediction.

Every `eval_every` steps, `valid_items` held-out utterances (training voices, unseen sentences) are scored whole at
fixed timesteps and noise (the selection loss), and `sampled_items` of them are sampled through `latents_to_mel`,
the inference path itself, as the `fast_dpm` preset samples (DPM-Solver++ with guidance, `sample_steps` steps), and
compared with their true mels.
"""

from __future__ import annotations

from dataclasses import replace
from pathlib import Path

import torch
from torch import Tensor

from ..config import DiffusionConfig
from ..errors import CheckpointError
from ..frontend.mel import denormalize_tacotron_mel, load_mel_norms
from ..frontend.text import BpeTokenizer
from ..models.autoregressive import AutoregressiveModel
from ..models.diffusion import AttentionBlock, DiffusionModel, ResBlock, output_frames
from ..pipeline.diffusion import latents_to_mel
from ..presets import preset
from .autoregressive import ArData, load_decoder
from .batches import BucketedBatches
from .codes import MEL_NORMS_FILE, load_codes
from .config import (
    DIFFUSION_DIR,
    TOKENIZER_DIR,
    TRAIN_SPLIT,
    VALID_SPLIT,
    DiffusionTrainConfig,
    RecipeConfig,
    TrainProgress,
)
from .diffusion_examples import DiffusionExamples, VoiceReferences, build_examples, build_references, preparable
from .diffusion_loss import diffusion_losses, q_sample, training_schedule
from .loop import SELECTION_METRIC, StageRun, initial_model, load_trained, step_generator
from .mel_cache import load_mel_cache
from .metadata import CorpusError, corpus_dir, read_metadata

STAGE = "diffusion"
VALID_TIMESTEPS = 8  # timesteps each held-out item is scored at, evenly spread over the process
VALID_SEED_OFFSET = 1  # held-out noise and references: their own stream, the same at every evaluation
SAMPLING_PRESET = "fast_dpm"  # held-out items are sampled as this preset samples (with sample_steps steps)

Batch = tuple[Tensor, Tensor, Tensor]  # latents (B, K, C), voice conditioning mels (B, 1, 100, 401), mels (B, 100, F)


def new_diffusion_model(config: DiffusionConfig) -> DiffusionModel:
    """A diffusion decoder initialised for training as Tortoise's is: the last layer of every residual branch
    (res-block output convs, attention output projections) and the output conv at zero."""
    model = DiffusionModel(config)
    last_layers = [module.out_conv for module in model.modules() if isinstance(module, (ResBlock, DiffusionModel))]
    last_layers += [module.proj_out for module in model.modules() if isinstance(module, AttentionBlock)]
    with torch.no_grad():
        for layer in last_layers:
            layer.weight.zero_()
            layer.bias.zero_()
    return model


class DiffusionBatches:
    """Training batches from the prepared examples: `positions` (into `examples`) are the training items, of
    `voices`; each is conditioned on one of its voice's other reference clips."""

    def __init__(
        self,
        examples: DiffusionExamples,
        references: VoiceReferences,
        positions: list[int],
        voices: list[str],
        config: DiffusionTrainConfig,
        seed: int,
    ) -> None:
        self.examples, self.references, self.positions, self.config = examples, references, positions, config
        self.others = [references.others(voice, examples.indices[p]) for p, voice in zip(positions, voices)]
        self.batches = BucketedBatches([examples.length(p) for p in positions], config.batch_size, seed)

    def batch(self, step: int, generator: torch.Generator) -> Batch:
        """The batch of `step`: one window length K <= max_codes for all its rows."""
        rows = self.batches.batch(step)
        window = min(self.config.max_codes, *(self.examples.length(self.positions[row]) for row in rows))
        latents, conditioning, mels = [], [], []
        for row in rows:
            position, others = self.positions[row], self.others[row]
            start = int(torch.randint(self.examples.length(position) - window + 1, (), generator=generator))
            first = output_frames(start)
            latents.append(self.examples.latents(position)[start : start + window])
            mels.append(self.examples.mel(position)[:, first : first + output_frames(window)])
            conditioning.append(self.references.mel(others[int(torch.randint(len(others), (), generator=generator))]))
        return torch.stack(latents), torch.stack(conditioning), torch.stack(mels)


def training_loss(
    model: DiffusionModel, config: DiffusionTrainConfig, batch: Batch, generator: torch.Generator
) -> tuple[Tensor, dict[str, float]]:
    """The hybrid loss of one batch at random timesteps, with the conditioning dropped for some rows."""
    latents, conditioning_mels, mels = batch
    rows, frames = mels.shape[0], mels.shape[2]
    schedule = training_schedule()
    t = torch.randint(schedule.num_steps, (rows,), generator=generator)
    noise = torch.randn(mels.shape, generator=generator)
    dropped = torch.rand(rows, generator=generator) < config.unconditioned_rate
    embeddings = model.timestep_independent(latents, model.get_conditioning(conditioning_mels), frames)  # (B, C, T)
    embeddings = torch.where(dropped[:, None, None], model.unconditioned_embeddings(rows, frames), embeddings)
    x_t = q_sample(schedule, mels, t, noise)
    losses = diffusion_losses(schedule, model(x_t, t, embeddings), mels, x_t, t, noise, model.config.prediction)
    return losses.total(config.vb_weight), {"mse": losses.mse.mean().item(), "vb": losses.vb.mean().item()}


@torch.no_grad()
def evaluate(model: DiffusionModel, held_out: list[Batch], config: DiffusionTrainConfig, seed: int) -> dict[str, float]:
    """Held-out metrics over whole utterances, each (latents (M, C), conditioning mel (1, 100, 401), mel): the
    hybrid loss terms at VALID_TIMESTEPS fixed timesteps and noise, and the log-mel L1 of `sampled_items` of them
    sampled through the inference path (`latents_to_mel`, as SAMPLING_PRESET samples, in sample_steps steps)."""
    schedule = training_schedule()
    generator = torch.Generator().manual_seed(seed + VALID_SEED_OFFSET)
    t = torch.linspace(0, schedule.num_steps - 1, VALID_TIMESTEPS).round().long()
    mse = vb = 0.0
    for latents, conditioning_mel, mel in held_out:
        conditioning = model.get_conditioning(conditioning_mel[None])
        embeddings = model.timestep_independent(latents[None], conditioning, mel.shape[1]).expand(len(t), -1, -1)
        x_start = mel[None].expand(len(t), -1, -1)
        noise = torch.randn(x_start.shape, generator=generator)
        x_t = q_sample(schedule, x_start, t, noise)
        losses = diffusion_losses(
            schedule, model(x_t, t, embeddings), x_start, x_t, t, noise, model.config.prediction
        )
        mse += losses.mse.mean().item() / len(held_out)
        vb += losses.vb.mean().item() / len(held_out)
    options = replace(preset(SAMPLING_PRESET).diffusion, steps=config.sample_steps)
    sampled_l1 = 0.0
    sampled = held_out[: config.sampled_items]
    for latents, conditioning_mel, mel in sampled:
        voice = model.get_conditioning(conditioning_mel[None])[0]  # what `diffusion_conditioning` computes
        made = latents_to_mel(model, latents, voice, options, generator)  # (100, frames), a log-mel
        sampled_l1 += (made - denormalize_tacotron_mel(mel)).abs().mean().item() / len(sampled)
    return {SELECTION_METRIC: mse + config.vb_weight * vb, "mse": mse, "vb": vb, "sampled_mel_l1": sampled_l1}


def training_data(
    work_dir: Path, config: RecipeConfig, autoregressive: AutoregressiveModel, progress: TrainProgress
) -> tuple[DiffusionBatches, list[Batch]]:
    """The training batches and the held-out utterances (latents, conditioning mel, mel), from the examples the
    trained decoder makes of the corpus (built on the first run)."""
    settings = config.diffusion
    mel_norms = load_mel_norms(work_dir / TOKENIZER_DIR / MEL_NORMS_FILE)
    utterances, tokenizer = read_metadata(work_dir), BpeTokenizer(work_dir / TOKENIZER_DIR)
    data = ArData(utterances, tokenizer, load_codes(work_dir), load_mel_cache(work_dir, mel_norms))
    train = [i for i in data.split(TRAIN_SPLIT) if preparable(data, i, autoregressive.config)][: settings.max_examples]
    valid = [i for i in data.split(VALID_SPLIT) if preparable(data, i, autoregressive.config)][: settings.valid_items]
    if not train or not valid:
        raise CorpusError(
            f"the corpus in {corpus_dir(work_dir)} needs training and held-out utterances that fit the decoder, of "
            "voices with other training utterances to condition on; rerun the corpus stage with more sentences"
        )
    clips = config.autoregressive.conditioning_clips
    examples = build_examples(work_dir, data, train + valid, autoregressive, clips, config.seed, progress)
    references = build_references(work_dir, data, settings.reference_clips, config.seed)
    voices = [data.utterances[i].voice for i in train + valid]
    positions = list(range(len(train)))  # the training items come first in `examples`
    batches = DiffusionBatches(examples, references, positions, voices[: len(train)], settings, config.seed)
    generator = torch.Generator().manual_seed(config.seed + VALID_SEED_OFFSET)
    held_out = []
    for position in range(len(train), len(train) + len(valid)):
        others = references.others(voices[position], examples.indices[position])
        reference = references.mel(others[int(torch.randint(len(others), (), generator=generator))])
        held_out.append((examples.latents(position), reference, examples.mel(position)))
    return batches, held_out


def run_diffusion(work_dir: Path, config: RecipeConfig, progress: TrainProgress) -> None:
    """Train (or resume training) the diffusion decoder into WORK_DIR/diffusion; a finished run is left as it is."""
    work_dir, settings = Path(work_dir), config.diffusion
    autoregressive = load_decoder(work_dir).requires_grad_(False)
    sizes = replace(
        settings.model,
        in_latent_channels=autoregressive.config.model_dim,
        in_tokens=autoregressive.config.number_mel_codes,
    )
    model = initial_model(new_diffusion_model, sizes, STAGE, config.seed, config.init_dir)
    if model.config.in_latent_channels != autoregressive.config.model_dim:
        raise CheckpointError(
            f"the diffusion decoder of {config.init_dir} takes {model.config.in_latent_channels}-wide latents but the "
            f"trained decoder makes {autoregressive.config.model_dim}-wide ones; fine-tune both from the same model"
        )
    run = StageRun(work_dir / DIFFUSION_DIR, STAGE, model, settings.loop, progress)
    batches, held_out = (None, []) if run.finished else training_data(work_dir, config, autoregressive, progress)

    def loss(step: int) -> tuple[Tensor, dict[str, float]]:
        generator = step_generator(config.seed, step)
        return training_loss(model, settings, batches.batch(step, generator), generator)

    run.train(loss, lambda evaluated: evaluate(evaluated, held_out, settings, config.seed), "items_per_s",
              settings.batch_size)


def load_diffusion_decoder(work_dir: Path) -> DiffusionModel:
    """The best diffusion decoder the stage wrote into WORK_DIR/diffusion (eval mode)."""
    return load_trained(Path(work_dir) / DIFFUSION_DIR, STAGE, DiffusionModel, DiffusionConfig)
