"""RegDB and LLCM readers: index files, relabelling, directions, gallery draws, broken layouts."""

from __future__ import annotations

import os
import random

import pytest
from vireid_trees import make_llcm, make_regdb

from csdn.data import LLCM, DatasetLayoutError, RegDB, parse_direction


# ---------------------------------------------------------------------------- RegDB
def test_regdb_train_split_and_relabelling(tmp_path):
    root = make_regdb(tmp_path / "RegDB", trials=2, ids=6, images=3)
    reader = RegDB(root, trial=2)
    train = reader.train
    assert train.num_classes == 3 and len(train.visible) == len(train.infrared) == 9
    assert sorted({s.pid for s in train.visible}) == [0, 1, 2]
    assert {s.camid for s in train.visible} == {1} and {s.camid for s in train.infrared} == {2}
    # the same label means the same person in both modalities (image k of a pair)
    for vis, ir in zip(train.visible, train.infrared):
        assert vis.pid == ir.pid and os.path.basename(os.path.dirname(vis.path)) == os.path.basename(
            os.path.dirname(ir.path)
        )
    assert all(os.path.isfile(s.path) for s in train.visible + train.infrared)


def test_regdb_labels_are_relabelled_when_not_contiguous(tmp_path):
    root = make_regdb(tmp_path / "RegDB", trials=1)
    for word in ("visible", "thermal"):
        path = root / "idx" / f"train_{word}_1.txt"
        path.write_text(
            "".join(
                f"{line.rsplit(' ', 1)[0]} {int(line.rsplit(' ', 1)[1]) * 7 + 100}\n"
                for line in path.read_text().splitlines()
            )
        )
    assert sorted({s.pid for s in RegDB(root).train.visible}) == [0, 1, 2]


def test_regdb_directions_and_trials(tmp_path):
    root = make_regdb(tmp_path / "RegDB", trials=2, ids=6, images=3)
    reader = RegDB(root)
    v2t_query, v2t_gallery = reader.search("visible->thermal", 1)
    assert {s.modality for s in v2t_query} == {"visible"} and {s.modality for s in v2t_gallery} == {"infrared"}
    t2v_query, t2v_gallery = reader.search("t2v", 1)
    assert t2v_query == v2t_gallery and t2v_gallery == v2t_query
    assert len(v2t_query) == len(v2t_gallery) == 9
    assert {s.pid for s in reader.query(trial=2)} != {s.pid for s in reader.query(trial=1)}
    train_pids = {os.path.basename(os.path.dirname(s.path)) for s in reader.train.visible}
    test_pids = {os.path.basename(os.path.dirname(s.path)) for s in v2t_query}
    assert not train_pids & test_pids
    assert reader.trials == (1,) and RegDB(root, trial=2).trials == (2,)
    with pytest.raises(ValueError, match="1..10"):
        RegDB(root, trial=0)


def test_regdb_broken_layouts(tmp_path):
    root = make_regdb(tmp_path / "RegDB", trials=2)
    with pytest.raises(DatasetLayoutError, match="test_thermal_3.txt"):
        RegDB(root, trial=3).gallery("visible->thermal")
    bad = root / "idx" / "test_visible_1.txt"
    bad.write_text("Visible/1/female_v_0_1.bmp 1\nVisible/1/female_v_1_1.bmp\n")
    with pytest.raises(DatasetLayoutError, match="line 2.*relative/path label"):
        RegDB(root).query()
    bad.write_text("Visible/1/missing.bmp 1\n")
    with pytest.raises(DatasetLayoutError, match="do not exist: .*missing.bmp"):
        RegDB(root).query()
    with pytest.raises(DatasetLayoutError, match="root folder does not exist"):
        RegDB(tmp_path / "nothing")


# ---------------------------------------------------------------------------- LLCM
@pytest.fixture
def llcm_root(tmp_path):
    return make_llcm(tmp_path / "LLCM")


def test_llcm_train_cameras_and_relabelling(llcm_root):
    train = LLCM(llcm_root).train
    assert train.num_classes == 3 and len(train.visible) == len(train.infrared) == 12
    assert {s.camid for s in train.visible} == {1, 2}  # from the '_c01_' file-name token
    assert [s.pid for s in train.infrared[:4]] == [0, 0, 0, 0]


def test_llcm_query_and_gallery(llcm_root):
    reader = LLCM(llcm_root)
    nir_query = reader.query("infrared->visible")
    # cameras 1, 2, 4 minus each identity's missing one (p % 4 + 1); test_nir/cam3 is never read
    per_id = {pid: {s.camid for s in nir_query if s.pid == pid} for pid in (3, 5, 6)}
    assert per_id == {3: {1, 2}, 5: {1, 4}, 6: {1, 2, 4}}
    assert len(nir_query) == 7 * 4
    gallery = reader.gallery("infrared->visible", trial=0)
    assert len(gallery) == 3 * 4 and {s.modality for s in gallery} == {"visible"}
    assert len({(s.pid, s.camid) for s in gallery}) == len(gallery)
    vis_query = reader.query("vis2nir")
    assert (
        vis_query == reader.query("v2i")
        and len(vis_query) == 3 * 4 * 4
        and {s.modality for s in vis_query} == {"visible"}
    )
    assert {s.camid for s in reader.gallery("visible->infrared", trial=4)} == {1, 2, 4}


def test_llcm_gallery_draws_are_the_reference_protocols(llcm_root):
    reader = LLCM(llcm_root)
    for trial in range(3):
        random.seed(trial)
        expected = []
        for pid in (3, 5, 6):
            for cam in (1, 2, 4, 5, 6, 7, 8, 9):
                folder = llcm_root / "test_nir" / f"cam{cam}" / f"{pid:04d}"
                if folder.is_dir():
                    expected.append(str(folder / random.choice(sorted(os.listdir(folder)))))
        assert [s.path for s in reader.gallery("visible->infrared", trial=trial)] == expected
    draws = {tuple(s.path for s in reader.gallery(trial=t)) for t in range(10)}
    assert len(draws) == 10 and reader.gallery(trial=7) == LLCM(llcm_root).gallery(trial=7)


def test_llcm_broken_layouts(llcm_root):
    (llcm_root / "idx" / "train_nir.txt").unlink()
    with pytest.raises(DatasetLayoutError, match="idx/train_nir.txt.*relative/path label"):
        _ = LLCM(llcm_root).train
    os.rename(llcm_root / "test_vis", llcm_root / "moved")
    with pytest.raises(DatasetLayoutError, match="test_vis"):
        LLCM(llcm_root).gallery("infrared->visible")
    (llcm_root / "idx" / "test_id.txt").write_text("3;5")
    with pytest.raises(DatasetLayoutError, match="test_id.txt"):
        LLCM(llcm_root).query()


@pytest.mark.parametrize(
    "text, expected",
    [
        ("infrared->visible", "infrared->visible"),
        ("thermal->visible", "infrared->visible"),
        ("v2t", "visible->infrared"),
        ("RGB_to_IR", "visible->infrared"),
        ("nir2vis", "infrared->visible"),
        ("i2v", "infrared->visible"),
    ],
)
def test_direction_spellings(text, expected):
    assert parse_direction(text) == expected


@pytest.mark.parametrize("text", ["visible", "v2v", "up->down", ""])
def test_bad_directions(text):
    with pytest.raises(ValueError, match="direction"):
        parse_direction(text)
