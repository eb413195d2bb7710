"""Atomic writes: the target holds either its old bytes or all of the new ones, and no temporary file survives."""

from __future__ import annotations

import os
import stat

import pytest

from tortoise_clvp.atomic import atomic_write, write_bytes_atomic


def test_write_bytes_creates_and_replaces(tmp_path):
    target = tmp_path / "out.bin"
    assert write_bytes_atomic(target, b"first") == target
    write_bytes_atomic(target, b"second")
    assert target.read_bytes() == b"second"
    assert os.listdir(tmp_path) == ["out.bin"]


def test_failure_inside_the_block_keeps_the_old_file(tmp_path):
    target = tmp_path / "out.bin"
    target.write_bytes(b"old")
    with pytest.raises(RuntimeError, match="boom"):
        with atomic_write(target) as stream:
            stream.write(b"half of the new")
            raise RuntimeError("boom")
    assert target.read_bytes() == b"old"
    assert os.listdir(tmp_path) == ["out.bin"]


def test_interrupt_inside_the_block_leaves_nothing(tmp_path):
    target = tmp_path / "out.bin"
    with pytest.raises(KeyboardInterrupt):
        with atomic_write(target) as stream:
            stream.write(b"partial")
            raise KeyboardInterrupt
    assert not any(tmp_path.iterdir())


def test_missing_folder_raises_before_writing(tmp_path):
    with pytest.raises(FileNotFoundError):
        write_bytes_atomic(tmp_path / "absent" / "out.bin", b"x")
    assert not any(tmp_path.iterdir())


def test_new_files_get_the_usual_mode(tmp_path):
    umask = os.umask(0o022)
    try:
        target = write_bytes_atomic(tmp_path / "out.bin", b"x")
    finally:
        os.umask(umask)
    assert stat.S_IMODE(target.stat().st_mode) == 0o644


def test_temporary_name_is_hidden_and_beside_the_target(tmp_path):
    target = tmp_path / "out.bin"
    with atomic_write(target):
        (temp,) = tmp_path.iterdir()
        assert temp.name.startswith(".out.bin.") and temp.name.endswith(".partial")
    assert os.listdir(tmp_path) == ["out.bin"]
