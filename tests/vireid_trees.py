"""Tiny dataset trees in the real on-disk layouts of SYSU-MM01, RegDB and LLCM, and a counting fake model.

Images are 8x4 pixels (the readers never look inside them); the fake model's
embeddings depend only on the identity folder in the path, plus path-seeded noise.
"""

from __future__ import annotations

import io
import zlib
from collections import Counter
from collections.abc import Iterable
from functools import cache
from pathlib import Path

import numpy as np
import torch
from PIL import Image


@cache
def _encoded(suffix: str, variant: int) -> bytes:
    pixels = np.random.default_rng(variant).integers(0, 256, (8, 4, 3), dtype=np.uint8)
    buffer = io.BytesIO()
    Image.fromarray(pixels).save(buffer, format={".jpg": "JPEG", ".bmp": "BMP", ".png": "PNG"}[suffix])
    return buffer.getvalue()


def write_image(path: Path, seed: int = 0) -> None:
    """An 8x4 image, one of 32 pixel patterns (encoded once, so big trees are quick to write)."""
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(_encoded(path.suffix, seed % 32))


def make_sysu(
    root: Path,
    train_ids: Iterable[int] = (1, 2, 4),
    val_ids: Iterable[int] = (6,),
    test_ids: Iterable[int] = (3, 5, 7, 9),
    images: int = 5,
    absent: Iterable[tuple[int, int]] = (),
) -> Path:
    """``cam1..cam6/<pid:04d>/<nnnn>.jpg`` for every id and camera except ``absent`` (pid, cam) pairs."""
    absent = set(absent)
    train_ids, val_ids, test_ids = list(train_ids), list(val_ids), list(test_ids)
    for cam in range(1, 7):
        (root / f"cam{cam}").mkdir(parents=True, exist_ok=True)
        for pid in train_ids + val_ids + test_ids:
            if (pid, cam) not in absent:
                for n in range(1, images + 1):
                    write_image(root / f"cam{cam}" / f"{pid:04d}" / f"{n:04d}.jpg", pid * 100 + cam * 10 + n)
    (root / "exp").mkdir(exist_ok=True)
    for name, ids in (("train", train_ids), ("val", val_ids), ("test", test_ids)):
        (root / "exp" / f"{name}_id.txt").write_text(",".join(map(str, ids)) + "\n")
    return root


def make_regdb(root: Path, trials: int = 2, ids: int = 6, images: int = 3) -> Path:
    """``Visible/<pid>/`` + ``Thermal/<pid>/`` and ``idx/{train,test}_{visible,thermal}_<t>.txt``.

    Trial t puts the identities in a different half for test; training labels are
    0..n-1, test labels are the raw identity numbers (both occur in the real files).
    """
    for pid in range(1, ids + 1):
        for n in range(images):
            write_image(root / "Visible" / str(pid) / f"female_v_{n}_{pid}.bmp", pid * 10 + n)
            write_image(root / "Thermal" / str(pid) / f"female_t_{n}_{pid}.bmp", pid * 10 + n + 5)
    (root / "idx").mkdir(parents=True, exist_ok=True)
    for t in range(1, trials + 1):
        order = np.random.default_rng(t).permutation(np.arange(1, ids + 1))
        train, test = sorted(order[: ids // 2]), sorted(order[ids // 2 :])
        for folder, word, tag in (("Visible", "visible", "v"), ("Thermal", "thermal", "t")):
            train_lines = [
                f"{folder}/{p}/female_{tag}_{n}_{p}.bmp {label}" for label, p in enumerate(train) for n in range(images)
            ]
            test_lines = [f"{folder}/{p}/female_{tag}_{n}_{p}.bmp {p}" for p in test for n in range(images)]
            (root / "idx" / f"train_{word}_{t}.txt").write_text("\n".join(train_lines) + "\n")
            (root / "idx" / f"test_{word}_{t}.txt").write_text("\n".join(test_lines) + "\n")
    return root


def make_llcm(
    root: Path, train_ids: Iterable[int] = (1, 2, 4), test_ids: Iterable[int] = (3, 5, 6), images: int = 4
) -> Path:
    """LLCM: ``idx/train_{vis,nir}.txt``, ``idx/test_id.txt``, ``test_vis/cam<K>/`` (K=1..4) and ``test_nir/cam<K>/``.

    Test identity p is seen by visible cameras 1-4 and infrared cameras 1-4 except
    camera ``p % 4 + 1``; ``test_nir/cam3`` exists but the protocol never reads it.
    """
    lines: dict[str, list[str]] = {"vis": [], "nir": []}
    for label, pid in enumerate(train_ids):
        for kind in ("vis", "nir"):
            for n in range(images):
                cam = n % 2 + 1
                rel = f"{kind}/{pid:04d}/{pid:04d}_c{cam:02d}_s000{n}_f{n}_{kind}.jpg"
                write_image(root / rel, pid * 10 + n)
                lines[kind].append(f"{rel} {label}")
    (root / "idx").mkdir(parents=True, exist_ok=True)
    for kind in ("vis", "nir"):
        (root / "idx" / f"train_{kind}.txt").write_text("\n".join(lines[kind]) + "\n")
    test_ids = list(test_ids)
    (root / "idx" / "test_id.txt").write_text(",".join(map(str, test_ids)))
    for pid in test_ids:
        for cam in range(1, 5):
            for n in range(images):
                write_image(root / "test_vis" / f"cam{cam}" / f"{pid:04d}" / f"{n:04d}.jpg", pid * 100 + cam * 10 + n)
                if cam != pid % 4 + 1:
                    write_image(
                        root / "test_nir" / f"cam{cam}" / f"{pid:04d}" / f"{n:04d}.jpg", pid * 100 + cam * 10 + n + 5
                    )
    return root


class CountingModel(torch.nn.Module):
    """Fake model: unit embeddings = identity one-hot + path-seeded noise; counts every image it embeds."""

    def __init__(self, dim: int = 16, noise: float = 0.9):
        super().__init__()
        self.scale = torch.nn.Parameter(torch.ones(1))  # gives the weights fingerprint something to hash
        self.dim, self.noise = dim, noise
        self.counts: Counter[str] = Counter()
        self.calls: list[tuple[str, int]] = []

    def embed_image(self, images, modality, *, batch_size=32, flip=True, progress=False):
        self.calls.append((modality, len(images)))
        rows = []
        for path in images:
            self.counts[str(path)] += 1
            pid = int(Path(path).parent.name)
            rng = np.random.default_rng(zlib.crc32(str(path).encode()) + (0 if flip else 1))
            vector = self.noise * rng.standard_normal(self.dim)
            vector[pid % self.dim] += 1.0
            rows.append(vector / np.linalg.norm(vector))
        return torch.tensor(np.array(rows), dtype=torch.float32) * self.scale.detach()
