"""Per-epoch learning rates of the three stages, as closed-form functions.

The reference training sets the learning rate once at the start of every epoch
from the epoch number alone, so a closed form is the whole scheduler state:
resuming at epoch ``e`` needs nothing but ``e``.
"""

from __future__ import annotations

import bisect
import math

from torch.optim import Optimizer

from csdn.train.config import TrainConfig


def _cosine_with_warmup(peak: float, epoch: int, epochs: int, config: TrainConfig) -> float:
    """Linear warm-up from ``warmup_lr`` over ``warmup_epochs``, then one cosine cycle of
    ``epochs`` epochs (counted from epoch 0) from ``peak`` to ``min_lr``; ``min_lr`` after it."""
    if epoch < config.warmup_epochs:
        return config.warmup_lr + epoch * (peak - config.warmup_lr) / config.warmup_epochs
    if epochs <= 0 or epoch >= epochs:
        return config.min_lr
    return config.min_lr + 0.5 * (peak - config.min_lr) * (1.0 + math.cos(math.pi * epoch / epochs))


def _warmup_multistep(epoch: int, config: TrainConfig) -> float:
    """Linear warm-up from ``stage3_warmup_factor`` x lr, then x ``gamma`` at each milestone."""
    factor = 1.0
    if epoch < config.stage3_warmup_epochs:
        alpha = epoch / config.stage3_warmup_epochs
        factor = config.stage3_warmup_factor * (1.0 - alpha) + alpha
    return config.stage3_lr * factor * config.gamma ** bisect.bisect_right(config.milestones, epoch)


def learning_rate(stage: int, epoch: int, config: TrainConfig | None = None) -> float:
    """Base learning rate of ``stage`` (1, 2 or 3) during ``epoch`` (0-based).

    This is the rate of the main parameter group; in stage 3 the heads run at
    ``head_lr_factor`` times it.
    """
    config = config or TrainConfig()
    if epoch < 0:
        raise ValueError(f"epoch must be >= 0, got {epoch}")
    if stage == 1:
        return _cosine_with_warmup(config.stage1_lr, epoch, config.stage1_epochs, config)
    if stage == 2:
        return _cosine_with_warmup(config.stage2_lr, epoch, config.stage2_epochs, config)
    if stage == 3:
        return _warmup_multistep(epoch, config)
    raise ValueError(f"stage must be 1, 2 or 3, got {stage!r}")


def apply_learning_rate(optimizer: Optimizer, stage: int, epoch: int, config: TrainConfig) -> float:
    """Set every parameter group to the stage's rate times the group's ``lr_factor``; return the base rate."""
    base = learning_rate(stage, epoch, config)
    for group in optimizer.param_groups:
        group["lr"] = base * group.get("lr_factor", 1.0)
    return base
