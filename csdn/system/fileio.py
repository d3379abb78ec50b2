"""File helpers shared by everything that writes what users keep: atomic writes and checksums."""

from __future__ import annotations

import errno
import hashlib
import os
import uuid
from collections.abc import Callable, Iterable, Mapping
from pathlib import Path
from typing import BinaryIO, cast

from csdn.errors import DiskFullError, OutputExistsError

_DISK_FULL = (errno.ENOSPC, errno.EDQUOT)


def _named_error(err: OSError, target: Path) -> OSError:
    """``err`` retold about ``target``, the user's file, instead of the temporary file beside it."""
    if err.errno in _DISK_FULL:
        retold: OSError = DiskFullError(
            f"cannot write {target}: no space left on its disk ({os.strerror(err.errno)}); "
            "free space there (or write somewhere else) and run again"
        )
    else:
        reason = os.strerror(err.errno) if err.errno else (err.strerror or str(err))
        retold = type(err)(f"cannot write {target}: {reason}")
    retold.errno = err.errno  # not .filename: OSError's text would then show it instead of the message
    return retold


def _process_umask() -> int:
    """This process's umask (read from /proc where there is one; elsewhere set and put back at once)."""
    try:
        for line in Path("/proc/self/status").read_text().splitlines():
            if line.startswith("Umask:"):
                return int(line.split()[1], 8)
    except (OSError, ValueError):
        pass
    mask = os.umask(0o022)
    os.umask(mask)
    return mask


def _normal_mode(target: Path) -> int:
    """The permissions ``open(target, "w")`` would leave: the existing file's, else 0666 less the umask.

    Writers such as safetensors create their file 0600, and a temporary file renamed into place
    keeps the mode it was made with; outputs should read like any other file the user writes.
    """
    try:
        return target.stat().st_mode & 0o7777
    except OSError:
        return 0o666 & ~_process_umask()


def atomic_write_all(writes: Mapping[Path, Callable[[Path], None]]) -> None:
    """Write several outputs so that either all of them appear or none does.

    Each ``write(temp_path)`` fills a temporary file in its target's folder (so ``os.replace``
    is atomic); only when every one has been written and flushed to disk are they moved onto
    their names. A crash or a full disk never leaves a half-written file under a real name, and
    a failed write leaves every old file untouched. Errors name the user's file, never the
    temporary one; a full disk raises :class:`csdn.errors.DiskFullError`.
    """
    temps = {Path(t): Path(t).with_name(f".{Path(t).name}.{uuid.uuid4().hex[:8]}.tmp") for t in writes}
    target = Path()
    try:
        for target, write in zip(temps, writes.values(), strict=True):
            write(temps[target])
            with open(temps[target], "rb+") as handle:
                os.fsync(handle.fileno())
            os.chmod(temps[target], _normal_mode(target))
        for target, temp in temps.items():
            os.replace(temp, target)
    except OSError as err:
        if isinstance(err, DiskFullError) or (err.filename is not None and Path(err.filename) != temps[target]):
            raise  # about another file, or already told
        raise _named_error(err, target) from err
    finally:
        for temp in temps.values():
            temp.unlink(missing_ok=True)


def atomic_write(target: str | Path, write: Callable[[Path], None]) -> Path:
    """Call ``write(temp_path)`` and move the result onto ``target`` in one step (see :func:`atomic_write_all`)."""
    target = Path(target)
    atomic_write_all({target: write})
    return target


class _WriteRecorder:
    """A binary file that keeps the first ``OSError`` its writes raise, for writers that swallow it."""

    def __init__(self, handle: BinaryIO):
        self._handle = handle
        self.error: OSError | None = None

    def write(self, data: bytes) -> int:
        try:
            return self._handle.write(data)
        except OSError as err:
            self.error = self.error or err
            raise

    def flush(self) -> None:
        self._handle.flush()


def atomic_write_stream(target: str | Path, write: Callable[[BinaryIO], None]) -> Path:
    """Like :func:`atomic_write`, for a ``write(file)`` that fills a binary file object.

    Some writers turn the ``OSError`` of a failed write into an error of their own that says
    neither why nor where (``torch.save``: ``[enforce fail at inline_container.cc:...] unexpected
    pos``); the first ``OSError`` the file raised is raised instead, so a full disk is a
    :class:`csdn.errors.DiskFullError` naming ``target``, and every other write failure names it too.
    """

    def fill(temp: Path) -> None:
        with open(temp, "wb") as handle:
            recorder = _WriteRecorder(handle)
            try:
                write(cast(BinaryIO, recorder))
            except Exception as err:
                if recorder.error is None or recorder.error is err:
                    raise
                raise recorder.error from err

    return atomic_write(target, fill)


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


def check_writable(paths: Iterable[str | Path]) -> None:
    """``PermissionError`` naming the first of ``paths`` whose folder (or nearest existing parent) cannot be
    written, checked before any work so that an hour of matching never ends in it."""
    for path in paths:
        folder = Path(path).absolute().parent
        while not folder.exists() and folder != folder.parent:
            folder = folder.parent
        if not os.access(folder, os.W_OK | os.X_OK):
            raise PermissionError(
                errno.EACCES,
                f"cannot write {path}: its folder {folder} is not writable (read-only or not yours)",
                str(path),
            )
