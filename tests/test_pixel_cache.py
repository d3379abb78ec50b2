"""Stage 3's pixel cache: the same augmented batches bit for bit, kept in the run folder, rebuilt when
stale or torn; and the DataLoader settings chosen per device."""

from __future__ import annotations

import os
from pathlib import Path

import numpy as np
import pytest
import torch
from _train_synthetic import write_identities

from csdn import CSDNConfig
from csdn.train import TrainConfig, fit
from csdn.train.augment import TrainAugment
from csdn.train.data import resolve_train_set
from csdn.train.loader import Stage3Loader, loader_options, stage3_batches
from csdn.train.pixelcache import CACHE_DIR, open_or_build
from csdn.train.sampler import IdentitySampler


@pytest.fixture
def identities(tmp_path) -> Path:
    return write_identities(tmp_path / "data", range(4), per_modality=4)


def _caches(run: Path, train_set, augment) -> dict:
    size, resample = augment.test.size, augment.test.resample
    return {
        modality: open_or_build(run, modality, images, augment.resized, size, resample, progress=False)
        for modality, images in (("visible", train_set.visible_images), ("infrared", train_set.infrared_images))
    }


def _batches(train_set, augment, pixels=None, num_workers=0) -> list[dict[str, torch.Tensor]]:
    plan = IdentitySampler(train_set, 2, 2, seed=3, steps_per_epoch=3).epoch(1, 0)
    return list(stage3_batches(train_set, plan, augment, seed=3, epoch=1, pixels=pixels, num_workers=num_workers))


def test_cached_pixels_give_the_same_batches_bit_for_bit(identities, tmp_path):
    train_set = resolve_train_set(identities)
    augment = TrainAugment(CSDNConfig.tiny(), TrainConfig())
    caches = _caches(tmp_path / "run", train_set, augment)
    assert all(cache is not None for cache in caches.values())
    decoded, cached = _batches(train_set, augment), _batches(train_set, augment, caches)
    workers = _batches(train_set, augment, caches, num_workers=1)  # only the cache's path goes to the worker
    for plain, fast, other in zip(decoded, cached, workers):
        for view in ("visible", "exchange", "infrared", "labels"):
            assert torch.equal(plain[view], fast[view]) and torch.equal(plain[view], other[view]), view


def test_a_stale_or_torn_cache_is_rebuilt_never_used(identities, tmp_path):
    train_set = resolve_train_set(identities)
    augment = TrainAugment(CSDNConfig.tiny(), TrainConfig())
    run = tmp_path / "run"
    first = _caches(run, train_set, augment)["visible"]
    assert first is not None
    image = Path(train_set.visible_images[0])
    original = np.array(first[0])
    # the file changes (new pixels, new mtime): the cache must follow it
    from PIL import Image

    Image.new("RGB", (40, 80), (250, 10, 10)).save(image)
    os.utime(image, ns=(image.stat().st_atime_ns, image.stat().st_mtime_ns + 10**9))
    rebuilt = _caches(run, train_set, augment)["visible"]
    assert not np.array_equal(rebuilt[0], original) and np.array_equal(rebuilt[0], augment.resized(image))
    # a torn array (its size no longer what its record says) is rebuilt too
    array = run / CACHE_DIR / "visible.npy"
    with open(array, "r+b") as handle:
        handle.truncate(array.stat().st_size // 2)
    again = _caches(run, train_set, augment)["visible"]
    assert array.stat().st_size > 0 and np.array_equal(
        again[len(train_set.visible_images) - 1], augment.resized(train_set.visible_images[-1])
    )


def test_in_memory_images_are_not_cached(tmp_path):
    augment = TrainAugment(CSDNConfig.tiny(), TrainConfig())
    images = [np.zeros((64, 32, 3), np.uint8)]
    assert open_or_build(tmp_path, "visible", images, augment.resized, (64, 32), "x", progress=False) is None
    assert not (tmp_path / CACHE_DIR).exists()


def test_fit_keeps_the_cache_in_the_run_folder_and_trains_the_same_weights(identities, tmp_path):
    config = TrainConfig(
        ids_per_batch=2, images_per_id=2, stage1_batch_size=8, stage2_batch_size=16,
        stage1_epochs=0, stage2_epochs=0, stage3_epochs=1, steps_per_epoch=2, stage3_lr=1e-3,
    )  # fmt: skip
    before = sorted(p.relative_to(identities) for p in identities.rglob("*"))
    torch.manual_seed(0)
    cached = fit(identities, config, output_dir=tmp_path / "a", init="tiny", progress=False, echo=False)
    torch.manual_seed(0)
    plain = fit(identities, config, output_dir=tmp_path / "b", init="tiny", progress=False, echo=False,
                pixel_cache=False)  # fmt: skip
    assert (tmp_path / "a" / CACHE_DIR / "visible.npy").is_file() and not (tmp_path / "b" / CACHE_DIR).exists()
    assert sorted(p.relative_to(identities) for p in identities.rglob("*")) == before  # nothing beside the data
    for (name, mine), other in zip(cached.state_dict().items(), plain.state_dict().values()):
        assert torch.equal(mine, other), name


def test_loader_settings_per_device():
    assert loader_options(0, pin_memory=False) == {"num_workers": 0, "persistent_workers": False, "pin_memory": False}
    assert loader_options(4, pin_memory=True) == {"num_workers": 4, "persistent_workers": True, "pin_memory": True}


def test_one_stage3_loader_serves_every_epoch_from_the_same_workers(identities, tmp_path):
    """Persistent workers: the loader's processes start once for the stage, and each epoch's batches
    equal the ones a fresh one-epoch loader builds in the main process."""
    train_set = resolve_train_set(identities)
    augment = TrainAugment(CSDNConfig.tiny(), TrainConfig())
    caches = _caches(tmp_path / "run", train_set, augment)
    loader = Stage3Loader(train_set, augment, seed=3, num_workers=1, pixels=caches)
    sampler = IdentitySampler(train_set, 2, 2, seed=3, steps_per_epoch=2)
    pids = []
    for epoch in range(3):
        plan = sampler.epoch(epoch, 0)
        served = list(loader.epoch(epoch, plan))
        alone = list(stage3_batches(train_set, plan, augment, seed=3, epoch=epoch, pixels=caches))
        assert len(served) == len(alone) == 2
        for a, b in zip(served, alone):
            assert all(torch.equal(a[view], b[view]) for view in a), epoch
        pids.append([worker.pid for worker in loader._loader._iterator._workers])  # torch's own bookkeeping
    assert pids[0] == pids[1] == pids[2]
    first, second = list(loader.epoch(0, sampler.epoch(0, 0))), list(loader.epoch(1, sampler.epoch(1, 0)))
    assert not torch.equal(first[0]["visible"], second[0]["visible"])  # the epoch reaches the workers
