"""Reading the pieces the benchmark layouts share: id lists, index files and camera folders.

SYSU-MM01 and LLCM store test images as ``<camera dir>/<pid:04d>/<image>`` and pick
random gallery images per (identity, camera) folder; RegDB and LLCM list training
images in ``relative/path label`` index files. The readers describe their layout
(``Layout``) so that every error names the file it expected and its format.
"""

from __future__ import annotations

import numbers
import random
import re
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from pathlib import Path

from csdn.data.samples import UNKNOWN_CAMERA, Sample
from csdn.errors import DatasetLayoutError
from csdn.images.files import images_in

_CAMERA_DIR = re.compile(r"^cam(\d+)$", re.IGNORECASE)
_CAMERA_TOKEN = re.compile(r"(?:^|_)c(\d+)(?:_|$)", re.IGNORECASE)


@dataclass(frozen=True)
class Layout:
    """A dataset's name, root folder and a one-paragraph description of its expected layout."""

    name: str
    root: Path
    description: str

    def error(self, problem: str) -> DatasetLayoutError:
        return DatasetLayoutError(f"{self.name} at {self.root}: {problem}\nExpected layout: {self.description}")

    def require_root(self) -> None:
        if not self.root.is_dir():
            raise self.error("the root folder does not exist (pass the folder that holds the dataset)")

    def require_file(self, relative: str, fmt: str) -> Path:
        path = self.root / relative
        if not path.is_file():
            raise self.error(f"missing {path} ({fmt})")
        return path


@dataclass(frozen=True)
class Folder:
    """The images of one identity seen by one camera, sorted by file name."""

    pid: int
    camid: int
    files: tuple[str, ...]


def is_integer(value: object) -> bool:
    """An int or NumPy integer, but not a bool."""
    return isinstance(value, numbers.Integral) and not isinstance(value, bool)


def image_files(directory: Path) -> tuple[str, ...]:
    """Image files in ``directory``, sorted by name (the order the reference loaders sample from)."""
    return tuple(str(path) for path in images_in(directory, recursive=False))


def read_id_list(layout: Layout, relative: str) -> list[int]:
    """Identities from a file of comma-separated integers (SYSU ``exp/*_id.txt``, LLCM ``idx/test_id.txt``)."""
    fmt = "comma-separated identity numbers, e.g. '1,2,4,5'"
    path = layout.require_file(relative, fmt)
    tokens = [t for t in re.split(r"[,\s]+", path.read_text(encoding="utf-8", errors="replace")) if t]
    try:
        ids = [int(token) for token in tokens]
    except ValueError:
        bad = next(t for t in tokens if not t.lstrip("-").isdigit())
        raise layout.error(f"{path} holds {bad!r}, which is not an identity number (expected {fmt})") from None
    if not ids:
        raise layout.error(f"{path} is empty (expected {fmt})")
    if min(ids) < 0:
        raise layout.error(f"{path} holds a negative identity {min(ids)} (expected {fmt})")
    return ids


def read_index_file(layout: Layout, relative: str) -> list[tuple[str, int]]:
    """``(absolute image path, label)`` pairs from a ``relative/path label`` file; every image must exist."""
    fmt = "one image per line: 'relative/path label', the path relative to the dataset root"
    path = layout.require_file(relative, fmt)
    entries: list[tuple[str, int]] = []
    for number, line in enumerate(path.read_text(encoding="utf-8", errors="replace").splitlines(), 1):
        if not line.strip():
            continue
        parts = line.rsplit(maxsplit=1)
        if len(parts) != 2 or not parts[1].lstrip("-").isdigit():
            raise layout.error(f"{path} line {number} is {line.strip()!r}; expected {fmt}")
        entries.append((str(layout.root / parts[0].strip()), int(parts[1])))
    if not entries:
        raise layout.error(f"{path} lists no images (expected {fmt})")
    missing = [p for p, _ in entries if not Path(p).is_file()]
    if missing:
        shown = ", ".join(missing[:3]) + (", ..." if len(missing) > 3 else "")
        raise layout.error(f"{len(missing)} image(s) listed in {path} do not exist: {shown}")
    return entries


def camera_from_path(path: str) -> int:
    """The camera a file name or folder records (``cam<K>/`` or ``_c<KK>_``), else ``UNKNOWN_CAMERA``."""
    parts = Path(path).parts
    for part in reversed(parts[:-1]):
        match = _CAMERA_DIR.match(part)
        if match:
            return int(match.group(1))
    match = _CAMERA_TOKEN.search(Path(path).stem)
    return int(match.group(1)) if match else UNKNOWN_CAMERA


def scan_folders(cameras: Sequence[tuple[int, Path]], pids: Iterable[int]) -> list[Folder]:
    """The non-empty ``<camera dir>/<pid:04d>`` folders, identities ascending, cameras in the given order."""
    folders = []
    for pid in sorted(set(pids)):
        for camid, camera_dir in cameras:
            directory = camera_dir / f"{pid:04d}"
            if directory.is_dir():
                files = image_files(directory)
                if files:
                    folders.append(Folder(pid, camid, files))
    return folders


def folder_samples(folders: Sequence[Folder], modality: str) -> list[Sample]:
    """Every image of ``folders``, in folder order."""
    return [Sample(path, f.pid, f.camid, modality) for f in folders for path in f.files]


def pick_gallery(folders: Sequence[Folder], modality: str, trial: int, shots: int) -> list[Sample]:
    """The gallery of one trial: ``shots`` random images from every folder.

    Draws come from ``random.Random(trial)`` in folder order: ``choice`` for one
    shot (the reference protocol's draws, which seed the global generator with the
    trial), ``sample`` for several (no repeats; all images of a smaller folder).
    """
    if not is_integer(trial) or trial < 0:
        raise ValueError(f"trial must be a non-negative integer, got {trial!r}")
    if not is_integer(shots) or shots < 1:
        raise ValueError(f"shots must be a positive integer (1 single-shot, 10 multi-shot), got {shots!r}")
    rng = random.Random(int(trial))
    gallery: list[Sample] = []
    for folder in folders:
        picks = [rng.choice(folder.files)] if shots == 1 else rng.sample(folder.files, min(shots, len(folder.files)))
        gallery.extend(Sample(path, folder.pid, folder.camid, modality) for path in picks)
    return gallery
