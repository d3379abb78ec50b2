"""What a dataset reader provides: the interface training, evaluation and the CLI rely on.

Readers are plain classes (no base class to inherit); this Protocol writes down the duck
type so a new dataset can be checked against it (``isinstance(reader, DatasetReader)``)
and type-checked. The class attributes describe the benchmark; ``metric`` names the
scoring rule in :data:`csdn.evaluation.metrics.METRICS` that its test protocol uses.
"""

from __future__ import annotations

from typing import Any, ClassVar, Protocol, runtime_checkable

from csdn.data.samples import Sample


@runtime_checkable
class DatasetReader(Protocol):
    """A dataset on disk: its protocol's searches (and, for training, ``.train`` or ``.visible``/``.infrared``)."""

    name: ClassVar[str]  # what users type: ``--dataset sysu``
    title: ClassVar[str]  # how the literature spells it: "SYSU-MM01"
    aliases: ClassVar[tuple[str, ...]]  # other accepted spellings
    metric: ClassVar[str]  # key of csdn.evaluation.metrics.METRICS
    directions: tuple[str, ...]  # search directions of the protocol, the first is the default
    trials: tuple[int, ...]  # trials csdn.evaluate scores by default
    settings: tuple[str, ...]  # keyword options search() takes (e.g. "mode", "shots")
    trial_bound: ClassVar[bool]  # a model is trained on one trial's split and tested on that trial only

    def search(self, direction: str, trial: int, **options: Any) -> tuple[list[Sample], list[Sample]]:
        """``(query, gallery)`` of one trial and direction."""
        ...
