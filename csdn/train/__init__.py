"""Training: the three-stage CSDN recipe (prompts, SII fusion, image model).

``fit`` runs it end to end, ``TrainConfig`` holds the paper's hyper-parameters,
``learning_rate`` gives each stage's schedule in closed form and ``load_model`` reads
what a run made (its folder, ``model/`` or a checkpoint). The default
recipe reproduces the authors' training step at nengdong96/CSDN commit 2224959
(MSEL included in stage 3). The names are imported on first use, so the settings
(``csdn.train.config``) load without torch.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from csdn.system.lazy import lazy_attributes

if TYPE_CHECKING:
    from csdn.train.config import TrainConfig
    from csdn.train.runmodel import load_model
    from csdn.train.schedule import learning_rate
    from csdn.train.trainer import fit

_LAZY = {
    "TrainConfig": "csdn.train.config",
    "load_model": "csdn.train.runmodel",
    "learning_rate": "csdn.train.schedule",
    "fit": "csdn.train.trainer",
}

__all__ = ["TrainConfig", "fit", "learning_rate", "load_model"]

__getattr__ = lazy_attributes(__name__, globals(), _LAZY)
