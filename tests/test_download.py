"""Downloading and finding the weights, with the hub faked: nothing here touches the network.

`huggingface_hub.get_hf_file_metadata` / `hf_hub_url` / `hf_hub_download` are replaced by a fake that serves the
tiny fixture files (or fails the way a dead network, a missing file or a bad transfer does).
"""

from __future__ import annotations

import hashlib
import shutil
import sys
import time
from pathlib import Path
from types import SimpleNamespace

import pytest
import torch

huggingface_hub = pytest.importorskip("huggingface_hub")
import huggingface_hub.constants  # noqa: E402
import huggingface_hub.errors  # noqa: E402

from tortoise_clvp.errors import CheckpointError  # noqa: E402
from tortoise_clvp.weights import download  # noqa: E402
from tortoise_clvp.weights.download import (  # noqa: E402
    RELEASE_FILES,
    TORTOISE_REPO_ID,
    RemoteFile,
    download_models,
    fetch_models,
    resolve_models_dir,
)

TORTOISE_NAMES = [f.filename for f in RELEASE_FILES["tortoise"]]


def _sha256(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


class FakeHub:
    """Serves files from folders per repository; records every call."""

    def __init__(self, sources: dict[str, Path]):
        self.sources = sources  # repo id -> folder holding its files
        self.missing: set[str] = set()
        self.metadata_error: BaseException | None = None
        self.size_offset: dict[str, int] = {}  # filename -> added to the reported size
        self.truncate: set[str] = set()  # files delivered cut in half
        self.interrupt_on: str | None = None  # file whose transfer is interrupted (Ctrl-C) half-way
        self.metadata_calls: list[str] = []
        self.download_calls: list[str] = []

    def _source(self, repo_id: str, filename: str) -> Path:
        return self.sources[repo_id] / filename

    def hf_hub_url(self, repo_id, filename, *, revision=None, **_):
        return f"{repo_id}::{filename}::{revision}"

    def get_hf_file_metadata(self, url, timeout=None, **_):
        repo_id, filename, _revision = url.split("::")
        self.metadata_calls.append(filename)
        if self.metadata_error is not None:
            raise self.metadata_error
        source = self._source(repo_id, filename)
        if filename in self.missing or not source.is_file():
            raise huggingface_hub.errors.EntryNotFoundError(f"404: {filename}")
        return SimpleNamespace(size=source.stat().st_size + self.size_offset.get(filename, 0), etag=_sha256(source),
                               commit_hash="0" * 40, location=url)

    def hf_hub_download(self, repo_id, filename, *, revision=None, local_dir=None, etag_timeout=None, tqdm_class=None, **_):
        self.download_calls.append(filename)
        data = self._source(repo_id, filename).read_bytes()
        target = Path(local_dir) / filename
        partial = Path(local_dir) / ".cache" / f"{filename}.incomplete"
        partial.parent.mkdir(parents=True, exist_ok=True)
        bar = tqdm_class(total=len(data)) if tqdm_class else None
        half = len(data) // 2
        partial.write_bytes(data[:half])
        if bar:
            bar.update(half)
        if filename == self.interrupt_on:
            raise KeyboardInterrupt
        if filename in self.truncate:
            data = data[:half]
        partial.write_bytes(data)
        if bar:
            bar.update(len(data) - half)
            bar.close()
        partial.replace(target)
        return str(target)


@pytest.fixture
def fake_hub(monkeypatch, tiny_model_dir):
    hub = FakeHub({TORTOISE_REPO_ID: tiny_model_dir})
    for name in ("hf_hub_url", "get_hf_file_metadata", "hf_hub_download"):
        monkeypatch.setattr(huggingface_hub, name, getattr(hub, name))
    monkeypatch.setattr(huggingface_hub.constants, "HF_HUB_OFFLINE", False)
    return hub


def _leftovers(folder: Path) -> list[str]:
    return sorted(p.name for p in folder.iterdir() if p.name.startswith(".") or p.name.endswith(".incomplete"))


def test_files_land_in_the_destination_verified(fake_hub, tiny_model_dir, tmp_path, capsys):
    destination = tmp_path / "models"
    events = []
    result = fetch_models(destination, progress=events.append)
    assert sorted(p.name for p in destination.iterdir()) == sorted(TORTOISE_NAMES)
    for name in TORTOISE_NAMES:
        assert (destination / name).read_bytes() == (tiny_model_dir / name).read_bytes()
        assert not (destination / name).is_symlink()
    assert [f.status for f in result.files] == ["downloaded"] * len(TORTOISE_NAMES)
    for outcome in result.files:
        assert {"size (hub)", "sha256 (hub)", "format"} <= set(outcome.verified_by)
        assert outcome.sha256 == _sha256(tiny_model_dir / outcome.filename)
    assert result.complete and result.missing == []
    assert any("no sizes or hashes are pinned" in note for note in result.notes)
    finished = [e for e in events if e.stage == "downloading" and e.total_bytes and e.done_bytes == e.total_bytes]
    assert {e.filename for e in finished} == set(TORTOISE_NAMES), "byte progress is forwarded from the hub's bars"
    assert capsys.readouterr() == ("", ""), "the library never prints"
    assert _leftovers(destination) == []


def test_present_verified_files_are_skipped_and_a_changed_one_replaced(fake_hub, tiny_model_dir, tmp_path):
    destination = tmp_path / "models"
    assert download_models(destination) == destination
    fake_hub.download_calls.clear()
    result = fetch_models(destination)
    assert fake_hub.download_calls == []
    assert [f.status for f in result.files] == ["present"] * len(TORTOISE_NAMES)
    assert all("sha256 (hub)" in f.verified_by for f in result.files)

    damaged = bytearray((destination / "clvp2.pth").read_bytes())
    damaged[100] ^= 0xFF  # same size, other bytes: only the hash can tell
    (destination / "clvp2.pth").write_bytes(bytes(damaged))
    result = fetch_models(destination)
    assert fake_hub.download_calls == ["clvp2.pth"]
    assert (destination / "clvp2.pth").read_bytes() == (tiny_model_dir / "clvp2.pth").read_bytes()
    assert {f.filename: f.status for f in result.files}["clvp2.pth"] == "downloaded"


def test_present_files_with_the_hub_unreachable_are_kept_on_a_format_check(fake_hub, tmp_path):
    destination = tmp_path / "models"
    download_models(destination)
    fake_hub.metadata_error = ConnectionError("no network")
    result = fetch_models(destination)
    assert [f.status for f in result.files] == ["present"] * len(TORTOISE_NAMES)
    assert all(f.verified_by == ("format",) and "hub unreachable" in f.note for f in result.files)
    assert len(fake_hub.metadata_calls) == len(TORTOISE_NAMES) + 1, "one failed probe, then no more tries"


@pytest.mark.parametrize("how", ["reported size", "pinned size", "truncated transfer"])
def test_a_bad_download_is_rejected_and_removed(fake_hub, tmp_path, how):
    destination = tmp_path / "models"
    files = None
    if how == "reported size":
        fake_hub.size_offset["clvp2.pth"] = 1
    elif how == "pinned size":
        files = [RemoteFile(TORTOISE_REPO_ID, "autoregressive.pth", "decoder"),
                 RemoteFile(TORTOISE_REPO_ID, "clvp2.pth", "scorer", size=12345)]
    else:
        fake_hub.truncate.add("clvp2.pth")
    with pytest.raises(CheckpointError, match="clvp2.pth .*failed verification") as caught:
        fetch_models(destination, files=files)
    assert "removed" in str(caught.value)
    assert not (destination / "clvp2.pth").exists()
    assert (destination / "autoregressive.pth").is_file(), "files verified before the failure are kept"
    assert _leftovers(destination) == []


class _FakeHttpxError(Exception):
    pass


_FakeHttpxError.__module__ = "httpx"


@pytest.mark.parametrize(
    "error",
    [
        ConnectionError("[Errno 111] Connection refused"),
        TimeoutError("timed out"),
        _FakeHttpxError("[Errno -3] Temporary failure in name resolution"),
        huggingface_hub.errors.LocalEntryNotFoundError("cannot find the requested files in the local cache"),
        huggingface_hub.errors.OfflineModeIsEnabled("offline"),
    ],
    ids=["refused", "timeout", "httpx", "local-entry", "offline-mode"],
)
def test_no_network_fails_fast_with_one_clear_message(fake_hub, tmp_path, error):
    fake_hub.metadata_error = error
    destination = tmp_path / "models"
    start = time.monotonic()
    with pytest.raises(CheckpointError) as caught:
        download_models(destination)
    assert time.monotonic() - start < 5
    message = str(caught.value)
    assert "cannot reach the Hugging Face hub" in message
    assert str(destination) in message
    for name in TORTOISE_NAMES:
        assert name in message
    assert "tortoise/data" in message
    assert fake_hub.metadata_calls == ["autoregressive.pth"], "gives up after the first failed request"
    assert fake_hub.download_calls == []
    assert not destination.exists(), "a folder it created and left empty is removed"


def test_hf_hub_offline_fails_without_a_request(fake_hub, tmp_path, monkeypatch):
    monkeypatch.setattr(huggingface_hub.constants, "HF_HUB_OFFLINE", True)
    (tmp_path / "models").mkdir()
    with pytest.raises(CheckpointError, match="HF_HUB_OFFLINE"):
        download_models(tmp_path / "models")
    assert fake_hub.metadata_calls == [] and fake_hub.download_calls == []
    assert (tmp_path / "models").is_dir(), "an existing folder is left alone"


def test_an_interruption_leaves_no_temporary_files(fake_hub, tmp_path):
    destination = tmp_path / "models"
    fake_hub.interrupt_on = "diffusion_decoder.pth"
    with pytest.raises(KeyboardInterrupt):
        download_models(destination)
    assert sorted(p.name for p in destination.iterdir()) == ["autoregressive.pth", "clvp2.pth"]
    assert _leftovers(destination) == []


def test_optional_data_files_missing_from_the_repo_are_reported(fake_hub, tmp_path):
    fake_hub.missing |= {"tokenizer.json", "mel_norms.pth"}
    result = fetch_models(tmp_path / "models")
    assert result.missing == ["tokenizer.json", "mel_norms.pth"] and not result.complete
    assert any("tortoise/data" in note and "tokenizer.json and mel_norms.pth" in note for note in result.notes)
    assert sorted(p.name for p in (tmp_path / "models").iterdir()) == sorted(
        ["autoregressive.pth", "clvp2.pth", "diffusion_decoder.pth", "vocoder.pth"]
    )


def test_a_required_file_missing_from_the_repo_is_an_error(fake_hub, tmp_path):
    fake_hub.missing.add("vocoder.pth")
    with pytest.raises(CheckpointError, match=f"{TORTOISE_REPO_ID} has no vocoder.pth.*unverified"):
        download_models(tmp_path / "models")


def test_huggingface_layout_falls_back_to_another_weights_file(fake_hub, tmp_path, tiny_model_dir):
    clvp_repo = tmp_path / "clvp_repo"
    clvp_repo.mkdir()
    (clvp_repo / "config.json").write_text('{"model_type": "clvp"}')
    torch.save({"logit_scale": torch.ones(())}, clvp_repo / "pytorch_model.bin")
    fake_hub.sources[download.HF_CLVP_REPO_ID] = clvp_repo
    result = fetch_models(tmp_path / "hf", "huggingface")
    names = [f.filename for f in result.files]
    assert names[:2] == ["config.json", "pytorch_model.bin"]
    assert "model.safetensors" in fake_hub.metadata_calls and "model.safetensors" not in fake_hub.download_calls
    assert (tmp_path / "hf" / "pytorch_model.bin").is_file() and (tmp_path / "hf" / "vocoder.pth").is_file()


def test_missing_huggingface_hub_names_the_install(monkeypatch, tmp_path):
    monkeypatch.setitem(sys.modules, "huggingface_hub", None)
    with pytest.raises(CheckpointError, match="pip install huggingface_hub"):
        download_models(tmp_path / "models")
    assert not (tmp_path / "models").exists()


def test_unknown_layout_is_refused(tmp_path):
    with pytest.raises(CheckpointError, match="unknown layout"):
        download_models(tmp_path / "models", "onnx")


# ---------------------------------------------------------------------------------------------------------------
# resolve_models_dir
# ---------------------------------------------------------------------------------------------------------------


def _fake_hub_cache(root: Path, names: list[str], commit: str = "a" * 40) -> Path:
    """A Hugging Face cache holding a snapshot of the Tortoise release (filesystem layout only)."""
    repo = root / ("models--" + TORTOISE_REPO_ID.replace("/", "--"))
    (repo / "refs").mkdir(parents=True)
    (repo / "refs" / "main").write_text(commit)
    snapshot = repo / "snapshots" / commit
    snapshot.mkdir(parents=True)
    for name in names:
        (snapshot / name).write_bytes(b"x")
    return snapshot


@pytest.fixture
def no_env(monkeypatch):
    monkeypatch.delenv(download.MODELS_ENV, raising=False)


def test_resolve_order_flag_env_cache_error(tmp_path, monkeypatch, no_env):
    snapshot = _fake_hub_cache(tmp_path / "cache", ["autoregressive.pth", "clvp2.pth", "tokenizer.json", "mel_norms.pth"])
    kwargs = dict(cache_dirs=[tmp_path / "empty_cache", tmp_path / "cache"], default_dir=tmp_path / "nowhere")
    assert resolve_models_dir(None, **kwargs) == snapshot
    monkeypatch.setenv(download.MODELS_ENV, str(tmp_path / "from_env"))
    assert resolve_models_dir(None, **kwargs) == tmp_path / "from_env"
    assert resolve_models_dir(tmp_path / "flag", **kwargs) == tmp_path / "flag"
    monkeypatch.delenv(download.MODELS_ENV)
    with pytest.raises(CheckpointError) as caught:
        resolve_models_dir(None, cache_dirs=[tmp_path / "empty_cache"], default_dir=tmp_path / "nowhere")
    message = str(caught.value)
    for needle in ("--models-dir", download.MODELS_ENV, "clvp-tts download", "autoregressive.pth", "clvp2.pth",
                   "tokenizer.json", "mel_norms.pth", str(tmp_path / "empty_cache")):
        assert needle in message


def test_resolve_prefers_the_default_download_folder_to_a_cache(tmp_path, tiny_model_dir, no_env):
    _fake_hub_cache(tmp_path / "cache", ["autoregressive.pth", "clvp2.pth", "tokenizer.json", "mel_norms.pth"])
    assert resolve_models_dir(None, cache_dirs=[tmp_path / "cache"], default_dir=tiny_model_dir) == tiny_model_dir


def test_resolve_default_download_dir_follows_xdg_cache_home(tmp_path, monkeypatch, tiny_model_dir, no_env):
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path / "xdg"))
    target = tmp_path / "xdg" / "tortoise_clvp" / "models"
    assert download.default_download_dir() == target
    shutil.copytree(tiny_model_dir, target)
    assert resolve_models_dir(None, cache_dirs=[]) == target


def test_resolve_names_an_incomplete_cached_snapshot(tmp_path, no_env):
    snapshot = _fake_hub_cache(tmp_path / "cache", ["autoregressive.pth", "clvp2.pth"])
    with pytest.raises(CheckpointError, match="tortoise/data") as caught:
        resolve_models_dir(None, cache_dirs=[tmp_path / "cache"], default_dir=tmp_path / "nowhere")
    assert str(snapshot) in str(caught.value)


def test_resolve_env_pointing_at_an_original_tortoise_cache(tmp_path, monkeypatch, no_env):
    snapshot = _fake_hub_cache(tmp_path / "tortoise_cache", ["autoregressive.pth", "clvp2.pth", "tokenizer.json", "mel_norms.pth"])
    monkeypatch.setenv(download.MODELS_ENV, str(tmp_path / "tortoise_cache"))
    assert resolve_models_dir(None, cache_dirs=[], default_dir=tmp_path / "nowhere") == snapshot
