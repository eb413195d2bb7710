"""The diffusion stage: a small diffusion decoder trained to turn the trained decoder's latents into 24 kHz mels.

Each training item is prepared the way inference prepares its input (`TextToSpeech.candidates`):

- the voice: OTHER utterances of the same voice (so the decoder learns the voice, not the words): for the frozen
  autoregressive decoder, its conditioning mel drawn as its own stage drew it (`mel_cache.voice_conditioning`); for
  the diffusion decoder, one other clip shaped by `diffusion_conditioning_mel` (its encoder is trained here);
- the latents: the utterance's true speech codes, followed by a stop token and run through
  `fix_speech_decoder_output` as a sampled candidate is (calm tokens after the stop), teacher-forced through the
  decoder (`speech_latents`) and cut at the calm run (`calm_trim_length`): the speech plus 8 calm frames;
- the target: the utterance's 24 kHz UnivNet log-mel, normalised to [-1, 1] with `normalize_tacotron_mel` (what
  `latents_to_mel` denormalises) and padded with silence over the calm frames, to `output_frames` of the latents.

A batch takes one random window of the same number of codes (at most `max_codes`) from each item, and the matching
mel frames. For `unconditioned_rate` of the items the aligned embeddings are replaced by the learned unconditioned
embedding (`unconditioned_embeddings`), the input of the conditioning-free pass of guidance. The network learns
epsilon and the learned-range variance with the hybrid loss (`diffusion_loss.py`), over the 4000 timesteps every
sampler respaces, so the released samplers run it unchanged.

Every `eval_every` steps, `valid_items` held-out utterances (training voices, unseen sentences) are scored whole at
fixed timesteps and noise (the selection loss), and `sampled_items` of them are sampled with DPM-Solver++ and
guidance through `latents_to_mel`, the inference path itself, and compared with their true mels.
"""

from __future__ import annotations

from dataclasses import dataclass, replace
from pathlib import Path

import torch
from torch import Tensor

from ..config import DiffusionConfig
from ..errors import CheckpointError
from ..frontend.audio import load_audio
from ..frontend.mel import (
    CONDITIONING_SAMPLE_RATE,
    OUTPUT_SAMPLE_RATE,
    denormalize_tacotron_mel,
    load_mel_norms,
    normalize_tacotron_mel,
    univnet_mel,
)
from ..frontend.text import BpeTokenizer
from ..models.autoregressive import AutoregressiveModel
from ..models.diffusion import DiffusionModel, output_frames
from ..pipeline.conditioning import diffusion_conditioning_mel
from ..pipeline.diffusion import latents_to_mel
from ..pipeline.samplers import SamplerOptions
from ..pipeline.trimming import calm_trim_length, fix_speech_decoder_output
from .autoregressive import ArData, fits, load_decoder
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
from .diffusion_loss import diffusion_losses, q_sample, training_schedule
from .loop import SELECTION_METRIC, StageRun, initial_model, load_trained, step_generator
from .mel_cache import load_mel_cache, voice_conditioning
from .metadata import CorpusError, corpus_dir, read_metadata

STAGE = "diffusion"
SILENCE = -1.0  # the normalised mel of silence (log floor): the target over the calm frames after the speech
VALID_TIMESTEPS = 8  # timesteps each held-out item is scored at, evenly spread over the process
VALID_SEED_OFFSET = 1  # held-out noise and reference clips: their own stream, the same at every evaluation
GUIDANCE_K = 2.0  # the presets' conditioning-free guidance weight, used when sampling held-out items


@dataclass(frozen=True)
class Example:
    """One utterance prepared for the diffusion decoder (see the module notes): latents (M, C) cut as inference
    cuts them, the other clip's diffusion conditioning mel (1, 100, 401), and the normalised target mel
    (100, output_frames(M))."""

    latents: Tensor
    conditioning_mel: Tensor
    mel: Tensor


class DiffusionData:
    """Turns corpus utterances into `Example`s with the frozen decoder, and draws training batches.

    Built on the decoder stage's `ArData` (text ids, codes, cached conditioning mels, each voice's training
    utterances); the decoder's voice conditioning is drawn as that stage draws it (up to `conditioning_clips` other
    utterances of the voice), the diffusion decoder's from one other utterance."""

    def __init__(self, work_dir: Path, data: ArData, autoregressive: AutoregressiveModel, conditioning_clips: int) -> None:
        self.folder, self.data, self.conditioning_clips = corpus_dir(work_dir), data, conditioning_clips
        self.autoregressive = autoregressive.eval().requires_grad_(False)
        self.train = [i for i in data.split(TRAIN_SPLIT) if fits(autoregressive.config, data, i)]
        if not self.train:
            raise CorpusError(
                f"the corpus in {self.folder} has no training utterance that fits the decoder and whose voice has "
                "another to condition on; rerun the corpus stage with more sentences"
            )

    @torch.no_grad()
    def example(self, index: int, generator: torch.Generator) -> Example:
        """Prepare utterance `index` (of `ArData`), conditioned on other utterances of its voice drawn with
        `generator`."""
        data, model = self.data, self.autoregressive
        tokens, utterance = model.config.tokens, data.utterances[index]
        pool = [i for i in data.pools[utterance.voice] if i != index]
        voice = model.get_conditioning(voice_conditioning(data.mels, pool, self.conditioning_clips, generator)[None])
        stops = torch.full((tokens.calm_run_to_trim + len(tokens.fix_tail),), tokens.mel_stop)
        candidate = fix_speech_decoder_output(torch.cat([data.codes.codes(index), stops])[None], tokens)  # (1, L)
        cut = calm_trim_length(candidate[0], tokens)
        latents = model.speech_latents(voice, data.texts[index][None], candidate)[0, :cut]  # (cut, C)
        audio = load_audio(self.folder / utterance.wav_24k, OUTPUT_SAMPLE_RATE)
        mel = normalize_tacotron_mel(univnet_mel(audio)[0]).clamp(-1.0, 1.0)  # (100, frames)
        frames = output_frames(cut)
        mel = torch.cat([mel, mel.new_full((mel.shape[0], max(frames - mel.shape[1], 0)), SILENCE)], dim=1)[:, :frames]
        reference = data.utterances[pool[int(torch.randint(len(pool), (), generator=generator))]]
        clip = load_audio(self.folder / reference.wav_22k, CONDITIONING_SAMPLE_RATE)
        return Example(latents.float(), diffusion_conditioning_mel(clip), mel)

    def batch(self, config: DiffusionTrainConfig, generator: torch.Generator) -> tuple[Tensor, Tensor, Tensor]:
        """A training batch: latent windows (B, K, C), conditioning mels (B, 1, 100, 401), mel windows
        (B, 100, output_frames(K)), with one window length K <= max_codes for the batch."""
        picks = torch.randint(len(self.train), (config.batch_size,), generator=generator).tolist()
        examples = [self.example(self.train[i], generator) for i in picks]
        window = min(config.max_codes, *(example.latents.shape[0] for example in examples))
        latents, mels = [], []
        for example in examples:
            start = int(torch.randint(example.latents.shape[0] - window + 1, (), generator=generator))
            first = output_frames(start)
            latents.append(example.latents[start : start + window])
            mels.append(example.mel[:, first : first + output_frames(window)])
        return torch.stack(latents), torch.stack([e.conditioning_mel for e in examples]), torch.stack(mels)


def training_loss(
    model: DiffusionModel, config: DiffusionTrainConfig, batch: tuple[Tensor, Tensor, Tensor], generator: torch.Generator
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
    losses = diffusion_losses(schedule, model(x_t, t, embeddings), mels, x_t, t, noise)
    return losses.total(config.vb_weight), {"mse": losses.mse.mean().item(), "vb": losses.vb.mean().item()}


@torch.no_grad()
def evaluate(model: DiffusionModel, examples: list[Example], config: DiffusionTrainConfig, seed: int) -> dict[str, float]:
    """Held-out metrics: the hybrid loss terms at VALID_TIMESTEPS fixed timesteps and noise over whole utterances,
    and the log-mel L1 of `sampled_items` of them sampled through the inference path (`latents_to_mel`)."""
    schedule = training_schedule()
    generator = torch.Generator().manual_seed(seed + VALID_SEED_OFFSET)
    t = torch.linspace(0, schedule.num_steps - 1, VALID_TIMESTEPS).round().long()
    mse = vb = 0.0
    for example in examples:
        frames = example.mel.shape[1]
        conditioning = model.get_conditioning(example.conditioning_mel[None])
        embeddings = model.timestep_independent(example.latents[None], conditioning, frames).expand(len(t), -1, -1)
        x_start = example.mel[None].expand(len(t), -1, -1)
        noise = torch.randn(x_start.shape, generator=generator)
        x_t = q_sample(schedule, x_start, t, noise)
        losses = diffusion_losses(schedule, model(x_t, t, embeddings), x_start, x_t, t, noise)
        mse += losses.mse.mean().item() / len(examples)
        vb += losses.vb.mean().item() / len(examples)
    options = SamplerOptions(sampler="dpm++2m", steps=config.sample_steps, cond_free=True, cond_free_k=GUIDANCE_K)
    sampled_l1 = 0.0
    sampled = examples[: config.sampled_items]
    for example in sampled:
        voice = model.get_conditioning(example.conditioning_mel[None])[0]  # what `diffusion_conditioning` computes
        mel = latents_to_mel(model, example.latents, voice, options, generator)  # (100, frames), a log-mel
        sampled_l1 += (mel - denormalize_tacotron_mel(example.mel)).abs().mean().item() / len(sampled)
    return {SELECTION_METRIC: mse + config.vb_weight * vb, "mse": mse, "vb": vb, "sampled_mel_l1": sampled_l1}


def run_diffusion(work_dir: Path, config: RecipeConfig, progress: TrainProgress) -> None:
    """Train (or resume training) the diffusion decoder into WORK_DIR/diffusion; a finished run is left as it is."""
    work_dir, settings = Path(work_dir), config.diffusion
    mel_norms = load_mel_norms(work_dir / TOKENIZER_DIR / MEL_NORMS_FILE)
    utterances, tokenizer = read_metadata(work_dir), BpeTokenizer(work_dir / TOKENIZER_DIR)
    data = ArData(utterances, tokenizer, load_codes(work_dir), load_mel_cache(work_dir, mel_norms))
    autoregressive = load_decoder(work_dir)
    examples = DiffusionData(work_dir, data, autoregressive, config.autoregressive.conditioning_clips)
    valid = [i for i in data.split(VALID_SPLIT) if fits(autoregressive.config, data, i)][: settings.valid_items]
    if not valid:
        raise CorpusError(f"the corpus in {examples.folder} has no validation utterance that fits the decoder")
    generator = torch.Generator().manual_seed(config.seed + VALID_SEED_OFFSET)
    valid_examples = [examples.example(i, generator) for i in valid]
    sizes = replace(
        settings.model, in_latent_channels=autoregressive.config.model_dim, in_tokens=autoregressive.config.number_mel_codes
    )
    model = initial_model(DiffusionModel, sizes, STAGE, config.seed, config.init_dir)
    if model.config.in_latent_channels != autoregressive.config.model_dim:
        raise CheckpointError(
            f"the diffusion decoder of {config.init_dir} takes {model.config.in_latent_channels}-wide latents but the "
            f"trained decoder makes {autoregressive.config.model_dim}-wide ones; fine-tune both from the same model"
        )
    run = StageRun(work_dir / DIFFUSION_DIR, STAGE, model, settings.loop, progress)

    def loss(step: int) -> tuple[Tensor, dict[str, float]]:
        generator = step_generator(config.seed, step)
        return training_loss(model, settings, examples.batch(settings, generator), generator)

    run.train(loss, lambda evaluated: evaluate(evaluated, valid_examples, settings, config.seed), "items_per_s",
              settings.batch_size)


def load_diffusion_decoder(work_dir: Path) -> DiffusionModel:
    """The best diffusion decoder the stage wrote into WORK_DIR/diffusion (eval mode)."""
    return load_trained(Path(work_dir) / DIFFUSION_DIR, STAGE, DiffusionModel, DiffusionConfig)
