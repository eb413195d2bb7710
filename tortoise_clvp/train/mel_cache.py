"""Every utterance's conditioning mel, computed once and kept in one file for the model stages.

The discrete VAE trains on these mels and encodes them into codes; the decoder's conditioning is built from them.
They are the normalised 80-band log-mels the conditioning encoder sees at inference (`frontend.mel.conditioning_mel`
of the 22.05 kHz clip, divided by the corpus's mel norms), stored as float16 frames of all utterances end to end
with each utterance's offset: WORK_DIR/codes/mels.safetensors.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path
from typing import Sequence

import torch
from safetensors import SafetensorError, safe_open
from safetensors.torch import load_file, save

from ..atomic import write_bytes_atomic
from ..errors import CheckpointError
from ..frontend.audio import load_audio
from ..frontend.mel import CONDITIONING_N_MELS, CONDITIONING_SAMPLE_RATE, HOP_LENGTH, N_FFT, conditioning_mel
from ..pipeline.conditioning import CONDITIONING_SAMPLES
from .config import CODES_DIR, TrainProgress
from .metadata import Utterance, corpus_dir

MEL_CACHE_FILE = "mels.safetensors"
STORED_DTYPE = torch.float16  # halves the cache (about 0.5 GB for 10 hours); normalised log-mels lie within +-10


def silence_frame(mel_norms: torch.Tensor) -> torch.Tensor:
    """(80,) the normalised mel frame of digital silence: what padding a clip with zeros adds to its mel."""
    return conditioning_mel(torch.zeros(N_FFT), mel_norms)[:, 0]


@dataclass(frozen=True)
class MelCache:
    """The cached mels: `ids[i]`'s mel is frames[offsets[i] : offsets[i + 1]], read with `mel(i)`."""

    ids: list[str]
    frames: torch.Tensor  # (total frames, 80) float16
    offsets: torch.Tensor  # (utterances + 1,) int64
    silence: torch.Tensor  # (80,) float32, see `silence_frame`

    def mel(self, index: int) -> torch.Tensor:
        """(80, T) float32 normalised log-mel of utterance `index`."""
        return self.frames[self.offsets[index] : self.offsets[index + 1]].T.float()

    def length(self, index: int) -> int:
        return int(self.offsets[index + 1] - self.offsets[index])

    def index_of(self) -> dict[str, int]:
        return {utterance_id: index for index, utterance_id in enumerate(self.ids)}


def mel_cache_path(work_dir: Path) -> Path:
    return Path(work_dir) / CODES_DIR / MEL_CACHE_FILE


def build_mel_cache(
    work_dir: Path, utterances: Sequence[Utterance], mel_norms: torch.Tensor, progress: TrainProgress
) -> MelCache:
    """The cache of `utterances` (in that order): read if it is there and holds exactly them, else computed and
    written atomically. Clips shorter than one STFT window are zero-padded to it."""
    path = mel_cache_path(work_dir)
    ids = [utterance.id for utterance in utterances]
    if path.is_file():
        cache = load_mel_cache(work_dir, mel_norms)
        if cache.ids == ids:
            return cache
    folder = corpus_dir(work_dir)
    mels, offsets = [], [0]
    for done, utterance in enumerate(utterances, 1):
        wav = load_audio(folder / utterance.wav_22k, CONDITIONING_SAMPLE_RATE)[0]
        if wav.shape[0] <= N_FFT // 2:
            wav = torch.nn.functional.pad(wav, (0, N_FFT - wav.shape[0]))
        mel = conditioning_mel(wav, mel_norms)  # (80, samples // 256 + 1)
        mels.append(mel.T.to(STORED_DTYPE))
        offsets.append(offsets[-1] + mel.shape[1])
        if done % 200 == 0 or done == len(utterances):
            progress("mels", done, len(utterances), {"hours": offsets[-1] * HOP_LENGTH / CONDITIONING_SAMPLE_RATE / 3600})
    tensors = {"frames": torch.cat(mels), "offsets": torch.tensor(offsets, dtype=torch.long)}
    path.parent.mkdir(parents=True, exist_ok=True)
    write_bytes_atomic(path, save(tensors, metadata={"ids": json.dumps(ids)}))
    return MelCache(ids, tensors["frames"], tensors["offsets"], silence_frame(mel_norms))


def load_mel_cache(work_dir: Path, mel_norms: torch.Tensor) -> MelCache:
    """The cache the codes stage wrote; CheckpointError if it is missing or damaged."""
    path = mel_cache_path(work_dir)
    try:
        with safe_open(str(path), "pt") as handle:
            ids = json.loads(handle.metadata()["ids"])
        tensors = load_file(str(path))
    except (OSError, SafetensorError, KeyError, ValueError) as error:
        raise CheckpointError(f"cannot read the mel cache {path} ({error}); delete it and rerun the codes stage") from None
    frames, offsets = tensors["frames"], tensors["offsets"]
    if frames.shape[1:] != (CONDITIONING_N_MELS,) or offsets.shape != (len(ids) + 1,) or int(offsets[-1]) != len(frames):
        raise CheckpointError(f"the mel cache {path} is inconsistent; delete it and rerun the codes stage")
    return MelCache(ids, frames, offsets, silence_frame(mel_norms))


def conditioning_frames() -> int:
    """Mel frames of the 6 s every conditioning clip is cut or padded to at inference (517)."""
    return CONDITIONING_SAMPLES // HOP_LENGTH + 1


def voice_conditioning(mels: MelCache, pool: Sequence[int], clips: int, generator: torch.Generator) -> torch.Tensor:
    """(80, 517) conditioning mel made of up to `clips` utterances drawn from `pool` (other utterances of the voice),
    end to end, then cut or silence-padded to the 6 s the conditioning encoder sees at inference."""
    if not len(pool):
        raise ValueError("no other utterance of this voice to condition on")
    frames = conditioning_frames()
    count = int(torch.randint(1, clips + 1, (1,), generator=generator))
    picks = torch.randperm(len(pool), generator=generator)[:count].tolist()
    mel = torch.cat([mels.mel(pool[i]) for i in picks], dim=1)[:, :frames]
    return torch.cat([mel, mels.silence[:, None].expand(-1, frames - mel.shape[1])], dim=1)
