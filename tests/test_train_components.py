"""Training building blocks: training sets, sampler, augmentations, batch loading, checkpoints."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch
from _train_synthetic import write_identities
from PIL import Image

from csdn import CSDNConfig
from csdn.data import Sample
from csdn.errors import DatasetLayoutError
from csdn.images.transforms import TestTransform, load_image
from csdn.train import TrainConfig
from csdn.train.augment import (
    ERASE_VALUE,
    TrainAugment,
    channel_adaptive_gray,
    channel_exchange,
    channel_random_erasing,
)
from csdn.train.checkpoint import load_checkpoint, save_checkpoint
from csdn.train.data import TrainImages, read_image_folder, resolve_train_set
from csdn.train.loader import stage3_batches
from csdn.train.sampler import IdentitySampler, epoch_rng, feature_batches, feature_sample, feature_steps


@pytest.fixture(scope="module")
def folder(tmp_path_factory) -> Path:
    return write_identities(tmp_path_factory.mktemp("ids"), [3, 10, 42, 7, 99], per_modality=5)


# ---------------------------------------------------------------------------- training sets
def test_image_folder_labels_are_contiguous_in_id_order(folder):
    data = read_image_folder(folder)
    assert data.pids == [3, 7, 10, 42, 99] and data.num_classes == 5
    assert len(data.visible_images) == len(data.infrared_images) == 25
    for paths, labels in ((data.visible_images, data.visible_labels), (data.infrared_images, data.infrared_labels)):
        assert [data.pids[label] for label in labels] == [int(Path(p).parent.name) for p in paths]
    assert resolve_train_set("folder", root=folder).fingerprint() == data.fingerprint()
    assert resolve_train_set(folder).fingerprint() == data.fingerprint()


def test_train_set_accepts_reader_like_objects_and_rejects_bad_ones(tmp_path):
    pixels = np.zeros((8, 4, 3), np.uint8)

    class Split:
        visible = [Sample("a.jpg", 5, 1, "visible"), Sample("b.npy#0", 2, 1, "visible", pixels)]
        infrared = [Sample("c.jpg", 2, 3, "infrared"), Sample("d.jpg", 5, 3, "infrared")]

    class Reader:
        train = Split()

    data = resolve_train_set(Reader())
    assert data.visible_labels.tolist() == [1, 0] and data.infrared_labels.tolist() == [0, 1]
    assert data.visible_images[0] == "a.jpg" and data.visible_images[1] is pixels  # array-backed samples
    with pytest.raises(ValueError, match="only one modality"):
        TrainImages.from_samples([Sample("a", 1, 1, "visible")], [Sample("b", 2, 3, "infrared")])
    with pytest.raises(ValueError, match="no infrared images"):
        TrainImages.from_samples([Sample("a", 1, 1, "visible")], [])
    with pytest.raises(ValueError, match="unknown dataset"):
        resolve_train_set("market1501", root=tmp_path)
    with pytest.raises(ValueError, match="needs root"):
        resolve_train_set("sysu")
    with pytest.raises(TypeError, match="cannot train on"):
        resolve_train_set(42)
    with pytest.raises(DatasetLayoutError, match="visible/<pid>"):
        read_image_folder(tmp_path)


# ---------------------------------------------------------------------------- sampler
def test_identity_sampler_batches(folder):
    data = read_image_folder(folder)
    sampler = IdentitySampler(data, ids_per_batch=3, images_per_id=4, seed=0)
    assert sampler.steps_per_epoch == 25 // 12 + 1  # the authors' epoch: max(#visible, #infrared) // (P*K) + 1
    batches = sampler.epoch(0)
    for batch in batches:
        ids = batch.labels[::4]
        assert len(set(ids.tolist())) == 3  # distinct identities
        assert np.array_equal(batch.labels, np.repeat(ids, 4))
        assert np.array_equal(data.visible_labels[batch.visible], batch.labels)
        assert np.array_equal(data.infrared_labels[batch.infrared], batch.labels)
    again = sampler.epoch(0)
    assert all(np.array_equal(a.visible, b.visible) for a, b in zip(batches, again))
    other = sampler.epoch(1)
    assert not all(np.array_equal(a.visible, b.visible) for a, b in zip(batches, other))
    with pytest.raises(ValueError, match="lower ids_per_batch"):
        IdentitySampler(data, ids_per_batch=6, images_per_id=2, seed=0)


def test_identity_sampler_shards_ranks(folder):
    data = read_image_folder(folder)
    world = [IdentitySampler(data, 2, 2, seed=0, world_size=2, steps_per_epoch=3).epoch(4, rank) for rank in (0, 1)]
    assert len(world[0]) == len(world[1]) == 3
    assert not all(np.array_equal(a.labels, b.labels) and np.array_equal(a.visible, b.visible) for a, b in zip(*world))


def test_feature_batches_cover_a_permutation_per_rank():
    steps = feature_steps(10, batch_size=2, world_size=2)
    assert steps == 2
    shards = [feature_batches(epoch_rng(0, 1, 0), 10, 2, steps, world_size=2, rank=r) for r in (0, 1)]
    chosen = np.concatenate([np.concatenate(s) for s in shards])
    assert len(set(chosen.tolist())) == 8  # no index twice within one pass
    long = feature_batches(epoch_rng(0, 1, 0), 3, 4, steps=2)
    assert [len(b) for b in long] == [4, 4] and set(np.concatenate(long).tolist()) == {0, 1, 2}


def test_feature_sample_pairs_modalities_in_identity_groups_fresh_per_stage(folder):
    data = read_image_folder(folder)  # 25 visible images
    sample = feature_sample(data, ids_per_group=2, images_per_id=3, seed=0, stage=1)
    assert len(sample.labels) == (25 // 6 + 1) * 6  # the authors' normal loader: N // (P*K) + 1 groups
    assert np.array_equal(data.visible_labels[sample.visible], sample.labels)
    assert np.array_equal(data.infrared_labels[sample.infrared], sample.labels)
    for group in sample.labels.reshape(-1, 6):
        assert len(set(group[::3].tolist())) == 2 and np.array_equal(group, np.repeat(group[::3], 3))
    again = feature_sample(data, 2, 3, seed=0, stage=1)
    assert np.array_equal(again.visible, sample.visible) and np.array_equal(again.infrared, sample.infrared)
    stage2 = feature_sample(data, 2, 3, seed=0, stage=2)
    assert not np.array_equal(stage2.visible, sample.visible)
    with pytest.raises(ValueError, match="lower ids_per_batch"):
        feature_sample(data, 9, 2, seed=0, stage=1)


# ---------------------------------------------------------------------------- augmentations
def _image(seed: int = 0) -> torch.Tensor:
    return torch.from_numpy(np.random.default_rng(seed).normal(size=(3, 16, 8)).astype(np.float32))


def test_channel_exchange_replicates_one_channel():
    for seed in range(6):
        out = channel_exchange(_image(seed), np.random.default_rng(seed))
        assert torch.equal(out[0], out[1]) and torch.equal(out[1], out[2])
        assert any(torch.equal(out[0], _image(seed)[c]) for c in range(3))


def test_channel_adaptive_gray_outcomes():
    outcomes = set()
    for seed in range(60):
        source = _image(seed)
        out = channel_adaptive_gray(source.clone(), np.random.default_rng(seed), probability=0.5)
        if torch.equal(out, source):
            outcomes.add("unchanged")
            continue
        assert torch.equal(out[0], out[1]) and torch.equal(out[1], out[2])
        gray = 0.2989 * source[0] + 0.5870 * source[1] + 0.1140 * source[2]
        outcomes.add("gray" if torch.allclose(out[0], gray) else "channel")
    assert outcomes == {"unchanged", "gray", "channel"}


def test_channel_random_erasing_fills_one_rectangle():
    source = _image()
    assert torch.equal(channel_random_erasing(source.clone(), np.random.default_rng(0), probability=0.0), source)
    out = channel_random_erasing(source.clone(), np.random.default_rng(0), probability=1.0)
    erased = (out != source).any(dim=0)
    rows, cols = erased.nonzero(as_tuple=True)
    assert erased.sum() == (rows.max() - rows.min() + 1) * (cols.max() - cols.min() + 1)  # a full rectangle
    for channel, value in enumerate(ERASE_VALUE):
        assert torch.all(out[channel][erased] == value)


def test_train_augment_without_randomness_is_the_test_transform(folder):
    config = CSDNConfig.tiny()
    plain = TrainAugment(config, TrainConfig(pad=0, flip_prob=0.0, erasing_prob=0.0))
    path = read_image_folder(folder).visible_images[0]
    out = plain(plain.resized(path), "visible", np.random.default_rng(0))
    assert torch.allclose(out, TestTransform(config)(load_image(path)), atol=1e-6)


def test_train_augment_views(folder):
    augment = TrainAugment(CSDNConfig.tiny(), TrainConfig())
    pixels = augment.resized(read_image_folder(folder).visible_images[0])
    assert pixels.shape == (64, 32, 3) and pixels.dtype == np.uint8
    a = augment(pixels, "visible", np.random.default_rng(5))
    assert a.shape == (3, 64, 32) and a.dtype == torch.float32
    assert torch.equal(a, augment(pixels, "visible", np.random.default_rng(5)))
    assert not torch.equal(a, augment(pixels, "visible", np.random.default_rng(6)))
    exchanged = augment(pixels, "exchange", np.random.default_rng(5))
    assert torch.equal(exchanged[0], exchanged[1]) and torch.equal(exchanged[1], exchanged[2])
    with pytest.raises(ValueError, match="unknown view"):
        augment(pixels, "thermal", np.random.default_rng(0))


def test_pad_crop_shifts_the_image_with_black_borders(tmp_path):
    config = CSDNConfig.tiny()
    path = tmp_path / "white.png"
    Image.fromarray(np.full((64, 32, 3), 255, np.uint8)).save(path)
    augment = TrainAugment(config, TrainConfig(flip_prob=0.0, erasing_prob=0.0))
    crops = [augment(augment.resized(str(path)), "visible", np.random.default_rng(s)) for s in range(8)]
    black = (0 - torch.tensor(config.mean)) / torch.tensor(config.std)
    white = (1 - torch.tensor(config.mean)) / torch.tensor(config.std)
    for crop in crops:
        is_black = torch.isclose(crop, black.view(3, 1, 1)).all(dim=0)
        assert (is_black | torch.isclose(crop, white.view(3, 1, 1)).all(dim=0)).all()
        assert is_black.sum() <= 64 * 32 - 44 * 12  # at most 10 px off on each side
    assert len({int(torch.isclose(c, black.view(3, 1, 1)).all(dim=0).sum()) for c in crops}) > 1


# ---------------------------------------------------------------------------- batches
def test_stage3_batches_are_identical_with_worker_processes(folder):
    data = read_image_folder(folder)
    augment = TrainAugment(CSDNConfig.tiny(), TrainConfig())
    plan = IdentitySampler(data, 2, 2, seed=3, steps_per_epoch=2).epoch(0)
    inline = list(stage3_batches(data, plan, augment, seed=3, epoch=0))
    workers = list(stage3_batches(data, plan, augment, seed=3, epoch=0, num_workers=2))
    assert len(inline) == len(workers) == 2
    for a, b in zip(inline, workers):
        assert set(a) == {"visible", "exchange", "infrared", "labels"}
        assert a["visible"].shape == (4, 3, 64, 32)
        for key in a:
            assert torch.equal(a[key], b[key])
    # the two visible views of one image are augmented independently
    assert not torch.equal(inline[0]["visible"], inline[0]["exchange"])


# ---------------------------------------------------------------------------- checkpoints
def test_checkpoint_round_trip_is_atomic(tmp_path):
    path = tmp_path / "run" / "last.pt"
    state = {"stage": 2, "epoch": 3, "model": {"w": torch.arange(4.0)}, "note": [1, "a", None]}
    save_checkpoint(state, path)
    save_checkpoint({**state, "epoch": 4}, path)
    loaded = load_checkpoint(path)
    assert loaded["epoch"] == 4 and torch.equal(loaded["model"]["w"], torch.arange(4.0))
    assert sorted(p.name for p in path.parent.iterdir()) == ["last.pt"]  # no temporary files left
    path.write_bytes(b"not a checkpoint")
    with pytest.raises(ValueError, match="not a readable csdn training checkpoint"):
        load_checkpoint(path)
    torch.save({"format": 99}, path)
    with pytest.raises(ValueError, match="format"):
        load_checkpoint(path)
    with pytest.raises(FileNotFoundError):
        load_checkpoint(tmp_path / "missing.pt")
