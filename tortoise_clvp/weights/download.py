"""Fetching the released model files from the Hugging Face hub into a plain folder (`clvp-tts download`).

One listing of each repository picks the files to fetch (the first of a file's alternatives the repository holds;
the shards of a sharded checkpoint); ``huggingface_hub.hf_hub_download(local_dir=...)`` then fetches each one. It
writes every file to an ``.incomplete`` file under the folder's ``.cache/huggingface/`` and moves it into place when
complete, so a failure or Ctrl-C never leaves a half-written file under its real name, and it skips files already
fetched. With ``HF_HUB_OFFLINE`` set or the hub unreachable it fails at once with one message saying where to put
the files by hand (one quick request without retries decides; huggingface_hub's own requests retry for half a
minute). Nothing is pinned here: the hub's own size checks are the only ones (`load_models` then checks
every key and shape).

UNVERIFIED HERE: the repository ids and file names come from the original Tortoise code
(``hf_hub_download(repo_id="Manmay/tortoise-tts", filename=...)``) and transformers' CLVP documentation; this
project was built without network access, so no repository was ever listed from here.
"""

from __future__ import annotations

import os
import re
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Iterator

from ..errors import CheckpointError, describe
from ..frontend.text import TOKENIZER_FILENAME
from . import hf_clvp
from .model_dir import MEL_NORMS_FILE, ORIGINAL_FORMATS

TORTOISE_REPO_ID = "Manmay/tortoise-tts"  # what the original Tortoise's api.py downloads from
HF_CLVP_REPO_ID = "susnato/clvp_dev"  # the ClvpModelForConditionalGeneration checkpoint transformers' docs use
TORTOISE_DATA_URL = "https://github.com/neonbjb/tortoise-tts/tree/main/tortoise/data"
_SHARD = re.compile(r"model-\d+-of-\d+\.safetensors")  # the files a sharded index points at
PROBE_TIMEOUT_S = 10.0  # how long the one request that checks the hub is reachable may take
_HTTP_CLIENTS = ("httpx", "httpcore", "requests", "urllib3")  # whose errors (module name prefixes) mean no network


@dataclass(frozen=True)
class RemoteFile:
    """One file of a release: its repository, its name or alternatives in order of preference (the first the
    repository holds is fetched), and whether a release without it is an error or only a note."""

    repo_id: str
    names: tuple[str, ...]
    required: bool = True


_DATA_FILES = (  # the original ships these in tortoise/data/, not on the hub: missing there is only a note
    RemoteFile(TORTOISE_REPO_ID, (TOKENIZER_FILENAME,), required=False),
    RemoteFile(TORTOISE_REPO_ID, (MEL_NORMS_FILE,), required=False),
)
_WAVEFORM_FILES = tuple(RemoteFile(TORTOISE_REPO_ID, (ORIGINAL_FORMATS[p].filename,)) for p in ("diffusion", "vocoder"))
RELEASE_FILES: dict[str, tuple[RemoteFile, ...]] = {
    "tortoise": (
        *(RemoteFile(TORTOISE_REPO_ID, (ORIGINAL_FORMATS[p].filename,)) for p in ("autoregressive", "clvp")),
        *_WAVEFORM_FILES,
        *_DATA_FILES,
    ),
    "huggingface": (
        RemoteFile(HF_CLVP_REPO_ID, (hf_clvp.CONFIG_FILE,)),
        RemoteFile(HF_CLVP_REPO_ID, (hf_clvp.SAFETENSORS_FILE, hf_clvp.SAFETENSORS_INDEX, hf_clvp.TORCH_FILE)),
        *_WAVEFORM_FILES,  # the CLVP repository has no diffusion decoder or vocoder: they come from Tortoise's
        *_DATA_FILES,
    ),
}


@dataclass
class DownloadResult:
    """Where the files are, which ones were fetched (or found already fetched), the optional ones the repositories
    lack, and notes saying where to get those."""

    destination: Path
    layout: str
    files: list[str] = field(default_factory=list)
    missing: list[str] = field(default_factory=list)
    notes: list[str] = field(default_factory=list)


def default_download_dir() -> Path:
    """Where ``clvp-tts download`` puts the weights when no folder is named: ``$XDG_CACHE_HOME/tortoise_clvp/models``
    (``~/.cache/tortoise_clvp/models``). Model discovery looks there too."""
    cache = os.environ.get("XDG_CACHE_HOME") or os.path.join(os.path.expanduser("~"), ".cache")
    return Path(cache) / "tortoise_clvp" / "models"


def manual_placement_hint(destination: Path | str, layout: str = "tortoise") -> str:
    """How to provide the files without this downloader."""
    data = {TOKENIZER_FILENAME, MEL_NORMS_FILE}
    hub = [spec for spec in RELEASE_FILES[layout] if spec.names[0] not in data]
    repos = sorted({spec.repo_id for spec in hub})
    return (
        f"To set up by hand, put {', '.join(spec.names[0] for spec in hub)} (from the Hugging Face "
        f"repositor{'ies' if len(repos) > 1 else 'y'} {' and '.join(repos)}) and {TOKENIZER_FILENAME} and "
        f"{MEL_NORMS_FILE} (from the Tortoise repository's tortoise/data/, {TORTOISE_DATA_URL}) into {destination}."
    )


def fetch_models(
    destination: Path | str | None = None,
    layout: str = "tortoise",
    *,
    revision: str | None = None,
    show_progress: bool = False,
) -> DownloadResult:
    """Download the release's files (`RELEASE_FILES[layout]`) into the plain folder `destination` (default
    `default_download_dir()`), atomically per file (see the module docstring). With `show_progress`,
    huggingface_hub draws its own byte progress bars on stderr; otherwise nothing is drawn.

    Raises `CheckpointError` with one message when the hub cannot be reached (where to put the files by hand), when
    a repository or revision does not exist, or when a repository lacks a required file. Files fetched before a
    failure stay in place.
    """
    if layout not in RELEASE_FILES:
        raise CheckpointError(f"unknown layout {layout!r}: choose one of {', '.join(RELEASE_FILES)}")
    destination = Path(destination).expanduser() if destination is not None else default_download_dir()
    if destination.exists() and not destination.is_dir():
        raise CheckpointError(f"{destination} exists and is not a folder; choose another destination")
    hub = _import_hub()
    result = DownloadResult(destination, layout)
    if hub.constants.HF_HUB_OFFLINE:
        raise _offline_error(result, "HF_HUB_OFFLINE is set")
    try:  # any answer will do: only a request that gets none means there is no network
        hub.utils.get_session().head(hub.constants.ENDPOINT, timeout=PROBE_TIMEOUT_S)
    except Exception as exc:  # noqa: BLE001 - classified below
        raise _classify(exc, hub, TORTOISE_REPO_ID, revision, result) from None
    chosen: list[tuple[str, str]] = []  # (repository, file)
    listings: dict[str, set[str]] = {}
    for spec in RELEASE_FILES[layout]:
        if spec.repo_id not in listings:
            listings[spec.repo_id] = _list_files(hub, spec.repo_id, revision, result)
        listing = listings[spec.repo_id]
        name = next((name for name in spec.names if name in listing), None)
        if name is None and spec.required:
            raise CheckpointError(
                f"{spec.repo_id} has no {' or '.join(spec.names)} (the file list in tortoise_clvp/weights/download.py "
                f"is unverified). {manual_placement_hint(destination, layout)}"
            )
        if name is None:
            result.missing.append(spec.names[0])
            continue
        chosen.append((spec.repo_id, name))
        if name == hf_clvp.SAFETENSORS_INDEX:
            chosen += [(spec.repo_id, shard) for shard in sorted(listing) if _SHARD.fullmatch(shard)]
    with _progress_bars(hub, show_progress):
        for repo_id, name in chosen:
            try:
                hub.hf_hub_download(repo_id, name, revision=revision, local_dir=destination)
            except Exception as exc:  # noqa: BLE001 - classified into one clear message; unknown ones re-raised
                raise _classify(exc, hub, repo_id, revision, result, name) from None
            result.files.append(name)
    if result.missing:
        names = " and ".join(result.missing)
        result.notes.append(
            f"{names} {'are' if len(result.missing) > 1 else 'is'} not in {TORTOISE_REPO_ID}: copy "
            f"{'them' if len(result.missing) > 1 else 'it'} from the Tortoise repository's tortoise/data/ "
            f"({TORTOISE_DATA_URL}) into {destination}."
        )
    return result


def _import_hub() -> Any:
    try:
        import huggingface_hub
        import huggingface_hub.constants
        import huggingface_hub.errors
        import huggingface_hub.utils
    except ImportError:
        raise CheckpointError(
            "downloading needs the huggingface_hub package: pip install huggingface_hub (or put the files in a "
            "folder by hand and pass --models-dir)"
        ) from None
    return huggingface_hub


def _list_files(hub: Any, repo_id: str, revision: str | None, result: DownloadResult) -> set[str]:
    """The file names of one repository (the first request of a run: where a dead network shows)."""
    try:
        return set(hub.list_repo_files(repo_id, revision=revision))
    except Exception as exc:  # noqa: BLE001 - classified below
        raise _classify(exc, hub, repo_id, revision, result) from None


@contextmanager
def _progress_bars(hub: Any, show: bool) -> Iterator[None]:
    """huggingface_hub's bars as asked: left as they are when shown, switched off (and back on) otherwise."""
    if show or hub.utils.are_progress_bars_disabled():
        yield
        return
    hub.utils.disable_progress_bars()
    try:
        yield
    finally:
        hub.utils.enable_progress_bars()


def _offline_error(result: DownloadResult, detail: str) -> CheckpointError:
    kept = f"Kept in {result.destination}: {', '.join(result.files)}. " if result.files else ""
    hint = manual_placement_hint(result.destination, result.layout)
    return CheckpointError(f"cannot reach the Hugging Face hub ({detail}). {kept}{hint}")


def _is_network_error(exc: BaseException, hub: Any) -> bool:
    """No network: connection refused or reset, DNS or timeout (builtins, requests/httpx), or hub offline mode."""
    offline = tuple(getattr(hub.errors, name) for name in ("OfflineModeIsEnabled", "LocalEntryNotFoundError")
                    if hasattr(hub.errors, name))
    module = type(exc).__module__
    return isinstance(exc, (ConnectionError, TimeoutError, *offline)) or module.startswith(_HTTP_CLIENTS)


def _classify(
    exc: BaseException, hub: Any, repo_id: str, revision: str | None, result: DownloadResult, name: str | None = None
) -> BaseException:
    """One `CheckpointError` that says what went wrong and what to do; unknown errors are returned as they are."""
    errors = hub.errors
    what = f"{name} from {repo_id}" if name else f"the file list of {repo_id}"
    if isinstance(exc, errors.RevisionNotFoundError):
        return CheckpointError(f"the hub repository {repo_id} has no revision {revision!r}; pass another revision")
    if isinstance(exc, errors.GatedRepoError):
        return CheckpointError(f"the hub repository {repo_id} is gated: accept its terms on the hub and log in "
                               "(huggingface-cli login), or download the files by hand")
    if isinstance(exc, errors.RepositoryNotFoundError):
        return CheckpointError(f"the hub has no repository {repo_id} (or it is private). The repository ids in "
                               "tortoise_clvp/weights/download.py are unverified; download the files by hand")
    if isinstance(exc, errors.HfHubHTTPError):
        return CheckpointError(f"the hub refused {what} ({describe(exc)})")
    if _is_network_error(exc, hub):
        return _offline_error(result, describe(exc))
    if isinstance(exc, OSError):  # a full disk, an unwritable folder, huggingface_hub's size check
        return CheckpointError(f"fetching {what} failed ({describe(exc)}); check the folder and its free space, "
                               "then run the download again")
    return exc


__all__ = [
    "DownloadResult",
    "HF_CLVP_REPO_ID",
    "RELEASE_FILES",
    "RemoteFile",
    "TORTOISE_DATA_URL",
    "TORTOISE_REPO_ID",
    "default_download_dir",
    "fetch_models",
    "manual_placement_hint",
]
