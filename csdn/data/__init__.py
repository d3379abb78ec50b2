"""Dataset readers for SYSU-MM01, RegDB and LLCM, and the synthetic generator."""

from csdn.data.direction import DIRECTIONS, parse_direction
from csdn.data.layout import DatasetLayoutError
from csdn.data.llcm import LLCM
from csdn.data.regdb import RegDB
from csdn.data.samples import UNKNOWN_CAMERA, Sample, TrainSet
from csdn.data.sysu import SYSUMM01, load_sysu_arrays

__all__ = [
    "DIRECTIONS",
    "DatasetLayoutError",
    "LLCM",
    "RegDB",
    "SYSUMM01",
    "Sample",
    "TrainSet",
    "UNKNOWN_CAMERA",
    "load_sysu_arrays",
    "parse_direction",
]
