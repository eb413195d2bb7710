"""The server's limits and defaults in one place: `clvp-tts serve` fills them from its options, the app, the
scheduler and the voice book read them."""

from __future__ import annotations

from dataclasses import dataclass, field, replace
from pathlib import Path

from ..errors import OptionsError
from ..pipeline.batched_decoding import DEFAULT_MAX_ROWS
from ..presets import DEFAULT_PRESET, PRESETS

# OpenAI's model names, mapped to our presets: tts-1 is the quick one, tts-1-hd the high-quality one
OPENAI_MODELS = {"tts-1": "ultra_fast_dpm", "tts-1-hd": "fast_dpm"}
QUICK_OPENAI_MODEL = "tts-1"


@dataclass(frozen=True)
class ServeSettings:
    """What the server accepts and how much work it takes on.

    model_name: the loaded model's own name, accepted as `model` beside OpenAI's (its preset: `default_preset`,
    None: the model folder's own default, `TextToSpeech.default_preset`).
    workers: requests synthesized at once; their candidate rows share one batched decoder (2-16).
    max_queue: requests waiting beyond those; more are refused with 429 and Retry-After.
    timeout_s: a request's time limit from arrival, waiting included (then 504, or the stream ends).
    max_rows: candidate rows decoded together at most (memory grows with it; a batch waits for free rows).
    max_text_chars: longest `input` taken (OpenAI's limit is 4096); long texts are spoken sentence by sentence.
    max_candidates: the most candidates a request may ask for (`candidates`).
    max_tokens: speech tokens per candidate at most (None: the preset's, within what the model takes); bounds the
    work and the audio length of one request.
    max_upload_bytes / max_upload_files / max_clip_seconds: limits on voice uploads (per file, per request, per
    clip); clips must be at least 1 s long.
    max_uploaded_voices: uploaded voices kept in memory; the oldest is forgotten beyond that.
    voices_dirs: extra folders of named voices (besides the bundled ones and $TORTOISE_VOICES_DIR).
    cache_dir: where voice latents are cached (None: the library's default cache folder).
    torch_threads: torch threads of every thread the server computes in (its workers, the shared decoder and the
    shared diffusion). Measured on 2 cores with the bundled model (benchmarks/serve.py): at 2, any stage ran about
    twice as slow while another thread that had run 2-thread OpenMP work was alive (one request 1.1 s against the
    library's 0.6 s); at 1 they run side by side: one client 1.32 requests/s against 0.86, eight 2.31 against 1.75
    (with shared diffusion; the bundled model of 2026-11-30 morning, `ultra_fast_dpm`).
    Raise it on machines with many more cores than workers.
    """

    model_name: str = "tortoise"
    default_preset: str | None = None
    models: dict[str, str] = field(default_factory=lambda: dict(OPENAI_MODELS))
    workers: int = 8
    max_queue: int = 32
    timeout_s: float = 600.0
    max_rows: int = DEFAULT_MAX_ROWS
    max_text_chars: int = 4096
    max_candidates: int = 256
    max_tokens: int | None = None
    max_upload_bytes: int = 10 * 1024 * 1024
    max_upload_files: int = 8
    max_clip_seconds: float = 60.0
    max_uploaded_voices: int = 64
    voices_dirs: tuple[Path, ...] = ()
    cache_dir: Path | None = None
    torch_threads: int = 1

    def __post_init__(self) -> None:
        for name in ("workers", "max_rows", "torch_threads", "max_text_chars", "max_candidates", "max_upload_bytes",
                     "max_upload_files", "max_uploaded_voices"):
            if getattr(self, name) < 1:
                raise OptionsError(f"{name} must be >= 1, got {getattr(self, name)}")
        if self.max_queue < 0 or not self.timeout_s > 0 or not self.max_clip_seconds > 0:
            raise OptionsError("max_queue must be >= 0, timeout_s and max_clip_seconds > 0")
        if self.max_tokens is not None and self.max_tokens < 1:
            raise OptionsError(f"max_tokens must be >= 1 or None, got {self.max_tokens}")
        named = {*self.models.values()} | ({self.default_preset} if self.default_preset is not None else set())
        unknown = sorted(named - set(PRESETS))
        if unknown:
            raise OptionsError(f"unknown preset(s) {', '.join(unknown)}; choose from {', '.join(PRESETS)}")

    def for_model(self, folder_preset: str | None) -> "ServeSettings":
        """These settings for a model whose folder names `folder_preset` (`LoadedModels.default_preset`; None: it
        names none). A None `default_preset` becomes that preset, else the package's DEFAULT_PRESET. A folder that
        names its preset names the one that suits it, so OpenAI's quick model (tts-1) is served with it too."""
        settings = self
        if settings.default_preset is None:
            settings = replace(settings, default_preset=folder_preset or DEFAULT_PRESET)
        if folder_preset is not None and QUICK_OPENAI_MODEL in settings.models:
            settings = replace(settings, models={**settings.models, QUICK_OPENAI_MODEL: folder_preset})
        return settings

    def preset_for(self, model: str) -> str | None:
        """The preset a request's `model` asks for, or None if this server does not serve that model (`for_model`
        resolves a None `default_preset` first; the app does)."""
        if model == self.model_name:
            return self.default_preset
        return self.models.get(model)
