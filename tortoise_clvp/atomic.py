"""Writing files so that nobody ever sees half of one: a hidden temporary file beside the target, flushed to disk,
then renamed over it. On any failure the temporary file is removed and the target is left as it was.

Every writer of outputs and caches (audio, reports, manifests, latent caches, benchmark results) goes through here.
"""

from __future__ import annotations

import os
import secrets
from contextlib import contextmanager
from pathlib import Path
from typing import BinaryIO, Iterator

_NAME_TRIES = 100


def _create_temp_beside(path: Path) -> tuple[int, Path]:
    """Open a new, uniquely named hidden file in path's folder (mode 0o666 minus the umask, like a normal file)."""
    flags = os.O_WRONLY | os.O_CREAT | os.O_EXCL | getattr(os, "O_BINARY", 0)
    for _ in range(_NAME_TRIES):
        temp = path.with_name(f".{path.name}.{secrets.token_hex(6)}.partial")
        try:
            return os.open(temp, flags, 0o666), temp
        except FileExistsError:
            continue
    raise FileExistsError(f"could not find a free temporary name beside {path}")


@contextmanager
def atomic_write(path: str | os.PathLike[str]) -> Iterator[BinaryIO]:
    """A binary stream whose bytes replace `path` in one rename when the block ends without an error.

    OSError from creating the temporary file (missing folder, no permission) propagates before the block runs.
    """
    path = Path(path)
    handle, temp = _create_temp_beside(path)
    try:
        with os.fdopen(handle, "wb") as stream:
            yield stream
            stream.flush()
            os.fsync(stream.fileno())
        os.replace(temp, path)
    except BaseException:
        temp.unlink(missing_ok=True)
        raise


def write_bytes_atomic(path: str | os.PathLike[str], data: bytes) -> Path:
    """Replace `path` with `data` atomically; returns the path."""
    with atomic_write(path) as stream:
        stream.write(data)
    return Path(path)
