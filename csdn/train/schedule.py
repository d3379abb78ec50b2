"""Per-epoch learning rates of the three stages, as closed-form functions.

The reference training sets the learning rate once at the start of every epoch
from the epoch number alone, so a closed form is the whole scheduler state:
resuming at epoch ``e`` needs nothing but ``e``.
"""

from __future__ import annotations

import bisect
import math

from torch.optim import Optimizer

from csdn.train.config import FULL_EPOCHS, TrainConfig


def _shortened(stage: int, config: TrainConfig) -> bool:
    return config.scale_schedule and config.epochs(stage) < FULL_EPOCHS[stage - 1]


def _scaled(epochs_at_full: int, stage: int, config: TrainConfig) -> int:
    return round(epochs_at_full * config.epochs(stage) / FULL_EPOCHS[stage - 1])


def stage_warmup(stage: int, config: TrainConfig) -> int:
    """Warm-up epochs of ``stage`` as run: in a shortened stage scaled to its length, at least 1 when
    set, and always leaving one epoch at the base rate."""
    warmup = config.stage3_warmup_epochs if stage == 3 else config.warmup_epochs
    if not _shortened(stage, config) or warmup == 0:
        return warmup
    return min(max(1, _scaled(warmup, stage, config)), config.epochs(stage) - 1)


def stage3_milestones(config: TrainConfig) -> tuple[int, ...]:
    """Stage 3's learning-rate drops as run: in a shortened stage scaled to its length, after the warm-up."""
    if not _shortened(3, config):
        return config.milestones
    return tuple(max(_scaled(m, 3, config), stage_warmup(3, config) + 1) for m in config.milestones)


def schedule_note(stage: int, config: TrainConfig) -> str | None:
    """What scaling did to a shortened stage, for the log; None when nothing changed."""
    warmup = config.stage3_warmup_epochs if stage == 3 else config.warmup_epochs
    changes = []
    if stage_warmup(stage, config) != warmup:
        changes.append(f"warm-up {warmup} -> {stage_warmup(stage, config)} epochs")
    if stage == 3 and stage3_milestones(config) != config.milestones:
        changes.append(f"milestones {list(config.milestones)} -> {list(stage3_milestones(config))}")
    if not changes:
        return None
    return (
        f"stage {stage} runs {config.epochs(stage)} of the paper's {FULL_EPOCHS[stage - 1]} epochs: "
        + ", ".join(changes)
        + " (scaled to its length; --scale-schedule false keeps the absolute values)"
    )


def _cosine_with_warmup(peak: float, epoch: int, stage: int, config: TrainConfig) -> float:
    """Linear warm-up from ``warmup_lr`` over the stage's warm-up, then one cosine cycle of the
    stage's epochs (counted from epoch 0) from ``peak`` to ``min_lr``; ``min_lr`` after it."""
    warmup, epochs = stage_warmup(stage, config), config.epochs(stage)
    if epoch < warmup:
        return config.warmup_lr + epoch * (peak - config.warmup_lr) / warmup
    if epochs <= 0 or epoch >= epochs:
        return config.min_lr
    return config.min_lr + 0.5 * (peak - config.min_lr) * (1.0 + math.cos(math.pi * epoch / epochs))


def _warmup_multistep(epoch: int, config: TrainConfig) -> float:
    """Linear warm-up from ``stage3_warmup_factor`` x lr, then x ``gamma`` at each milestone."""
    factor = 1.0
    warmup = stage_warmup(3, config)
    if epoch < warmup:
        alpha = epoch / warmup
        factor = config.stage3_warmup_factor * (1.0 - alpha) + alpha
    return config.stage3_lr * factor * config.gamma ** bisect.bisect_right(stage3_milestones(config), epoch)


def learning_rate(stage: int, epoch: int, config: TrainConfig | None = None) -> float:
    """Base learning rate of ``stage`` (1, 2 or 3) during ``epoch`` (0-based).

    This is the rate of the main parameter group; in stage 3 the heads run at
    ``head_lr_factor`` times it.
    """
    config = config or TrainConfig()
    if epoch < 0:
        raise ValueError(f"epoch must be >= 0, got {epoch}")
    if stage == 1:
        return _cosine_with_warmup(config.stage1_lr, epoch, 1, config)
    if stage == 2:
        return _cosine_with_warmup(config.stage2_lr, epoch, 2, config)
    if stage == 3:
        return _warmup_multistep(epoch, config)
    raise ValueError(f"stage must be 1, 2 or 3, got {stage!r}")


def apply_learning_rate(optimizer: Optimizer, stage: int, epoch: int, config: TrainConfig) -> float:
    """Set every parameter group to the stage's rate times the group's ``lr_factor``; return the base rate."""
    base = learning_rate(stage, epoch, config)
    for group in optimizer.param_groups:
        group["lr"] = base * group.get("lr_factor", 1.0)
    return base
