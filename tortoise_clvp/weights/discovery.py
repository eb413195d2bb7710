"""Which model folder to use: ``--models-dir`` > ``$TORTOISE_MODELS_DIR`` > a downloaded release > the Hugging Face
cache > the small model bundled with the package.

A folder named explicitly (the flag or the environment variable) must hold a usable model: one that does not is an
error naming it, never a silent fallback to another model. The other places are tried in order and skipped when
they hold nothing usable. Only the filesystem is looked at (the files `load_models` needs are present), never the
network or the weights themselves: `load_models` checks those.
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path
from typing import Sequence

from ..errors import CheckpointError
from ..frontend.text import TOKENIZER_FILENAME
from . import hf_clvp, native
from .download import TORTOISE_DATA_URL, TORTOISE_REPO_ID, default_download_dir
from .model_dir import (
    DATA_FILES,
    MEL_NORMS_FILE,
    ORIGINAL_FORMATS,
    REQUIRED_PARTS,
    detect_layout,
    model_parts,
)

MODELS_ENV = "TORTOISE_MODELS_DIR"
# The small native model shipped as package data (a wheel carries it too); absent until one is trained and exported.
BUNDLED_MODEL_DIR = Path(__file__).resolve().parent.parent / "assets" / "model"
# The original Tortoise's download folder (its hf_hub_download(cache_dir=...)): a hub cache, not a plain folder.
ORIGINAL_TORTOISE_CACHE = Path("~/.cache/tortoise/models")
# where a model was found -> how to name that place in messages
MODEL_SOURCES = {
    "flag": "--models-dir",
    "env": f"${MODELS_ENV}",
    "download": "the download folder (clvp-tts download)",
    "hf_cache": "the Hugging Face cache",
    "bundled": "the bundled model",
}


@dataclass(frozen=True)
class ResolvedModels:
    """The model folder to load and where it was found (a key of `MODEL_SOURCES`)."""

    path: Path
    source: str

    @property
    def bundled(self) -> bool:
        """The small bundled model, not a released one."""
        return self.source == "bundled"


def missing_model_files(path: Path) -> str | None:
    """Why `path` holds no model `load_models` could read (its layout, the files of the decoder, the scorer and the
    data files); None when it holds one."""
    try:
        parts = model_parts(path, detect_layout(path))
    except CheckpointError as exc:
        return str(exc)
    needed = [name for part in REQUIRED_PARTS for name in parts[part].files] + list(DATA_FILES)
    missing = [name for name in needed if not (path / name).is_file()]
    return f"{path} lacks {', '.join(missing)}" if missing else None


def default_cache_dirs() -> list[Path]:
    """Hub caches searched for a snapshot of the release: Hugging Face's (``HF_HUB_CACHE``) and the original
    Tortoise's download folder."""
    from huggingface_hub import constants

    return [Path(constants.HF_HUB_CACHE), ORIGINAL_TORTOISE_CACHE.expanduser()]


def cached_snapshot(cache_dir: Path) -> tuple[Path | None, Path | None]:
    """(a usable snapshot of the Tortoise release in this hub cache, one that lacks files): filesystem only."""
    from huggingface_hub import try_to_load_from_cache

    found = set()
    for part in REQUIRED_PARTS:
        try:
            hit = try_to_load_from_cache(TORTOISE_REPO_ID, ORIGINAL_FORMATS[part].filename, cache_dir=str(cache_dir))
        except Exception:  # noqa: BLE001 - a malformed cache folder is simply not a usable cache
            return None, None
        if not isinstance(hit, str):  # None (not cached) or the 'known not to exist' sentinel
            return None, None
        found.add(Path(hit).parent)
    if len(found) != 1:
        return None, None
    snapshot = found.pop()
    return (snapshot, None) if missing_model_files(snapshot) is None else (None, snapshot)


def _explicit(path: Path, source: str) -> ResolvedModels:
    """A folder the user named: it holds a model, or (for the environment variable, which the original Tortoise used
    as its hub cache) a usable snapshot of the release; anything else is an error naming it."""
    problem = missing_model_files(path)
    if problem is None:
        return ResolvedModels(path, source)
    if source == "env" and path.is_dir():
        snapshot, _ = cached_snapshot(path)
        if snapshot is not None:
            return ResolvedModels(snapshot, source)
    undo = "leave out --models-dir" if source == "flag" else f"unset {MODELS_ENV}"
    raise CheckpointError(
        f"{MODEL_SOURCES[source]} names {path}, which holds no usable model. {problem.rstrip('.')}. "
        f"Point it at a model folder, or {undo} to use the one found on its own."
    )


def resolve_models_dir(
    explicit: Path | str | None = None,
    *,
    download_dir: Path | str | None = None,
    cache_dirs: Sequence[Path | str] | None = None,
    bundled_dir: Path | str | None = None,
) -> ResolvedModels:
    """The model folder to use (see the module docstring): `explicit` (``--models-dir``), else ``$TORTOISE_MODELS_DIR``,
    else `download_dir` (default `default_download_dir()`), else a snapshot of ``Manmay/tortoise-tts`` in a hub cache
    (`cache_dirs`, default `default_cache_dirs()`), else `bundled_dir` (default `BUNDLED_MODEL_DIR`).

    Raises `CheckpointError` when a named folder holds no usable model, or when nothing is found anywhere (the
    message says the ways to provide the weights)."""
    if explicit is not None:
        return _explicit(Path(explicit).expanduser(), "flag")
    from_env = os.environ.get(MODELS_ENV, "").strip()
    if from_env:
        return _explicit(Path(from_env).expanduser(), "env")
    download_dir = Path(download_dir).expanduser() if download_dir is not None else default_download_dir()
    if missing_model_files(download_dir) is None:
        return ResolvedModels(download_dir, "download")
    caches = [Path(c).expanduser() for c in (cache_dirs if cache_dirs is not None else default_cache_dirs())]
    incomplete = []
    for cache in caches:
        snapshot, partial = cached_snapshot(cache)
        if snapshot is not None:
            return ResolvedModels(snapshot, "hf_cache")
        if partial is not None:
            incomplete.append(partial)
    bundled = Path(bundled_dir) if bundled_dir is not None else BUNDLED_MODEL_DIR
    if missing_model_files(bundled) is None:
        return ResolvedModels(bundled, "bundled")
    ar_file, clvp_file = (ORIGINAL_FORMATS[part].filename for part in REQUIRED_PARTS)
    message = (
        "no model directory given and none found. Provide the weights in one of three ways: "
        f"(1) pass --models-dir DIR; (2) set {MODELS_ENV}=DIR; (3) run `clvp-tts download` (it fills {download_dir}, "
        f"which is then found on its own). DIR holds the released Tortoise files {ar_file}, {clvp_file}, "
        f"{TOKENIZER_FILENAME} and {MEL_NORMS_FILE} (plus {ORIGINAL_FORMATS['diffusion'].filename} and "
        f"{ORIGINAL_FORMATS['vocoder'].filename} for audio), a Hugging Face CLVP folder ({hf_clvp.CONFIG_FILE} + "
        f"{hf_clvp.SAFETENSORS_FILE}) or a converted one ({native.CONFIG_FILE}). Also looked for a cached copy of "
        f"{TORTOISE_REPO_ID} in {', '.join(map(str, caches)) or 'no cache folder'}, and for the bundled model in "
        f"{bundled}."
    )
    if incomplete:
        message += (
            f" Found one at {incomplete[0]}, but it lacks {TOKENIZER_FILENAME} / {MEL_NORMS_FILE}: copy them from "
            f"the Tortoise repository's tortoise/data/ ({TORTOISE_DATA_URL}) into a folder with the weights and "
            "pass that folder."
        )
    raise CheckpointError(message)
