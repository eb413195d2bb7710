"""Voices: find them by name, resolve what the user typed, and turn them into cached conditioning latents.

A voice is a folder of reference clips (.wav, .flac or .ogg; other files are ignored, and a folder without clips is
not a voice). Named voices come from the bundled voices (the training corpus's synthetic Piper and espeak-ng voices:
the repository's ``voices/`` folder, installed as the data package ``tortoise_clvp.bundled_voices`` and found
through it) and from user voice directories: ones passed in, then those in ``$TORTOISE_VOICES_DIR``
(``os.pathsep``-separated).
A user voice with the same name as a bundled one takes its place; an earlier directory wins over a later one.

What the user may type as a voice (:func:`resolve_voice`):

* a named voice, e.g. ``piper_joe``;
* a path to one audio file, or to a folder of clips;
* ``a&b`` (any number of parts, each any of the above): the voices' latents averaged (see :func:`voice_latents`);
* ``random``: a random voice latent drawn from a seed.

Latents are cached (:func:`voice_latents`) in a cache folder, never beside the clips, keyed by the clips' bytes, the
crop seed and the loaded models. The library never prints: what happened to the cache is reported back in
:class:`VoiceLatents`.

Listing and resolving voices needs no torch (the command line's ``voices`` and its argument checks start fast);
torch and safetensors are imported by the latent functions that use them.
"""

from __future__ import annotations

import difflib
import hashlib
import importlib.resources
import json
import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Iterable, Sequence

from .atomic import write_bytes_atomic
from .errors import AudioError, TortoiseClvpError
from .seeds import CROP_SEED, seed_or_draw

if TYPE_CHECKING:  # torch-heavy modules: voices needs only their types at import
    from torch import Tensor

    from .api import Progress, TextToSpeech
    from .pipeline.conditioning import Conditioning
    from .weights.model_dir import LoadedModels

__all__ = [
    "AUDIO_SUFFIXES",
    "BUNDLED_VOICES_DIR",
    "BUNDLED_VOICES_PACKAGE",
    "CACHE_DIR_ENV",
    "LatentCacheError",
    "RANDOM_VOICE",
    "VOICES_DIR_ENV",
    "VoiceInfo",
    "VoiceLatents",
    "VoiceSpec",
    "default_cache_dir",
    "latent_cache_key",
    "list_voices",
    "model_identity",
    "precompute_latents",
    "random_conditioning",
    "resolve_voice",
    "voice_conditioning",
    "voice_dirs",
    "voice_latents",
]

AUDIO_SUFFIXES = (".wav", ".flac", ".ogg")  # what voice clips may be, and what `save_audio` writes
RANDOM_VOICE = "random"
VOICES_DIR_ENV = "TORTOISE_VOICES_DIR"
CACHE_DIR_ENV = "TORTOISE_CLVP_CACHE"
BUNDLED_VOICES_PACKAGE = "tortoise_clvp.bundled_voices"  # the repository's voices/ folder, mapped in pyproject.toml
CACHE_FORMAT = "tortoise_clvp.voice_latents.v1"
_MAX_LISTED = 25


def _bundled_voices_dir() -> Path | None:
    """The folder of the installed bundled voices, or None when the package is not installed with them."""
    try:
        return Path(str(importlib.resources.files(BUNDLED_VOICES_PACKAGE)))
    except ModuleNotFoundError:
        return None


BUNDLED_VOICES_DIR = _bundled_voices_dir()


class LatentCacheError(TortoiseClvpError):
    """Latents were asked to be cached (``precompute_latents``) but the cache folder cannot be written."""


# Registry -------------------------------------------------------------------------------------------------------------
@dataclass(frozen=True)
class VoiceInfo:
    """A named voice: its folder, its clips (sorted by name) and where it comes from ('bundled' or 'user')."""

    name: str
    folder: Path
    clips: tuple[Path, ...]
    source: str


def _clips_in(folder: Path) -> tuple[Path, ...]:
    """The audio clips directly inside a folder, sorted by name; hidden files and other types are ignored."""
    try:
        entries = list(folder.iterdir())
    except OSError:
        return ()
    clips = [
        p for p in entries if not p.name.startswith(".") and p.suffix.lower() in AUDIO_SUFFIXES and p.is_file()
    ]
    return tuple(sorted(clips, key=lambda p: p.name))


def _env_dirs() -> list[Path]:
    value = os.environ.get(VOICES_DIR_ENV, "")
    return [Path(part).expanduser() for part in value.split(os.pathsep) if part.strip()]


def voice_dirs(extra_dirs: Iterable[str | os.PathLike] = ()) -> list[tuple[Path, str]]:
    """The directories searched for named voices, highest precedence first, each with its source.

    ``extra_dirs`` (which must exist), then ``$TORTOISE_VOICES_DIR`` entries (missing ones skipped), then the
    bundled folder (if present).
    """
    dirs: list[tuple[Path, str]] = []
    for entry in extra_dirs:
        path = Path(entry).expanduser()
        if not path.is_dir():
            raise AudioError(f"voices directory {path} does not exist or is not a folder; check the path")
        dirs.append((path, "user"))
    dirs += [(path, "user") for path in _env_dirs() if path.is_dir()]
    if BUNDLED_VOICES_DIR is not None and BUNDLED_VOICES_DIR.is_dir():
        dirs.append((BUNDLED_VOICES_DIR, "bundled"))
    return dirs


def _registry(extra_dirs: Iterable[str | os.PathLike] = ()) -> dict[str, VoiceInfo]:
    voices: dict[str, VoiceInfo] = {}
    for directory, source in voice_dirs(extra_dirs):
        try:
            subfolders = sorted(p for p in directory.iterdir() if p.is_dir() and not p.name.startswith("."))
        except OSError:
            continue
        for folder in subfolders:
            if folder.name in voices or folder.name == RANDOM_VOICE or "&" in folder.name:
                continue  # shadowed by a higher-precedence voice, or a name that cannot be typed as a voice
            clips = _clips_in(folder)
            if clips:
                voices[folder.name] = VoiceInfo(folder.name, folder, clips, source)
    return voices


def list_voices(extra_dirs: Iterable[str | os.PathLike] = ()) -> list[VoiceInfo]:
    """Every named voice (bundled and user), sorted by name. See the module docstring for the search order."""
    return sorted(_registry(extra_dirs).values(), key=lambda v: v.name)


# Resolving ------------------------------------------------------------------------------------------------------------
@dataclass(frozen=True)
class VoiceSpec:
    """A resolved voice.

    kind: 'named' (a registry voice; ``source`` says 'bundled' or 'user'), 'folder', 'file', 'combined' (``parts``
    holds the resolved parts of ``a&b``) or 'random'. clips: the clips the voice conditions on; for a combination,
    every part's clips (for information: each part is still conditioned on separately). name: how to show it.
    """

    name: str
    kind: str
    clips: tuple[Path, ...] = ()
    parts: tuple["VoiceSpec", ...] = ()
    source: str | None = None
    folder: Path | None = None

    @property
    def is_random(self) -> bool:
        return self.kind == "random"

    @property
    def is_combined(self) -> bool:
        return self.kind == "combined"


def _looks_like_path(text: str) -> bool:
    separators = {"/", os.sep} | ({os.altsep} if os.altsep else set())
    return (
        any(s in text for s in separators)
        or text.startswith((".", "~"))
        or Path(text).suffix.lower() in AUDIO_SUFFIXES
    )


def _how_to_add() -> str:
    return (
        "To use another voice, pass a path to a clip or to a folder of clips, or put a folder of "
        f"{'/'.join(AUDIO_SUFFIXES)} clips named after the voice in a directory listed in ${VOICES_DIR_ENV} "
        f"(several separated by {os.pathsep!r}); its folder name is then the voice's name."
    )


def _unknown_voice(text: str, extra_dirs: Iterable[str | os.PathLike]) -> AudioError:
    registry = _registry(extra_dirs)
    names = list(registry)
    lowered = text.lower()
    close = difflib.get_close_matches(lowered, [n.lower() for n in names], n=3, cutoff=0.6)
    close_names = [n for c in close for n in names if n.lower() == c]
    ranked = sorted(names, key=lambda n: (-difflib.SequenceMatcher(None, lowered, n.lower()).ratio(), n))
    message = f"unknown voice {text!r}."
    if close_names:
        message += f" Did you mean {', '.join(dict.fromkeys(close_names))}?"
    if ranked:
        shown = ", ".join(ranked[:_MAX_LISTED])
        if len(ranked) > _MAX_LISTED:
            shown += f" and {len(ranked) - _MAX_LISTED} more"
        message += f" Available voices: {shown} (also '{RANDOM_VOICE}', and 'a&b' to combine voices)."
    else:
        message += f" No named voices were found; '{RANDOM_VOICE}' and paths to clips still work."
    searched = [str(d) for d, _ in voice_dirs(extra_dirs)]
    missing = [str(d) for d in _env_dirs() if not d.is_dir()]
    message += f" Searched: {', '.join(searched) or 'no voice directories'}."
    if missing:
        message += f" Not found (from ${VOICES_DIR_ENV}): {', '.join(missing)}."
    return AudioError(message + " " + _how_to_add())


def _resolve_path(path: Path, text: str) -> VoiceSpec:
    if path.is_file():
        if path.suffix.lower() not in AUDIO_SUFFIXES:
            raise AudioError(
                f"voice clip {path} is a {path.suffix or 'suffix-less'} file; voice clips must be "
                f"{', '.join(AUDIO_SUFFIXES)} (convert it, e.g. `sox in.mp3 -r 22050 -c 1 out.wav`)"
            )
        return VoiceSpec(text, "file", (path,), folder=path.parent)
    if path.is_dir():
        clips = _clips_in(path)
        if not clips:
            raise AudioError(
                f"voice folder {path} holds no {'/'.join(AUDIO_SUFFIXES)} clips; put a few 6-10 s clips of one "
                "speaker in it (other files are ignored)"
            )
        return VoiceSpec(text, "folder", clips, folder=path)
    raise AudioError(f"{path} is neither an audio file nor a folder of clips")


def _resolve_single(text: str, extra_dirs: Sequence[str | os.PathLike]) -> VoiceSpec:
    if not text:
        raise AudioError("empty voice name; give a voice name, a clip or folder path, 'random' or 'a&b'")
    if text.lower() == RANDOM_VOICE:
        return VoiceSpec(RANDOM_VOICE, "random")
    looks_like_path = _looks_like_path(text)
    if not looks_like_path:
        info = _registry(extra_dirs).get(text)
        if info is not None:
            return VoiceSpec(info.name, "named", info.clips, source=info.source, folder=info.folder)
    path = Path(text).expanduser()
    if path.exists():
        return _resolve_path(path, text)
    if looks_like_path:
        raise AudioError(f"voice clip or folder {path} not found; check the path")
    raise _unknown_voice(text, extra_dirs)


def resolve_voice(spec: str | os.PathLike, extra_dirs: Sequence[str | os.PathLike] = ()) -> VoiceSpec:
    """What the user typed -> a VoiceSpec; AudioError with a clear message if it names nothing usable.

    A plain name (no path separator, no audio suffix, not starting with '.' or '~') is looked up among the named
    voices first, then as a path relative to the working directory; write ``./name`` to mean a folder that shares
    a voice's name. ``a&b`` resolves each side separately (unless the whole text is an existing path). ``random``
    cannot be combined with other voices.
    """
    if not isinstance(spec, str):
        path = Path(os.fspath(spec)).expanduser()
        if not path.exists():
            raise AudioError(f"voice clip or folder {path} not found; check the path")
        return _resolve_path(path, str(spec))
    text = spec.strip()
    if "&" in text and not Path(text).expanduser().exists():
        pieces = [piece.strip() for piece in text.split("&")]
        if not all(pieces):
            raise AudioError(f"voice {text!r} has an empty part; combine voices as 'a&b'")
        parts = tuple(_resolve_single(piece, extra_dirs) for piece in pieces)
        if any(part.is_random for part in parts):
            raise AudioError(
                f"'{RANDOM_VOICE}' cannot be combined with other voices ({text!r}); use it alone or drop it"
            )
        clips = tuple(clip for part in parts for clip in part.clips)
        return VoiceSpec("&".join(part.name for part in parts), "combined", clips, parts)
    return _resolve_single(text, extra_dirs)


# Latents --------------------------------------------------------------------------------------------------------------
@dataclass(frozen=True)
class VoiceLatents:
    """A voice's conditioning and what happened to the cache.

    cache_path: the cache file (None for 'random' or with caching off); cached: True when read from it rather than
    computed; cache_error: why the latents could not be cached (unwritable folder...), None when all went well;
    seed: the crop seed used, or for 'random' the seed of the draw.
    """

    conditioning: Conditioning
    cache_path: Path | None = None
    cached: bool = False
    cache_error: str | None = None
    seed: int | None = None
    parts: tuple["VoiceLatents", ...] = field(default=(), repr=False)


def default_cache_dir() -> Path:
    """``$TORTOISE_CLVP_CACHE`` if set, else ``~/.cache/tortoise_clvp/latents``."""
    value = os.environ.get(CACHE_DIR_ENV, "").strip()
    return Path(value).expanduser() if value else Path.home() / ".cache" / "tortoise_clvp" / "latents"


def _checksum(tensor: Tensor) -> list[float]:
    import torch

    values = tensor.detach().to("cpu", torch.float64).flatten()
    return [float(values.sum()), float(values.abs().sum()), *values[:4].tolist()]


def model_identity(models: "LoadedModels") -> str:
    """A SHA-256 (hex) that changes when the models would make other latents from the same clips.

    It covers the decoder's and diffusion decoder's configs, their dtypes and the device type, the mel norms, and
    checksums of the first and last parameters of both conditioning encoders (cheap: not a hash of every weight).
    """
    ar = models.autoregressive
    ar_params = list(ar.conditioning_encoder.parameters())
    identity: dict = {
        "autoregressive": ar.config.to_dict(),
        "autoregressive_dtype": str(ar.dtype),
        "device": ar.device.type,
        "mel_norms": _checksum(models.mel_norms),
        "ar_conditioning": [_checksum(ar_params[0]), _checksum(ar_params[-1])],
        "diffusion": None,
    }
    diffusion = models.diffusion
    if diffusion is not None:
        identity["diffusion"] = diffusion.config.to_dict()
        identity["diffusion_dtype"] = str(diffusion.dtype)
        cond_params = [*diffusion.cond_conv1.parameters(), *diffusion.cond_blocks.parameters()]
        identity["diffusion_conditioning"] = [_checksum(cond_params[0]), _checksum(cond_params[-1])]
    return hashlib.sha256(json.dumps(identity, sort_keys=True, default=str).encode()).hexdigest()


def _file_digest(path: Path) -> str:
    digest = hashlib.sha256()
    try:
        with open(path, "rb") as handle:
            for chunk in iter(lambda: handle.read(1 << 20), b""):
                digest.update(chunk)
    except FileNotFoundError:
        raise AudioError(f"voice clip {path} not found; check the path") from None
    except OSError as exc:
        raise AudioError(f"cannot read voice clip {path} ({exc.strerror or exc}); check its permissions") from None
    return digest.hexdigest()


def _clips_by_content(clips: Sequence[Path]) -> tuple[list[Path], list[str]]:
    """Clips ordered by the SHA-256 of their bytes (the order crops are drawn in) and those digests."""
    pairs = sorted(((_file_digest(clip), str(clip)), clip) for clip in clips)
    return [clip for _, clip in pairs], [digest for (digest, _), _ in pairs]


def latent_cache_key(clip_digests: Sequence[str], crop_seed: int, model_id: str) -> str:
    """The cache key of one voice: SHA-256 of the sorted clip-content digests, the crop seed and the model identity."""
    payload = {"format": CACHE_FORMAT, "clips": sorted(clip_digests), "seed": crop_seed, "model": model_id}
    return hashlib.sha256(json.dumps(payload, sort_keys=True).encode()).hexdigest()


def _combined_key(part_keys: Sequence[str]) -> str:
    payload = {"format": CACHE_FORMAT, "combined": sorted(part_keys)}
    return hashlib.sha256(json.dumps(payload, sort_keys=True).encode()).hexdigest()


def _expected_shapes(models: "LoadedModels") -> dict[str, tuple[int, ...]]:
    shapes = {"autoregressive": (models.autoregressive.config.model_dim,)}
    if models.diffusion is not None:
        shapes["diffusion"] = (2 * models.diffusion.config.model_channels,)
    return shapes


def _read_cache(path: Path, key: str, models: "LoadedModels") -> Conditioning | None:
    """The cached conditioning, or None when absent, unreadable, corrupt or not what this key and model expect."""
    import torch
    from safetensors import safe_open

    from .pipeline.conditioning import Conditioning

    try:
        with safe_open(str(path), framework="pt", device="cpu") as handle:
            meta = handle.metadata() or {}
            if meta.get("format") != CACHE_FORMAT or meta.get("key") != key:
                return None
            shapes = _expected_shapes(models)
            if set(handle.keys()) != set(shapes):
                return None
            tensors = {name: handle.get_tensor(name) for name in shapes}
    except Exception:  # noqa: BLE001 - any unreadable or corrupt file is a cache miss; it gets rewritten
        return None
    for name, shape in shapes.items():
        tensor = tensors[name]
        if tuple(tensor.shape) != shape or not tensor.is_floating_point() or not torch.isfinite(tensor).all():
            return None
    device = models.autoregressive.device
    diffusion = tensors.get("diffusion")
    return Conditioning(tensors["autoregressive"].to(device), None if diffusion is None else diffusion.to(device))


def _write_cache(path: Path, key: str, conditioning: Conditioning, info: dict) -> str | None:
    """Write atomically (temp file + os.replace); the reason as a message if it could not be written."""
    from safetensors.torch import save as save_safetensors

    tensors = {"autoregressive": conditioning.autoregressive.detach().cpu().contiguous().clone()}
    if conditioning.diffusion is not None:
        tensors["diffusion"] = conditioning.diffusion.detach().cpu().contiguous().clone()
    metadata = {"format": CACHE_FORMAT, "key": key, "info": json.dumps(info, sort_keys=True)}
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        write_bytes_atomic(path, save_safetensors(tensors, metadata))
    except OSError as exc:
        return f"cannot write the latent cache {path} ({exc.strerror or exc}); latents were computed but not cached"
    return None


def _inside(path: Path, folder: Path) -> bool:
    try:
        return path.resolve().is_relative_to(folder.resolve())
    except OSError:
        return False


def _refuse_cache(folder: Path, spec: VoiceSpec) -> str | None:
    """Why latents must not be cached in `folder` for this voice (it lies inside one of its voice folders)."""
    for part in spec.parts or (spec,):
        if part.folder is not None and part.kind in ("named", "folder") and _inside(folder, part.folder):
            return f"the cache folder {folder} is inside voice folder {part.folder}; latents are not cached there"
    return None


def random_conditioning(tts: "TextToSpeech", seed: int) -> Conditioning:
    """A random voice: standard-normal latents of the decoder's (C,) and the diffusion decoder's (2C',) shapes.

    The original Tortoise draws Gaussian noise and maps it through two small trained networks
    (``RandomLatentConverter``, weights ``rlg_auto.pth`` / ``rlg_diffuser.pth``) into each model's latent space.
    Those networks are not part of a model directory here, so we keep the idea and skip the mapping: the latents
    are the noise itself, drawn from ``torch.Generator().manual_seed(seed)`` on the CPU (the decoder's first, so it
    does not depend on whether a diffusion decoder is loaded). The voice this gives is arbitrary and may be less
    natural than the original's random voices; it is repeatable for a seed on any device.
    """
    import torch

    from .pipeline.conditioning import Conditioning

    models = tts.models
    generator = torch.Generator().manual_seed(int(seed))
    shapes = _expected_shapes(models)
    ar = models.autoregressive
    latent = torch.randn(shapes["autoregressive"], generator=generator).to(ar.device, ar.dtype)
    diffusion = None
    if models.diffusion is not None:
        noise = torch.randn(shapes["diffusion"], generator=generator)
        diffusion = noise.to(models.diffusion.device, models.diffusion.dtype)
    return Conditioning(latent, diffusion)


def _average(conditionings: Sequence[Conditioning]) -> Conditioning:
    import torch

    from .pipeline.conditioning import Conditioning

    ar = torch.stack([c.autoregressive for c in conditionings]).mean(dim=0)
    diffusions = [c.diffusion for c in conditionings]
    diffusion = None if any(d is None for d in diffusions) else torch.stack(diffusions).mean(dim=0)  # type: ignore[misc]
    return Conditioning(ar, diffusion)


def _single_latents(
    tts: "TextToSpeech", spec: VoiceSpec, folder: Path | None, seed: int, model_id: str, progress: Progress | None
) -> VoiceLatents:
    """One voice (named, folder or file) through the cache in `folder` (None: no caching)."""
    clips, digests = _clips_by_content(spec.clips)
    if folder is None:
        return VoiceLatents(tts.get_conditioning(clips, seed, progress), seed=seed)
    error = _refuse_cache(folder, spec)
    if error:
        return VoiceLatents(tts.get_conditioning(clips, seed, progress), None, False, error, seed)
    key = latent_cache_key(digests, seed, model_id)
    path = folder / f"{key}.safetensors"
    cached = _read_cache(path, key, tts.models)
    if cached is not None:
        return VoiceLatents(cached, path, True, None, seed)
    conditioning = tts.get_conditioning(clips, seed, progress)
    info = {"voice": spec.name, "clips": [c.name for c in clips], "clip_sha256": digests, "seed": seed,
            "model": model_id}
    error = _write_cache(path, key, conditioning, info)
    return VoiceLatents(conditioning, None if error else path, False, error, seed)


def voice_latents(
    tts: "TextToSpeech",
    spec: VoiceSpec | str,
    cache_dir: str | os.PathLike | None = None,
    seed: int | None = None,
    *,
    cache: bool = True,
    extra_dirs: Sequence[str | os.PathLike] = (),
    progress: Progress | None = None,
) -> VoiceLatents:
    """A voice's conditioning, from the cache when it holds it, with a report of what the cache did.

    spec: a VoiceSpec or text for :func:`resolve_voice` (``extra_dirs`` is used then). cache_dir: None for
    :func:`default_cache_dir`; ``cache=False`` neither reads nor writes it. seed: the crop seed for clips longer
    than 6 s (None: ``seeds.CROP_SEED``, the one every entry point uses, so these latents are what
    ``tts.generate(text, clips)`` computes), or for ``random`` the seed of the draw (None: a fresh one, reported
    back in ``seed``). progress: passed to ``tts.get_conditioning`` when latents are computed.

    * one voice (name, folder or file): ``tts.get_conditioning(clips, seed)``, clips in the order of their
      contents' SHA-256 (so renaming a clip does not change its latents or key).
    * ``a&b``: each part's Conditioning is computed (and cached) on its own, then the latents are averaged: the
      decoder's and the diffusion decoder's alike; the average is cached too. This is our choice: the original
      merges the clips of all parts into one list, and as both latents are means over clips (or clip frames), a
      voice with three clips then outweighs one with a single clip 3:1. Averaging per voice weights each voice
      equally whatever its clip count, which is what ``a&b`` promises. (The original averages per voice too when
      the parts are precomputed latents.)
    * ``random``: :func:`random_conditioning` (never cached, it costs nothing).

    Caching: ``<cache_dir>/<key>.safetensors`` with the key from :func:`latent_cache_key`, written atomically, never
    into a voice folder. A corrupt or mismatched cache file is ignored and rewritten; an unwritable cache folder
    only means no caching (``cache_error`` says why). Nothing is printed.
    """
    if isinstance(spec, str):
        spec = resolve_voice(spec, extra_dirs)
    if spec.is_random:
        draw = seed_or_draw(seed)
        return VoiceLatents(random_conditioning(tts, draw), seed=draw)
    crop_seed = CROP_SEED if seed is None else int(seed)
    folder = (default_cache_dir() if cache_dir is None else Path(cache_dir).expanduser()) if cache else None
    model_id = model_identity(tts.models)
    if not spec.is_combined:
        return _single_latents(tts, spec, folder, crop_seed, model_id, progress)

    part_keys = [latent_cache_key(_clips_by_content(part.clips)[1], crop_seed, model_id) for part in spec.parts]
    key = _combined_key(part_keys)
    refused = None if folder is None else _refuse_cache(folder, spec)
    path = None if folder is None or refused else folder / f"{key}.safetensors"
    if path is not None:
        cached = _read_cache(path, key, tts.models)
        if cached is not None:
            return VoiceLatents(cached, path, True, None, crop_seed)
    part_folder = None if refused else folder  # a cache inside any part's voice folder is used for none of them
    parts = tuple(_single_latents(tts, part, part_folder, crop_seed, model_id, progress) for part in spec.parts)
    conditioning = _average([part.conditioning for part in parts])
    errors = [error for error in (refused, *(part.cache_error for part in parts)) if error]
    if path is not None:
        info = {"voice": spec.name, "parts": [p.name for p in spec.parts], "part_keys": part_keys, "seed": crop_seed,
                "model": model_id}
        error = _write_cache(path, key, conditioning, info)
        if error:
            errors.append(error)
            path = None
    return VoiceLatents(conditioning, path, False, errors[0] if errors else None, crop_seed, parts)


def voice_conditioning(
    tts: "TextToSpeech",
    spec: VoiceSpec | str,
    cache_dir: str | os.PathLike | None = None,
    seed: int | None = None,
    *,
    cache: bool = True,
    extra_dirs: Sequence[str | os.PathLike] = (),
) -> Conditioning:
    """:func:`voice_latents` without the report: the Conditioning to pass to ``generate`` / ``candidates``."""
    return voice_latents(tts, spec, cache_dir, seed, cache=cache, extra_dirs=extra_dirs).conditioning


def precompute_latents(
    tts: "TextToSpeech",
    spec: VoiceSpec | str,
    cache_dir: str | os.PathLike | None = None,
    seed: int | None = None,
    *,
    extra_dirs: Sequence[str | os.PathLike] = (),
) -> Path:
    """Compute a voice's latents into the cache (``clvp-tts latents VOICE``) and return the cache file's path.

    Raises LatentCacheError when the cache folder cannot be written, AudioError for ``random`` (drawn from its seed
    at use, there is nothing to precompute) and for anything :func:`resolve_voice` rejects.
    """
    if isinstance(spec, str):
        spec = resolve_voice(spec, extra_dirs)
    if spec.is_random:
        raise AudioError(f"'{RANDOM_VOICE}' is drawn from its seed when used; there are no latents to precompute")
    result = voice_latents(tts, spec, cache_dir, seed)
    if result.cache_error or result.cache_path is None:
        raise LatentCacheError(result.cache_error or "the latents could not be cached")
    return result.cache_path
