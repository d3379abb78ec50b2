"""Synthetic visible/infrared pedestrians written in the real benchmarks' on-disk layouts.

``write_sysu``, ``write_regdb`` and ``write_llcm`` produce trees that the
SYSU-MM01, RegDB and LLCM readers (ours and the common reference loaders) read
unchanged, so the whole pipeline (training, evaluation protocols, CLI) can be
exercised without the real data. Output is a pure function of the arguments:
every identity and every image has its own seeded generator, and images are
saved with fixed encoder settings, so the same seed gives byte-identical files.
A tree is built in a sibling temporary folder and moved into place at the end,
so an interrupted run never leaves a half-written dataset at ``root``.
"""

from __future__ import annotations

import os
import shutil
import uuid
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any

import numpy as np
from PIL import Image
from tqdm import tqdm

from csdn.data.synthetic.body import Pose, sample_pose
from csdn.data.synthetic.identity import Identity, Material, sample_identity
from csdn.data.synthetic.render import check_size, render_person, render_person_with_parts
from csdn.data.synthetic.scene import CameraStyle
from csdn.errors import SettingError, setting_name

__all__ = [
    "CameraStyle",
    "Identity",
    "Material",
    "Pose",
    "SynthResult",
    "render_person",
    "render_person_with_parts",
    "sample_identity",
    "sample_pose",
    "write_llcm",
    "write_regdb",
    "write_sysu",
]

_JPEG_QUALITY = 90
_TAG = {"sysu": 1, "regdb": 2, "llcm": 3}  # keeps the three layouts' random streams apart
LAYOUTS = tuple(_TAG)  # the datasets (csdn.data.catalog names) this module writes trees for
MAX_IMAGES = 1_000_000  # per tree: SYSU-MM01, RegDB and LLCM hold 46k, 8k and 46k images
MAX_TRIALS = 1000  # RegDB split trials (the benchmark uses 10); each writes four index files

# SYSU-MM01: cameras 1-3 indoor, 4-6 outdoor; 3 and 6 are near-infrared. Camera 3
# watches the same room as camera 2 (why the protocol ignores camera-2 gallery
# images for camera-3 queries), so they share a scene seed.
SYSU_CAMERAS = {
    1: CameraStyle("visible", "indoor", 11, cast=(1.06, 1.0, 0.9)),
    2: CameraStyle("visible", "indoor", 12, cast=(0.94, 1.0, 1.08), light=0.9),
    3: CameraStyle("nir", "indoor", 12, noise=0.03, blur=0.5),
    4: CameraStyle("visible", "outdoor", 14, cast=(1.0, 1.03, 0.95), light=1.1),
    5: CameraStyle("visible", "outdoor", 15, cast=(1.08, 1.0, 0.92), light=0.85),
    6: CameraStyle("nir", "outdoor", 16, noise=0.035, blur=0.6),
}
SYSU_VISIBLE_CAMS, SYSU_INFRARED_CAMS = (1, 2, 4, 5), (3, 6)
# RegDB: one co-located visible + far-infrared (thermal) camera pair.
REGDB_CAMERAS = {
    "visible": CameraStyle("visible", "outdoor", 21, cast=(1.02, 1.0, 0.96)),
    "thermal": CameraStyle("thermal", "outdoor", 21, noise=0.025, blur=0.9),
}
# LLCM: up to 9 cameras, each visible by day / low light and near-infrared at night;
# the reference loaders list no test_nir/cam3, so camera 3 records no NIR images here.
LLCM_MAX_CAMERAS, LLCM_NO_NIR_CAM = 9, 3


@dataclass(frozen=True)
class SynthResult:
    """What a writer produced."""

    root: Path
    num_ids: int
    num_images: int


def _identity(seed: int, layout: str, pid: int) -> tuple[Identity, np.random.Generator]:
    """The identity and its own generator (later draws decide cameras/modalities)."""
    rng = np.random.default_rng([seed, _TAG[layout], pid])
    return sample_identity(rng, pid), rng


def _image_rng(seed: int, layout: str, *keys: int) -> np.random.Generator:
    return np.random.default_rng([seed, _TAG[layout], *keys])


def _save(image: Image.Image, path: Path) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    if path.suffix == ".jpg":
        image.save(path, "JPEG", quality=_JPEG_QUALITY)
    else:
        image.save(path, "BMP")


def _id_line(ids) -> str:
    return ",".join(str(int(i)) for i in ids) + "\n"


def _validate(
    size,
    seed,
    camera_prob: float | None = None,
    *,
    four_digit_ids: bool = True,
    shots: int,
    per_shot: str,
    **counts: int,
) -> tuple[int, int]:
    """Check a writer's arguments (clear message naming the bad one) before anything is drawn or written;
    returns (height, width). Each identity gets up to ``shots`` image series (cameras x modalities) of
    ``counts[per_shot]`` images."""
    if isinstance(seed, bool) or not isinstance(seed, (int, np.integer)) or seed < 0:
        raise SettingError(f"{setting_name('seed')} must be a non-negative integer, got {seed!r}")
    for name, value in counts.items():
        if isinstance(value, bool) or not isinstance(value, (int, np.integer)) or value < 1:
            raise SettingError(f"{setting_name(name)} must be a positive integer, got {value!r}")
    ids = counts["num_train_ids"] + counts["num_test_ids"]
    if four_digit_ids and ids > 9999:
        raise SettingError("folder names have 4 digits: at most 9999 identities in total")
    if camera_prob is not None and not 0 < camera_prob <= 1:
        raise SettingError(f"camera_prob must be in (0, 1], got {camera_prob}")
    most = ids * shots * counts[per_shot]
    if most > MAX_IMAGES:
        raise SettingError(
            f"{setting_name('num_train_ids')} + {setting_name('num_test_ids')} = {ids:,} identities with "
            f"{shots} camera series of {counts[per_shot]:,} images ({setting_name(per_shot)}) each would write up "
            f"to {most:,} images, over the limit of {MAX_IMAGES:,}: each is a file drawn in some 0.05 s, and the "
            "real benchmarks hold under 50,000; ask for fewer identities or images"
        )
    return check_size(size)


@contextmanager
def _building(root) -> Iterator[Path]:
    """Yield a temporary folder next to ``root``; move it to ``root`` only on success."""
    root = Path(root)
    if root.exists() and (not root.is_dir() or any(root.iterdir())):
        raise FileExistsError(f"{root} already exists and is not an empty folder; pass a new or empty folder")
    root.parent.mkdir(parents=True, exist_ok=True)
    tmp = root.parent / f".{root.name}.partial-{os.getpid()}-{uuid.uuid4().hex[:8]}"
    tmp.mkdir()  # not mkdtemp: the finished tree should get the user's usual permissions
    try:
        yield tmp
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    if root.exists():
        root.rmdir()
    os.replace(tmp, root)


def _split(seed: int, layout: str, total: int, num_test: int) -> tuple[list[int], list[int]]:
    """Random (train, test) partition of pids 1..total, as the real splits interleave ids."""
    perm = np.random.default_rng([seed, _TAG[layout], 0]).permutation(np.arange(1, total + 1))
    return sorted(int(p) for p in perm[num_test:]), sorted(int(p) for p in perm[:num_test])


def write_sysu(
    root,
    num_train_ids: int = 32,
    num_test_ids: int = 16,
    images_per_camera: int = 4,
    seed: int = 0,
    size: tuple[int, int] = (128, 64),
    camera_prob: float = 0.75,
    progress: bool = False,
) -> SynthResult:
    """Write a SYSU-MM01-style tree: ``cam{1..6}/<pid:04d>/<nnnn>.jpg`` and ``exp/{train,val,test}_id.txt``.

    ``num_train_ids`` identities are split about 3:1 into ``train_id.txt`` and
    ``val_id.txt`` (readers train on both, as in the reference protocol). Each
    identity appears in each camera with probability ``camera_prob`` and always
    in at least one visible (1, 2, 4, 5) and one infrared (3, 6) camera.
    """
    counts: dict[str, Any] = dict(
        num_train_ids=num_train_ids, num_test_ids=num_test_ids, images_per_camera=images_per_camera
    )
    size = _validate(size, seed, camera_prob, shots=len(SYSU_CAMERAS), per_shot="images_per_camera", **counts)
    if num_train_ids < 2:
        raise ValueError("num_train_ids must be at least 2 (SYSU-MM01 has both a train and a val id list)")
    total = num_train_ids + num_test_ids
    train_val, test = _split(seed, "sysu", total, num_test_ids)
    num_val = max(1, round(num_train_ids / 4))
    val = sorted(np.random.default_rng([seed, _TAG["sysu"], 0, 1]).choice(train_val, num_val, replace=False).tolist())
    train = sorted(set(train_val) - set(val))
    count = 0
    with _building(root) as tmp:
        for pid in tqdm(range(1, total + 1), desc="sysu", disable=not progress):
            identity, rng = _identity(seed, "sysu", pid)
            cams = [c for c in SYSU_CAMERAS if rng.random() < camera_prob]
            if not set(cams) & set(SYSU_VISIBLE_CAMS):
                cams.append(int(rng.choice(SYSU_VISIBLE_CAMS)))
            if not set(cams) & set(SYSU_INFRARED_CAMS):
                cams.append(int(rng.choice(SYSU_INFRARED_CAMS)))
            for cam in sorted(cams):
                camera = SYSU_CAMERAS[cam]
                for k in range(1, images_per_camera + 1):
                    rng_k = _image_rng(seed, "sysu", pid, cam, k)
                    image = render_person(identity, camera.modality, rng_k, size, camera=camera)
                    _save(image, tmp / f"cam{cam}" / f"{pid:04d}" / f"{k:04d}.jpg")
                    count += 1
        (tmp / "exp").mkdir()
        for name, ids in (("train_id.txt", train), ("val_id.txt", val), ("test_id.txt", test)):
            (tmp / "exp" / name).write_text(_id_line(ids))
    return SynthResult(Path(root), total, count)


def write_regdb(
    root,
    num_train_ids: int = 20,
    num_test_ids: int = 20,
    images_per_modality: int = 10,
    num_trials: int = 10,
    seed: int = 0,
    size: tuple[int, int] = (128, 64),
    image_format: str = "bmp",
    progress: bool = False,
) -> SynthResult:
    """Write a RegDB-style tree: ``Visible/<pid>/``, ``Thermal/<pid>/`` and ``idx/{train,test}_{visible,thermal}_{t}.txt``.

    Real RegDB: 412 identities, 10 images per modality taken in pairs by a
    co-located visible/thermal camera pair (so image k of both modalities shares a
    pose), and a fresh random identity split into halves for each of 10 trials.
    Index lines are ``Visible/<pid>/<file> <label>`` with labels 0..n-1 per file,
    numbered in pid order (the same label in the visible and thermal file).
    """
    size = _validate(
        size,
        seed,
        None,
        four_digit_ids=False,
        shots=len(REGDB_CAMERAS),
        per_shot="images_per_modality",
        num_train_ids=num_train_ids,
        num_test_ids=num_test_ids,
        images_per_modality=images_per_modality,
        num_trials=num_trials,
    )
    if num_trials > MAX_TRIALS:
        raise SettingError(
            f"{setting_name('num_trials')} must be at most {MAX_TRIALS} (RegDB uses 10), got {num_trials:,}: "
            "each trial writes four index files listing its images"
        )
    if image_format not in ("bmp", "jpg"):
        raise ValueError(f"image_format must be 'bmp' (as in RegDB) or 'jpg', got {image_format!r}")
    total = num_train_ids + num_test_ids
    files: dict[int, dict[str, list[str]]] = {}
    with _building(root) as tmp:
        for pid in tqdm(range(1, total + 1), desc="regdb", disable=not progress):
            identity, _ = _identity(seed, "regdb", pid)
            files[pid] = {"visible": [], "thermal": []}
            for k in range(1, images_per_modality + 1):
                pose = sample_pose(_image_rng(seed, "regdb", pid, k))
                for m, (modality, folder, letter) in enumerate(
                    (("visible", "Visible", "v"), ("thermal", "Thermal", "t"))
                ):
                    # the thermal camera sits beside the visible one: same pose, slightly shifted box
                    shot = pose if m == 0 else replace(pose, dx=pose.dx + 0.03, dy=pose.dy + 0.01)
                    camera = REGDB_CAMERAS[modality]
                    rng_k = _image_rng(seed, "regdb", pid, k, m)
                    image = render_person(identity, modality, rng_k, size, camera=camera, pose=shot)
                    rel = f"{folder}/{pid}/{letter}_{pid:04d}_{k:02d}.{image_format}"
                    _save(image, tmp / rel)
                    files[pid][modality].append(rel)
        (tmp / "idx").mkdir()
        for trial in range(1, num_trials + 1):
            perm = np.random.default_rng([seed, _TAG["regdb"], 0, trial]).permutation(np.arange(1, total + 1))
            for split, pids in (("train", sorted(perm[:num_train_ids])), ("test", sorted(perm[num_train_ids:]))):
                for modality in ("visible", "thermal"):
                    lines = [f"{rel} {label}" for label, pid in enumerate(pids) for rel in files[int(pid)][modality]]
                    (tmp / "idx" / f"{split}_{modality}_{trial}.txt").write_text("\n".join(lines) + "\n")
    return SynthResult(Path(root), total, 2 * total * images_per_modality)


def _llcm_cameras(num_cameras: int) -> dict[int, dict[str, CameraStyle]]:
    """Per camera a dim, warm-cast visible sensor and a NIR sensor watching the same place."""
    cams = {}
    for c in range(1, num_cameras + 1):
        scene = "indoor" if c % 3 == 0 else "outdoor"
        light = 0.3 + 0.35 * ((c * 37) % 10) / 10  # low-light: 0.30 .. 0.62
        cams[c] = {
            "vis": CameraStyle("visible", scene, 30 + c, cast=(1.12, 1.0, 0.8), light=light, noise=0.035, blur=0.5),
            "nir": CameraStyle("nir", scene, 30 + c, noise=0.04, blur=0.6),
        }
    return cams


def _llcm_shots(rng: np.random.Generator, num_cameras: int, camera_prob: float) -> list[tuple[int, str]]:
    """(camera, 'vis'|'nir') pairs for one identity, with a cross-modal pair on two different cameras."""
    shots: set[tuple[int, str]] = set()
    nir_cams = [c for c in range(1, num_cameras + 1) if c != LLCM_NO_NIR_CAM]
    for c in range(1, num_cameras + 1):
        if rng.random() < camera_prob:
            kinds = ("vis", "nir", "both") if c != LLCM_NO_NIR_CAM else ("vis",)
            kind = str(rng.choice(kinds))
            shots |= {(c, "vis"), (c, "nir")} if kind == "both" else {(c, kind)}
    vis = {c for c, m in shots if m == "vis"}
    if not vis:
        vis = {int(rng.integers(1, num_cameras + 1))}
        shots.add((next(iter(vis)), "vis"))
    if not {c for c, m in shots if m == "nir"} - (vis if len(vis) == 1 else set()):
        shots.add((int(rng.choice([c for c in nir_cams if {c} != vis])), "nir"))
    return sorted(shots)


def write_llcm(
    root,
    num_train_ids: int = 32,
    num_test_ids: int = 16,
    images_per_camera: int = 3,
    num_cameras: int = 9,
    seed: int = 0,
    size: tuple[int, int] = (128, 64),
    camera_prob: float = 0.5,
    progress: bool = False,
) -> SynthResult:
    """Write an LLCM-style tree (format facts below, as the common LLCM loaders read it).

    - train: ``vis/<pid:04d>/<name>_vis.jpg`` and ``nir/<pid:04d>/<name>_nir.jpg``, listed in
      ``idx/train_vis.txt`` / ``idx/train_nir.txt`` as ``relative/path label`` (labels
      0..n-1 in pid order, equal across the two files);
    - test: ``test_vis/cam<K>/<pid:04d>/`` (K = 1..9) and ``test_nir/cam<K>/<pid:04d>/``
      (no NIR camera 3); ``idx/test_id.txt`` is one comma-separated line of ids;
    - file names ``<pid:04d>_c<KK>_s<hhmmss>_f<frame>_{vis,nir}.jpg``: loaders take the camera
      from the character after ``cam`` and the pid from the 4 characters after ``cam<K>/``.
    """
    counts: dict[str, Any] = dict(
        num_train_ids=num_train_ids, num_test_ids=num_test_ids, images_per_camera=images_per_camera
    )
    if isinstance(num_cameras, bool) or not isinstance(num_cameras, (int, np.integer)):
        raise SettingError(f"{setting_name('num_cameras')} must be an integer, got {num_cameras!r}")
    if not 2 <= num_cameras <= LLCM_MAX_CAMERAS:
        raise SettingError(
            f"{setting_name('num_cameras')} must be 2..{LLCM_MAX_CAMERAS} (LLCM loaders read one-digit camera "
            f"numbers), got {num_cameras}"
        )
    size = _validate(
        size, seed, camera_prob, shots=2 * num_cameras - 1, per_shot="images_per_camera", **counts
    )  # camera 3: no NIR
    total = num_train_ids + num_test_ids
    train, test = _split(seed, "llcm", total, num_test_ids)
    test_set, label = set(test), {pid: i for i, pid in enumerate(train)}
    cameras = _llcm_cameras(num_cameras)
    lists: dict[str, list[str]] = {"vis": [], "nir": []}
    count = 0
    with _building(root) as tmp:
        for pid in tqdm(range(1, total + 1), desc="llcm", disable=not progress):
            identity, rng = _identity(seed, "llcm", pid)
            for cam, kind in _llcm_shots(rng, num_cameras, camera_prob):
                camera = cameras[cam][kind]
                hour = int(rng.integers(8, 17)) if kind == "vis" else int(rng.integers(18, 24))
                clock = hour * 10000 + int(rng.integers(0, 60)) * 100 + int(rng.integers(0, 60))
                frame = int(rng.integers(0, 9000))
                for k in range(1, images_per_camera + 1):
                    name = f"{pid:04d}_c{cam:02d}_s{clock:06d}_f{frame + 3 * k:04d}_{kind}.jpg"
                    rel = f"test_{kind}/cam{cam}/{pid:04d}/{name}" if pid in test_set else f"{kind}/{pid:04d}/{name}"
                    key = ["vis", "nir"].index(kind)
                    rng_k = _image_rng(seed, "llcm", pid, cam, key, k)
                    image = render_person(identity, camera.modality, rng_k, size, camera=camera)
                    _save(image, tmp / rel)
                    count += 1
                    if pid not in test_set:
                        lists[kind].append(f"{rel} {label[pid]}")
        (tmp / "idx").mkdir()
        (tmp / "idx" / "train_vis.txt").write_text("\n".join(lists["vis"]) + "\n")
        (tmp / "idx" / "train_nir.txt").write_text("\n".join(lists["nir"]) + "\n")
        (tmp / "idx" / "test_id.txt").write_text(_id_line(test))
    return SynthResult(Path(root), total, count)
