"""The diffusion decoder's training examples, prepared once with the frozen decoder and kept on disk.

For every utterance the diffusion stage uses, an example holds what inference would hand the diffusion decoder and
what it should produce (see `train/diffusion.py` for why each is made this way):

- latents (M, C): the decoder's teacher-forced latents of the utterance's true codes, laid out as a sampled
  candidate (the codes, a stop, `fix_speech_decoder_output`), computed by `speech_latents` and cut by
  `calm_trim_length` as `TextToSpeech.candidates` cuts them; the decoder's voice conditioning is drawn from other
  utterances of the voice as the decoder stage drew it (`mel_cache.voice_conditioning`), seeded per utterance;
- mel (100, output_frames(M)): the utterance's 24 kHz UnivNet log-mel normalised to [-1, 1] as `latents_to_mel`
  denormalises it, padded with silence over the calm frames the latents end with.

Computing them costs a decoder pass and an STFT per utterance, as much as a training step of a small diffusion
decoder, so they are built once (float16, in shards of `SHARD_SIZE` utterances written atomically, so an
interrupted build resumes at its last shard) into WORK_DIR/diffusion/examples/. Each shard records the utterances it
holds and a fingerprint of the decoder that made its latents, so a shard made by another decoder (one trained on
since) is rebuilt rather than silently reused.

The diffusion decoder's own voice conditioning is `diffusion_conditioning_mel` of a 22.05 kHz clip, exactly as
inference computes it; `VoiceReferences` holds it for a seeded sample of each voice's training clips
(WORK_DIR/diffusion/references.safetensors), and an example is conditioned on one of its voice's other clips.
"""

from __future__ import annotations

import hashlib
import json
from dataclasses import dataclass
from pathlib import Path
from typing import Sequence

import torch
from safetensors import SafetensorError, safe_open
from safetensors.torch import load_file, save
from torch import Tensor

from ..atomic import write_bytes_atomic
from ..config import AutoregressiveConfig, TokenIds
from ..errors import CheckpointError
from ..frontend.audio import load_audio
from ..frontend.mel import CONDITIONING_SAMPLE_RATE, OUTPUT_SAMPLE_RATE, normalize_tacotron_mel, univnet_mel
from ..models.autoregressive import AutoregressiveModel
from ..models.diffusion import output_frames
from ..pipeline.conditioning import diffusion_conditioning_mel
from ..pipeline.trimming import calm_trim_length, fix_speech_decoder_output
from .autoregressive import ArData, fits
from .config import DIFFUSION_DIR, TrainProgress
from .loop import step_generator
from .mel_cache import voice_conditioning
from .metadata import corpus_dir

EXAMPLES_DIR = "examples"
SHARD_SIZE = 500  # utterances per shard (and per unit of resuming)
STORED_DTYPE = torch.float16
SILENCE = -1.0  # the normalised mel of silence (the log floor): the target over the calm frames after the speech
REFERENCES_FILE = "references.safetensors"


@dataclass(frozen=True)
class DiffusionExamples:
    """Every prepared utterance: `latents(i)` and `mel(i)` of the utterance `indices[i]` of `ArData`."""

    indices: list[int]
    latent_values: Tensor  # (total latents, C) float16
    latent_offsets: Tensor  # (utterances + 1,) int64
    mel_values: Tensor  # (total frames, 100) float16
    mel_offsets: Tensor  # (utterances + 1,) int64

    def latents(self, i: int) -> Tensor:
        """(M, C) float32."""
        return self.latent_values[self.latent_offsets[i] : self.latent_offsets[i + 1]].float()

    def mel(self, i: int) -> Tensor:
        """(100, output_frames(M)) float32, normalised to [-1, 1]."""
        return self.mel_values[self.mel_offsets[i] : self.mel_offsets[i + 1]].T.float()

    def length(self, i: int) -> int:
        return int(self.latent_offsets[i + 1] - self.latent_offsets[i])


@dataclass(frozen=True)
class VoiceReferences:
    """The diffusion decoder's conditioning mels (R, 1, 100, 401) of some training clips per voice: `indices[r]`
    (of `ArData`) is clip r, of voice `voices[r]`."""

    indices: list[int]
    voices: list[str]
    mels: Tensor  # float16

    def others(self, voice: str, index: int) -> list[int]:
        """The references of `voice` other than utterance `index` (all of them if it has no other)."""
        mine = [r for r, v in enumerate(self.voices) if v == voice]
        return [r for r in mine if self.indices[r] != index] or mine

    def mel(self, r: int) -> Tensor:
        """(1, 100, 401) float32 log-mel, what `diffusion_conditioning_mel` makes of the clip."""
        return self.mels[r].float()


def build_references(work_dir: Path, data: ArData, per_voice: int, seed: int) -> VoiceReferences:
    """Up to `per_voice` training clips of each voice (a seeded choice), their conditioning mels read from
    WORK_DIR/diffusion/references.safetensors or computed there first."""
    generator = torch.Generator().manual_seed(seed)
    indices = []
    for voice in sorted(data.pools):
        pool = data.pools[voice]
        indices += [pool[i] for i in sorted(torch.randperm(len(pool), generator=generator)[:per_voice].tolist())]
    voices = [data.utterances[i].voice for i in indices]
    path = Path(work_dir) / DIFFUSION_DIR / REFERENCES_FILE
    key = {"indices": json.dumps(indices)}
    if path.is_file():
        stored, tensors = _read_keyed(path)
        if _matches(stored, key):
            return VoiceReferences(indices, voices, tensors["mels"])
    folder = corpus_dir(work_dir)
    mels = [
        diffusion_conditioning_mel(load_audio(folder / data.utterances[i].wav_22k, CONDITIONING_SAMPLE_RATE))
        for i in indices
    ]
    stacked = torch.stack(mels).to(STORED_DTYPE)  # (R, 1, 100, 401)
    path.parent.mkdir(parents=True, exist_ok=True)
    write_bytes_atomic(path, save({"mels": stacked}, metadata=key))
    return VoiceReferences(indices, voices, stacked)


def stop_padding(tokens: TokenIds) -> int:
    """Stop tokens laid after an utterance's codes to make a sampled candidate: enough for the calm run that
    `calm_trim_length` cuts at, and for the tail `fix_speech_decoder_output` writes."""
    return tokens.calm_run_to_trim + len(tokens.fix_tail)


def preparable(data: ArData, index: int, config: AutoregressiveConfig) -> bool:
    """Whether utterance `index`, as a padded candidate, fits the decoder's position tables."""
    return fits(config, data, index) and data.codes.length(index) + stop_padding(config.tokens) < config.max_mel_tokens


@torch.no_grad()
def prepare(
    data: ArData, index: int, autoregressive: AutoregressiveModel, clips: int, corpus: Path, seed: int
) -> tuple[Tensor, Tensor]:
    """(latents (M, C), normalised mel (100, output_frames(M))) of utterance `index` of `data` (see the module notes);
    `corpus` is the corpus folder, `clips` the most utterances the decoder's voice conditioning is made of."""
    tokens, utterance = autoregressive.config.tokens, data.utterances[index]
    pool = [i for i in data.pools[utterance.voice] if i != index]
    conditioning = voice_conditioning(data.mels, pool, clips, step_generator(seed, index))  # (80, 517)
    voice = autoregressive.get_conditioning(conditioning[None])  # (1, C)
    stops = torch.full((stop_padding(tokens),), tokens.mel_stop)
    candidate = fix_speech_decoder_output(torch.cat([data.codes.codes(index), stops])[None], tokens)  # (1, L)
    cut = calm_trim_length(candidate[0], tokens)
    latents = autoregressive.speech_latents(voice, data.texts[index][None], candidate)[0, :cut]  # (cut, C)
    audio = load_audio(corpus / utterance.wav_24k, OUTPUT_SAMPLE_RATE)
    mel = normalize_tacotron_mel(univnet_mel(audio)[0]).clamp(-1.0, 1.0)  # (100, frames)
    frames = output_frames(cut)
    mel = torch.cat([mel, mel.new_full((mel.shape[0], max(frames - mel.shape[1], 0)), SILENCE)], dim=1)[:, :frames]
    return latents, mel


def _shard_path(folder: Path, shard: int) -> Path:
    return folder / f"shard_{shard:05d}.safetensors"


def _read_keyed(path: Path) -> tuple[dict[str, str], dict[str, Tensor]]:
    """A stored file's metadata (what it was made of) and tensors."""
    try:
        with safe_open(str(path), "pt") as handle:
            metadata = handle.metadata() or {}
        return metadata, load_file(str(path))
    except (OSError, SafetensorError, ValueError) as error:
        raise CheckpointError(f"cannot read {path} ({error}); delete it and rerun the diffusion stage") from None


def _matches(stored: dict[str, str], key: dict[str, str]) -> bool:
    return all(stored.get(name) == value for name, value in key.items())


def decoder_fingerprint(model: AutoregressiveModel) -> str:
    """A short hash of the decoder's weights: which decoder made a shard's latents."""
    digest = hashlib.sha256()
    for name, tensor in model.state_dict().items():
        digest.update(name.encode())
        digest.update(tensor.detach().float().cpu().contiguous().numpy().tobytes())
    return digest.hexdigest()[:16]


def build_examples(
    work_dir: Path,
    data: ArData,
    indices: Sequence[int],
    autoregressive: AutoregressiveModel,
    clips: int,
    seed: int,
    progress: TrainProgress,
) -> DiffusionExamples:
    """The examples of `indices`, from WORK_DIR/diffusion/examples (built there first where missing)."""
    folder = Path(work_dir) / DIFFUSION_DIR / EXAMPLES_DIR
    folder.mkdir(parents=True, exist_ok=True)
    shards = [list(indices[start : start + SHARD_SIZE]) for start in range(0, len(indices), SHARD_SIZE)]
    parts, decoder = [], decoder_fingerprint(autoregressive)
    for shard, wanted in enumerate(shards):
        path = _shard_path(folder, shard)
        key = {"indices": json.dumps(wanted), "decoder": decoder}
        stored = _read_keyed(path) if path.is_file() else None
        if stored is None or not _matches(stored[0], key):
            latents, mels = [], []
            for index in wanted:
                example = prepare(data, index, autoregressive, clips, corpus_dir(work_dir), seed)
                latents.append(example[0])
                mels.append(example[1])
            tensors = {
                "latents": torch.cat(latents).to(STORED_DTYPE),
                "latent_lengths": torch.tensor([len(t) for t in latents]),
                "mels": torch.cat([m.T for m in mels]).to(STORED_DTYPE),
                "mel_lengths": torch.tensor([m.shape[1] for m in mels]),
            }
            write_bytes_atomic(path, save(tensors, metadata=key))
            stored = (key, tensors)
        parts.append(stored[1])
        progress("diffusion examples", min((shard + 1) * SHARD_SIZE, len(indices)), len(indices), {})
    lengths = torch.cat([part["latent_lengths"] for part in parts])
    frames = torch.cat([part["mel_lengths"] for part in parts])
    return DiffusionExamples(
        list(indices),
        torch.cat([part["latents"] for part in parts]),
        torch.cat([torch.zeros(1, dtype=torch.long), lengths.cumsum(0)]),
        torch.cat([part["mels"] for part in parts]),
        torch.cat([torch.zeros(1, dtype=torch.long), frames.cumsum(0)]),
    )
