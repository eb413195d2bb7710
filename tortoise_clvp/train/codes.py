"""The codes stage: train the discrete VAE on the corpus's conditioning mels, then encode every utterance.

WORK_DIR/codes/ then holds mels.safetensors (`mel_cache`), the DVAE's training folder (checkpoint.pt, dvae.safetensors
+ dvae.json: the best weights, metrics.json) and codes.safetensors: every utterance's codes end to end with offsets,
the utterance ids, the codebook size and the calm code (the code of silence) in its metadata. A finished stage (its
codes file written) is skipped when run again; an interrupted one resumes from its checkpoint.

Fine-tuning (`init_dir`): the decoder and CLVP of that model only understand its own codebook, so its DVAE is reused
as it is (not trained) to encode the new corpus.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path

import torch
import torch.nn.functional as F
from safetensors import SafetensorError, safe_open
from safetensors.torch import load_file, save
from torch import Tensor, nn

from ..atomic import write_bytes_atomic
from ..config import DvaeConfig, TokenIds, mel_start_stop
from ..errors import CheckpointError
from ..frontend.mel import load_mel_norms
from ..models.dvae import DiscreteVae
from .config import CODES_DIR, TOKENIZER_DIR, TRAIN_SPLIT, VALID_SPLIT, CodesConfig, RecipeConfig, TrainProgress
from .loop import StageRun, initial_model, load_trained, step_generator
from .mel_cache import MelCache, build_mel_cache
from .metadata import read_metadata

PART = "dvae"
CODES_FILE = "codes.safetensors"
MEL_NORMS_FILE = "mel_norms.pth"
CODE_DTYPE = torch.int16  # codebooks up to 32768 codes
ENCODE_FRAMES = 4096  # frames per encoder call when encoding the corpus (bounds memory, any length works)
RESTART_GRACE_STEPS = 10  # steps a restarted code has to be picked before it counts as dead again


@dataclass(frozen=True)
class SpeechCodes:
    """Every utterance's codes: `codes(i)` for utterance `ids[i]`; `calm_code` is the code of silence."""

    ids: list[str]
    values: Tensor  # (total codes,) int16
    offsets: Tensor  # (utterances + 1,) int64
    codebook_size: int
    calm_code: int
    summary: dict

    def codes(self, index: int) -> Tensor:
        return self.values[self.offsets[index] : self.offsets[index + 1]].long()

    def length(self, index: int) -> int:
        return int(self.offsets[index + 1] - self.offsets[index])


class DvaeTraining(nn.Module):
    """The DVAE plus its codebook's training state: per code, the decayed count of latents assigned to it and the
    decayed sum of those latents (the codebook is their ratio). Kept with the weights, so a resumed run continues
    the same averages."""

    def __init__(self, config: DvaeConfig):
        super().__init__()
        self.config = config
        self.dvae = DiscreteVae(config)
        self.register_buffer("code_counts", torch.zeros(config.codebook_size))  # 0: every code starts dead
        self.register_buffer("code_sums", torch.zeros(config.codebook_size, config.code_dim))

    @torch.no_grad()
    def update_codebook(self, latents: Tensor, codes: Tensor, decay: float, dead_fraction: float, generator: torch.Generator) -> int:
        """Move each code towards the (normalised) mean of the latents (B, D, T') assigned to it (codes (B, T'));
        restart the codes whose average use falls below `dead_fraction` of an even share on random latents of this
        batch. A restarted code that nobody picks falls below the threshold again after RESTART_GRACE_STEPS steps,
        so unused codes keep being reseeded where the latents are now. Returns the number of restarts."""
        flat = latents.transpose(1, 2).reshape(-1, latents.shape[1])  # (N, D)
        assigned = codes.reshape(-1)
        size = self.config.codebook_size
        self.code_counts.mul_(decay).add_(torch.bincount(assigned, minlength=size).float(), alpha=1 - decay)
        self.code_sums.mul_(decay).add_(torch.zeros_like(self.code_sums).index_add_(0, assigned, flat), alpha=1 - decay)
        threshold = dead_fraction * flat.shape[0] / size  # of the latents per step, each code's even share
        dead = self.code_counts < threshold
        live = ~dead
        self.dvae.codebook[live] = F.normalize(self.code_sums[live], dim=1)
        restarts = int(dead.sum())
        if restarts:
            fresh = flat[torch.randint(flat.shape[0], (restarts,), generator=generator)]
            self.dvae.codebook[dead] = fresh
            count = threshold / decay**RESTART_GRACE_STEPS
            self.code_counts[dead] = count
            self.code_sums[dead] = fresh * count
        return restarts


def pad_frames(mel: Tensor, silence: Tensor, multiple: int) -> Tensor:
    """(80, T) -> (80, T') with T' the next multiple of `multiple`, padded with silence frames (80,)."""
    missing = -mel.shape[1] % multiple
    return torch.cat([mel, silence[:, None].expand(-1, missing)], dim=1) if missing else mel


def random_crop(mel: Tensor, silence: Tensor, frames: int, generator: torch.Generator) -> Tensor:
    """A random window of `frames` frames of (80, T), silence-padded if the clip is shorter."""
    if mel.shape[1] <= frames:
        return pad_frames(mel, silence, frames)[:, :frames]
    start = int(torch.randint(mel.shape[1] - frames + 1, (1,), generator=generator))
    return mel[:, start : start + frames]


def perplexity(counts: Tensor) -> float:
    """exp(entropy) of a code histogram: how many codes are in effect used (1 .. codebook size)."""
    p = counts.double() / counts.sum()
    p = p[p > 0]
    return float(torch.exp(-(p * p.log()).sum()))


@torch.inference_mode()
def encode_mel(dvae: DiscreteVae, mel: Tensor, silence: Tensor) -> Tensor:
    """(80, T) normalised mel -> codes (ceil(T / compression),), the last code covering silence padding."""
    compression = dvae.config.compression
    padded = pad_frames(mel, silence, compression)
    pieces = [dvae.encode(padded[None, :, start : start + ENCODE_FRAMES])[0] for start in range(0, padded.shape[1], ENCODE_FRAMES)]
    return torch.cat(pieces)


def evaluate_dvae(dvae: DiscreteVae, mels: MelCache, items: list[int]) -> dict[str, float]:
    """Reconstruction MSE of whole held-out utterances (normalised log-mel, real frames only) and codebook use."""
    squared, frames = 0.0, 0
    counts = torch.zeros(dvae.config.codebook_size)
    with torch.inference_mode():
        for index in items:
            mel = mels.mel(index)
            codes = encode_mel(dvae, mel, mels.silence)
            recon = dvae.decode(codes[None])[0, :, : mel.shape[1]]
            squared += float((recon - mel).pow(2).sum()) / mel.shape[0]
            frames += mel.shape[1]
            counts += torch.bincount(codes, minlength=len(counts)).float()
    return {
        "loss": squared / frames,
        "perplexity": perplexity(counts),
        "usage": float((counts > 0).float().mean()),
    }


def calm_code(codes: list[Tensor], mels: MelCache, items: list[int], norms: Tensor, compression: int, quantile: float) -> int:
    """The code of silence: the most frequent code on the quietest `quantile` of code frames (loudness = the mean
    unnormalised log-mel of the frames a code covers)."""
    loudness, chosen = [], []
    for index, item_codes in zip(items, codes):
        log_mel = pad_frames(mels.mel(index), mels.silence, compression) * norms[:, None]  # (80, T')
        loudness.append(log_mel.mean(dim=0).view(-1, compression).mean(dim=1)[: len(item_codes)])
        chosen.append(item_codes)
    loudness_all, codes_all = torch.cat(loudness), torch.cat(chosen)
    quiet = loudness_all <= torch.quantile(loudness_all, quantile)
    return int(torch.bincount(codes_all[quiet]).argmax())


def speech_tokens(codes: SpeechCodes, fix_tail_length: int) -> TokenIds:
    """The special ids of a decoder over this codebook: start and stop after its codes, the calm code, and a tail of
    `fix_tail_length` calm codes (silence, where the release's tail was three arbitrary codes)."""
    start, stop = mel_start_stop(codes.codebook_size + 2)
    return TokenIds(mel_start=start, mel_stop=stop, calm=codes.calm_code, fix_tail=(codes.calm_code,) * fix_tail_length)


def codes_path(work_dir: Path) -> Path:
    return Path(work_dir) / CODES_DIR / CODES_FILE


def load_codes(work_dir: Path) -> SpeechCodes:
    """The codes the codes stage wrote; CheckpointError saying to run it when they are missing or damaged."""
    path = codes_path(work_dir)
    if not path.is_file():
        raise CheckpointError(f"no speech codes in {path.parent}: run `clvp-tts train codes {work_dir}` first")
    try:
        with safe_open(str(path), "pt") as handle:
            meta = handle.metadata()
        tensors = load_file(str(path))
        summary = json.loads(meta["summary"])
        return SpeechCodes(json.loads(meta["ids"]), tensors["codes"], tensors["offsets"], summary["codebook_size"],
                           summary["calm_code"], summary)
    except (OSError, SafetensorError, KeyError, ValueError) as error:
        raise CheckpointError(f"cannot read {path} ({error}); delete it and rerun the codes stage") from None


def load_dvae(work_dir: Path) -> DiscreteVae:
    """The trained DVAE of a work folder (eval mode)."""
    return load_trained(Path(work_dir) / CODES_DIR, PART, DvaeTraining, DvaeConfig).dvae


def _train(folder: Path, settings: CodesConfig, seed: int, mels: MelCache, train: list[int], valid: list[int],
           progress: TrainProgress) -> DiscreteVae:
    model = initial_model(DvaeTraining, settings.model, PART, seed)
    run = StageRun(folder, PART, model, settings.loop, progress)
    if settings.crop_frames % settings.model.compression:
        raise ValueError(f"crop_frames {settings.crop_frames} must be a multiple of {settings.model.compression}")

    def loss(step: int) -> tuple[Tensor, dict[str, float]]:
        generator = step_generator(seed, step)
        picks = torch.randint(len(train), (settings.batch_size,), generator=generator).tolist()
        batch = torch.stack([random_crop(mels.mel(train[i]), mels.silence, settings.crop_frames, generator) for i in picks])
        recon, latents, codes = model.dvae(batch)
        reconstruction = F.mse_loss(recon, batch)
        commitment = F.mse_loss(latents, model.dvae.lookup(codes))
        restarts = model.update_codebook(latents.detach(), codes, settings.codebook_decay, settings.dead_code_fraction, generator)
        used = torch.bincount(codes.reshape(-1), minlength=settings.model.codebook_size)
        return reconstruction + settings.commitment_weight * commitment, {
            "reconstruction": reconstruction.item(), "restarts": float(restarts), "batch_perplexity": perplexity(used)}

    run.train(loss, lambda trained: evaluate_dvae(trained.dvae, mels, valid), "frames/s",
              settings.batch_size * settings.crop_frames)
    return load_trained(folder, PART, DvaeTraining, DvaeConfig).dvae


def run_codes(work_dir: Path, config: RecipeConfig, progress: TrainProgress) -> None:
    """Train the DVAE (or take the init model's) and write every utterance's speech codes."""
    work_dir = Path(work_dir)
    folder = work_dir / CODES_DIR
    if codes_path(work_dir).is_file():
        return
    settings = config.codes
    utterances = read_metadata(work_dir)
    norms = load_mel_norms(work_dir / TOKENIZER_DIR / MEL_NORMS_FILE)
    mels = build_mel_cache(work_dir, utterances, norms, progress)
    train = [i for i, u in enumerate(utterances) if u.split == TRAIN_SPLIT]
    valid = [i for i, u in enumerate(utterances) if u.split == VALID_SPLIT][: settings.valid_items] or train[: settings.valid_items]
    if config.init_dir is not None:
        from .export import load_exported_dvae

        dvae = load_exported_dvae(Path(config.init_dir))
        source = f"reused from {config.init_dir}"
    else:
        dvae = _train(folder, settings, config.seed, mels, train, valid, progress)
        source = "trained"
    dvae.eval()
    codes = []
    for index in range(len(utterances)):
        codes.append(encode_mel(dvae, mels.mel(index), mels.silence).to(CODE_DTYPE))
        if (index + 1) % 500 == 0 or index + 1 == len(utterances):
            progress("encode", index + 1, len(utterances), {})
    counts = torch.bincount(torch.cat([codes[i] for i in train]).long(), minlength=dvae.config.codebook_size)
    summary = {
        "codebook_size": dvae.config.codebook_size,
        "calm_code": calm_code([codes[i].long() for i in train], mels, train, norms, dvae.config.compression,
                               settings.silence_quantile),
        "silence_code": int(encode_mel(dvae, mels.silence[:, None].repeat(1, 16), mels.silence)[0]),
        "train_perplexity": perplexity(counts),
        "train_usage": float((counts > 0).float().mean()),
        "valid": evaluate_dvae(dvae, mels, valid),
        "dvae": source,
    }
    offsets = torch.tensor([0, *torch.tensor([len(c) for c in codes]).cumsum(0).tolist()], dtype=torch.long)
    meta = {"ids": json.dumps([u.id for u in utterances]), "summary": json.dumps(summary)}
    write_bytes_atomic(codes_path(work_dir), save({"codes": torch.cat(codes), "offsets": offsets}, metadata=meta))
    progress("codes", 1, 1, {k: float(v) for k, v in summary.items() if isinstance(v, (int, float))})

