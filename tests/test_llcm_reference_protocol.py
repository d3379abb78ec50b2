"""LLCM scored the way the dataset authors' evaluation code scores it, in both directions.

Published LLCM numbers come from ``test.py`` / ``data_manager.py`` / ``eval_llcm`` of the
LLCM release. Its "VIS to IR" setting (``test_mode = [2, 1]``) lists every visible test
image, draws one infrared image per identity and camera for each trial, and then scores
the *transposed* similarity matrix: the drawn infrared images are the probes and all
visible images the gallery. Here that computation is re-stated from scratch (its own
directory listing, global ``random.seed(trial)`` draws, a per-probe loop for the metric)
and compared with :func:`csdn.evaluate` on a hand-built tree in LLCM's on-disk layout.
"""

from __future__ import annotations

import os
import random

import numpy as np
import pytest
from vireid_trees import CountingModel, write_image

import csdn

VISIBLE_CAMERAS = (1, 2, 3, 4, 5, 6, 7, 8, 9)
INFRARED_CAMERAS = (1, 2, 4, 5, 6, 7, 8, 9)  # the reference lists no test_nir/cam3
# images per camera folder; test_nir/cam3 folders exist (as in the real release) but are never read
TREE = {
    3: {"vis": {1: 3, 3: 2, 5: 4}, "nir": {1: 2, 3: 3, 5: 3}},
    7: {"vis": {2: 2, 3: 3, 9: 1}, "nir": {2: 4, 6: 1, 9: 2}},
    12: {"vis": {1: 2, 4: 3, 6: 2, 8: 2}, "nir": {3: 2, 4: 3, 8: 2}},
    40: {"vis": {3: 4, 7: 2}, "nir": {1: 3, 7: 2}},
}
FRAMES = (310, 25, 1207, 88)  # file names whose string order is not their numeric or creation order


def _make_tree(root):
    for pid, kinds in TREE.items():
        for kind, cameras in kinds.items():
            for cam, count in cameras.items():
                for n, frame in enumerate(FRAMES[:count]):
                    name = f"{pid:04d}_c{cam:02d}_s{100 + n}_f{frame}_{kind}.jpg"
                    write_image(root / f"test_{kind}" / f"cam{cam}" / f"{pid:04d}" / name, pid + cam + n)
    for kind in ("vis", "nir"):  # an identity that idx/test_id.txt does not list
        write_image(root / f"test_{kind}" / "cam1" / "0099" / f"0099_c01_s1_f1_{kind}.jpg")
    (root / "idx").mkdir()
    (root / "idx" / "test_id.txt").write_text("40,3,12,7")
    return root


# ---------------------------------------------------------------------------- the reference, re-stated
def _folders(root, kind, cameras):
    """``[(pid, cam, sorted paths)]``: ids as sorted 4-digit names, then cameras in list order."""
    ids = sorted(f"{int(x):04d}" for x in (root / "idx" / "test_id.txt").read_text().split(","))
    folders = []
    for name in ids:
        for cam in cameras:
            directory = os.path.join(str(root), f"test_{kind}/cam{cam}", name)
            if os.path.isdir(directory):
                folders.append((int(name), cam, sorted(directory + "/" + f for f in os.listdir(directory))))
    return folders


def _every_image(folders):
    return [(path, pid, cam) for pid, cam, paths in folders for path in paths]


def _drawn(folders, trial):
    random.seed(trial)  # the reference seeds Python's global generator with the trial number
    return [(random.choice(paths), pid, cam) for pid, cam, paths in folders]


def _features(images, modality):
    vectors = CountingModel().embed_image([path for path, _, _ in images], modality).numpy()
    labels = np.array([pid for _, pid, _ in images])
    cams = np.array([cam for _, _, cam in images])
    return vectors.astype(np.float64), labels, cams


def _reference_metric(dist, p_ids, g_ids, p_cams, g_cams, max_rank=20):
    """The reference metric: per probe, drop same-identity-same-camera gallery images, then score.

    CMC counts identities (each identity's first appearance in the ranking), summed over
    every probe and divided by the probes that still have a true match; mAP and mINP
    average over those probes only.
    """
    max_rank = min(max_rank, dist.shape[1])
    curves, precisions, inverse = [], [], []
    for row, pid, cam in zip(np.argsort(dist, axis=1), p_ids, p_cams):
        kept = row[(g_ids[row] != pid) | (g_cams[row] != cam)]
        labels = g_ids[kept]
        identities = np.array(list(dict.fromkeys(labels.tolist())))
        curves.append(np.cumsum(identities == pid)[:max_rank])
        hits = np.flatnonzero(labels == pid) + 1  # 1-based ranks of the true matches
        if len(hits):
            precisions.append(np.mean(np.arange(1, len(hits) + 1) / hits))
            inverse.append(len(hits) / hits[-1])
    return np.sum(curves, axis=0) / len(precisions), np.mean(precisions), np.mean(inverse)


def _reference_trial(root, direction, trial):
    """``(cmc, mAP, mINP)`` of one trial as the LLCM release computes it."""
    visible, infrared = _folders(root, "vis", VISIBLE_CAMERAS), _folders(root, "nir", INFRARED_CAMERAS)
    if direction == "infrared->visible":  # test_mode [1, 2]: query = every NIR image, gallery = drawn VIS
        query, q_ids, q_cams = _features(_every_image(infrared), "infrared")
        gall, g_ids, g_cams = _features(_drawn(visible, trial), "visible")
        return _reference_metric(-(query @ gall.T), q_ids, g_ids, q_cams, g_cams)
    # test_mode [2, 1]: query = every VIS image, gallery = drawn NIR; scored transposed
    query, q_ids, q_cams = _features(_every_image(visible), "visible")
    gall, g_ids, g_cams = _features(_drawn(infrared, trial), "infrared")
    return _reference_metric(-(gall @ query.T), g_ids, q_ids, g_cams, q_cams)


def _visible_probes_trial(root, trial):
    """The previous reading of visible->infrared: every visible image probes the drawn NIR images."""
    probes, p_ids, p_cams = _features(_every_image(_folders(root, "vis", VISIBLE_CAMERAS)), "visible")
    gall, g_ids, g_cams = _features(_drawn(_folders(root, "nir", INFRARED_CAMERAS), trial), "infrared")
    return _reference_metric(-(probes @ gall.T), p_ids, g_ids, p_cams, g_cams)


# ---------------------------------------------------------------------------- tests
@pytest.fixture(scope="module")
def llcm(tmp_path_factory):
    root = _make_tree(tmp_path_factory.mktemp("llcm") / "LLCM")
    model = CountingModel()
    return root, model, csdn.evaluate(model, "llcm", root, progress=False)


@pytest.mark.parametrize("direction", ["infrared->visible", "visible->infrared"])
def test_llcm_scores_equal_the_reference_code(llcm, direction):
    root, _, result = llcm
    search = result[direction]
    assert [t.trial for t in search.trials] == list(range(10))
    expected = [_reference_trial(root, direction, trial) for trial in range(10)]
    for got, (cmc, mean_ap, minp) in zip(search.trials, expected):
        assert len(got.cmc) == len(cmc) == len(TREE)  # four gallery identities: a 4-long CMC
        assert np.allclose(got.cmc, cmc) and got.mAP == pytest.approx(mean_ap) and got.mINP == pytest.approx(minp)
    assert search.mAP == pytest.approx(np.mean([e[1] for e in expected]))
    assert search.rank1 == pytest.approx(np.mean([e[0][0] for e in expected]))


def test_llcm_visible_to_infrared_probes_are_the_drawn_infrared_images(llcm):
    _, _, result = llcm
    infrared_folders = sum(len([c for c in kinds["nir"] if c != 3]) for kinds in TREE.values())
    visible_images = sum(sum(kinds["vis"].values()) for kinds in TREE.values())
    for trial in result["visible->infrared"].trials:
        assert (trial.num_query, trial.num_gallery) == (infrared_folders, visible_images)
    infrared_images = sum(n for kinds in TREE.values() for c, n in kinds["nir"].items() if c != 3)
    visible_folders = sum(len(kinds["vis"]) for kinds in TREE.values())
    for trial in result["infrared->visible"].trials:
        assert (trial.num_query, trial.num_gallery) == (infrared_images, visible_folders)


def test_llcm_visible_to_infrared_differs_from_visible_probes(llcm):
    root, _, result = llcm
    got = result["visible->infrared"]
    old = [_visible_probes_trial(root, trial) for trial in range(10)]
    assert abs(got.mAP - np.mean([o[1] for o in old])) > 0.01
    assert abs(got.mINP - np.mean([o[2] for o in old])) > 0.01


def test_llcm_embeds_each_listed_image_once(llcm):
    root, model, _ = llcm
    folders = _folders(root, "vis", VISIBLE_CAMERAS) + _folders(root, "nir", INFRARED_CAMERAS)
    listed = {path for _, _, paths in folders for path in paths}
    assert set(model.counts) == listed and set(model.counts.values()) == {1}
    assert not any(("test_nir/cam3/" in path) or ("/0099/" in path) for path in model.counts)
