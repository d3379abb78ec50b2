"""SYSU-MM01 reader: splits, relabelling, the gallery draws of the reference protocol, broken layouts."""

from __future__ import annotations

import os
import random

import numpy as np
import pytest
from vireid_trees import make_sysu

from csdn.data import SYSUMM01, UNKNOWN_CAMERA, DatasetLayoutError, load_sysu_arrays


@pytest.fixture
def sysu_root(tmp_path):
    # identity 5 never passed camera 2, identity 9 never camera 6
    return make_sysu(tmp_path / "SYSU-MM01", absent=[(5, 2), (9, 6)])


def test_train_split_relabels_train_and_val_ids(sysu_root):
    train = SYSUMM01(sysu_root).train
    assert train.num_classes == 4  # train ids 1, 2, 4 + val id 6
    assert len(train.visible) == 4 * 4 * 5 and len(train.infrared) == 4 * 2 * 5
    # sorted raw ids 1, 2, 4, 6 -> labels 0, 1, 2, 3, the same in both modalities
    label_of = {int(os.path.basename(os.path.dirname(s.path))): s.pid for s in train.visible + train.infrared}
    assert label_of == {1: 0, 2: 1, 4: 2, 6: 3}
    assert {s.camid for s in train.visible} == {1, 2, 4, 5} and {s.camid for s in train.infrared} == {3, 6}
    assert {s.modality for s in train.visible} == {"visible"} and {s.modality for s in train.infrared} == {"infrared"}
    assert all(os.path.isfile(s.path) and s.image is None for s in train.visible)


def test_query_is_every_infrared_test_image(sysu_root):
    reader = SYSUMM01(sysu_root)
    query = reader.query()
    assert len(query) == (4 * 2 - 1) * 5  # 4 test ids x cams 3, 6, minus identity 9's camera 6
    assert [s.pid for s in query] == sorted(s.pid for s in query)
    assert {s.camid for s in query} == {3, 6} and {s.pid for s in query} == {3, 5, 7, 9}
    assert reader.query("indoor") == query  # indoor search changes only the gallery


def test_gallery_one_image_per_identity_and_camera(sysu_root):
    reader = SYSUMM01(sysu_root)
    gallery = reader.gallery("all", trial=0)
    assert len(gallery) == 4 * 4 - 1  # identity 5 has no camera-2 folder
    assert len({(s.pid, s.camid) for s in gallery}) == len(gallery)
    indoor = reader.gallery("indoor", trial=0)
    assert {s.camid for s in indoor} == {1, 2} and len(indoor) == 4 * 2 - 1


def test_gallery_draws_are_the_reference_protocols(sysu_root):
    """The reference seeds Python's global RNG with the trial and calls choice() per folder, ids and cameras ascending."""
    reader = SYSUMM01(sysu_root)
    for trial in (0, 3, 9):
        random.seed(trial)
        expected = []
        for pid in (3, 5, 7, 9):
            for cam in (1, 2, 4, 5):
                folder = sysu_root / f"cam{cam}" / f"{pid:04d}"
                if folder.is_dir():
                    expected.append(str(folder / random.choice(sorted(os.listdir(folder)))))
        assert [s.path for s in reader.gallery("all", trial=trial)] == expected


def test_gallery_is_deterministic_per_trial_and_leaves_global_random_alone(sysu_root):
    random.seed(1234)
    before = random.random()
    random.seed(1234)
    first = SYSUMM01(sysu_root).gallery(trial=2)
    assert random.random() == before  # no global state touched
    assert SYSUMM01(sysu_root).gallery(trial=2) == first
    trials = [tuple(s.path for s in SYSUMM01(sysu_root).gallery(trial=t)) for t in range(10)]
    assert len(set(trials)) == 10


def test_multi_shot_takes_ten_distinct_images_per_folder(tmp_path):
    root = make_sysu(tmp_path / "sysu", images=12, absent=[(3, 4)])
    for name in sorted(os.listdir(root / "cam5" / "0003"))[3:]:
        os.remove(root / "cam5" / "0003" / name)  # a folder with only 3 images
    gallery = SYSUMM01(root).gallery("all", trial=1, shots=10)
    per_folder = {}
    for s in gallery:
        per_folder.setdefault((s.pid, s.camid), []).append(s.path)
    assert all(len(set(paths)) == len(paths) for paths in per_folder.values())
    assert len(per_folder.pop((3, 5))) == 3
    assert {len(p) for p in per_folder.values()} == {10}
    assert SYSUMM01(root).gallery("all", trial=1, shots=10) == gallery
    assert SYSUMM01(root).gallery("all", trial=2, shots=10) != gallery


def test_non_image_files_are_not_drawn(sysu_root):
    (sysu_root / "cam1" / "0003" / "Thumbs.db").write_text("x")
    (sysu_root / "cam1" / "0003" / ".DS_Store").write_text("x")
    paths = {s.path for t in range(10) for s in SYSUMM01(sysu_root).gallery(trial=t)}
    assert all(p.endswith(".jpg") for p in paths)


def test_bad_protocol_arguments(sysu_root):
    reader = SYSUMM01(sysu_root)
    with pytest.raises(ValueError, match="'all' or 'indoor'"):
        reader.gallery("outdoor")
    with pytest.raises(ValueError, match="shots"):
        reader.gallery(shots=0)
    with pytest.raises(ValueError, match="trial"):
        reader.gallery(trial=-1)
    with pytest.raises(ValueError, match="infrared->visible"):
        reader.search("visible->infrared", 0)


@pytest.mark.parametrize(
    "damage, message",
    [
        (lambda root: (root / "exp" / "test_id.txt").unlink(), "exp/test_id.txt"),
        (lambda root: (root / "exp" / "test_id.txt").write_text("3,5,x\n"), "'x'"),
        (lambda root: (root / "exp" / "test_id.txt").write_text("\n"), "empty"),
        (
            lambda root: (
                [p.unlink() for p in (root / "cam3").rglob("*.jpg")]
                + [p.unlink() for p in (root / "cam6").rglob("*.jpg")]
            ),
            "cam3, cam6",
        ),
    ],
)
def test_broken_test_split_names_the_problem(sysu_root, damage, message):
    damage(sysu_root)
    with pytest.raises(DatasetLayoutError, match=message) as info:
        SYSUMM01(sysu_root).query()
    assert "Expected layout" in str(info.value)


def test_broken_tree_names_the_problem(sysu_root, tmp_path):
    with pytest.raises(DatasetLayoutError, match="root folder does not exist"):
        SYSUMM01(tmp_path / "nowhere")
    (sysu_root / "cam6").rename(sysu_root / "cam6-old")
    with pytest.raises(DatasetLayoutError, match="cam6"):
        SYSUMM01(sysu_root)
    (sysu_root / "cam6-old").rename(sysu_root / "cam6")
    (sysu_root / "exp" / "val_id.txt").unlink()
    with pytest.raises(DatasetLayoutError, match="val_id.txt.*comma-separated"):
        _ = SYSUMM01(sysu_root).train


def _write_arrays(root, visible_labels, infrared_labels, size=(8, 4)):
    rng = np.random.default_rng(0)
    for tag, labels in (("rgb", visible_labels), ("ir", infrared_labels)):
        images = rng.integers(0, 256, (len(labels), *size, 3), dtype=np.uint8)
        np.save(root / f"train_{tag}_resized_img.npy", images)
        np.save(root / f"train_{tag}_resized_label.npy", np.array(labels))


def test_preprocessed_arrays_give_in_memory_samples(sysu_root):
    _write_arrays(sysu_root, [0, 0, 2, 5], [2, 5, 5])
    train = SYSUMM01(sysu_root, train_source="arrays").train
    assert (
        train.num_classes == 3
        and [s.pid for s in train.visible] == [0, 0, 1, 2]
        and [s.pid for s in train.infrared] == [1, 2, 2]
    )
    first = train.visible[0]
    assert first.path.endswith("train_rgb_resized_img.npy#0") and first.camid == UNKNOWN_CAMERA
    stored = np.load(sysu_root / "train_rgb_resized_img.npy")
    assert np.array_equal(first.image, stored[0]) and first.source is first.image
    assert first.load().size == (4, 8) and first.load().mode == "RGB"
    assert load_sysu_arrays(sysu_root).infrared[2].path.endswith("train_ir_resized_img.npy#2")


def test_preprocessed_arrays_with_wrong_shapes(sysu_root):
    _write_arrays(sysu_root, [0, 1], [0, 1, 1])
    np.save(sysu_root / "train_ir_resized_label.npy", np.array([0, 1]))
    with pytest.raises(DatasetLayoutError, match="one integer label per image"):
        load_sysu_arrays(sysu_root)
    np.save(sysu_root / "train_ir_resized_img.npy", np.zeros((2, 8, 4), dtype=np.uint8))
    with pytest.raises(DatasetLayoutError, match="N x H x W x 3 uint8"):
        load_sysu_arrays(sysu_root)
    (sysu_root / "train_rgb_resized_label.npy").unlink()
    with pytest.raises(DatasetLayoutError, match="train_rgb_resized_label.npy"):
        _ = SYSUMM01(sysu_root, train_source="arrays").train
