"""Hyper-parameters of the three-stage CSDN training, with the paper's values as defaults."""

from __future__ import annotations

import dataclasses
import json
from dataclasses import dataclass
from typing import Any

from csdn.config import reject_unknown_fields
from csdn.errors import setting_name

AUTOCAST_PRECISIONS = ("fp32", "bf16", "fp16")  # TrainConfig.precision: autocast during training
FULL_EPOCHS = (60, 60, 120)  # the paper's stage lengths, for which warm-up and milestones are set


@dataclass(frozen=True)
class Recipe:
    """The points where the authors' training code departs from what it evidently means to do.

    ``reference`` keeps each of them, so a run reproduces the authors' numbers;
    ``clean`` corrects each one. Everything else is shared by both recipes.
    """

    train_bnneck_bias: bool  # both heads' BatchNorm biases are in the stage-3 head group
    stable_triplet: bool  # masked-softmax WRT triplet instead of the authors' guarded formula
    stage2_features_in_train_mode: bool  # BatchNorm batch statistics (and running-stat updates)
    text_classifier_dropout: bool  # SII dropout active while the fixed stage-3 classifier is computed


RECIPES = {
    "reference": Recipe(
        train_bnneck_bias=True, stable_triplet=False, stage2_features_in_train_mode=True, text_classifier_dropout=True
    ),
    "clean": Recipe(
        train_bnneck_bias=False, stable_triplet=True, stage2_features_in_train_mode=False, text_classifier_dropout=False
    ),
}


@dataclass
class TrainConfig:
    """Everything that changes the arithmetic of a training run (and nothing that does not).

    Defaults reproduce the authors' training code (``recipe="reference"``):
    8 identities x 4 images per modality, stage 1/2 at lr 3e-4 (cosine to 1e-6,
    5 warm-up epochs from 1e-5) for 60 epochs each, stage 3 at lr 3e-4 (heads x2),
    10 warm-up epochs from 0.01x, x0.1 at epochs 40 and 70, 120 epochs, and the
    stage-3 loss of their ``train()``: identity CE on both heads, 0.15 x WRT triplet
    on both, 0.05 / 0.1 x the fused-text classifier on visible / infrared
    projections. MSEL is off (``msel_weight=0``): the authors ship ``tools/MSEL.py``
    but their training step never calls it. ``recipe="clean"`` corrects the
    authors' quirks listed in :class:`Recipe`. A stage with 0 epochs is skipped.
    """

    recipe: str = "reference"
    seed: int = 1
    # identity sampler (stage 3): P identities x K images per modality and rank
    ids_per_batch: int = 8
    images_per_id: int = 4
    steps_per_epoch: int | None = None  # default: the larger modality's image count // (P*K*world) + 1
    # stage 1: prompt learners
    stage1_epochs: int = 60
    stage1_lr: float = 3e-4
    stage1_weight_decay: float = 1e-4
    stage1_batch_size: int = 32  # features per modality and step; also the extraction batch of stages 1/2
    # stage 2: SII fusion
    stage2_epochs: int = 60
    stage2_lr: float = 3e-4
    stage2_weight_decay: float = 1e-4
    stage2_batch_size: int = 64  # features (both modalities pooled) per step
    # stage 1/2 schedule
    warmup_epochs: int = 5
    warmup_lr: float = 1e-5
    min_lr: float = 1e-6
    # stage 3: image model
    stage3_epochs: int = 120
    stage3_lr: float = 3e-4
    stage3_weight_decay: float = 5e-4
    head_lr_factor: float = 2.0
    stage3_warmup_epochs: int = 10
    stage3_warmup_factor: float = 0.01
    milestones: tuple[int, ...] = (40, 70)
    gamma: float = 0.1
    # a stage shorter than FULL_EPOCHS runs its warm-up and milestones scaled to its length (csdn.train.schedule)
    scale_schedule: bool = True
    # stage 3 loss weights (0 disables a term)
    id_weight: float = 1.0
    msel_weight: float = 0.0  # the paper's MSEL term; the authors' training code leaves it out
    triplet_weight: float = 0.15
    visible_i2t_weight: float = 0.05
    infrared_i2t_weight: float = 0.1
    label_smoothing: float = 0.0
    # augmentation (stage 3)
    pad: int = 10
    flip_prob: float = 0.5
    erasing_prob: float = 0.5
    gray_prob: float = 0.5
    # numerics
    precision: str = "fp32"  # "bf16" autocast on CPU or CUDA, "fp16" on CUDA only
    feature_batch_size: int = 32  # identities per batch when the fixed stage-3 text classifier is computed

    def __post_init__(self) -> None:
        self.milestones = tuple(int(m) for m in self.milestones)
        self.validate()

    @property
    def rules(self) -> Recipe:
        """What :attr:`recipe` decides (see :class:`Recipe`)."""
        return RECIPES[self.recipe]

    @property
    def stage_epochs(self) -> tuple[int, int, int]:
        return (self.stage1_epochs, self.stage2_epochs, self.stage3_epochs)

    def epochs(self, stage: int) -> int:
        if stage not in (1, 2, 3):
            raise ValueError(f"stage must be 1, 2 or 3, got {stage!r}")
        return self.stage_epochs[stage - 1]

    def validate(self) -> None:
        """Reject values that cannot train, naming the field."""
        if self.recipe not in RECIPES:
            raise ValueError(f"{setting_name('recipe')} must be one of {', '.join(RECIPES)}, got {self.recipe!r}")
        positive_ints = ("ids_per_batch", "stage1_batch_size", "stage2_batch_size", "feature_batch_size")
        for name in positive_ints:
            if int(getattr(self, name)) < 1:
                raise ValueError(f"{setting_name(name)} must be at least 1, got {getattr(self, name)}")
        if self.images_per_id < 2:
            raise ValueError(
                f"{setting_name('images_per_id')} must be at least 2 (MSEL and triplet need positives), got {self.images_per_id}"
            )
        if self.steps_per_epoch is not None and self.steps_per_epoch < 1:
            raise ValueError(
                f"{setting_name('steps_per_epoch')} must be at least 1 or None, got {self.steps_per_epoch}"
            )
        for name in ("stage1_epochs", "stage2_epochs", "stage3_epochs", "warmup_epochs", "stage3_warmup_epochs", "pad"):
            if int(getattr(self, name)) < 0:
                raise ValueError(f"{setting_name(name)} must be >= 0, got {getattr(self, name)}")
        for name in (
            "stage1_lr",
            "stage2_lr",
            "stage3_lr",
            "warmup_lr",
            "min_lr",
            "head_lr_factor",
            "gamma",
            "stage1_weight_decay",
            "stage2_weight_decay",
            "stage3_weight_decay",
            "stage3_warmup_factor",
            "id_weight",
            "msel_weight",
            "triplet_weight",
            "visible_i2t_weight",
            "infrared_i2t_weight",
        ):
            if float(getattr(self, name)) < 0:
                raise ValueError(f"{setting_name(name)} must be >= 0, got {getattr(self, name)}")
        for name in ("flip_prob", "erasing_prob", "gray_prob", "label_smoothing"):
            if not 0.0 <= float(getattr(self, name)) <= 1.0:
                raise ValueError(f"{setting_name(name)} must lie in [0, 1], got {getattr(self, name)}")
        weights = (
            self.id_weight,
            self.msel_weight,
            self.triplet_weight,
            self.visible_i2t_weight,
            self.infrared_i2t_weight,
        )
        if self.stage3_epochs and not any(weights):
            raise ValueError(
                f"every stage-3 loss weight is 0, so stage 3 would not train; set {setting_name('stage3_epochs')} 0 instead"
            )
        if list(self.milestones) != sorted(self.milestones):
            raise ValueError(f"{setting_name('milestones')} must be increasing, got {self.milestones}")
        if self.precision not in AUTOCAST_PRECISIONS:
            raise ValueError(
                f"{setting_name('precision')} must be one of {', '.join(AUTOCAST_PRECISIONS)}, got {self.precision!r}"
            )

    # ------------------------------------------------------------------ serialisation
    def to_dict(self) -> dict[str, Any]:
        data = dataclasses.asdict(self)
        data["milestones"] = list(self.milestones)
        return data

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> TrainConfig:
        reject_unknown_fields(data, cls, "unknown TrainConfig field(s)")
        return cls(**data)

    def to_json(self) -> str:
        return json.dumps(self.to_dict(), indent=2, sort_keys=True)

    def differences(self, other: TrainConfig) -> list[str]:
        """Fields whose values differ, as ``name: self -> other`` lines."""
        mine, theirs = self.to_dict(), other.to_dict()
        return [f"{key}: {mine[key]!r} -> {theirs[key]!r}" for key in mine if mine[key] != theirs[key]]
