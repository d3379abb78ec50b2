"""RegDB: ten random identity splits, each listed in ``idx/`` files, searched in both directions."""

from __future__ import annotations

from functools import cached_property
from pathlib import Path

from csdn.data.direction import INFRARED_TO_VISIBLE, VISIBLE_TO_INFRARED, split_direction
from csdn.data.layout import Layout, is_integer, read_index_file
from csdn.data.samples import Sample, TrainSet, relabel

# RegDB's two co-located cameras; the metric never needs them, but samples carry them.
CAMERA = {"visible": 1, "infrared": 2}
_FILE_WORD = {"visible": "visible", "infrared": "thermal"}
_DESCRIPTION = (
    "<root>/idx/train_visible_<t>.txt, train_thermal_<t>.txt, test_visible_<t>.txt, test_thermal_<t>.txt "
    "for trials t = 1..10, each line 'relative/path label' (e.g. 'Visible/1/female_back_v_06_1.bmp 0'), "
    "paths relative to <root>"
)


def _check_trial(trial: int) -> int:
    if not is_integer(trial) or trial < 1:
        raise ValueError(f"RegDB trials are numbered 1..10, got {trial!r}")
    return int(trial)


class RegDB:
    """Reader for RegDB; ``trial`` (1-10) picks the identity split of ``.train`` and the default protocol.

    A RegDB model is trained on one split and tested on that split's test half, so
    :func:`csdn.evaluate` scores only ``trial`` unless asked for more trials (the
    other splits' test halves overlap this split's training identities).
    ``.query(direction, trial)`` / ``.gallery(direction, trial)``: the test images
    of the query / gallery modality; the gallery is the whole test half, no sampling.
    """

    name = "regdb"
    title = "RegDB"
    aliases: tuple[str, ...] = ()
    metric = "regdb"
    trial_bound = True  # the other splits' test halves overlap this split's training identities
    directions = (VISIBLE_TO_INFRARED, INFRARED_TO_VISIBLE)
    settings: tuple[str, ...] = ()  # protocol options of search(); the gallery is the whole test half

    def __init__(self, root: str | Path, trial: int = 1):
        self.root = Path(root)
        self.layout = Layout(self.title, self.root, _DESCRIPTION)
        self.layout.require_root()
        self.trial = _check_trial(trial)
        self._lists: dict[tuple[str, str, int], list[Sample]] = {}

    def __repr__(self) -> str:
        return f"RegDB({str(self.root)!r}, trial={self.trial})"

    @property
    def trials(self) -> tuple[int, ...]:
        """Trials :func:`csdn.evaluate` scores by default: the split this reader was made for."""
        return (self.trial,)

    def _list(self, split: str, modality: str, trial: int) -> list[Sample]:
        trial = _check_trial(trial)
        key = (split, modality, trial)
        if key not in self._lists:
            entries = read_index_file(self.layout, f"idx/{split}_{_FILE_WORD[modality]}_{trial}.txt")
            self._lists[key] = [Sample(path, label, CAMERA[modality], modality) for path, label in entries]
        return self._lists[key]

    @cached_property
    def train(self) -> TrainSet:
        return relabel(self._list("train", "visible", self.trial), self._list("train", "infrared", self.trial))

    def query(self, direction: str = VISIBLE_TO_INFRARED, trial: int | None = None) -> list[Sample]:
        return self._list("test", split_direction(direction)[0], self.trial if trial is None else trial)

    def gallery(self, direction: str = VISIBLE_TO_INFRARED, trial: int | None = None) -> list[Sample]:
        return self._list("test", split_direction(direction)[1], self.trial if trial is None else trial)

    def identities(self, split: str, trial: int) -> set[str]:
        """The people of one half (``"train"`` / ``"test"``) of a trial, by their image folder.

        Training lists relabel identities 0..n-1 per trial while test lists keep the raw
        numbers, so labels cannot be compared across trials; the folder names can.
        """
        return {
            Path(s.path).parent.name for modality in ("visible", "infrared") for s in self._list(split, modality, trial)
        }

    def search(self, direction: str, trial: int) -> tuple[list[Sample], list[Sample]]:
        """``(query, gallery)`` of one trial and direction."""
        return self.query(direction, trial), self.gallery(direction, trial)
