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

from csdn.train.data import TrainImages

_SAMPLER_STREAM = 0x5A3B1E  # separates the sampler's random stream from augmentation streams
_TORCH_STREAM = 0x70C4


def epoch_rng(seed: int, stage: int, epoch: int) -> np.random.Generator:
    """The sampler's generator for one epoch (identical on every rank)."""
    return np.random.default_rng([seed, _SAMPLER_STREAM, stage, epoch])


def seed_torch_for_epoch(seed: int, stage: int, epoch: int, rank: int) -> None:
    """Seed torch's global generators (dropout) from the epoch's position, per rank."""
    torch.manual_seed(int(np.random.SeedSequence([seed, _TORCH_STREAM, stage, epoch, rank]).generate_state(1)[0]))


@dataclass(frozen=True)
class IdentityBatch:
    """One rank's stage-3 batch: aligned visible/infrared indices (same label at each position)."""

    visible: np.ndarray  # int64 [P*K] indices into TrainImages.visible_images
    infrared: np.ndarray  # int64 [P*K]
    labels: np.ndarray  # int64 [P*K]


class IdentitySampler:
    """P identities (without replacement) x K images per modality (with replacement) per rank and step.

    Both modalities list the identities in the same order, K rows each, which is
    the layout :func:`csdn.losses.msel_loss` expects.
    """

    def __init__(self, train_set: TrainImages, ids_per_batch: int, images_per_id: int, *,
                 seed: int, world_size: int = 1, steps_per_epoch: int | None = None):
        if train_set.num_classes < ids_per_batch:
            raise ValueError(
                f"the training set has {train_set.num_classes} identities but a batch takes "
                f"ids_per_batch={ids_per_batch}; lower ids_per_batch"
            )
        self.ids_per_batch, self.images_per_id = ids_per_batch, images_per_id
        self.seed, self.world_size = seed, world_size
        self.labels = np.arange(train_set.num_classes)
        self.visible_of = [np.flatnonzero(train_set.visible_labels == c) for c in self.labels]
        self.infrared_of = [np.flatnonzero(train_set.infrared_labels == c) for c in self.labels]
        images = max(len(train_set.visible_images), len(train_set.infrared_images))
        per_step = ids_per_batch * images_per_id * world_size
        self.steps_per_epoch = steps_per_epoch or max(1, images // per_step)

    def epoch(self, epoch: int, rank: int = 0) -> list[IdentityBatch]:
        """This rank's batches for ``epoch`` (stage 3)."""
        rng = epoch_rng(self.seed, 3, epoch)
        batches = []
        for _ in range(self.steps_per_epoch):
            for r in range(self.world_size):
                ids = rng.choice(self.labels, self.ids_per_batch, replace=False)
                vis = np.concatenate([rng.choice(self.visible_of[c], self.images_per_id) for c in ids])
                ir = np.concatenate([rng.choice(self.infrared_of[c], self.images_per_id) for c in ids])
                if r == rank:
                    batches.append(IdentityBatch(vis, ir, np.repeat(ids, self.images_per_id)))
        return batches


def feature_steps(count: int, batch_size: int, world_size: int = 1) -> int:
    """Steps of a stage-1/2 epoch: one pass over ``count`` items (at least one step)."""
    return max(1, count // (batch_size * world_size))


def _chained_order(rng: np.random.Generator, count: int, needed: int) -> np.ndarray:
    """``needed`` indices from successive shuffled passes over ``count`` items."""
    return np.concatenate([rng.permutation(count) for _ in range(-(-needed // count))])[:needed]


def feature_batches(rng: np.random.Generator, count: int, batch_size: int, steps: int, *,
                    world_size: int = 1, rank: int = 0) -> list[np.ndarray]:
    """Shuffled index batches over ``count`` items (stage 2), this rank's shard.

    Successive permutations are chained so that every step has a full batch even
    when ``steps`` asks for more than one pass.
    """
    order = _chained_order(rng, count, steps * batch_size * world_size).reshape(steps, world_size, batch_size)
    return [order[step, rank] for step in range(steps)]


def paired_batches(rng: np.random.Generator, visible_labels: np.ndarray, infrared_labels: np.ndarray,
                   batch_size: int, steps: int, *, world_size: int = 1,
                   rank: int = 0) -> list[tuple[np.ndarray, np.ndarray]]:
    """Stage-1 batches of (visible, infrared) indices whose labels agree row by row, this rank's shard.

    Visible images come in shuffled passes; each is paired with a random infrared
    image of its identity. As in the reference training, every identity of a batch
    is then seen in both modalities, so the image<->text loss also has positives
    across modalities.
    """
    needed = steps * batch_size * world_size
    visible = _chained_order(rng, len(visible_labels), needed)
    wanted = visible_labels[visible]
    counts = np.bincount(infrared_labels, minlength=int(wanted.max()) + 1)
    if (counts[wanted] == 0).any():
        raise ValueError("every identity needs infrared images to pair its visible images with")
    by_label = np.argsort(infrared_labels, kind="stable")
    starts = np.cumsum(counts) - counts
    infrared = by_label[starts[wanted] + (rng.random(needed) * counts[wanted]).astype(np.int64)]
    visible, infrared = (a.reshape(steps, world_size, batch_size) for a in (visible, infrared))
    return [(visible[step, rank], infrared[step, rank]) for step in range(steps)]
