"""SYSU-MM01 as distributed, its standard all/indoor-search protocols, and the preprocessed training arrays."""

from __future__ import annotations

from collections.abc import Sequence
from functools import cached_property
from pathlib import Path

import numpy as np

from csdn.data.direction import INFRARED_TO_VISIBLE, parse_direction
from csdn.data.layout import Folder, Layout, folder_samples, pick_gallery, read_id_list, scan_folders
from csdn.data.samples import UNKNOWN_CAMERA, Sample, TrainSet, relabel

VISIBLE_CAMERAS = (1, 2, 4, 5)
INFRARED_CAMERAS = (3, 6)
GALLERY_CAMERAS = {"all": (1, 2, 4, 5), "indoor": (1, 2)}
# The arrays the widely used ``pre_process_sysu.py`` writes next to the dataset.
ARRAY_FILES = {
    "visible": ("train_rgb_resized_img.npy", "train_rgb_resized_label.npy"),
    "infrared": ("train_ir_resized_img.npy", "train_ir_resized_label.npy"),
}
_DESCRIPTION = (
    "<root>/cam1 ... cam6/<pid:04d>/*.jpg (cameras 1, 2, 4, 5 visible; 3, 6 infrared) and "
    "<root>/exp/train_id.txt, val_id.txt, test_id.txt (each one line of comma-separated identity numbers)"
)


def _check_mode(mode: str) -> str:
    if mode not in GALLERY_CAMERAS:
        raise ValueError(f"unknown SYSU-MM01 search mode {mode!r}; choose 'all' or 'indoor'")
    return mode


class SYSUMM01:
    """Reader for SYSU-MM01 and its protocols.

    - ``.train``: identities of ``train_id.txt`` + ``val_id.txt``, relabelled 0..N-1 (395 ids).
    - ``.query(mode)``: every infrared (camera 3 and 6) image of the test identities (3803).
    - ``.gallery(mode, trial, shots)``: per test identity and visible camera (1, 2, 4, 5 for
      ``"all"``, 1, 2 for ``"indoor"``), ``shots`` random images drawn by ``random.Random(trial)``.

    ``train_source="arrays"`` reads the training set from the preprocessed
    ``train_{rgb,ir}_resized_{img,label}.npy`` files in ``root`` instead (see
    :func:`load_sysu_arrays`).
    """

    name = "sysu"
    title = "SYSU-MM01"
    aliases = ("sysu-mm01", "sysumm01")
    metric = "sysu"
    trial_bound = False
    directions = (INFRARED_TO_VISIBLE,)
    trials = tuple(range(10))
    settings = ("mode", "shots")  # protocol options of search()

    def __init__(self, root: str | Path, *, train_source: str = "files"):
        self.root = Path(root)
        self.layout = Layout(self.title, self.root, _DESCRIPTION)
        self.layout.require_root()
        if train_source not in ("files", "arrays"):
            raise ValueError(f"train_source must be 'files' or 'arrays', got {train_source!r}")
        self.train_source = train_source
        missing = [f"cam{k}" for k in VISIBLE_CAMERAS + INFRARED_CAMERAS if not (self.root / f"cam{k}").is_dir()]
        if missing:
            raise self.layout.error(f"missing camera folder(s) {', '.join(missing)}")
        self._folders: dict[tuple[int, ...], list[Folder]] = {}

    def __repr__(self) -> str:
        return f"SYSUMM01({str(self.root)!r})"

    @cached_property
    def train(self) -> TrainSet:
        if self.train_source == "arrays":
            return load_sysu_arrays(self.root)
        ids = read_id_list(self.layout, "exp/train_id.txt") + read_id_list(self.layout, "exp/val_id.txt")
        visible = folder_samples(scan_folders(self._cameras(VISIBLE_CAMERAS), ids), "visible")
        infrared = folder_samples(scan_folders(self._cameras(INFRARED_CAMERAS), ids), "infrared")
        if not visible or not infrared:
            empty = "visible (cam1, 2, 4, 5)" if not visible else "infrared (cam3, 6)"
            raise self.layout.error(
                f"no {empty} training images in the <pid:04d> folders of exp/train_id.txt + val_id.txt"
            )
        return relabel(visible, infrared)

    @cached_property
    def test_ids(self) -> list[int]:
        return read_id_list(self.layout, "exp/test_id.txt")

    def _cameras(self, numbers: Sequence[int]) -> list[tuple[int, Path]]:
        return [(k, self.root / f"cam{k}") for k in numbers]

    def _test_folders(self, cameras: tuple[int, ...]) -> list[Folder]:
        if cameras not in self._folders:
            folders = scan_folders(self._cameras(cameras), self.test_ids)
            if not folders:
                names = ", ".join(f"cam{k}" for k in cameras)
                raise self.layout.error(f"no test images under {names}/<pid:04d>/ for the ids in exp/test_id.txt")
            self._folders[cameras] = folders
        return self._folders[cameras]

    def query(self, mode: str = "all") -> list[Sample]:
        """All infrared test images (cameras 3 and 6; the same for both search modes)."""
        _check_mode(mode)
        return folder_samples(self._test_folders(INFRARED_CAMERAS), "infrared")

    def gallery(self, mode: str = "all", trial: int = 0, shots: int = 1) -> list[Sample]:
        """The visible gallery of one trial: single-shot (``shots=1``) or multi-shot (``shots=10``)."""
        return pick_gallery(self._test_folders(GALLERY_CAMERAS[_check_mode(mode)]), "visible", trial, shots)

    def search(
        self, direction: str, trial: int, *, mode: str = "all", shots: int = 1
    ) -> tuple[list[Sample], list[Sample]]:
        """``(query, gallery)`` of one trial; SYSU-MM01 searches infrared queries in a visible gallery."""
        if parse_direction(direction) != INFRARED_TO_VISIBLE:
            raise ValueError(
                "the SYSU-MM01 protocol searches infrared queries in a visible gallery ('infrared->visible') only"
            )
        return self.query(mode), self.gallery(mode, trial, shots)


def _read_array(layout: Layout, name: str, mmap: bool) -> np.ndarray:
    path = layout.require_file(name, "a NumPy .npy array written by the SYSU-MM01 preprocessing script")
    try:
        return np.load(path, mmap_mode="r" if mmap else None, allow_pickle=False)
    except (ValueError, OSError) as err:
        raise layout.error(f"cannot read {path} as a .npy array ({err})") from None


def load_sysu_arrays(directory: str | Path) -> TrainSet:
    """The SYSU-MM01 training set from the preprocessed arrays in ``directory``.

    ``train_rgb_resized_img.npy`` / ``train_ir_resized_img.npy`` hold ``N x H x W x 3``
    uint8 images (288x144 from the usual script) and the ``*_label.npy`` files their
    identity labels. The arrays are memory-mapped and each :class:`Sample` carries its
    row in ``.image`` (``.path`` is ``"<file>#<row>"``); cameras are not stored, so
    ``.camid`` is ``UNKNOWN_CAMERA`` (-1).
    """
    layout = Layout(
        "SYSU-MM01 training arrays",
        Path(directory),
        "<dir>/train_rgb_resized_img.npy, train_rgb_resized_label.npy, train_ir_resized_img.npy, "
        "train_ir_resized_label.npy (images N x H x W x 3 uint8, labels N integers)",
    )
    layout.require_root()
    samples: dict[str, list[Sample]] = {}
    for modality, (image_name, label_name) in ARRAY_FILES.items():
        images = _read_array(layout, image_name, mmap=True)
        labels = _read_array(layout, label_name, mmap=False)
        if images.ndim != 4 or images.shape[-1] != 3 or images.dtype != np.uint8:
            raise layout.error(f"{image_name} must be N x H x W x 3 uint8, found {images.dtype} {tuple(images.shape)}")
        if labels.ndim != 1 or not np.issubdtype(labels.dtype, np.integer) or len(labels) != len(images):
            raise layout.error(
                f"{label_name} must hold one integer label per image of {image_name} ({len(images)}), "
                f"found {labels.dtype} {tuple(labels.shape)}"
            )
        path = str(layout.root / image_name)
        samples[modality] = [
            Sample(f"{path}#{row}", int(label), UNKNOWN_CAMERA, modality, images[row])
            for row, label in enumerate(labels)
        ]
    return relabel(samples["visible"], samples["infrared"])
