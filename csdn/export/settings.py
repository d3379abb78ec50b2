"""The export's settings and limits, apart from the code that needs torch: the CLI offers them as
option choices and defaults where torch is not installed."""

from __future__ import annotations

from dataclasses import dataclass

OPSETS = range(13, 21)  # per-channel int8 needs 13; 20 is the newest the TorchScript exporter writes
DEFAULT_OPSET = 17

VERIFY_IDENTITIES = 100
MIN_VERIFY_IDENTITIES, MAX_VERIFY_IDENTITIES = 10, 2000  # 2000: 4000 renders, ~10 min and ~0.5 GB at 288x144


@dataclass(frozen=True)
class Floors:
    """What a reduced-precision graph must reach on the synthetic gallery."""

    cosine: float  # smallest cosine between an artifact embedding and the PyTorch one
    top1: float  # share of queries with the same top-1 gallery match as PyTorch


FLOORS = {"fp16": Floors(cosine=0.999, top1=0.99), "int8": Floors(cosine=0.98, top1=0.97)}
