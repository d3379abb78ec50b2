"""Synthetic VI-ReID generator: determinism, on-disk layouts, and a real modality gap."""

from __future__ import annotations

import re
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from csdn import cli
from csdn.data import LLCM, SYSUMM01, RegDB
from csdn.data.synthetic import (
    REGDB_CAMERAS,
    SYSU_CAMERAS,
    SYSU_INFRARED_CAMS,
    SYSU_VISIBLE_CAMS,
    CameraStyle,
    render_person,
    render_person_with_parts,
    sample_identity,
    write_llcm,
    write_regdb,
    write_sysu,
)
from csdn.data.synthetic.body import PART_UPPER

SMALL = (64, 32)


def _tree(root: Path) -> dict[str, bytes]:
    return {str(p.relative_to(root)): p.read_bytes() for p in sorted(root.rglob("*")) if p.is_file()}


def _ids(path: Path) -> list[int]:
    lines = path.read_text().splitlines()
    assert len(lines) == 1, f"{path.name} must hold one comma-separated line"
    return [int(v) for v in lines[0].split(",")]


def _pixels(path: Path) -> np.ndarray:
    return np.asarray(Image.open(path).convert("RGB")).astype(int)


# --- determinism ------------------------------------------------------------------------


def test_same_seed_gives_identical_bytes_and_other_seed_differs(tmp_path):
    args = dict(num_train_ids=3, num_test_ids=2, images_per_camera=2, size=SMALL)
    first = _tree(write_sysu(tmp_path / "a", seed=5, **args).root)
    second = _tree(write_sysu(tmp_path / "b", seed=5, **args).root)
    other = _tree(write_sysu(tmp_path / "c", seed=6, **args).root)
    assert first == second
    shared = set(first) & set(other) - {"exp/train_id.txt", "exp/val_id.txt", "exp/test_id.txt"}
    assert shared and all(first[k] != other[k] for k in shared)


def test_render_person_is_a_pure_function_of_its_generator():
    identity = sample_identity(np.random.default_rng(1), pid=1)
    a = np.asarray(render_person(identity, "visible", np.random.default_rng(7)))
    b = np.asarray(render_person(identity, "visible", np.random.default_rng(7)))
    c = np.asarray(render_person(identity, "visible", np.random.default_rng(8)))
    assert a.shape == (128, 64, 3) and np.array_equal(a, b) and not np.array_equal(a, c)


@pytest.mark.parametrize("modality", ["infrared", "nir", "thermal"])
def test_infrared_renders_have_three_identical_channels(modality):
    identity = sample_identity(np.random.default_rng(2), pid=2)
    image = render_person(identity, modality, np.random.default_rng(3), size=(96, 48))
    pixels = np.asarray(image)
    assert image.mode == "RGB" and pixels.shape == (96, 48, 3)
    assert np.array_equal(pixels[..., 0], pixels[..., 1]) and np.array_equal(pixels[..., 0], pixels[..., 2])
    visible = np.asarray(render_person(identity, "rgb", np.random.default_rng(3), size=(96, 48))).astype(int)
    assert np.abs(visible[..., 0] - visible[..., 2]).mean() > 3  # visible images do carry colour


# --- layouts ----------------------------------------------------------------------------


def test_sysu_tree_matches_the_real_layout(tmp_path):
    result = write_sysu(tmp_path / "sysu", 6, 4, images_per_camera=2, seed=0, size=SMALL, camera_prob=0.5)
    root = result.root
    assert sorted(p.name for p in root.iterdir()) == ["cam1", "cam2", "cam3", "cam4", "cam5", "cam6", "exp"]
    files = [p.relative_to(root).as_posix() for p in root.rglob("*.jpg")]
    assert len(files) == result.num_images > 0
    assert all(re.fullmatch(r"cam[1-6]/\d{4}/\d{4}\.jpg", f) for f in files)
    train, val, test = (_ids(root / "exp" / f"{s}_id.txt") for s in ("train", "val", "test"))
    assert len(train) + len(val) == 6 and len(test) == 4 and val
    assert sorted(train + val + test) == list(range(1, 11))
    for pid in train + val + test:  # every identity is seen by both kinds of camera
        assert any((root / f"cam{c}" / f"{pid:04d}").is_dir() for c in SYSU_INFRARED_CAMS)
        assert any((root / f"cam{c}" / f"{pid:04d}").is_dir() for c in SYSU_VISIBLE_CAMS)
    ir = _pixels(
        next((root / "cam3").rglob("*.jpg")) if (root / "cam3").exists() else next((root / "cam6").rglob("*.jpg"))
    )
    assert ir.shape == (*SMALL, 3) and np.array_equal(ir[..., 0], ir[..., 1]) and np.array_equal(ir[..., 1], ir[..., 2])


def test_regdb_tree_and_trial_files(tmp_path):
    root = write_regdb(
        tmp_path / "regdb", num_train_ids=3, num_test_ids=3, images_per_modality=2, seed=0, size=SMALL
    ).root
    splits = []
    for trial in range(1, 11):
        pids = {}
        for split in ("train", "test"):
            labels = {}
            for modality, folder in (("visible", "Visible"), ("thermal", "Thermal")):
                lines = (root / "idx" / f"{split}_{modality}_{trial}.txt").read_text().splitlines()
                assert len(lines) == 3 * 2
                entries = [line.split(" ") for line in lines]
                assert all(rel.startswith(f"{folder}/") and (root / rel).is_file() for rel, _ in entries)
                labels[modality] = {(int(rel.split("/")[1]), int(label)) for rel, label in entries}
            assert labels["visible"] == labels["thermal"]  # same person, same label in both files
            assert sorted(label for _, label in labels["visible"]) == [0, 1, 2]
            pids[split] = {pid for pid, _ in labels["visible"]}
        assert not pids["train"] & pids["test"] and pids["train"] | pids["test"] == set(range(1, 7))
        splits.append(frozenset(pids["train"]))
    assert len(set(splits)) > 1  # a fresh random split per trial
    assert Image.open(root / "Visible" / "1" / "v_0001_01.bmp").format == "BMP"


def test_llcm_tree_reads_like_the_reference_loaders(tmp_path):
    root = write_llcm(tmp_path / "llcm", num_train_ids=4, num_test_ids=3, images_per_camera=2, seed=0, size=SMALL).root
    test = _ids(root / "idx" / "test_id.txt")
    assert len(test) == 3
    labels = {}
    for kind in ("vis", "nir"):
        for line in (root / "idx" / f"train_{kind}.txt").read_text().splitlines():
            rel, label = line.split(" ")
            assert re.fullmatch(rf"{kind}/(\d{{4}})/\1_c0[1-9]_s\d{{6}}_f\d{{4,}}_{kind}\.jpg", rel)
            assert (root / rel).is_file()
            pid = int(rel.split("/")[1])
            assert pid not in test and labels.setdefault(pid, int(label)) == int(label)
    assert sorted(labels.values()) == list(range(4))
    assert not (root / "test_nir" / "cam3").exists()
    for pid in test:
        cams = {}
        for kind in ("vis", "nir"):
            for path in sorted(root.glob(f"test_{kind}/cam*/{pid:04d}/*.jpg")):
                tail = str(path).split("cam")[-1]  # what the reference loaders parse
                assert int(tail[2:6]) == pid and path.name.endswith(f"_{kind}.jpg")
                cams.setdefault(kind, set()).add(int(tail[0]))
        assert any(v != n for v in cams["vis"] for n in cams["nir"])  # a cross-camera cross-modal pair
    assert not any(p.name in {f"{q:04d}" for q in test} for p in (root / "vis").iterdir())


# --- the package's readers read the generated trees -------------------------------------


def _count(root: Path, pattern: str, pids) -> int:
    return sum(len(list(root.glob(pattern.format(pid=pid)))) for pid in pids)


def test_sysu_reader_reads_the_generated_tree(tmp_path):
    root = write_sysu(tmp_path / "sysu", 5, 3, images_per_camera=2, seed=1, size=SMALL, camera_prob=0.6).root
    train_ids = _ids(root / "exp" / "train_id.txt") + _ids(root / "exp" / "val_id.txt")
    test_ids = _ids(root / "exp" / "test_id.txt")
    data = SYSUMM01(root)
    assert data.train.num_classes == 5
    assert len(data.train.visible) == _count(root, "cam[1245]/{pid:04d}/*.jpg", train_ids)
    assert len(data.train.infrared) == _count(root, "cam[36]/{pid:04d}/*.jpg", train_ids)
    query = data.query("all")
    assert len(query) == _count(root, "cam[36]/{pid:04d}/*.jpg", test_ids)
    assert {s.pid for s in query} == set(test_ids) and {s.camid for s in query} <= {3, 6}
    folders = _count(root, "cam[1245]/{pid:04d}", test_ids)
    assert len(data.gallery("all", trial=0, shots=1)) == folders
    assert len(data.gallery("indoor", trial=0, shots=1)) == _count(root, "cam[12]/{pid:04d}", test_ids)
    assert data.query("all")[0].load().size == (SMALL[1], SMALL[0])


def test_regdb_reader_reads_the_generated_tree(tmp_path):
    root = write_regdb(tmp_path / "regdb", 4, 3, images_per_modality=3, seed=1, size=SMALL, image_format="jpg").root
    data = RegDB(root, trial=4)
    assert data.train.num_classes == 4
    assert len(data.train.visible) == len(data.train.infrared) == 4 * 3
    query, gallery = data.search("visible->thermal", 4)
    assert len(query) == len(gallery) == 3 * 3
    assert {s.pid for s in query} == {s.pid for s in gallery}


def test_llcm_reader_reads_the_generated_tree(tmp_path):
    root = write_llcm(tmp_path / "llcm", 4, 3, images_per_camera=2, num_cameras=5, seed=1, size=SMALL).root
    test_ids = _ids(root / "idx" / "test_id.txt")
    data = LLCM(root)
    assert data.train.num_classes == 4
    assert all(s.camid in range(1, 6) for s in data.train.visible + data.train.infrared)
    query, gallery = data.search("infrared->visible", trial=2)
    assert len(query) == _count(root, "test_nir/cam*/{pid:04d}/*.jpg", test_ids)
    assert len(gallery) == _count(root, "test_vis/cam*/{pid:04d}", test_ids)
    assert {s.pid for s in query} == {s.pid for s in gallery} == set(test_ids)


# --- bad input --------------------------------------------------------------------------


def test_bad_arguments_give_clear_errors(tmp_path):
    (tmp_path / "full").mkdir()
    (tmp_path / "full" / "keep.txt").write_text("user data")
    with pytest.raises(FileExistsError, match="not an empty folder"):
        write_sysu(tmp_path / "full", 2, 1, 1, size=SMALL)
    assert (tmp_path / "full" / "keep.txt").read_text() == "user data"
    assert sorted(p.name for p in tmp_path.iterdir()) == ["full"]  # no partial tree left behind
    with pytest.raises(ValueError, match="num_test_ids"):
        write_sysu(tmp_path / "x", 4, 0, 1)
    with pytest.raises(ValueError, match="seed"):
        write_regdb(tmp_path / "w", 2, 2, 1, seed=-1)
    with pytest.raises(ValueError, match="num_cameras"):
        write_llcm(tmp_path / "y", 2, 2, 1, num_cameras=10)
    with pytest.raises(ValueError, match="size"):
        write_regdb(tmp_path / "z", 2, 2, 1, size=(8, 4))
    identity = sample_identity(np.random.default_rng(0))
    with pytest.raises(ValueError, match="does not record"):
        render_person(identity, "visible", 0, camera=REGDB_CAMERAS["thermal"])
    with pytest.raises(ValueError, match="modality"):
        render_person(identity, "ultraviolet", 0)
    with pytest.raises(ValueError, match="sensor"):
        CameraStyle("xray")


def test_writing_into_an_existing_empty_folder_works(tmp_path):
    (tmp_path / "empty").mkdir()
    result = write_sysu(tmp_path / "empty", 2, 1, 1, size=SMALL)
    assert (result.root / "exp" / "test_id.txt").is_file()
    assert sorted(p.name for p in tmp_path.iterdir()) == ["empty"]


# --- the modality gap is real -----------------------------------------------------------


def _r2(features: np.ndarray, target: np.ndarray) -> float:
    design = np.c_[np.ones(len(target)), features]
    coef, *_ = np.linalg.lstsq(design, target, rcond=None)
    return float(1 - (target - design @ coef).var() / target.var())


def test_infrared_garment_brightness_follows_material_not_visible_colour():
    visible_cam, nir_cam, thermal_cam = SYSU_CAMERAS[1], SYSU_CAMERAS[3], REGDB_CAMERAS["thermal"]
    colour, nir, thermal, nir_attr, thickness = [], [], [], [], []
    for i in range(200):
        identity = sample_identity(np.random.default_rng([11, i]), i)
        measured = []
        for k, camera in enumerate((visible_cam, nir_cam, thermal_cam)):
            rng = np.random.default_rng([11, i, k])
            image, parts = render_person_with_parts(identity, camera.modality, rng, camera=camera)
            measured.append(np.asarray(image, float)[parts == PART_UPPER].mean(axis=0))
        colour.append(measured[0])
        nir.append(measured[1][0])
        thermal.append(measured[2][0])
        nir_attr.append(identity.upper.material.nir)
        thickness.append(identity.upper.thickness)
    colour, nir, thermal = np.array(colour), np.array(nir), np.array(thermal)
    # the physics drives infrared brightness ...
    assert np.corrcoef(nir, nir_attr)[0, 1] > 0.8
    assert np.corrcoef(thermal, thickness)[0, 1] < -0.75
    # ... while the garment's measured visible colour explains none of it (chance R^2 ~ 3/200)
    assert _r2(colour, nir) < 0.08 and _r2(colour, thermal) < 0.08
    assert max(abs(np.corrcoef(nir, colour[:, c])[0, 1]) for c in range(3)) < 0.25


def _hue_saturation_histogram(image: Image.Image, parts: np.ndarray) -> np.ndarray:
    hsv = np.asarray(image.convert("HSV"))[parts > 0].astype(int)
    bins = (hsv[:, 0] * 8 // 256) * 4 + hsv[:, 1] * 4 // 256
    hist = np.bincount(bins, minlength=32).astype(float)
    return hist / hist.sum()


def test_colour_identifies_people_within_visible_but_not_across_modalities():
    num = 40
    feats = {cam: [] for cam in (1, 3, 4)}  # query visible cam 1 / infrared cam 3, gallery visible cam 4
    for i in range(num):
        identity = sample_identity(np.random.default_rng([21, i]), i)
        for cam in feats:
            camera = SYSU_CAMERAS[cam]
            rng = np.random.default_rng([21, i, cam])
            image, parts = render_person_with_parts(identity, camera.modality, rng, camera=camera)
            feats[cam].append(_hue_saturation_histogram(image, parts))

    def rank1(query, gallery) -> float:
        dist = np.abs(np.stack(query)[:, None] - np.stack(gallery)[None]).sum(-1)
        return float((dist.argmin(axis=1) == np.arange(num)).mean())

    within, across = rank1(feats[1], feats[4]), rank1(feats[3], feats[4])
    assert within >= 0.5  # chance is 1/40
    assert across <= 0.15


# --- CLI --------------------------------------------------------------------------------


def test_cli_synth_writes_a_tree_and_reports_errors(tmp_path, capsys):
    argv = [
        "synth",
        "--layout",
        "llcm",
        "--root",
        str(tmp_path / "l"),
        "--train-ids",
        "3",
        "--test-ids",
        "2",
        "--images",
        "1",
        "--cameras",
        "4",
        "--size",
        "64",
        "32",
        "--quiet",
    ]
    assert cli.main(argv) == 0
    assert (tmp_path / "l" / "idx" / "train_vis.txt").is_file() and "wrote" in capsys.readouterr().out
    assert cli.main(argv) == 2
    err = capsys.readouterr().err
    assert err.startswith("csdn: error: ") and "not an empty folder" in err
    assert cli.main(["synth", "--layout", "sysu", "--root", str(tmp_path / "s"), "--cameras", "4"]) == 2
    assert "--cameras applies to --layout llcm only" in capsys.readouterr().err and not (tmp_path / "s").exists()
