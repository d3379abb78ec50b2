"""Per-epoch learning rates of the three stages, as closed-form functions.

The reference training sets the learning rate once at the start of every epoch
from the epoch number alone, so a closed form is the whole scheduler state:
resuming at epoch ``e`` needs nothing but ``e``.

The authors' warm-ups and milestones are set for their stage lengths (60, 60 and
120 epochs). With ``scale_schedule`` (the default), a stage run for another number
of epochs stretches each such value that was left at the authors' setting by the
same factor, so a 4-epoch stage 3 still warms up, reaches its base rate and decays;
a value set by the user is used as given.
"""

from __future__ import annotations

import bisect
import dataclasses
import math
from dataclasses import dataclass
from typing import Any

from torch.optim import Optimizer

from csdn.train.config import TrainConfig

REFERENCE_EPOCHS = {1: 60, 2: 60, 3: 120}  # the stage lengths the authors' warm-ups and milestones are set for
_AUTHORS: dict[str, Any] = {field.name: field.default for field in dataclasses.fields(TrainConfig)}


@dataclass(frozen=True)
class StageSchedule:
    """The warm-up length and milestones one stage actually uses (milestones: stage 3 only)."""

    warmup_epochs: int
    milestones: tuple[int, ...]
    scaled: bool  # some value was stretched from the authors' setting to this stage's length

    def describe(self, stage: int, config: TrainConfig) -> str:
        """One line for the log: what was scaled, from what."""
        epochs = config.epochs(stage)
        if not self.scaled:
            return f"stage {stage}: {epochs} epochs, warm-up {self.warmup_epochs}" + (
                f", milestones {list(self.milestones)}" if stage == 3 else ""
            )
        warmup_field = "stage3_warmup_epochs" if stage == 3 else "warmup_epochs"
        text = (
            f"stage {stage}: {epochs} of the authors' {REFERENCE_EPOCHS[stage]} epochs, so its schedule is scaled "
            f"by {epochs / REFERENCE_EPOCHS[stage]:.3g}: warm-up {getattr(config, warmup_field)} -> {self.warmup_epochs}"
        )
        if stage == 3:
            text += f", milestones {list(config.milestones)} -> {list(self.milestones)}"
        return text + " (--no-scale-schedule keeps the authors' values)"


def _scaled(value: int, factor: float) -> int:
    return int(value * factor + 0.5)


def stage_schedule(stage: int, config: TrainConfig) -> StageSchedule:
    """The warm-up and milestones of ``stage`` under ``config`` (see the module docstring)."""
    epochs = config.epochs(stage)
    warmup_field = "stage3_warmup_epochs" if stage == 3 else "warmup_epochs"
    warmup, milestones = int(getattr(config, warmup_field)), tuple(config.milestones) if stage == 3 else ()
    factor = epochs / REFERENCE_EPOCHS[stage]
    if not config.scale_schedule or epochs == REFERENCE_EPOCHS[stage] or epochs == 0:
        return StageSchedule(warmup, milestones, scaled=False)
    scaled = False
    if warmup == _AUTHORS[warmup_field]:
        warmup, scaled = _scaled(warmup, factor), True
    if stage == 3 and milestones == tuple(_AUTHORS["milestones"]):
        milestones, scaled = tuple(_scaled(m, factor) for m in milestones), True
    return StageSchedule(warmup, milestones, scaled)


def _cosine_with_warmup(peak: float, epoch: int, epochs: int, warmup: int, config: TrainConfig) -> float:
    """Linear warm-up from ``warmup_lr`` over ``warmup`` epochs, then one cosine cycle of
    ``epochs`` epochs (counted from epoch 0) from ``peak`` to ``min_lr``; ``min_lr`` after it."""
    if epoch < warmup:
        return config.warmup_lr + epoch * (peak - config.warmup_lr) / warmup
    if epochs <= 0 or epoch >= epochs:
        return config.min_lr
    return config.min_lr + 0.5 * (peak - config.min_lr) * (1.0 + math.cos(math.pi * epoch / epochs))


def _warmup_multistep(epoch: int, schedule: StageSchedule, config: TrainConfig) -> float:
    """Linear warm-up from ``stage3_warmup_factor`` x lr, then x ``gamma`` at each milestone."""
    factor = 1.0
    if epoch < schedule.warmup_epochs:
        alpha = epoch / schedule.warmup_epochs
        factor = config.stage3_warmup_factor * (1.0 - alpha) + alpha
    return config.stage3_lr * factor * config.gamma ** bisect.bisect_right(schedule.milestones, epoch)


def learning_rate(stage: int, epoch: int, config: TrainConfig | None = None) -> float:
    """Base learning rate of ``stage`` (1, 2 or 3) during ``epoch`` (0-based).

    This is the rate of the main parameter group; in stage 3 the heads run at
    ``head_lr_factor`` times it.
    """
    config = config or TrainConfig()
    if epoch < 0:
        raise ValueError(f"epoch must be >= 0, got {epoch}")
    if stage not in (1, 2, 3):
        raise ValueError(f"stage must be 1, 2 or 3, got {stage!r}")
    schedule = stage_schedule(stage, config)
    if stage == 3:
        return _warmup_multistep(epoch, schedule, config)
    peak = config.stage1_lr if stage == 1 else config.stage2_lr
    return _cosine_with_warmup(peak, epoch, config.epochs(stage), schedule.warmup_epochs, config)


def apply_learning_rate(optimizer: Optimizer, stage: int, epoch: int, config: TrainConfig) -> float:
    """Set every parameter group to the stage's rate times the group's ``lr_factor``; return the base rate."""
    base = learning_rate(stage, epoch, config)
    for group in optimizer.param_groups:
        group["lr"] = base * group.get("lr_factor", 1.0)
    return base
