"""Where the weights are, and fetching them from the Hugging Face hub into a plain folder.

- `resolve_models_dir`: ``--models-dir`` > ``$TORTOISE_MODELS_DIR`` > a local copy (this package's default download
  folder, then a Hugging Face cache snapshot of the released repository) > a `CheckpointError` naming the three
  ways to provide the weights.
- `download_models` / `fetch_models`: ``huggingface_hub.hf_hub_download`` per file into a staging folder inside the
  destination, verified, then ``os.replace``d into place; files already present and verified are skipped. With no
  network it fails fast with one message saying where to put the files by hand. Nothing half-written is left on
  failure or Ctrl-C.

UNVERIFIED HERE: the repository ids and file lists in `RELEASE_FILES` come from the original Tortoise code
(``hf_hub_download(repo_id="Manmay/tortoise-tts", filename=...)``) and from transformers' CLVP documentation; this
project was built without network access, so no file was ever listed, sized or hashed against the hub. Every pinned
size and sha256 is therefore ``None`` (unknown). Downloads are instead checked against what the hub itself reports
for the file (its size and, for LFS files, its sha256 etag) plus the file format's own integrity (zip directory of a
``.pth``, header and length of a ``.safetensors``, JSON syntax), and every result says which checks ran.

``huggingface_hub`` is optional: it is imported only when the hub is needed.
"""

from __future__ import annotations

import hashlib
import inspect
import json
import os
import re
import shutil
import struct
import tempfile
import zipfile
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any, Callable, Iterable, Sequence

from ..errors import CheckpointError, describe
from ..frontend.text import TOKENIZER_FILENAME
from . import hf_clvp, native
from .original_diffusion import DIFFUSION_CHECKPOINT
from .original_vocoder import VOCODER_CHECKPOINT
from .tortoise_pth import AUTOREGRESSIVE_CHECKPOINT, CLVP_CHECKPOINT

# ---------------------------------------------------------------------------------------------------------------
# The released files (one place; see the module docstring: none of this was checked against the hub here)
# ---------------------------------------------------------------------------------------------------------------

MODELS_ENV = "TORTOISE_MODELS_DIR"
MEL_NORMS_FILE = "mel_norms.pth"
TORTOISE_REPO_ID = "Manmay/tortoise-tts"  # what the original Tortoise's api.py downloads from
HF_CLVP_REPO_ID = "susnato/clvp_dev"  # the ClvpModelForConditionalGeneration checkpoint transformers' docs use
TORTOISE_DATA_URL = "https://github.com/neonbjb/tortoise-tts/tree/main/tortoise/data"
# The original Tortoise's own download folder (its hf_hub_download(cache_dir=...)): a hub cache, not a plain folder.
ORIGINAL_TORTOISE_CACHE = Path("~/.cache/tortoise/models")
LAYOUTS = ("tortoise", "huggingface")


@dataclass(frozen=True)
class RemoteFile:
    """One file of a release on the hub.

    ``size`` (bytes) and ``sha256`` are pinned values; ``None`` = unknown (the default everywhere here: nothing was
    checked against the hub from this project). ``required=False``: the repository may not hold it (its absence is
    reported, not an error). ``fallbacks``: other names tried in order when the repository lacks ``filename``.
    """

    repo_id: str
    filename: str
    role: str
    size: int | None = None
    sha256: str | None = None
    required: bool = True
    fallbacks: tuple[str, ...] = ()


_DATA_FILES = (
    # The original package ships these in tortoise/data/, not on the hub; they may well be missing from the repo.
    RemoteFile(TORTOISE_REPO_ID, TOKENIZER_FILENAME, "Tortoise's BPE vocabulary", required=False),
    RemoteFile(TORTOISE_REPO_ID, MEL_NORMS_FILE, "Tortoise's conditioning mel norms", required=False),
)
_WAVEFORM_FILES = (
    RemoteFile(TORTOISE_REPO_ID, DIFFUSION_CHECKPOINT, "diffusion decoder (audio stage)"),
    RemoteFile(TORTOISE_REPO_ID, VOCODER_CHECKPOINT, "UnivNet vocoder (audio stage)"),
)
RELEASE_FILES: dict[str, tuple[RemoteFile, ...]] = {
    "tortoise": (
        RemoteFile(TORTOISE_REPO_ID, AUTOREGRESSIVE_CHECKPOINT, "autoregressive decoder"),
        RemoteFile(TORTOISE_REPO_ID, CLVP_CHECKPOINT, "CLVP scorer"),
        *_WAVEFORM_FILES,
        *_DATA_FILES,
    ),
    "huggingface": (
        RemoteFile(HF_CLVP_REPO_ID, hf_clvp.CONFIG_FILE, "Hugging Face CLVP config"),
        RemoteFile(
            HF_CLVP_REPO_ID,
            hf_clvp.SAFETENSORS_FILE,
            "Hugging Face CLVP weights (decoder + scorer)",
            fallbacks=(hf_clvp.SAFETENSORS_INDEX, hf_clvp.TORCH_FILE),
        ),
        *_WAVEFORM_FILES,  # the CLVP repository has no diffusion decoder or vocoder: they come from Tortoise's
        *_DATA_FILES,
    ),
}


def default_download_dir() -> Path:
    """Where ``clvp-tts download`` puts the weights when no folder is named: ``$XDG_CACHE_HOME/tortoise_clvp/models``
    (``~/.cache/tortoise_clvp/models``). `resolve_models_dir` looks there too."""
    cache = os.environ.get("XDG_CACHE_HOME") or os.path.join(os.path.expanduser("~"), ".cache")
    return Path(cache) / "tortoise_clvp" / "models"


def default_cache_dirs() -> list[Path]:
    """Hub caches searched for a snapshot of the release: Hugging Face's (``HF_HUB_CACHE``) and the original
    Tortoise's download folder (it used ``hf_hub_download(cache_dir=~/.cache/tortoise/models)``)."""
    dirs = [ORIGINAL_TORTOISE_CACHE.expanduser()]
    try:
        from huggingface_hub import constants

        dirs.insert(0, Path(constants.HF_HUB_CACHE))
    except ImportError:
        dirs.insert(0, Path(os.environ.get("HF_HOME", os.path.join(os.path.expanduser("~"), ".cache", "huggingface"))) / "hub")
    return dirs


def _names(files: Iterable[RemoteFile]) -> str:
    return ", ".join(f.filename for f in files)


def manual_placement_hint(destination: Path | str, layout: str = "tortoise") -> str:
    """How to provide the files without this downloader."""
    files = RELEASE_FILES[layout]
    hub = [f for f in files if f.filename not in (TOKENIZER_FILENAME, MEL_NORMS_FILE)]
    repos = sorted({f.repo_id for f in hub})
    return (
        f"To set up by hand, put {_names(hub)} (from the Hugging Face repositor{'ies' if len(repos) > 1 else 'y'} "
        f"{' and '.join(repos)}) and {TOKENIZER_FILENAME} and {MEL_NORMS_FILE} (from the Tortoise repository's "
        f"tortoise/data/, {TORTOISE_DATA_URL}) into {destination}."
    )


# ---------------------------------------------------------------------------------------------------------------
# Finding the model directory
# ---------------------------------------------------------------------------------------------------------------


def _loadable_files(layout: str) -> tuple[str, ...]:
    """The files `load_models` needs for the candidates stage in a folder of this layout."""
    if layout == "huggingface":
        return (hf_clvp.CONFIG_FILE, TOKENIZER_FILENAME, MEL_NORMS_FILE)
    return (AUTOREGRESSIVE_CHECKPOINT, CLVP_CHECKPOINT, TOKENIZER_FILENAME, MEL_NORMS_FILE)


def _is_complete_folder(path: Path) -> bool:
    """A folder `load_models` can read (any layout) with the data files beside the weights."""
    from .model_dir import detect_layout

    try:
        layout = detect_layout(path)
    except CheckpointError:
        return False
    if layout == "native":
        return all((path / name).is_file() for name in native.ASSET_FILES)
    return all((path / name).is_file() for name in _loadable_files(layout))


def _cached_snapshot(cache_dir: Path, revision: str | None = None) -> tuple[Path | None, Path | None]:
    """(a complete snapshot of the Tortoise release in this hub cache, an incomplete one) — offline, filesystem only."""
    try:
        from huggingface_hub import try_to_load_from_cache
    except ImportError:
        return None, None
    weights = (AUTOREGRESSIVE_CHECKPOINT, CLVP_CHECKPOINT)
    found = []
    for name in weights:
        try:
            hit = try_to_load_from_cache(TORTOISE_REPO_ID, name, cache_dir=str(cache_dir), revision=revision)
        except Exception:  # noqa: BLE001 - a malformed cache folder is simply not a usable cache
            return None, None
        if not isinstance(hit, str):  # None (not cached) or the 'known not to exist' sentinel
            return None, None
        found.append(Path(hit).parent)
    if len(set(found)) != 1:
        return None, None
    snapshot = found[0]
    return (snapshot, None) if _is_complete_folder(snapshot) else (None, snapshot)


def resolve_models_dir(
    explicit: Path | str | None,
    *,
    cache_dirs: Sequence[Path | str] | None = None,
    default_dir: Path | str | None = None,
) -> Path:
    """The model directory to use: `explicit` (``--models-dir``) if given, else ``$TORTOISE_MODELS_DIR``, else a
    local copy: `default_dir` (default `default_download_dir()`) when it holds a complete model folder, then a hub
    cache snapshot of ``Manmay/tortoise-tts`` (`cache_dirs`, default `default_cache_dirs()`) holding
    autoregressive.pth, clvp2.pth, tokenizer.json and mel_norms.pth. Never touches the network.

    An explicit or environment path is returned as given (not checked: `load_models` says what is wrong with it),
    except that an environment path that is itself a hub cache of the release (the original Tortoise used
    ``$TORTOISE_MODELS_DIR`` that way) resolves to its snapshot. Raises `CheckpointError` when nothing is found.
    """
    if explicit is not None:
        return Path(explicit).expanduser()
    from_env = os.environ.get(MODELS_ENV, "").strip()
    if from_env:
        path = Path(from_env).expanduser()
        if path.is_dir() and not _is_complete_folder(path):
            snapshot, _ = _cached_snapshot(path)
            if snapshot is not None:
                return snapshot
        return path
    default_dir = Path(default_dir).expanduser() if default_dir is not None else default_download_dir()
    if _is_complete_folder(default_dir):
        return default_dir
    caches = [Path(c).expanduser() for c in (cache_dirs if cache_dirs is not None else default_cache_dirs())]
    incomplete: list[Path] = []
    for cache in caches:
        snapshot, partial = _cached_snapshot(cache)
        if snapshot is not None:
            return snapshot
        if partial is not None:
            incomplete.append(partial)
    message = (
        "no model directory given and none found. Provide the weights in one of three ways: "
        f"(1) pass --models-dir DIR; (2) set {MODELS_ENV}=DIR; (3) run `clvp-tts download` (it fills {default_dir}, "
        "which is then found on its own). DIR holds the released Tortoise files "
        f"{AUTOREGRESSIVE_CHECKPOINT}, {CLVP_CHECKPOINT}, {TOKENIZER_FILENAME} and {MEL_NORMS_FILE} "
        f"(plus {DIFFUSION_CHECKPOINT} and {VOCODER_CHECKPOINT} for audio), a Hugging Face CLVP folder "
        f"({hf_clvp.CONFIG_FILE} + {hf_clvp.SAFETENSORS_FILE}) or a converted one. "
        f"Also looked for a cached copy of {TORTOISE_REPO_ID} in {', '.join(map(str, caches)) or 'no cache folder'}."
    )
    if incomplete:
        message += (
            f" Found one at {incomplete[0]}, but it lacks {TOKENIZER_FILENAME} / {MEL_NORMS_FILE}: copy them from "
            f"the Tortoise repository's tortoise/data/ ({TORTOISE_DATA_URL}) into a folder with the weights and "
            "pass that folder."
        )
    raise CheckpointError(message)


# ---------------------------------------------------------------------------------------------------------------
# Results and progress
# ---------------------------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class DownloadProgress:
    """One progress report: ``stage`` is 'checking', 'skipped', 'downloading' (with bytes), 'verifying', 'done' or
    'unavailable'. ``index`` counts from 1 up to ``count`` files."""

    filename: str
    index: int
    count: int
    stage: str
    done_bytes: int = 0
    total_bytes: int | None = None


@dataclass(frozen=True)
class FileOutcome:
    """What happened to one file. ``status``: 'downloaded', 'present' (already there, kept) or 'unavailable' (an
    optional file the repository does not hold). ``verified_by`` names the checks that passed, e.g.
    ``('size (hub)', 'sha256 (hub)', 'format')``; empty = not verified. ``sha256`` is the file's digest when it
    was computed (always for a download)."""

    filename: str
    repo_id: str
    status: str
    size: int | None = None
    sha256: str | None = None
    verified_by: tuple[str, ...] = ()
    note: str = ""


@dataclass
class DownloadResult:
    destination: Path
    layout: str
    revision: str | None
    files: list[FileOutcome] = field(default_factory=list)
    notes: list[str] = field(default_factory=list)

    @property
    def missing(self) -> list[str]:
        """Expected files that are not in the destination (optional files the repository lacks)."""
        return [f.filename for f in self.files if f.status == "unavailable"]

    @property
    def complete(self) -> bool:
        return not self.missing


ProgressCallback = Callable[[DownloadProgress], None]


# ---------------------------------------------------------------------------------------------------------------
# Verification
# ---------------------------------------------------------------------------------------------------------------

_SHA256 = re.compile(r"^[0-9a-f]{64}$")
_CHUNK = 8 * 1024 * 1024


def sha256_of(path: Path) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as handle:
        while chunk := handle.read(_CHUNK):
            digest.update(chunk)
    return digest.hexdigest()


def check_format(path: Path) -> str | None:
    """A cheap integrity check of the file's own format; None when it passes (or the format has none), else why not.

    ``.pth``: a torch zip archive whose central directory (at the end of the file) reads, so a truncated file fails;
    ``.safetensors``: its header parses and the data it declares ends exactly at the end of the file; ``.json``:
    valid JSON.
    """
    name = path.name
    try:
        if name.endswith((".pth", ".bin")):
            if not zipfile.is_zipfile(path):
                with open(path, "rb") as handle:
                    head = handle.read(2)
                if head[:1] == b"\x80":  # a legacy (pre-zip) torch pickle: no integrity data to check
                    return None
                return "not a PyTorch zip archive (truncated or another kind of file)"
            with zipfile.ZipFile(path) as archive:
                if not any(entry.endswith("data.pkl") for entry in archive.namelist()):
                    return "a zip archive without data.pkl, not a PyTorch checkpoint"
        elif name.endswith(".safetensors"):
            size = path.stat().st_size
            with open(path, "rb") as handle:
                raw = handle.read(8)
                if len(raw) < 8:
                    return "shorter than a safetensors header"
                (header_len,) = struct.unpack("<Q", raw)
                if header_len > size - 8:
                    return "its header runs past the end of the file (truncated)"
                header = json.loads(handle.read(header_len))
            end = max((v["data_offsets"][1] for k, v in header.items() if k != "__metadata__"), default=0)
            if 8 + header_len + end != size:
                return f"holds {size} bytes but its header declares {8 + header_len + end} (truncated or padded)"
        elif name.endswith(".json"):
            json.loads(path.read_text(encoding="utf-8"))
    except (OSError, ValueError, KeyError, TypeError, IndexError, zipfile.BadZipFile) as exc:
        return f"unreadable ({describe(exc, 120)})"
    return None


@dataclass(frozen=True)
class _Expected:
    size: int | None = None
    sha256: str | None = None
    source: str = ""  # 'pinned' or 'hub'


def _verify(path: Path, expectations: Sequence[_Expected], sha: str | None = None) -> tuple[list[str], list[str], str | None]:
    """(checks passed, failures, sha256 if computed). Sizes first (cheap), then hashes, then the format."""
    passed, failed = [], []
    size = path.stat().st_size
    for want in expectations:
        if want.size is not None:
            if want.size == size:
                passed.append(f"size ({want.source})")
            else:
                failed.append(f"{size} bytes, {want.source} size is {want.size}")
    if failed:
        return passed, failed, sha
    for want in expectations:
        if want.sha256 is not None:
            sha = sha or sha256_of(path)
            if want.sha256 == sha:
                passed.append(f"sha256 ({want.source})")
            else:
                failed.append(f"sha256 {sha[:16]}…, {want.source} sha256 is {want.sha256[:16]}…")
    problem = check_format(path)
    if problem:
        failed.append(problem)
    else:
        passed.append("format")
    return passed, failed, sha


# ---------------------------------------------------------------------------------------------------------------
# Downloading
# ---------------------------------------------------------------------------------------------------------------


class _Offline(Exception):
    """The hub cannot be reached (no network, offline mode, DNS, refused, timed out)."""


class _NotOnHub(Exception):
    """The repository has no such file."""


def _import_hub():
    try:
        import huggingface_hub
        import huggingface_hub.constants  # noqa: F401 - submodules: the package loads its attributes lazily
        import huggingface_hub.errors  # noqa: F401
    except ImportError:
        raise CheckpointError(
            "downloading needs the huggingface_hub package: pip install huggingface_hub "
            "(or put the files in place by hand and pass their folder)"
        ) from None
    return huggingface_hub


_NETWORK_MODULES = ("httpx", "httpx2", "httpcore", "requests", "urllib3", "aiohttp", "socket", "ssl")


def _is_network_error(exc: BaseException) -> bool:
    if isinstance(exc, (ConnectionError, TimeoutError)):
        return True
    return any(cls.__module__.split(".")[0] in _NETWORK_MODULES for cls in type(exc).__mro__)


def _classify(exc: Exception, hub: Any, repo_id: str, filename: str, revision: str | None) -> Exception:
    """Map a huggingface_hub / network exception to _Offline, _NotOnHub or a CheckpointError."""
    errors = hub.errors
    at = f"{repo_id}{'@' + revision if revision else ''}"
    local_missing = getattr(errors, "LocalEntryNotFoundError", ())
    offline_mode = getattr(errors, "OfflineModeIsEnabled", ())
    if isinstance(exc, (local_missing, offline_mode)):
        return _Offline(str(exc))
    if isinstance(exc, getattr(errors, "RevisionNotFoundError", ())):
        return CheckpointError(f"the hub repository {repo_id} has no revision {revision!r}; pass another revision")
    if isinstance(exc, getattr(errors, "GatedRepoError", ())):
        return CheckpointError(f"the hub repository {repo_id} is gated: accept its terms on the hub and log in "
                               "(huggingface-cli login), or download the files by hand")
    if isinstance(exc, getattr(errors, "RepositoryNotFoundError", ())):
        return CheckpointError(f"the hub has no repository {repo_id} (or it is private). The repository ids in "
                               "tortoise_clvp/weights/download.py are unverified; download the files by hand")
    if isinstance(exc, getattr(errors, "EntryNotFoundError", ())):
        return _NotOnHub(f"{at} has no file {filename}")
    if isinstance(exc, getattr(errors, "HfHubHTTPError", ())):
        return CheckpointError(f"the hub refused {filename} from {at} ({describe(exc)})")
    if _is_network_error(exc):
        return _Offline(describe(exc))
    if isinstance(exc, OSError):  # e.g. huggingface_hub's size consistency check, a full disk
        return CheckpointError(f"downloading {filename} from {at} failed ({describe(exc)}); "
                               "check the free space and run the download again")
    return exc


def _silent_bar_class(report: Callable[[int, int | None], None]) -> type:
    """A tqdm class that never draws (the library never prints) and forwards byte counts to `report`."""
    from tqdm import tqdm

    class _ForwardingBar(tqdm):  # type: ignore[misc,valid-type]
        def __init__(self, *args: Any, **kwargs: Any) -> None:
            kwargs.pop("name", None)
            kwargs["disable"] = True
            super().__init__(*args, **kwargs)
            self._done = int(kwargs.get("initial") or 0)
            self._total = kwargs.get("total")

        def update(self, n: float | None = 1) -> bool | None:
            self._done += int(n or 0)
            report(self._done, self._total)
            return super().update(n)

    return _ForwardingBar


@dataclass
class _Session:
    """State of one fetch: the hub module, whether it is reachable, the staging folder."""

    hub: Any
    destination: Path
    revision: str | None
    timeout: float
    staging: Path | None = None
    reachable: bool | None = None

    def metadata(self, spec: RemoteFile, filename: str) -> Any:
        """The hub's metadata of one file (one quick HEAD, no retries)."""
        if self.reachable is False:
            raise _Offline("the hub was unreachable earlier in this run")
        if getattr(self.hub.constants, "HF_HUB_OFFLINE", False):
            self.reachable = False
            raise _Offline("HF_HUB_OFFLINE is set")
        url = self.hub.hf_hub_url(spec.repo_id, filename, revision=self.revision)
        try:
            meta = self.hub.get_hf_file_metadata(url, timeout=self.timeout)
        except Exception as exc:  # noqa: BLE001 - classified below, unknown ones re-raised
            error = _classify(exc, self.hub, spec.repo_id, filename, self.revision)
            if isinstance(error, _Offline):
                self.reachable = False
            raise error from None
        self.reachable = True
        return meta

    def download(self, spec: RemoteFile, filename: str, report: Callable[[int, int | None], None]) -> Path:
        """Fetch one file into the staging folder; returns its path there (a plain file, never a link)."""
        if self.staging is None:
            self.staging = Path(tempfile.mkdtemp(prefix=".clvp-download-", dir=self.destination))
        kwargs: dict[str, Any] = {"revision": self.revision, "local_dir": str(self.staging), "etag_timeout": self.timeout}
        try:
            parameters = inspect.signature(self.hub.hf_hub_download).parameters
        except (TypeError, ValueError):
            parameters = {}
        if "tqdm_class" in parameters or any(p.kind is p.VAR_KEYWORD for p in parameters.values()):
            kwargs["tqdm_class"] = _silent_bar_class(report)
        try:
            fetched = Path(self.hub.hf_hub_download(spec.repo_id, filename, **kwargs))
        except Exception as exc:  # noqa: BLE001
            error = _classify(exc, self.hub, spec.repo_id, filename, self.revision)
            if isinstance(error, _Offline):
                self.reachable = False
            if isinstance(error, _NotOnHub):  # listed a moment ago, gone now
                error = CheckpointError(f"{error} any more; run the download again")
            raise error from None
        if fetched.is_symlink() or fetched.parent.resolve() != self.staging.resolve():
            # older huggingface_hub may link into its cache: take a plain copy inside the staging folder
            copy = self.staging / f".{filename}.copy"
            shutil.copyfile(fetched, copy)
            fetched = copy
        return fetched

    def close(self) -> None:
        if self.staging is not None:
            shutil.rmtree(self.staging, ignore_errors=True)
            self.staging = None


def _expectations(spec: RemoteFile, meta: Any | None) -> list[_Expected]:
    wants = []
    if spec.size is not None or spec.sha256 is not None:
        wants.append(_Expected(spec.size, spec.sha256.lower() if spec.sha256 else None, "pinned"))
    if meta is not None:
        etag = (getattr(meta, "etag", None) or "").lower()
        size = getattr(meta, "size", None)
        wants.append(_Expected(size if isinstance(size, int) else None, etag if _SHA256.match(etag) else None, "hub"))
    return wants


def _offline_error(destination: Path, layout: str, detail: str, done: Sequence[FileOutcome]) -> CheckpointError:
    kept = [f.filename for f in done if f.status in ("downloaded", "present")]
    return CheckpointError(
        f"cannot reach the Hugging Face hub ({detail}). "
        + (f"Kept in {destination}: {', '.join(kept)}. " if kept else "")
        + manual_placement_hint(destination, layout)
    )


def fetch_models(
    destination: Path | str,
    layout: str = "tortoise",
    *,
    revision: str | None = None,
    progress: ProgressCallback | None = None,
    timeout: float = 10.0,
    files: Sequence[RemoteFile] | None = None,
) -> DownloadResult:
    """Download the release's files (`RELEASE_FILES[layout]`, or `files`) into the plain folder `destination`.

    Each file goes to a staging folder inside `destination` (``hf_hub_download(local_dir=...)``), is verified
    (pinned size/sha256 where known, the hub's reported size and LFS sha256, the file format), then moved into place
    with ``os.replace``. A file already in `destination` that passes the same checks is skipped (with the hub
    unreachable, a present file is checked by format only; the result says so). Optional files the repository lacks
    are reported in the result, with where to get them. `timeout` bounds each hub request (seconds).

    Raises `CheckpointError` when the hub cannot be reached (one message: where to put the files by hand), when a
    download fails verification (the bad file is removed), or when the repository/revision is wrong. On any failure
    or Ctrl-C, completed verified files stay and nothing half-written is left.
    """
    if layout not in RELEASE_FILES and files is None:
        raise CheckpointError(f"unknown layout {layout!r}: choose one of {', '.join(LAYOUTS)}")
    specs = list(files if files is not None else RELEASE_FILES[layout])
    destination = Path(destination).expanduser()
    if destination.exists() and not destination.is_dir():
        raise CheckpointError(f"{destination} exists and is not a folder; choose another destination")
    hub = _import_hub()
    created = not destination.exists()
    try:
        destination.mkdir(parents=True, exist_ok=True)
    except OSError as exc:
        raise CheckpointError(f"cannot create {destination} ({exc}); choose a writable folder") from None

    result = DownloadResult(destination, layout, revision)
    session = _Session(hub, destination, revision, timeout)
    queue = list(specs)
    index = 0

    def tell(filename: str, stage: str, done: int = 0, total: int | None = None) -> None:
        if progress is not None:
            progress(DownloadProgress(filename, index, max(len(queue), index), stage, done, total))

    try:
        while index < len(queue):
            spec = queue[index]
            index += 1
            outcome = _fetch_one(session, spec, tell, result)
            result.files.append(outcome)
            if outcome.status != "unavailable" and outcome.filename == hf_clvp.SAFETENSORS_INDEX:
                queue.extend(_shards(destination / outcome.filename, spec, {s.filename for s in queue}))
    except _Offline as exc:
        raise _offline_error(destination, layout, str(exc), result.files) from None
    finally:
        session.close()
        if created and not any(destination.iterdir()):
            destination.rmdir()

    unavailable = result.missing
    if unavailable:
        data = [name for name in unavailable if name in (TOKENIZER_FILENAME, MEL_NORMS_FILE)]
        if data:
            result.notes.append(
                f"{' and '.join(data)} {'are' if len(data) > 1 else 'is'} not in {TORTOISE_REPO_ID}: copy "
                f"{'them' if len(data) > 1 else 'it'} from the Tortoise repository's tortoise/data/ "
                f"({TORTOISE_DATA_URL}) into {destination}."
            )
        other = [name for name in unavailable if name not in data]
        if other:
            result.notes.append(f"not on the hub: {', '.join(other)}.")
    if not any(spec.size or spec.sha256 for spec in specs):
        result.notes.append(
            "no sizes or hashes are pinned in this package (the release was never listed from here); files were "
            "checked against the sizes and sha256 the hub reports, and their format."
        )
    return result


def _shards(index_file: Path, spec: RemoteFile, known: set[str]) -> list[RemoteFile]:
    try:
        weight_map = json.loads(index_file.read_text(encoding="utf-8")).get("weight_map", {})
    except (OSError, ValueError, AttributeError) as exc:
        raise CheckpointError(f"cannot read {index_file} ({exc}); delete it and download again") from None
    shards = sorted(set(weight_map.values()) - known)
    return [RemoteFile(spec.repo_id, shard, f"{spec.role}, shard") for shard in shards]


def _fetch_one(session: _Session, spec: RemoteFile, tell: Callable[..., None], result: DownloadResult) -> FileOutcome:
    names = (spec.filename, *spec.fallbacks)
    for position, filename in enumerate(names):
        last = position == len(names) - 1
        current = replace(spec, filename=filename) if position else spec
        if position:  # a fallback file carries no pinned values of its own
            current = replace(current, size=None, sha256=None)
        target = session.destination / filename
        tell(filename, "checking")
        meta = None
        if target.is_file():
            pinned = _expectations(current, None)
            sha = None
            if not pinned:
                try:
                    meta = session.metadata(current, filename)
                except _Offline:
                    passed, failed, _ = _verify(target, [])
                    if not failed:
                        tell(filename, "skipped")
                        return FileOutcome(filename, current.repo_id, "present", target.stat().st_size, None,
                                           tuple(passed), "hub unreachable: size and hash not compared")
                    raise
                except _NotOnHub:
                    meta = None  # kept as the user placed it; nothing to compare with
            passed, failed, sha = _verify(target, _expectations(current, meta), sha)
            if not failed:
                tell(filename, "skipped")
                return FileOutcome(filename, current.repo_id, "present", target.stat().st_size, sha, tuple(passed))
        try:
            if meta is None:
                meta = session.metadata(current, filename)
        except _NotOnHub:
            if target.is_file():  # present, not on the hub, and it failed the format check above: keep it, say so
                return FileOutcome(filename, current.repo_id, "present", target.stat().st_size, None, (),
                                   f"not in {current.repo_id}; left as it was, and it fails its format check")
            if not last:
                continue
            if spec.required:
                raise CheckpointError(
                    f"{current.repo_id} has no {' or '.join(names)} (the file list in tortoise_clvp/weights/download.py "
                    f"is unverified). {manual_placement_hint(session.destination, result.layout)}"
                ) from None
            tell(filename, "unavailable")
            return FileOutcome(spec.filename, spec.repo_id, "unavailable", note=f"not in {spec.repo_id}")
        expected_size = getattr(meta, "size", None)
        tell(filename, "downloading", 0, expected_size)
        staged = session.download(current, filename, lambda done, total: tell(filename, "downloading", done, total))
        tell(filename, "verifying")
        passed, failed, sha = _verify(staged, _expectations(current, meta))
        if failed:
            staged.unlink(missing_ok=True)
            raise CheckpointError(
                f"the download of {filename} from {current.repo_id} failed verification ({'; '.join(failed)}); it was "
                f"removed. Run the download again. {manual_placement_hint(session.destination, result.layout)}"
            )
        size = staged.stat().st_size
        sha = sha or sha256_of(staged)
        os.replace(staged, target)
        tell(filename, "done", size, size)
        return FileOutcome(filename, current.repo_id, "downloaded", size, sha, tuple(passed))
    raise AssertionError("unreachable")  # pragma: no cover


def download_models(
    destination: Path | str,
    layout: str = "tortoise",
    *,
    revision: str | None = None,
    progress: ProgressCallback | None = None,
    timeout: float = 10.0,
) -> Path:
    """`fetch_models` for callers that only need the folder; see it for the checks and errors. Optional files the
    repository lacks (tokenizer.json / mel_norms.pth) are not an error here: `load_models` names them if missing;
    use `fetch_models` to see what was verified and what is missing."""
    return fetch_models(destination, layout, revision=revision, progress=progress, timeout=timeout).destination


__all__ = [
    "DownloadProgress",
    "DownloadResult",
    "FileOutcome",
    "HF_CLVP_REPO_ID",
    "RELEASE_FILES",
    "RemoteFile",
    "TORTOISE_REPO_ID",
    "check_format",
    "default_cache_dirs",
    "default_download_dir",
    "download_models",
    "fetch_models",
    "manual_placement_hint",
    "resolve_models_dir",
]
