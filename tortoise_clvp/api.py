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
from .frontend.audio import load_audio, save_audio
from .frontend.mel import CONDITIONING_SAMPLE_RATE, OUTPUT_SAMPLE_RATE
from .models.packed_linear import pack_linears
from .models.quantize import quantize_linears
from .pipeline.conditioning import (
    Conditioning,
    autoregressive_conditioning,
    diffusion_conditioning,
)
from .pipeline.decoding import DecodingOptions, check_lengths, sample_candidates
from .pipeline.diffusion import latents_to_mel
from .pipeline.pruning import PruneOptions, expected_speech_tokens, sample_pruned
from .pipeline.rerank import RankedCandidates, rank, score_candidates
from .pipeline.samplers import SamplerOptions
from .pipeline.trimming import (
    calm_trim_length,
    fix_speech_decoder_output,
    scoring_span,
    speech_lengths,
)
from .presets import DEFAULT_PRESET, GenerationOptions, preset
from .seeds import CROP_SEED, seed_or_draw
from .weights.discovery import resolve_models_dir
from .weights.model_dir import LoadedModels, load_models

Clip = Union[str, os.PathLike, Tensor]  # a file path, or 22.05 kHz mono samples
Voice = Union[Conditioning, Sequence[Clip]]
# progress(stage, done, total), called as work advances. Stages: "loading models" and "conditioning" (0 then 1 of 1),
# "sampling" (speech tokens decoded per row, summed over the batches, out of batches x max_new_tokens: a batch whose
# rows all stopped early jumps to its end), "candidates finished" (candidates that stopped or reached the budget),
# "reranking" (CLVP batches), "diffusion" (sampler steps over all kept candidates), "vocoder" (waveforms).
Progress = Callable[[str, int, int], None]
Sampler = Callable[..., Tensor]  # sample_candidates' signature: (model, cond_latent, text_ids, options, generator, ...)
Diffuser = Callable[..., Tensor]  # latents_to_mel's: (model, latents, conditioning_latent, options, generator, progress)
WAVEFORM_SEED_OFFSET = 1  # the diffusion and vocoder noise come from seed + 1, token sampling from seed


def _reporter(progress: Progress | None, stage: str) -> Callable[[int, int], None] | None:
    """`progress` bound to one stage, as the (done, total) callback the pipeline stages take."""
    return None if progress is None else (lambda done, total: progress(stage, done, total))


def _as_dtype(dtype: torch.dtype | str) -> torch.dtype:
    """A torch dtype, or its name ('float32', 'bfloat16', 'float16')."""
    if isinstance(dtype, str):
        found = getattr(torch, dtype, None)
        if not isinstance(found, torch.dtype):
            raise OptionsError(f"unknown dtype {dtype!r}; use float32, bfloat16 or float16")
        return found
    return dtype


@dataclass(frozen=True)
class CandidateResult:
    """Ranked candidates for one text, and the decoder latents of the best `k` (what diffusion consumes).

    text_ids: (T,) tokenizer ids plus Tortoise's appended stop id. raw_codes: (N, L) as sampled, stop-padded;
    lengths: (N,) speech tokens before each stop. ranked: fixed codes (cut as `ClvpConfig.score_padding` says) with
    CLVP scores. best: (k,) indices into them, best first. latents: one (frames, C) tensor per best candidate, cut
    after the calm tokens. timings: seconds per stage.
    """

    text_ids: Tensor
    raw_codes: Tensor
    lengths: Tensor
    ranked: RankedCandidates
    best: Tensor
    latents: list[Tensor]
    seed: int
    timings: dict[str, float] = field(default_factory=dict)

    def ranking(self) -> list[tuple[int, float, int]]:
        """Every candidate best first, as plain numbers: (index in sampling order, CLVP score, speech tokens)."""
        return [(index, float(self.ranked.scores[index]), int(self.lengths[index])) for index in self.ranked.order.tolist()]


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

    def __init__(self, models: LoadedModels, sampler: Sampler = sample_candidates, diffuser: Diffuser = latents_to_mel):
        """`sampler` draws the speech-token candidates (`pipeline.decoding.sample_candidates`, or a shared decoder's
        that batches many callers' rows together: `pipeline.batched_decoding.BatchedDecoder`, used by the server);
        `diffuser` turns one candidate's latents into a mel (`pipeline.diffusion.latents_to_mel`, or the shared
        `pipeline.batched_diffusion.BatchedDiffusion`'s)."""
        self.models = models
        self.sampler = sampler
        self.diffuser = diffuser

    @classmethod
    def from_local(
        cls,
        model_dir: str | Path,
        device: str | torch.device = "cpu",
        dtype: torch.dtype | str = torch.float32,
        compile: bool = False,
        progress: Progress | None = None,
        quantize: str | None = None,
    ) -> "TextToSpeech":
        """Load a model directory in any supported layout (original Tortoise, Hugging Face CLVP, native).

        dtype: float32, or bfloat16 / float16 for the decoder and the diffusion decoder (the vocoder and CLVP stay
        float32). On CPU in float32 the decoder's linear layers get oneDNN-packed weights (much faster small-batch
        decoding) unless it is compiled; CLVP's large batches run faster unpacked (benchmarks/clvp_score.py).
        compile: `torch.compile` the diffusion denoiser, and the decoder's per-token step where its linears are not
        packed (a one-off compile cost of tens of seconds; needs a C++ compiler on CPU). On CPU in float32 the
        packed eager step is kept (the compiled one is 1.5x slower) and the denoiser gains only 1-5%
        (benchmarks/compile_cpu.py). dtype may also be given by name ('bfloat16'). On a CPU without AVX512-BF16
        (or AMX) bfloat16 is emulated and runs slower than float32. progress: "loading models" 0 then 1 of 1.
        quantize: "int8" quantizes the decoder's and CLVP's linear layers (`models.quantize`; CPU and float32 only,
        not with compile). Its effect on quality is measured by benchmarks/best_of_n.py, not promised.
        """
        if quantize is not None and compile:
            raise OptionsError("quantize and compile do not combine here; choose one")
        report = _reporter(progress, "loading models")
        if report is not None:
            report(0, 1)
        models = load_models(model_dir, device, _as_dtype(dtype))
        if quantize is not None:
            for model in (models.autoregressive, models.clvp):
                quantize_linears(model, quantize)
        packed = pack_linears(models.autoregressive)  # 0 where packing does not apply (not CPU float32)
        if compile:
            if not packed:
                models.autoregressive.compile_decode_step()
            if models.diffusion is not None:
                models.diffusion.compile_forward()
        if report is not None:
            report(1, 1)
        return cls(models)

    @classmethod
    def from_pretrained(
        cls,
        models_dir: str | Path | None = None,
        device: str | torch.device = "cpu",
        dtype: torch.dtype | str = torch.float32,
        compile: bool = False,
        progress: Progress | None = None,
    ) -> "TextToSpeech":
        """`from_local` on the model directory found the usual way: `models_dir`, else $TORTOISE_MODELS_DIR, else a
        download (`clvp-tts download`), a Hugging Face cache copy or the bundled small model
        (`weights.discovery.resolve_models_dir`); a clear error says how to get the files."""
        return cls.from_local(resolve_models_dir(models_dir).path, device, dtype, compile, progress)

    @property
    def device(self) -> torch.device:
        return self.models.autoregressive.device

    @property
    def default_preset(self) -> str:
        """The preset `generate` uses when given none: the model folder's own choice (the bundled model names one
        that suits a small model), else the package's DEFAULT_PRESET (the release's)."""
        return self.models.default_preset or DEFAULT_PRESET

    def tokenize(self, text: str) -> Tensor:
        """Text -> (T,) ids ending in the text stop id that Tortoise's `tts()` appends (the decoder then adds its own
        start and stop tokens around them); raises InputTextError if unspeakable: empty, or without a single letter
        or digit once cleaned (only punctuation or emoji)."""
        ids = self.models.tokenizer.encode(text)
        if not any(char.isalnum() for char in self.models.tokenizer.clean(text)):
            raise InputTextError(f"{text[:60]!r} has nothing to speak: no letters or digits; give at least one word")
        return torch.tensor([*ids, TOKENS.text_stop], dtype=torch.long)

    def check_text(self, text: str, options: DecodingOptions) -> Tensor:
        """Pre-flight for one text: its ids (see `tokenize`), once they and the token budget fit the decoder's
        position tables; InputTextError or OptionsError saying what to change otherwise."""
        text_ids = self.tokenize(text)
        check_lengths(self.models.autoregressive, text_ids, options)
        return text_ids

    def check_generation(self, voice: Voice, options: GenerationOptions | str | None) -> GenerationOptions:
        """Pre-flight for making audio, before any work: the diffusion decoder and vocoder are loaded, `options` is a
        GenerationOptions or a preset name (None: `default_preset`; returned resolved), and a Conditioning passed as
        the voice has its diffusion latent."""
        models = self.models
        if models.diffusion is None or models.vocoder is None:
            raise CheckpointError(
                "making audio needs the diffusion decoder and the vocoder: put Tortoise's diffusion_decoder.pth "
                "and vocoder.pth in the model directory (candidates() works without them)"
            )
        options = self.default_preset if options is None else options
        options = preset(options) if isinstance(options, str) else options
        if not isinstance(options, GenerationOptions):
            raise OptionsError(f"options must be a GenerationOptions or a preset name, got {type(options).__name__}")
        if isinstance(voice, Conditioning) and voice.diffusion is None:
            raise OptionsError("this Conditioning has no diffusion latent; pass the voice clips instead")
        return options

    def get_conditioning(
        self, clips: Sequence[Clip], seed: int = CROP_SEED, progress: Progress | None = None
    ) -> Conditioning:
        """Reference clips (paths or 22.05 kHz tensors) -> the voice's conditioning latents: the one entry point that
        turns clips into a voice, used by `candidates`, `generate`, long texts, the latent cache and the reranking
        report alike.

        Clips longer than 6 s are cropped at random starts drawn, clip by clip in the given order, from `seed`
        (default `seeds.CROP_SEED`, whatever the generation seed, so a voice always gives the same latents).
        progress: "conditioning" 0 then 1 of 1.
        """
        if isinstance(clips, (str, os.PathLike, Tensor)):
            clips = [clips]
        report = _reporter(progress, "conditioning")
        if report is not None:
            report(0, 1)
        waves = [clip if isinstance(clip, Tensor) else load_audio(clip, CONDITIONING_SAMPLE_RATE) for clip in clips]
        latent = autoregressive_conditioning(self.models.autoregressive, waves, self.models.mel_norms, random.Random(seed))
        diffusion = self.models.diffusion
        conditioning = Conditioning(latent, None if diffusion is None else diffusion_conditioning(diffusion, waves))
        if report is not None:
            report(1, 1)
        return conditioning

    def _conditioning(self, voice: Voice, progress: Progress | None) -> Conditioning:
        return voice if isinstance(voice, Conditioning) else self.get_conditioning(voice, progress=progress)

    def candidates(
        self,
        text: str,
        voice: Voice,
        options: DecodingOptions = DecodingOptions(),
        k: int = 1,
        seed: int | None = None,
        clvp_batch_size: int = 16,
        progress: Progress | None = None,
        prune: PruneOptions | None = None,
    ) -> CandidateResult:
        """Sample `options.num_candidates` speech-token candidates, rank them with CLVP, and return the `k` best
        with their diffusion latents. The same `seed` gives the same result; None draws one (reported back).
        prune: finish only the best `prune.keep` of the candidates (`pipeline.pruning.sample_pruned`, row-keyed
        draws); the result then holds just those. progress: the stages "conditioning" (clips only), "sampling"
        (not reported while pruning), "candidates finished" and "reranking"."""
        if not isinstance(options, DecodingOptions):
            raise OptionsError(f"candidates() takes DecodingOptions, got {type(options).__name__}")
        if prune is not None and self.sampler is not sample_candidates:
            raise OptionsError("pruning decodes with its own sampler, and this TextToSpeech shares its decoder "
                               "(a server's): leave prune unset here")
        seed = seed_or_draw(seed)
        batches = options.batch_sizes()
        total = sum(batches) if prune is None else prune.kept(sum(batches))
        if not 1 <= k <= total:
            raise OptionsError(f"k={k} best candidates requested but only {total} are "
                               f"{'sampled' if prune is None else 'finished'}; use 1 <= k <= {total}")
        timings: dict[str, float] = {}
        models = self.models

        start = time.perf_counter()
        text_ids = self.check_text(text, options)
        conditioning = self._conditioning(voice, progress)
        timings["conditioning"] = time.perf_counter() - start

        start = time.perf_counter()
        budget = len(batches) * options.max_new_tokens

        def on_step(tokens: int, finished: int) -> None:
            progress("sampling", tokens, budget)
            progress("candidates finished", finished, total)

        generator = torch.Generator(self.device).manual_seed(seed)
        if prune is None:
            raw = self.sampler(
                models.autoregressive, conditioning.autoregressive, text_ids, options, generator,
                on_step=None if progress is None else on_step,
            )
        else:
            expected = expected_speech_tokens(models.tokenizer.clean(text))
            raw = sample_pruned(models.autoregressive, conditioning.autoregressive, text_ids, options, prune,
                                generator, models.clvp, expected).codes
            if progress is not None:
                progress("candidates finished", total, total)
        timings["sampling"] = time.perf_counter() - start

        start = time.perf_counter()
        tokens = models.autoregressive.config.tokens
        fixed = fix_speech_decoder_output(scoring_span(raw, tokens, models.clvp.config.score_padding), tokens).cpu()
        scores = score_candidates(models.clvp, text_ids, fixed, clvp_batch_size, _reporter(progress, "reranking"))
        ranked = rank(fixed, scores)
        best = ranked.best(k)
        timings["reranking"] = time.perf_counter() - start

        start = time.perf_counter()
        latents = self._latents(conditioning, text_ids, fixed[best])
        timings["latents"] = time.perf_counter() - start
        lengths = speech_lengths(raw, tokens).cpu()
        return CandidateResult(text_ids, raw.cpu(), lengths, ranked, best, latents, seed, timings)

    @torch.inference_mode()
    def _latents(self, conditioning: Conditioning, text_ids: Tensor, codes: Tensor) -> list[Tensor]:
        """Teacher-forced decoder latents of fixed codes (k, L), each cut where the calm run after the speech reaches
        its trimming length (the diffusion decoder gets a few calm frames to end the speech on)."""
        model = self.models.autoregressive
        k = codes.shape[0]
        cond = conditioning.autoregressive.to(model.device, model.dtype).expand(k, -1)
        latents = model.speech_latents(cond, text_ids.to(model.device).expand(k, -1), codes.to(model.device))
        return [latents[i, : calm_trim_length(codes[i], model.config.tokens)].float().cpu() for i in range(k)]

    def generate(
        self,
        text: str,
        voice: Voice,
        options: GenerationOptions | str | None = None,
        seed: int | None = None,
        progress: Progress | None = None,
    ) -> Speech:
        """Speak `text` in `voice` (clips or a Conditioning); `options` is a GenerationOptions or a preset name
        (None: the model's `default_preset`).

        The same seed gives the same audio. progress: the stages of `candidates`, then "diffusion" and "vocoder".
        For texts longer than the decoder takes, see `tortoise_clvp.longform` (`speak_long`, `stream_speech`).
        """
        options = self.check_generation(voice, options)
        seed = seed_or_draw(seed)
        start = time.perf_counter()
        conditioning = self._conditioning(voice, progress)
        conditioned_in = time.perf_counter() - start
        result = self.candidates(text, conditioning, options.decoding, options.k, seed, options.clvp_batch_size, progress,
                                 options.prune)
        timings = dict(result.timings)
        timings["conditioning"] += conditioned_in

        waveforms = self.waveforms(result.latents, conditioning, options.diffusion, seed, progress, timings)
        return Speech(waveforms, OUTPUT_SAMPLE_RATE, result, seed, timings)

    def waveforms(
        self,
        latents: Sequence[Tensor],
        conditioning: Conditioning,
        diffusion: SamplerOptions,
        seed: int,
        progress: Progress | None = None,
        timings: dict[str, float] | None = None,
    ) -> list[Tensor]:
        """Decoder latents, (frames, C) each -> one 24 kHz waveform (samples,) each: the diffusion decoder sampled with
        `diffusion`, then the vocoder. All noise comes from one generator seeded with seed + WAVEFORM_SEED_OFFSET (all
        diffusion first, then the vocoder), so one candidate's latents give the audio `generate` makes of it with the
        same seed. `conditioning` needs its diffusion latent. progress: "diffusion" and "vocoder"; `timings` (if
        given) gets the seconds of each."""
        models, timings = self.models, {} if timings is None else timings
        generator = torch.Generator(self.device).manual_seed(seed + WAVEFORM_SEED_OFFSET)
        mels, start = [], time.perf_counter()
        total = diffusion.steps * len(latents)
        for index, latent in enumerate(latents):
            base = index * diffusion.steps
            on_step = None if progress is None else (lambda done, _of, base=base: progress("diffusion", base + done, total))
            mels.append(self.diffuser(models.diffusion, latent, conditioning.diffusion, diffusion, generator, on_step))
        timings["diffusion"] = time.perf_counter() - start

        start = time.perf_counter()
        report = _reporter(progress, "vocoder")
        waveforms = []
        with torch.inference_mode():
            for index, mel in enumerate(mels):
                waveforms.append(models.vocoder.inference(mel[None].float(), generator)[0, 0].float().cpu())
                if report is not None:
                    report(index + 1, len(mels))
        timings["vocoder"] = time.perf_counter() - start
        return waveforms


@functools.lru_cache(maxsize=2)
def _shared(models_dir: str | None, device: str) -> TextToSpeech:
    return TextToSpeech.from_pretrained(models_dir, device)


def generate(
    text: str,
    voice: Voice,
    options: GenerationOptions | str | None = None,
    seed: int | None = None,
    models_dir: str | Path | None = None,
    device: str = "cpu",
    progress: Progress | None = None,
) -> Speech:
    """One call from text to speech: loads the models once (kept for the next call) and runs `generate`."""
    tts = _shared(None if models_dir is None else str(models_dir), str(device))
    return tts.generate(text, voice, options, seed, progress)
