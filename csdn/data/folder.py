"""A user's own images as a dataset: ``<root>/visible/<pid>/*`` and ``<root>/infrared/<pid>/*``.

The identity is the integer name of the folder an image sits in (sub-folders below it
are searched too). The same folder trains (``csdn train --dataset folder``) and tests
(``csdn eval --dataset folder``): every image of the query modality probes every image of
the other, scored like RegDB (no camera filtering: a cross-modality search never meets
the same camera, and a folder does not record cameras).
"""

from __future__ import annotations

from functools import cached_property
from pathlib import Path

from csdn.data.direction import INFRARED_TO_VISIBLE, VISIBLE_TO_INFRARED, split_direction
from csdn.data.layout import Layout
from csdn.data.samples import UNKNOWN_CAMERA, Sample
from csdn.images.files import images_in

_DESCRIPTION = (
    "<root>/visible/<pid>/<images> and <root>/infrared/<pid>/<images>, <pid> an integer folder name "
    "(e.g. visible/0007/cam1_0001.jpg); images may sit in sub-folders of <pid>; hidden files are skipped"
)


class ImageFolder:
    """Reader for an identity-per-folder dataset of both modalities (one trial, both directions).

    ``.visible`` / ``.infrared`` hold the images with their folders' identities (training
    takes them as they are); ``.search(direction)`` gives every image of the query modality
    against every image of the gallery modality.
    """

    name = "folder"
    title = "image folder"
    aliases: tuple[str, ...] = ()
    metric = "regdb"  # no camera filtering (see the module docstring)
    trial_bound = False
    directions = (INFRARED_TO_VISIBLE, VISIBLE_TO_INFRARED)
    settings: tuple[str, ...] = ()
    trials = (0,)

    def __init__(self, root: str | Path):
        self.root = Path(root)
        self.layout = Layout(self.title, self.root, _DESCRIPTION)
        self.layout.require_root()

    def __repr__(self) -> str:
        return f"ImageFolder({str(self.root)!r})"

    def images(self, modality: str) -> list[Sample]:
        """Every image of one modality with the identity of its folder, in sorted order."""
        folder = self.root / modality
        if not folder.is_dir():
            raise self.layout.error(f"missing the folder {folder}")
        samples: list[Sample] = []
        for pid_dir in sorted(p for p in folder.iterdir() if p.is_dir() and not p.name.startswith(".")):
            if not pid_dir.name.isdigit():
                raise self.layout.error(f"identity folders must be named by an integer id, found {pid_dir}")
            pid = int(pid_dir.name)
            samples += [Sample(str(path), pid, UNKNOWN_CAMERA, modality) for path in images_in(pid_dir)]
        if not samples:
            raise self.layout.error(f"no images in {folder}")
        return samples

    @cached_property
    def _by_modality(self) -> dict[str, list[Sample]]:
        return {modality: self.images(modality) for modality in ("visible", "infrared")}

    @property
    def visible(self) -> list[Sample]:
        return self._by_modality["visible"]

    @property
    def infrared(self) -> list[Sample]:
        return self._by_modality["infrared"]

    def search(self, direction: str, trial: int = 0) -> tuple[list[Sample], list[Sample]]:
        """``(query, gallery)``: every image of the query modality, every image of the other."""
        if trial not in self.trials:
            raise ValueError(f"an image folder has one trial, 0; got {trial!r}")
        query, gallery = split_direction(direction)
        return self._by_modality[query], self._by_modality[gallery]
