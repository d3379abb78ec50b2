"""The CSDN network: CLIP's code (loaded without torchvision), the building blocks, and the module.

Inference speed-ups live in :mod:`csdn.inference`, weight files in :mod:`csdn.io` and
:mod:`csdn.hub`: this package is the architecture alone.
"""

from csdn.model.network import CSDN, TrainOutput

__all__ = ["CSDN", "TrainOutput"]
