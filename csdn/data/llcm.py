"""LLCM (low-light cross-modality): ``idx/`` training lists and per-camera test folders."""

from __future__ import annotations

from functools import cached_property
from pathlib import Path

from csdn.data.direction import INFRARED_TO_VISIBLE, VISIBLE_TO_INFRARED, parse_direction, split_direction
from csdn.data.layout import (
    Folder,
    Layout,
    camera_from_path,
    folder_samples,
    pick_gallery,
    read_id_list,
    read_index_file,
    scan_folders,
)
from csdn.data.samples import Sample, TrainSet, relabel

# Test cameras the reference protocol reads; it lists no near-infrared camera 3.
TEST_CAMERAS = {"visible": (1, 2, 3, 4, 5, 6, 7, 8, 9), "infrared": (1, 2, 4, 5, 6, 7, 8, 9)}
_TEST_DIR = {"visible": "test_vis", "infrared": "test_nir"}
_DESCRIPTION = (
    "<root>/idx/train_vis.txt and train_nir.txt (lines 'relative/path label', paths relative to <root>), "
    "<root>/idx/test_id.txt (one line of comma-separated identity numbers), and test images in "
    "<root>/test_vis/cam<K>/<pid:04d>/ (K = 1..9) and <root>/test_nir/cam<K>/<pid:04d>/ (K = 1, 2, 4..9)"
)


class LLCM:
    """Reader for LLCM and its protocols (10 trials, both search directions).

    - ``.train``: ``idx/train_vis.txt`` + ``idx/train_nir.txt``, relabelled 0..N-1; cameras
      from the ``cam<K>`` folder or the ``_c<KK>_`` file-name token (-1 if neither).
    - ``.query(direction)``: every test image of the direction's first modality.
    - ``.gallery(direction, trial, shots)``: per test identity and camera of the direction's
      second modality, ``shots`` random images drawn by ``random.Random(trial)``.
    - ``.search(direction, trial)``: ``(probes, gallery)`` as the reference code scores them.
      For ``infrared->visible`` that is ``(query, gallery)``; for ``visible->infrared`` the
      roles swap: the *sampled infrared* images are the probes and *every visible* test
      image is the gallery (see :meth:`search`).

    LLCM cameras record both modalities, so the metric ignores gallery images that share
    the probe's identity *and* camera (:func:`csdn.evaluation.metrics.eval_llcm`).
    """

    name = "llcm"
    title = "LLCM"
    aliases: tuple[str, ...] = ()
    metric = "llcm"
    trial_bound = False
    directions = (INFRARED_TO_VISIBLE, VISIBLE_TO_INFRARED)
    trials = tuple(range(10))
    settings = ("shots",)  # protocol options of search()

    def __init__(self, root: str | Path):
        self.root = Path(root)
        self.layout = Layout(self.title, self.root, _DESCRIPTION)
        self.layout.require_root()
        self._folders: dict[str, list[Folder]] = {}

    def __repr__(self) -> str:
        return f"LLCM({str(self.root)!r})"

    def _train_list(self, name: str, modality: str) -> list[Sample]:
        entries = read_index_file(self.layout, f"idx/{name}")
        return [Sample(path, label, camera_from_path(path), modality) for path, label in entries]

    @cached_property
    def train(self) -> TrainSet:
        return relabel(self._train_list("train_vis.txt", "visible"), self._train_list("train_nir.txt", "infrared"))

    @cached_property
    def test_ids(self) -> list[int]:
        return read_id_list(self.layout, "idx/test_id.txt")

    def _test_folders(self, modality: str) -> list[Folder]:
        if modality not in self._folders:
            base = self.root / _TEST_DIR[modality]
            if not base.is_dir():
                raise self.layout.error(f"missing test folder {base}")
            folders = scan_folders([(k, base / f"cam{k}") for k in TEST_CAMERAS[modality]], self.test_ids)
            if not folders:
                raise self.layout.error(f"no test images under {base}/cam<K>/<pid:04d>/ for the ids in idx/test_id.txt")
            self._folders[modality] = folders
        return self._folders[modality]

    def query(self, direction: str = INFRARED_TO_VISIBLE) -> list[Sample]:
        """Every test image of the direction's first modality (the reference's "query" list).

        These are the probes of ``infrared->visible`` but the *gallery* of
        ``visible->infrared``; :meth:`search` says which side is scored as probes.
        """
        modality = split_direction(direction)[0]
        return folder_samples(self._test_folders(modality), modality)

    def gallery(self, direction: str = INFRARED_TO_VISIBLE, trial: int = 0, shots: int = 1) -> list[Sample]:
        """``shots`` images per identity and camera of the direction's second modality, drawn for ``trial``.

        The reference's per-trial "gallery" list: the gallery of ``infrared->visible``,
        but the *probes* of ``visible->infrared`` (:meth:`search`).
        """
        modality = split_direction(direction)[1]
        return pick_gallery(self._test_folders(modality), modality, trial, shots)

    def search(self, direction: str, trial: int, *, shots: int = 1) -> tuple[list[Sample], list[Sample]]:
        """``(probes, gallery)`` of one trial and direction, the way the LLCM authors' code scores them.

        - ``infrared->visible``: every infrared test image probes the visible images drawn
          for ``trial`` (``shots`` per identity and camera).
        - ``visible->infrared``: the infrared images drawn for ``trial`` (``shots`` per identity and
          camera) are the probes, and *every* visible test image is the gallery. The
          reference (``test.py`` with ``test_mode = [2, 1]``, its "VIS to IR") loads all
          visible images as its query list and draws the infrared side per trial, but hands
          the metric the transposed similarity matrix with labels and cameras swapped, so
          each drawn infrared image ranks the visible ones. Published LLCM visible->infrared
          numbers are this reading, not visible probes ranking the drawn infrared images.
        """
        full, sampled = self.query(direction), self.gallery(direction, trial, shots)
        if parse_direction(direction) == VISIBLE_TO_INFRARED:
            return sampled, full
        return full, sampled
