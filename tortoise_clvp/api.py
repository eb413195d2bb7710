"""The Python API: load a model directory, condition on a voice, make speech.

Each method is an ordered list of stage calls. `candidates`: tokenize -> condition -> sample -> fix -> score
-> rank -> latents for the best. `generate`: candidates -> diffusion (latents -> mel) -> vocoder (mel -> 24 kHz).
"""

from __future__ import annotations

import functools
import os
import random
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable, Sequence, Union

import torch
from torch import Tensor

from .config import TOKENS
from .errors import CheckpointError, InputTextError, OptionsError
from .frontend.audio import CONDITIONING_SAMPLE_RATE, load_audio, save_audio
from .frontend.mel import OUTPUT_SAMPLE_RATE
from .models.packed_linear import pack_linears
from .pipeline.conditioning import (
    Conditioning,
    autoregressive_conditioning,
    diffusion_conditioning,
)
from .pipeline.decoding import DecodingOptions, check_lengths, sample_candidates
from .pipeline.diffusion import latents_to_mel
from .pipeline.rerank import RankedCandidates, rank, score_candidates
from .pipeline.trimming import (
    calm_trim_length,
    fix_speech_decoder_output,
    speech_lengths,
)
from .presets import DEFAULT_PRESET, GenerationOptions, preset
from .weights.discovery import resolve_models_dir
from .weights.model_dir import LoadedModels, load_models

Clip = Union[str, os.PathLike, Tensor]  # a file path, or 22.05 kHz mono samples
Voice = Union[Conditioning, Sequence[Clip]]
Progress = Callable[[str, int, int], None]  # (stage, done, total)

_SEED_RANGE = 2**31  # drawn seeds
MAX_SEED = 2**62 - 1  # stages and chunks use seed + small offsets; torch takes seeds below 2**63


def check_seed(seed: int | None) -> None:
    if seed is not None and (isinstance(seed, bool) or not isinstance(seed, int) or not 0 <= seed <= MAX_SEED):
        raise OptionsError(f"seed must be an integer from 0 to {MAX_SEED}, got {seed!r}")


@dataclass(frozen=True)
class CandidateResult:
    """Ranked candidates for one text, and the decoder latents of the best `k` (what diffusion consumes).

    text_ids: (T,) tokenizer ids plus Tortoise's appended stop id. raw_codes: (N, L) as sampled, stop-padded;
    lengths: (N,) speech tokens before each stop. ranked: fixed codes with CLVP scores. best: (k,) indices into them, best first. latents: one (frames, C)
    tensor per best candidate, cut after the calm tokens. timings: seconds per stage.
    """

    text_ids: Tensor
    raw_codes: Tensor
    lengths: Tensor
    ranked: RankedCandidates
    best: Tensor
    latents: list[Tensor]
    seed: int
    timings: dict[str, float] = field(default_factory=dict)


@dataclass(frozen=True)
class Speech:
    """Generated speech: `waveforms` holds one (samples,) float tensor at `sample_rate` per requested best
    candidate, best first; `waveform` is the best. `candidates` tells how they were chosen."""

    waveforms: list[Tensor]
    sample_rate: int
    candidates: CandidateResult
    seed: int
    timings: dict[str, float]

    @property
    def waveform(self) -> Tensor:
        return self.waveforms[0]

    @property
    def duration(self) -> float:
        return self.waveform.shape[-1] / self.sample_rate

    def save(self, path: str | os.PathLike, index: int = 0) -> Path:
        """Write one waveform (default: the best) atomically; the format follows the suffix (wav, flac, ogg)."""
        return save_audio(path, self.waveforms[index], self.sample_rate)


class TextToSpeech:
    """A loaded model directory plus the device it runs on. Build it with `from_local`."""

    def __init__(self, models: LoadedModels):
        self.models = models

    @classmethod
    def from_local(
        cls,
        model_dir: str | Path,
        device: str | torch.device = "cpu",
        dtype: torch.dtype = torch.float32,
        compile: bool = False,
    ) -> "TextToSpeech":
        """Load a model directory in any supported layout (original Tortoise, Hugging Face CLVP, native).

        dtype: float32, or bfloat16 / float16 for the decoder and the diffusion decoder (the vocoder and CLVP stay
        float32). On CPU in float32 the decoder's linear layers get oneDNN-packed weights (much faster small-batch
        decoding) unless it is compiled; CLVP's large batches run faster unpacked (benchmarks/clvp_score.py).
        compile: `torch.compile` the diffusion denoiser, and the decoder's per-token step where its linears are not
        packed (a one-off compile cost of tens of seconds; needs a C++ compiler on CPU). On CPU in float32 the
        packed eager step is kept (the compiled one is 1.5x slower) and the denoiser gains only 1-5%
        (benchmarks/compile_cpu.py).
        """
        models = load_models(model_dir, device, dtype)
        packed = pack_linears(models.autoregressive)  # 0 where packing does not apply (not CPU float32)
        if compile:
            if not packed:
                models.autoregressive.compile_decode_step()
            if models.diffusion is not None:
                models.diffusion.compile_forward()
        return cls(models)

    @classmethod
    def from_pretrained(
        cls,
        models_dir: str | Path | None = None,
        device: str | torch.device = "cpu",
        dtype: torch.dtype = torch.float32,
        compile: bool = False,
    ) -> "TextToSpeech":
        """`from_local` on the model directory found the usual way: `models_dir`, else $TORTOISE_MODELS_DIR, else a
        download (`clvp-tts download`), a Hugging Face cache copy or the bundled small model
        (`weights.discovery.resolve_models_dir`); a clear error says how to get the files."""
        return cls.from_local(resolve_models_dir(models_dir).path, device, dtype, compile)

    @property
    def device(self) -> torch.device:
        return self.models.autoregressive.device

    def tokenize(self, text: str) -> Tensor:
        """Text -> (T,) ids with the one stop id Tortoise appends (quirk 2); raises InputTextError if unspeakable:
        empty, or without a single letter or digit once cleaned (only punctuation or emoji)."""
        ids = self.models.tokenizer.encode(text)
        if not any(char.isalnum() for char in self.models.tokenizer.clean(text)):
            raise InputTextError(f"{text[:60]!r} has nothing to speak: no letters or digits; give at least one word")
        return torch.tensor([*ids, TOKENS.text_stop], dtype=torch.long)

    def get_conditioning(self, clips: Sequence[Clip], seed: int | None = None) -> Conditioning:
        """Reference clips (paths or 22.05 kHz tensors) -> the voice's conditioning latent.

        Clips longer than 6 s are cropped at a random start; `seed` makes the crops repeatable.
        """
        if isinstance(clips, (str, os.PathLike, Tensor)):
            clips = [clips]
        waves = [clip if isinstance(clip, Tensor) else load_audio(clip, CONDITIONING_SAMPLE_RATE) for clip in clips]
        rng = random.Random(seed)
        latent = autoregressive_conditioning(self.models.autoregressive, waves, self.models.mel_norms, rng)
        diffusion = self.models.diffusion
        return Conditioning(latent, None if diffusion is None else diffusion_conditioning(diffusion, waves))

    def candidates(
        self,
        text: str,
        voice: Voice,
        options: DecodingOptions = DecodingOptions(),
        k: int = 1,
        seed: int | None = None,
        clvp_batch_size: int = 16,
        progress: Progress | None = None,
    ) -> CandidateResult:
        """Sample `options.num_candidates` speech-token candidates, rank them with CLVP, and return the `k` best
        with their diffusion latents. The same `seed` gives the same result; None draws one (reported back)."""
        if not isinstance(options, DecodingOptions):
            raise OptionsError(f"candidates() takes DecodingOptions, got {type(options).__name__}")
        check_seed(seed)
        total = sum(options.batch_sizes())
        if not 1 <= k <= total:
            raise OptionsError(f"k={k} best candidates requested but only {total} are sampled; use 1 <= k <= {total}")
        seed = random.randrange(_SEED_RANGE) if seed is None else seed
        timings: dict[str, float] = {}
        models = self.models

        def report(stage: str) -> Callable[[int, int], None] | None:
            return None if progress is None else (lambda done, of: progress(stage, done, of))

        start = time.perf_counter()
        text_ids = self.tokenize(text)
        check_lengths(models.autoregressive, text_ids, options)
        conditioning = voice if isinstance(voice, Conditioning) else self.get_conditioning(voice, seed)
        timings["conditioning"] = time.perf_counter() - start

        start = time.perf_counter()
        generator = torch.Generator(self.device).manual_seed(seed)
        raw = sample_candidates(models.autoregressive, conditioning.autoregressive, text_ids, options, generator, report("sampling"))
        timings["sampling"] = time.perf_counter() - start

        start = time.perf_counter()
        tokens = models.autoregressive.config.tokens
        fixed = fix_speech_decoder_output(raw, tokens).cpu()
        ranked = rank(fixed, score_candidates(models.clvp, text_ids, fixed, clvp_batch_size, report("reranking")))
        best = ranked.best(k)
        timings["reranking"] = time.perf_counter() - start

        start = time.perf_counter()
        latents = self._latents(conditioning, text_ids, fixed[best])
        timings["latents"] = time.perf_counter() - start
        return CandidateResult(text_ids, raw.cpu(), speech_lengths(raw, tokens).cpu(), ranked, best, latents, seed, timings)

    @torch.inference_mode()
    def _latents(self, conditioning: Conditioning, text_ids: Tensor, codes: Tensor) -> list[Tensor]:
        """Teacher-forced decoder latents of fixed codes (k, L), each cut after the calm run (quirk 15)."""
        model = self.models.autoregressive
        k = codes.shape[0]
        cond = conditioning.autoregressive.to(model.device, model.dtype).expand(k, -1)
        latents = model.speech_latents(cond, text_ids.to(model.device).expand(k, -1), codes.to(model.device))
        return [latents[i, : calm_trim_length(codes[i], model.config.tokens)].float().cpu() for i in range(k)]


    def generate(
        self,
        text: str,
        voice: Voice,
        options: GenerationOptions | str = DEFAULT_PRESET,
        seed: int | None = None,
        progress: Progress | None = None,
    ) -> Speech:
        """Speak `text` in `voice` (clips or a Conditioning); `options` is a GenerationOptions or a preset name.

        The same seed gives the same audio. Stages reported to `progress`: sampling, reranking, diffusion.
        """
        models = self.models
        if models.diffusion is None or models.vocoder is None:
            raise CheckpointError(
                "making audio needs the diffusion decoder and the vocoder: put Tortoise's diffusion_decoder.pth "
                "and vocoder.pth in the model directory (candidates() works without them)"
            )
        options = preset(options) if isinstance(options, str) else options
        if not isinstance(options, GenerationOptions):
            raise OptionsError(f"generate() takes GenerationOptions or a preset name, got {type(options).__name__}")
        check_seed(seed)
        seed = random.randrange(_SEED_RANGE) if seed is None else seed
        if isinstance(voice, Conditioning) and voice.diffusion is None:
            raise OptionsError("this Conditioning has no diffusion latent; pass the voice clips instead")
        start = time.perf_counter()
        conditioning = voice if isinstance(voice, Conditioning) else self.get_conditioning(voice, seed)
        conditioned_in = time.perf_counter() - start
        result = self.candidates(text, conditioning, options.decoding, options.k, seed, options.clvp_batch_size, progress)
        timings = dict(result.timings)
        timings["conditioning"] += conditioned_in

        generator = torch.Generator(self.device).manual_seed(seed + 1)  # waveform stage: its own stream
        mels, start = [], time.perf_counter()
        total = options.diffusion.steps * len(result.latents)
        for index, latents in enumerate(result.latents):
            base = index * options.diffusion.steps
            on_step = None if progress is None else (lambda done, _of, base=base: progress("diffusion", base + done, total))
            mels.append(latents_to_mel(models.diffusion, latents, conditioning.diffusion, options.diffusion, generator, on_step))
        timings["diffusion"] = time.perf_counter() - start

        start = time.perf_counter()
        with torch.inference_mode():
            waveforms = [models.vocoder.inference(mel[None].float(), generator)[0, 0].float().cpu() for mel in mels]
        timings["vocoder"] = time.perf_counter() - start
        return Speech(waveforms, OUTPUT_SAMPLE_RATE, result, seed, timings)


@functools.lru_cache(maxsize=2)
def _shared(models_dir: str | None, device: str) -> TextToSpeech:
    return TextToSpeech.from_pretrained(models_dir, device)


def generate(
    text: str,
    voice: Voice,
    options: GenerationOptions | str = DEFAULT_PRESET,
    seed: int | None = None,
    models_dir: str | Path | None = None,
    device: str = "cpu",
    progress: Progress | None = None,
) -> Speech:
    """One call from text to speech: loads the models once (kept for the next call) and runs `generate`."""
    tts = _shared(None if models_dir is None else str(models_dir), str(device))
    return tts.generate(text, voice, options, seed, progress)
