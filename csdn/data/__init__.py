"""Dataset readers for SYSU-MM01, RegDB, LLCM and identity-per-folder image sets, and the synthetic generator."""

from csdn.data.catalog import DATASET_NAMES, READERS, dataset_title, reader_for
from csdn.data.direction import DIRECTIONS, parse_direction
from csdn.data.folder import ImageFolder
from csdn.data.layout import DatasetLayoutError
from csdn.data.llcm import LLCM
from csdn.data.reader import DatasetReader
from csdn.data.regdb import RegDB
from csdn.data.samples import UNKNOWN_CAMERA, Sample, TrainSet
from csdn.data.sysu import SYSUMM01, load_sysu_arrays

__all__ = [
    "DATASET_NAMES",
    "DIRECTIONS",
    "DatasetReader",
    "DatasetLayoutError",
    "ImageFolder",
    "LLCM",
    "READERS",
    "RegDB",
    "SYSUMM01",
    "Sample",
    "TrainSet",
    "dataset_title",
    "UNKNOWN_CAMERA",
    "load_sysu_arrays",
    "parse_direction",
    "reader_for",
]
