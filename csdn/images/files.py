"""Which files in a folder are images: one rule for every reader (datasets, ``embed_image``, the CLI).

Torch-free on purpose, so the torch-free runtime lists folders exactly as the PyTorch path does.
Hidden entries (a name starting with ``.``, which includes macOS ``._x.jpg`` resource forks) are
never images, and neither is anything inside a hidden folder.
"""

from __future__ import annotations

import os
from collections.abc import Iterable
from pathlib import Path
from typing import Any

# File name endings (lower case) that anything listing a folder treats as images. PIL
# decodes every one of them.
IMAGE_SUFFIXES = (".jpg", ".jpeg", ".png", ".bmp", ".tif", ".tiff", ".webp", ".pgm", ".ppm")


def is_hidden(path: Path) -> bool:
    """A dot-file such as ``.hidden.jpg`` or macOS's ``._x.jpg``."""
    return path.name.startswith(".")


def is_image_file(path: Path) -> bool:
    """A visible regular file with an image suffix."""
    return path.suffix.lower() in IMAGE_SUFFIXES and not is_hidden(path) and path.is_file()


def images_in(folder: Path, recursive: bool = True) -> list[Path]:
    """Image files under ``folder`` in sorted path order; hidden files and hidden folders are skipped."""
    found: list[Path] = []
    for current, dirs, files in os.walk(folder):
        dirs[:] = [] if not recursive else [d for d in dirs if not d.startswith(".")]
        found.extend(p for p in (Path(current, name) for name in files) if is_image_file(p))
    return sorted(found)


def expand_folders(inputs: Iterable[Any]) -> list[Any]:
    """``inputs`` with every folder path replaced by its images (recursive, sorted).

    Other items (file paths, arrays, PIL images, ...) pass through in place. A folder
    without images and a path that exists as neither file nor folder are errors naming it.
    """
    items: list[Any] = []
    for item in inputs:
        if not isinstance(item, (str, os.PathLike)):
            items.append(item)
            continue
        path = Path(item)
        if path.is_dir():
            found = images_in(path)
            if not found:
                raise FileNotFoundError(
                    f"no images in folder {path} (looked recursively for {', '.join(IMAGE_SUFFIXES)}; "
                    "hidden files are skipped)"
                )
            items.extend(str(p) for p in found)
        elif path.exists():
            items.append(item)
        else:
            raise FileNotFoundError(f"no such image file or folder: {path}")
    return items
