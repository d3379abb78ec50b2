"""Batches of decoded, augmented images, optionally assembled in worker processes.

Each image's augmentation generator is seeded from (seed, epoch, rank, step,
slot), so a batch is the same whether it is built in the main process or in
any worker, in any order: data loading needs no checkpointed RNG state.
"""

from __future__ import annotations

from collections.abc import Iterator, Mapping, Sequence
from typing import Any

import numpy as np
import torch
from torch.utils.data import DataLoader, Dataset, Sampler

from csdn.train.augment import TrainAugment
from csdn.train.data import TrainImages
from csdn.train.sampler import IdentityBatch

_AUGMENT_STREAM = 0xA06  # separates augmentation streams from the sampler's


class _Stage3Steps(Dataset):
    """Item ``(epoch, step, batch)`` = the fully augmented ``batch`` of that step.

    The epoch travels with the item rather than living in the dataset, so workers started once
    for the whole stage build every epoch's batches.
    """

    def __init__(
        self,
        train_set: TrainImages,
        augment: TrainAugment,
        seed: int,
        rank: int,
        pixels: Mapping[str, Any] | None = None,
    ):
        self.train_set, self.augment = train_set, augment
        self.seed, self.rank = seed, rank
        self.pixels = dict(pixels or {})  # modality -> resized uint8 images by index (a PixelCache)

    def _resized(self, modality: str, index: int) -> np.ndarray:
        cache = self.pixels.get(modality)
        if cache is not None:
            return cache[index]
        images = self.train_set.visible_images if modality == "visible" else self.train_set.infrared_images
        return self.augment.resized(images[index])

    def __getitem__(self, item: tuple[int, int, IdentityBatch]) -> dict[str, torch.Tensor]:
        epoch, step, batch = item
        key = (self.seed, _AUGMENT_STREAM, epoch, self.rank, step)
        count = len(batch.labels)
        views: dict[str, list[torch.Tensor]] = {"visible": [], "exchange": [], "infrared": []}
        for slot in range(count):
            pixels = self._resized("visible", batch.visible[slot])
            for offset, view in ((0, "visible"), (count, "exchange")):
                rng = np.random.default_rng([*key, slot + offset])
                views[view].append(self.augment(pixels, view, rng))
            pixels = self._resized("infrared", batch.infrared[slot])
            rng = np.random.default_rng([*key, slot + 2 * count])
            views["infrared"].append(self.augment(pixels, "infrared", rng))
        out = {name: torch.stack(tensors) for name, tensors in views.items()}
        out["labels"] = torch.from_numpy(batch.labels)
        return out


class _EpochPlan(Sampler):
    """The current epoch's steps as dataset items, replaced before each epoch (it runs in the main process)."""

    def __init__(self) -> None:
        self.epoch = 0
        self.batches: list[IdentityBatch] = []

    def __iter__(self) -> Iterator[tuple[int, int, IdentityBatch]]:
        return ((self.epoch, step, batch) for step, batch in enumerate(self.batches))

    def __len__(self) -> int:
        return len(self.batches)


class Stage3Loader:
    """Stage 3's augmented batches from one loader for the whole stage.

    Its worker processes start once and serve every epoch (persistent workers), instead of being
    started, and the pixel cache re-opened in each, at every epoch.
    """

    def __init__(
        self,
        train_set: TrainImages,
        augment: TrainAugment,
        *,
        seed: int,
        rank: int = 0,
        num_workers: int = 0,
        pixels: Mapping[str, Any] | None = None,
        pin_memory: bool = False,
    ):
        self._steps = _Stage3Steps(train_set, augment, seed, rank, pixels)
        self._plan = _EpochPlan()
        self._loader = None
        if num_workers > 0:
            self._loader = _loader(self._steps, None, num_workers, pin_memory=pin_memory, sampler=self._plan)

    def epoch(self, epoch: int, batches: Sequence[IdentityBatch]) -> Iterator[dict[str, torch.Tensor]]:
        """This rank's augmented batches of ``epoch`` (the sampler's plan ``batches``), in step order."""
        self._plan.epoch, self._plan.batches = epoch, list(batches)
        if self._loader is None:
            return (self._steps[item] for item in list(self._plan))
        return iter(self._loader)


def stage3_batches(
    train_set: TrainImages,
    batches: Sequence[IdentityBatch],
    augment: TrainAugment,
    *,
    seed: int,
    epoch: int,
    rank: int = 0,
    num_workers: int = 0,
    pixels: Mapping[str, Any] | None = None,
    pin_memory: bool = False,
) -> Iterator[dict[str, torch.Tensor]]:
    """Iterate this rank's augmented stage-3 batches of ``epoch`` in step order (a one-epoch
    :class:`Stage3Loader`).

    ``pixels`` maps a modality to its pre-resized images (:mod:`csdn.train.pixelcache`): the
    same batches, without decoding a file per step.
    """
    loader = Stage3Loader(
        train_set, augment, seed=seed, rank=rank, num_workers=num_workers, pixels=pixels, pin_memory=pin_memory
    )
    return loader.epoch(epoch, batches)


class _PlainViews(Dataset):
    def __init__(self, images: Sequence[Any], augment: TrainAugment):
        self.images, self.augment = images, augment

    def __len__(self) -> int:
        return len(self.images)

    def __getitem__(self, index: int) -> torch.Tensor:
        return self.augment.plain_view(self.images[index])


def plain_view_batches(
    images: Sequence[Any], augment: TrainAugment, batch_size: int, *, num_workers: int = 0
) -> DataLoader:
    """Test-transformed ``images`` (paths or pixels) in order, ``batch_size`` at a time."""
    return _loader(_PlainViews(images, augment), batch_size, num_workers)


def loader_options(num_workers: int, pin_memory: bool) -> dict[str, Any]:
    """DataLoader settings: workers kept alive across an epoch's iterations when there are any, and
    page-locked batches (for asynchronous host-to-GPU copies) only when asked, i.e. on CUDA."""
    workers = max(0, num_workers)
    return {"num_workers": workers, "persistent_workers": workers > 0, "pin_memory": bool(pin_memory)}


def _loader(
    dataset: Dataset,
    batch_size: int | None,
    num_workers: int,
    pin_memory: bool = False,
    sampler: Sampler | None = None,
) -> DataLoader:
    """An in-order DataLoader with its own generator.

    Starting a DataLoader draws a worker base seed; from torch's global generator
    that draw would shift the dropout masks that follow it, and with them every
    later weight, whenever a resumed run loads data at a point where an
    uninterrupted run did not. (No augmentation uses torch's generators.)
    """
    return DataLoader(
        dataset,
        batch_size=batch_size,
        shuffle=False,
        sampler=sampler,
        generator=torch.Generator().manual_seed(0),
        **loader_options(num_workers, pin_memory),
    )
