"""The datasets csdn reads, in one table: the name a user types -> the reader class.

Training (``resolve_train_set``), the evaluation protocol, the CLI's ``--dataset`` choices
and the model card's dataset titles all read this table, so adding a dataset is one reader
module (see :class:`csdn.data.reader.DatasetReader`) and one entry in :data:`READER_CLASSES`.
"""

from __future__ import annotations

from typing import Any

from csdn.data.folder import ImageFolder
from csdn.data.llcm import LLCM
from csdn.data.regdb import RegDB
from csdn.data.sysu import SYSUMM01

# classes whose instances are DatasetReaders; typed Any because their class attributes are read here
READER_CLASSES: tuple[Any, ...] = (SYSUMM01, RegDB, LLCM, ImageFolder)

DATASET_NAMES: tuple[str, ...] = tuple(cls.name for cls in READER_CLASSES)  # the canonical names, in order
# every accepted spelling (canonical name and aliases) -> reader
READERS: dict[str, Any] = {spelling: cls for cls in READER_CLASSES for spelling in (cls.name, *cls.aliases)}


def reader_for(name: str) -> Any:
    """The reader class (making :class:`~csdn.data.reader.DatasetReader` instances) a dataset name stands for
    (case and surrounding spaces ignored), or None."""
    return READERS.get(name.strip().lower())


def dataset_title(name: str) -> str:
    """``"sysu"`` -> ``"SYSU-MM01"``; a name of no registered dataset is kept as given."""
    reader = reader_for(str(name))
    return reader.title if reader is not None else str(name).strip()
