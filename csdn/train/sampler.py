"""Which samples each step of an epoch uses, as a pure function of (seed, stage, epoch).

Every rank builds the same plan for the whole world and takes its own shard, so
DDP needs no communication for sampling, and a resumed run rebuilds exactly
the batches the interrupted one would have seen: the sampler's state is just
the epoch number.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import torch

from csdn.errors import setting_name
from csdn.train.data import TrainImages

_SAMPLER_STREAM = 0x5A3B1E  # separates the sampler's random stream from augmentation streams
_TORCH_STREAM = 0x70C4
_FEATURE_STREAM = 0xFEA7
_TEXT_STREAM = 0x7E87


def epoch_rng(seed: int, stage: int, epoch: int) -> np.random.Generator:
    """The sampler's generator for one epoch (identical on every rank)."""
    return np.random.default_rng([seed, _SAMPLER_STREAM, stage, epoch])


def seed_torch_for_epoch(seed: int, stage: int, epoch: int, rank: int) -> None:
    """Seed torch's global generators (dropout) from the epoch's position, per rank."""
    torch.manual_seed(int(np.random.SeedSequence([seed, _TORCH_STREAM, stage, epoch, rank]).generate_state(1)[0]))


def text_seed(seed: int) -> int:
    """Seed of the dropout draws while the fixed stage-3 text classifier is computed."""
    return int(np.random.SeedSequence([seed, _TEXT_STREAM]).generate_state(1)[0])


@dataclass(frozen=True)
class IdentityBatch:
    """One rank's stage-3 batch: aligned visible/infrared indices (same label at each position)."""

    visible: np.ndarray  # int64 [P*K] indices into TrainImages.visible_images
    infrared: np.ndarray  # int64 [P*K]
    labels: np.ndarray  # int64 [P*K]


def identity_groups(
    rng: np.random.Generator,
    visible_of: list[np.ndarray],
    infrared_of: list[np.ndarray],
    ids_per_group: int,
    images_per_id: int,
    groups: int,
) -> IdentityBatch:
    """``groups`` identity groups, concatenated: each draws ``ids_per_group`` identities without
    replacement and ``images_per_id`` images per modality of each, with replacement.

    Both modalities list the identities in the same order, K rows each, which is
    the layout :func:`csdn.train.losses.msel_loss` expects.
    """
    labels, visible, infrared = [], [], []
    for _ in range(groups):
        ids = rng.choice(len(visible_of), ids_per_group, replace=False)
        visible += [rng.choice(visible_of[c], images_per_id) for c in ids]
        infrared += [rng.choice(infrared_of[c], images_per_id) for c in ids]
        labels.append(np.repeat(ids, images_per_id))
    return IdentityBatch(np.concatenate(visible), np.concatenate(infrared), np.concatenate(labels))


def check_ids_per_batch(train_set: TrainImages, ids_per_batch: int) -> None:
    """Refuse batches of more identities than the training set has."""
    if train_set.num_classes < ids_per_batch:
        raise ValueError(
            f"the training set has {train_set.num_classes} identities but a batch takes "
            f"{setting_name('ids_per_batch')} {ids_per_batch}; lower {setting_name('ids_per_batch')} "
            f"to at most {train_set.num_classes}"
        )


def _positions(train_set: TrainImages) -> tuple[list[np.ndarray], list[np.ndarray]]:
    labels = range(train_set.num_classes)
    return (
        [np.flatnonzero(train_set.visible_labels == c) for c in labels],
        [np.flatnonzero(train_set.infrared_labels == c) for c in labels],
    )


def _default_groups(train_set: TrainImages, per_group: int) -> int:
    """The authors' epoch length: ``max(#visible, #infrared) // group + 1`` groups."""
    return max(len(train_set.visible_images), len(train_set.infrared_images)) // per_group + 1


class IdentitySampler:
    """P identities (without replacement) x K images per modality (with replacement) per rank and step."""

    def __init__(
        self,
        train_set: TrainImages,
        ids_per_batch: int,
        images_per_id: int,
        *,
        seed: int,
        world_size: int = 1,
        steps_per_epoch: int | None = None,
    ):
        check_ids_per_batch(train_set, ids_per_batch)
        self.ids_per_batch, self.images_per_id = ids_per_batch, images_per_id
        self.seed, self.world_size = seed, world_size
        self.visible_of, self.infrared_of = _positions(train_set)
        per_step = ids_per_batch * images_per_id * world_size
        self.steps_per_epoch = steps_per_epoch or max(1, _default_groups(train_set, per_step))

    def epoch(self, epoch: int, rank: int = 0) -> list[IdentityBatch]:
        """This rank's batches for ``epoch`` (stage 3)."""
        rng = epoch_rng(self.seed, 3, epoch)
        batches = []
        for _ in range(self.steps_per_epoch):
            for r in range(self.world_size):
                batch = identity_groups(
                    rng, self.visible_of, self.infrared_of, self.ids_per_batch, self.images_per_id, 1
                )
                if r == rank:
                    batches.append(batch)
        return batches


def feature_sample(
    train_set: TrainImages, ids_per_group: int, images_per_id: int, *, seed: int, stage: int
) -> IdentityBatch:
    """The images whose projections stage 1 or 2 trains on, as the authors' code picks them.

    Not every training image once: a fresh identity-balanced draw per stage
    (groups of P identities x K images per modality, ``max(#visible, #infrared)
    // (P*K) + 1`` groups), visible and infrared rows paired by identity.
    """
    check_ids_per_batch(train_set, ids_per_group)
    visible_of, infrared_of = _positions(train_set)
    rng = np.random.default_rng([seed, _FEATURE_STREAM, stage])
    per_group = ids_per_group * images_per_id
    return identity_groups(
        rng, visible_of, infrared_of, ids_per_group, images_per_id, _default_groups(train_set, per_group)
    )


def feature_steps(count: int, batch_size: int, world_size: int = 1) -> int:
    """Steps of a stage-1/2 epoch: one pass over ``count`` items (at least one step)."""
    return max(1, count // (batch_size * world_size))


def _chained_order(rng: np.random.Generator, count: int, needed: int) -> np.ndarray:
    """``needed`` indices from successive shuffled passes over ``count`` items."""
    return np.concatenate([rng.permutation(count) for _ in range(-(-needed // count))])[:needed]


def feature_batches(
    rng: np.random.Generator, count: int, batch_size: int, steps: int, *, world_size: int = 1, rank: int = 0
) -> list[np.ndarray]:
    """Shuffled index batches over ``count`` items, this rank's shard.

    Stage 1 draws rows of the paired (visible, infrared) feature sample, so each
    row brings both modalities of one identity and the image<->text loss has
    positives across modalities; stage 2 draws single features. Successive permutations are chained so that every step has a full batch even
    when ``steps`` asks for more than one pass.
    """
    order = _chained_order(rng, count, steps * batch_size * world_size).reshape(steps, world_size, batch_size)
    return [order[step, rank] for step in range(steps)]
