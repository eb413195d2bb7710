"""Generation settings in one place: the original Tortoise presets and faster DPM-Solver++ ones.

Override any field with `dataclasses.replace`, e.g. ``replace(PRESETS["fast"], k=3)``.
"""

from __future__ import annotations

from dataclasses import dataclass, field, replace

from .errors import OptionsError
from .pipeline.decoding import FAITHFUL_DECODING, DecodingOptions
from .pipeline.pruning import PruneOptions
from .pipeline.samplers import SamplerOptions
from .pipeline.sampling import FAITHFUL_SAMPLING, SamplingOptions


@dataclass(frozen=True)
class GenerationOptions:
    """Everything `TextToSpeech.generate` needs besides the text, the voice and the seed.

    decoding: candidate sampling (how many, how chosen). diffusion: the spectrogram sampler.
    k: how many of the best-ranked candidates become waveforms (the first is the answer).
    clvp_batch_size: candidates CLVP scores at once (memory vs speed).
    prune: stop decoding most candidates part of the way in and finish only the best (`pipeline.pruning`); None
        finishes every candidate. Measured on the bundled model in benchmarks/README.md ("Best of N, 100 x 2").
    """

    decoding: DecodingOptions = field(default_factory=DecodingOptions)
    diffusion: SamplerOptions = field(default_factory=SamplerOptions)
    k: int = 1
    clvp_batch_size: int = 16
    prune: PruneOptions | None = None

    def __post_init__(self) -> None:
        if self.k < 1:
            raise OptionsError(f"k must be >= 1, got {self.k}")
        if self.clvp_batch_size < 1:
            raise OptionsError(f"clvp_batch_size must be >= 1, got {self.clvp_batch_size}")


def _preset(
    candidates: int, sampler: str, steps: int, cond_free: bool = True, sampling: SamplingOptions = SamplingOptions()
) -> GenerationOptions:
    return GenerationOptions(
        decoding=DecodingOptions(sampling=sampling, num_candidates=candidates, batch_size=min(candidates, 16)),
        diffusion=SamplerOptions(sampler=sampler, steps=steps, cond_free=cond_free),
    )


PRESETS: dict[str, GenerationOptions] = {
    # the original's tts_with_preset values (candidates, diffusion steps, conditioning-free guidance)
    "ultra_fast": _preset(16, "p", 30, cond_free=False),
    "fast": _preset(96, "p", 80),
    "standard": _preset(256, "p", 200),
    "high_quality": _preset(256, "p", 400),
    # DPM-Solver++(2M) reaches a converged answer in far fewer steps (benchmarks/diffusion_samplers.py): unguided,
    # 10 steps stay within 0.05 log-mel units of 400; guided (k = 2) it needs about 20
    "ultra_fast_dpm": _preset(16, "dpm++2m", 10, cond_free=False),
    "fast_dpm": _preset(96, "dpm++2m", 20),
    # tuned by ear (Whisper) for the small bundled model, whose default it is (benchmarks/README.md, "Presets for the
    # bundled model"): its diffusion decoder's few-step DDIM answer, close to the mean mel, is heard better than
    # fuller samples or guidance, its decoder's codes are heard better at a lower temperature, unpenalised, and 4
    # candidates are heard as well as 16 (its CLVP picks no better among more: benchmarks/README.md, "Best of N on
    # the 4000-step bundled model")
    "ultra_fast_ddim": _preset(4, "ddim", 4, cond_free=False,
                               sampling=SamplingOptions(temperature=0.5, repetition_penalty=1.0)),
}
DEFAULT_PRESET = "fast"


def preset(name: str, faithful: bool = False) -> GenerationOptions:
    """A named preset; `faithful` also restores the original's accidental sampling behaviours (see README)."""
    if name not in PRESETS:
        raise OptionsError(f"unknown preset {name!r}; choose one of {', '.join(PRESETS)}")
    options = PRESETS[name]
    if faithful:  # the accidents only; the preset's own temperature, top-p and penalty stay
        decoding = options.decoding
        sampling = replace(decoding.sampling, top_k=FAITHFUL_SAMPLING.top_k,
                           penalize_prompt_ids=FAITHFUL_SAMPLING.penalize_prompt_ids)
        faithful_decoding = replace(decoding, sampling=sampling, drop_remainder=FAITHFUL_DECODING.drop_remainder)
        options = replace(options, decoding=faithful_decoding)
    return options
