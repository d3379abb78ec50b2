"""What a dataset reader provides: the interface training, evaluation and the CLI rely on.

Readers are plain classes (no base class to inherit); this Protocol writes down the duck
type so a new dataset can be checked against it (``isinstance(reader, DatasetReader)``)
and type-checked. The class attributes describe the benchmark; ``metric`` names the
scoring rule in :data:`csdn.evaluation.metrics.METRICS` that its test protocol uses.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any, Protocol, runtime_checkable

from csdn.data.samples import Sample


@runtime_checkable
class DatasetReader(Protocol):
    """A dataset on disk: its protocol's searches (and, for training, ``.train`` or ``.visible``/``.infrared``)."""

    # read-only members, so a plain class attribute (or a property) of each provides them
    @property
    def name(self) -> str:
        """What users type: ``--dataset sysu``."""
        ...

    @property
    def title(self) -> str:
        """How the literature spells it: "SYSU-MM01"."""
        ...

    @property
    def aliases(self) -> tuple[str, ...]:
        """Other accepted spellings."""
        ...

    @property
    def metric(self) -> str:
        """The scoring rule: a key of :data:`csdn.evaluation.metrics.METRICS`."""
        ...

    @property
    def directions(self) -> tuple[str, ...]:
        """Search directions of the protocol, the first is the default."""
        ...

    @property
    def settings(self) -> tuple[str, ...]:
        """Keyword options ``search()`` takes (e.g. ``mode``, ``shots``)."""
        ...

    @property
    def trial_bound(self) -> bool:
        """A model is trained on one trial's split and tested on that trial only."""
        ...

    @property
    def trials(self) -> tuple[int, ...]:
        """Trials :func:`csdn.evaluate` scores by default."""
        ...

    def __init__(self, root: str | Path, *args: Any, **kwargs: Any) -> None: ...

    def search(self, direction: str, trial: int) -> tuple[list[Sample], list[Sample]]:
        """``(query, gallery)`` of one trial and direction (and the reader's ``settings`` as keywords)."""
        ...
