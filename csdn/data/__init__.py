"""Dataset readers for SYSU-MM01, RegDB, LLCM and identity-per-folder image sets, and the synthetic generator."""

from csdn.data.direction import DIRECTIONS, parse_direction
from csdn.data.folder import ImageFolder
from csdn.data.layout import DatasetLayoutError
from csdn.data.llcm import LLCM
from csdn.data.regdb import RegDB
from csdn.data.samples import UNKNOWN_CAMERA, Sample, TrainSet
from csdn.data.sysu import SYSUMM01, load_sysu_arrays

# benchmark name (and accepted spellings) -> reader; one table for training and evaluation
READERS = {"sysu": SYSUMM01, "sysu-mm01": SYSUMM01, "sysumm01": SYSUMM01, "regdb": RegDB, "llcm": LLCM,
           "folder": ImageFolder}


def reader_for(name: str) -> type | None:
    """The reader class a benchmark name stands for (case and surrounding spaces ignored), or None."""
    return READERS.get(name.strip().lower())


__all__ = [
    "DIRECTIONS",
    "DatasetLayoutError",
    "ImageFolder",
    "LLCM",
    "READERS",
    "RegDB",
    "SYSUMM01",
    "Sample",
    "TrainSet",
    "UNKNOWN_CAMERA",
    "load_sysu_arrays",
    "parse_direction",
    "reader_for",
]
