"""File helpers shared by everything that writes what users keep: atomic writes and checksums."""

from __future__ import annotations

import errno
import hashlib
import os
import uuid
from collections.abc import Callable, Iterable
from pathlib import Path

from csdn.errors import DiskFullError, OutputExistsError

_DISK_FULL = (errno.ENOSPC, errno.EDQUOT)


def atomic_write(target: str | Path, write: Callable[[Path], None]) -> Path:
    """Call ``write(temp_path)`` and move the result onto ``target`` in one step.

    The temporary file sits in the target's folder (so ``os.replace`` is atomic) and
    is flushed to disk first: a crash or a full disk never leaves a half-written
    file under the real name, and a failed write leaves the old file untouched.
    A full disk raises :class:`csdn.errors.DiskFullError` naming ``target``.
    """
    target = Path(target)
    temp = target.with_name(f".{target.name}.{uuid.uuid4().hex[:8]}.tmp")
    try:
        write(temp)
        with open(temp, "rb+") as handle:
            os.fsync(handle.fileno())
        os.replace(temp, target)
    except OSError as err:
        if err.errno not in _DISK_FULL or isinstance(err, DiskFullError):
            raise
        full = DiskFullError(
            f"cannot write {target}: no space left on its disk ({os.strerror(err.errno)}); "
            "free space there (or write somewhere else) and run again"
        )
        full.errno = err.errno
        raise full from err
    finally:
        temp.unlink(missing_ok=True)
    return target


def atomic_write_text(target: str | Path, text: str) -> Path:
    """Write UTF-8 ``text`` to ``target`` atomically (see :func:`atomic_write`)."""

    def write(temp: Path) -> None:
        temp.write_text(text, encoding="utf-8")

    return atomic_write(target, write)


def sha256_file(path: str | Path) -> str:
    """Hex SHA-256 of a file, read in 1 MiB blocks."""
    digest = hashlib.sha256()
    with open(path, "rb") as handle:
        for block in iter(lambda: handle.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


def refuse_existing(paths: Iterable[str | Path], flag: str = "--overwrite") -> None:
    """:class:`csdn.errors.OutputExistsError` naming the first of ``paths`` that exists (checked before any work)."""
    for path in paths:
        path = Path(path)
        if path.exists() or path.is_symlink():
            raise OutputExistsError(
                f"{path} already exists; pass {flag} to replace it, or choose another name (nothing was written)"
            )
