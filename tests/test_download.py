"""Fetching the release with the hub faked: nothing here touches the network.

`huggingface_hub.list_repo_files`, `hf_hub_download` and the session's reachability request are replaced by a fake
that serves made-up files from folders per repository (or fails the way a dead network, a missing file, a missing
repository or Ctrl-C does).
"""

from __future__ import annotations

import os
import sys
import time
from pathlib import Path

import pytest

huggingface_hub = pytest.importorskip("huggingface_hub")
import huggingface_hub.constants  # noqa: E402
import huggingface_hub.errors  # noqa: E402
import huggingface_hub.utils  # noqa: E402

from tortoise_clvp.errors import CheckpointError  # noqa: E402
from tortoise_clvp.weights import download  # noqa: E402
from tortoise_clvp.weights.download import (  # noqa: E402
    HF_CLVP_REPO_ID,
    RELEASE_FILES,
    TORTOISE_REPO_ID,
    fetch_models,
)

TORTOISE_NAMES = [spec.names[0] for spec in RELEASE_FILES["tortoise"]]
HUB_FILES = ["autoregressive.pth", "clvp2.pth", "diffusion_decoder.pth", "vocoder.pth"]


def hub_error(cls: type, message: str) -> Exception:
    """A huggingface_hub HTTP error without a real response (their constructors want one)."""
    error = cls.__new__(cls)
    Exception.__init__(error, message)
    return error


class FakeHub:
    """Serves the files of one folder per repository; records every request."""

    def __init__(self, repos: dict[str, Path]):
        self.repos = repos  # repo id -> folder of its files
        self.unreachable: BaseException | None = None  # raised by the reachability request
        self.download_error: tuple[str, BaseException] | None = None  # (file, error) raised when it is fetched
        self.requests: list[str] = []
        self.bars_disabled_during_download: list[bool] = []

    def head(self, url, timeout=None, **_):  # the session's reachability request
        self.requests.append(f"HEAD {url}")
        if self.unreachable is not None:
            raise self.unreachable

    def list_repo_files(self, repo_id, revision=None, **_):
        self.requests.append(f"list {repo_id}")
        if repo_id not in self.repos:
            raise hub_error(huggingface_hub.errors.RepositoryNotFoundError, f"404: {repo_id}")
        return sorted(p.name for p in self.repos[repo_id].iterdir())

    def hf_hub_download(self, repo_id, filename, *, revision=None, local_dir=None, **_):
        """Like huggingface_hub: an .incomplete file under local_dir/.cache, moved into place when complete."""
        self.requests.append(f"get {filename}")
        self.bars_disabled_during_download.append(huggingface_hub.utils.are_progress_bars_disabled())
        partial = Path(local_dir) / ".cache" / "huggingface" / "download" / f"{filename}.incomplete"
        partial.parent.mkdir(parents=True, exist_ok=True)
        partial.write_bytes(b"partial")
        if self.download_error and self.download_error[0] == filename:
            raise self.download_error[1]
        partial.write_bytes((self.repos[repo_id] / filename).read_bytes())
        os.replace(partial, Path(local_dir) / filename)
        return str(Path(local_dir) / filename)


def _repo(folder: Path, names: list[str]) -> Path:
    folder.mkdir(parents=True)
    for i, name in enumerate(names):
        (folder / name).write_bytes(f"{name} {i}".encode())
    return folder


@pytest.fixture
def fake_hub(monkeypatch, tmp_path):
    hub = FakeHub({TORTOISE_REPO_ID: _repo(tmp_path / "tortoise_repo", TORTOISE_NAMES)})
    monkeypatch.setattr(huggingface_hub, "list_repo_files", hub.list_repo_files)
    monkeypatch.setattr(huggingface_hub, "hf_hub_download", hub.hf_hub_download)
    monkeypatch.setattr(huggingface_hub.utils, "get_session", lambda: hub)
    monkeypatch.setattr(huggingface_hub.constants, "HF_HUB_OFFLINE", False)
    return hub


def test_files_land_in_the_destination(fake_hub, tmp_path, capsys):
    destination = tmp_path / "models"
    result = fetch_models(destination)
    assert result.destination == destination and result.files == TORTOISE_NAMES and result.missing == []
    for name in TORTOISE_NAMES:
        assert (destination / name).read_bytes() == (fake_hub.repos[TORTOISE_REPO_ID] / name).read_bytes()
        assert not (destination / name).is_symlink()
    assert fake_hub.requests[:2] == [f"HEAD {huggingface_hub.constants.ENDPOINT}", f"list {TORTOISE_REPO_ID}"]
    assert capsys.readouterr() == ("", ""), "the library never prints"
    assert fake_hub.bars_disabled_during_download == [True] * len(TORTOISE_NAMES)
    assert not huggingface_hub.utils.are_progress_bars_disabled(), "the hub's bars are switched back on"


def test_progress_bars_are_drawn_only_on_request(fake_hub, tmp_path):
    fetch_models(tmp_path / "models", show_progress=True)
    assert fake_hub.bars_disabled_during_download == [False] * len(TORTOISE_NAMES)


def test_the_default_destination_is_the_download_folder(fake_hub, tmp_path, monkeypatch):
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path / "xdg"))
    target = tmp_path / "xdg" / "tortoise_clvp" / "models"
    assert download.default_download_dir() == target
    assert fetch_models().destination == target and (target / "clvp2.pth").is_file()


def test_optional_data_files_missing_from_the_repo_are_a_note(fake_hub, tmp_path):
    repo = fake_hub.repos[TORTOISE_REPO_ID]
    (repo / "tokenizer.json").unlink()
    (repo / "mel_norms.pth").unlink()
    result = fetch_models(tmp_path / "models")
    assert result.missing == ["tokenizer.json", "mel_norms.pth"] and result.files == HUB_FILES
    assert any("tortoise/data" in note and "tokenizer.json and mel_norms.pth" in note for note in result.notes)
    assert sorted(p.name for p in (tmp_path / "models").iterdir() if not p.name.startswith(".")) == sorted(HUB_FILES)


def test_a_required_file_missing_from_the_repo_is_an_error_before_any_download(fake_hub, tmp_path):
    (fake_hub.repos[TORTOISE_REPO_ID] / "vocoder.pth").unlink()
    with pytest.raises(CheckpointError, match=f"{TORTOISE_REPO_ID} has no vocoder.pth.*unverified"):
        fetch_models(tmp_path / "models")
    assert not any(r.startswith("get") for r in fake_hub.requests)
    assert not (tmp_path / "models").exists()


def test_huggingface_layout_takes_the_first_weights_file_the_repo_has(fake_hub, tmp_path):
    fake_hub.repos[HF_CLVP_REPO_ID] = _repo(tmp_path / "clvp_repo", ["config.json", "pytorch_model.bin", "README.md"])
    result = fetch_models(tmp_path / "hf", "huggingface")
    assert result.files[:2] == ["config.json", "pytorch_model.bin"]
    assert "diffusion_decoder.pth" in result.files and "vocoder.pth" in result.files  # from Tortoise's repository
    assert not (tmp_path / "hf" / "README.md").exists()


def test_huggingface_layout_fetches_the_shards_of_a_sharded_checkpoint(fake_hub, tmp_path):
    shards = ["model-00001-of-00002.safetensors", "model-00002-of-00002.safetensors"]
    files = ["config.json", "model.safetensors.index.json", *shards, "pytorch_model.bin"]
    fake_hub.repos[HF_CLVP_REPO_ID] = _repo(tmp_path / "clvp_repo", files)
    result = fetch_models(tmp_path / "hf", "huggingface")
    assert result.files[:4] == ["config.json", "model.safetensors.index.json", *shards]
    assert "pytorch_model.bin" not in result.files


def test_hf_hub_offline_fails_without_a_request(fake_hub, tmp_path, monkeypatch):
    monkeypatch.setattr(huggingface_hub.constants, "HF_HUB_OFFLINE", True)
    with pytest.raises(CheckpointError, match="HF_HUB_OFFLINE") as caught:
        fetch_models(tmp_path / "models")
    assert fake_hub.requests == []
    for needle in (*TORTOISE_NAMES, "tortoise/data", str(tmp_path / "models")):
        assert needle in str(caught.value)


class _FakeHttpxError(Exception):
    pass


_FakeHttpxError.__module__ = "httpx"


@pytest.mark.parametrize(
    "error",
    [
        ConnectionError("[Errno 111] Connection refused"),
        TimeoutError("timed out"),
        _FakeHttpxError("[Errno -3] Temporary failure in name resolution"),
        huggingface_hub.errors.OfflineModeIsEnabled("offline"),
    ],
    ids=["refused", "timeout", "httpx", "offline-mode"],
)
def test_no_network_fails_fast_with_one_clear_message(fake_hub, tmp_path, error):
    fake_hub.unreachable = error
    destination = tmp_path / "models"
    start = time.monotonic()
    with pytest.raises(CheckpointError) as caught:
        fetch_models(destination)
    assert time.monotonic() - start < 5
    message = str(caught.value)
    assert message.startswith("cannot reach the Hugging Face hub")
    for needle in (*TORTOISE_NAMES, "tortoise/data", str(destination)):
        assert needle in message
    assert len(fake_hub.requests) == 1, "gives up after the one reachability request"
    assert not destination.exists()


def test_losing_the_network_midway_keeps_the_finished_files(fake_hub, tmp_path):
    fake_hub.download_error = ("diffusion_decoder.pth", ConnectionError("connection reset"))
    with pytest.raises(CheckpointError, match="cannot reach the Hugging Face hub") as caught:
        fetch_models(tmp_path / "models")
    assert "Kept in" in str(caught.value) and "autoregressive.pth, clvp2.pth" in str(caught.value)
    assert (tmp_path / "models" / "clvp2.pth").is_file()
    assert not (tmp_path / "models" / "diffusion_decoder.pth").exists(), "no half-written file under its real name"


def test_an_interruption_leaves_no_half_written_file(fake_hub, tmp_path):
    fake_hub.download_error = ("diffusion_decoder.pth", KeyboardInterrupt())
    with pytest.raises(KeyboardInterrupt):
        fetch_models(tmp_path / "models")
    files = sorted(p.name for p in (tmp_path / "models").iterdir() if not p.name.startswith("."))
    assert files == ["autoregressive.pth", "clvp2.pth"]
    assert not huggingface_hub.utils.are_progress_bars_disabled()


@pytest.mark.parametrize("error, needle", [
    (hub_error(huggingface_hub.errors.RevisionNotFoundError, "404"), "has no revision 'v9'"),
    (PermissionError("[Errno 13] Permission denied"), "check the folder"),
])
def test_hub_and_disk_errors_are_one_clear_message(fake_hub, tmp_path, error, needle):
    fake_hub.download_error = ("clvp2.pth", error)
    with pytest.raises(CheckpointError, match=needle):
        fetch_models(tmp_path / "models", revision="v9")


def test_an_unknown_repository_is_named(fake_hub, tmp_path):
    with pytest.raises(CheckpointError, match=f"no repository {HF_CLVP_REPO_ID}"):
        fetch_models(tmp_path / "hf", "huggingface")


def test_missing_huggingface_hub_names_the_install(monkeypatch, tmp_path):
    monkeypatch.setitem(sys.modules, "huggingface_hub", None)
    with pytest.raises(CheckpointError, match="pip install huggingface_hub"):
        fetch_models(tmp_path / "models")
    assert not (tmp_path / "models").exists()


def test_unknown_layout_and_a_file_as_destination_are_refused(tmp_path):
    with pytest.raises(CheckpointError, match="unknown layout"):
        fetch_models(tmp_path / "models", "onnx")
    (tmp_path / "file").write_text("x")
    with pytest.raises(CheckpointError, match="not a folder"):
        fetch_models(tmp_path / "file")
