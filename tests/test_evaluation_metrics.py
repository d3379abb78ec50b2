"""CMC / mAP / mINP: hand-worked cases of each rule, and the vectorised code against a per-query loop."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from reference_metrics import reference_metrics

from csdn.evaluation import eval_llcm, eval_regdb, eval_sysu


def test_sysu_cmc_counts_identities_not_images():
    # ranked gallery identities 2, 2, 3, 1(true): the de-duplicated list is 2, 3, 1 -> rank 3
    cmc, mean_ap, minp = eval_sysu([[0.1, 0.2, 0.3, 0.4]], [1], [2, 2, 3, 1], [1], [1, 1, 4, 5])
    assert cmc.tolist() == [0.0, 0.0, 1.0]  # 3 gallery identities -> a CMC of length 3, not 20
    assert mean_ap == pytest.approx(1 / 4) and minp == pytest.approx(1 / 4)
    cmc_plain, _, _ = eval_regdb([[0.1, 0.2, 0.3, 0.4]], [1], [2, 2, 3, 1])
    assert cmc_plain.tolist() == [0.0, 0.0, 0.0, 1.0]  # RegDB counts images


def test_sysu_camera3_query_ignores_camera2_gallery():
    dist = [[0.1, 0.2, 0.3]]
    g_pids, g_cams = [1, 2, 1], [2, 1, 1]
    cmc, mean_ap, minp = eval_sysu(dist, [1], g_pids, [3], g_cams)
    assert cmc.tolist() == [0.0, 1.0] and mean_ap == pytest.approx(0.5) and minp == pytest.approx(0.5)
    cmc, mean_ap, minp = eval_sysu(dist, [1], g_pids, [6], g_cams)  # camera 6 keeps everything
    assert cmc.tolist() == [1.0, 1.0]
    assert mean_ap == pytest.approx((1 + 2 / 3) / 2) and minp == pytest.approx(2 / 3)


def test_sysu_query_whose_only_match_is_ignored_is_skipped():
    dist = [[0.1, 0.2], [0.2, 0.1]]
    # query 0 (camera 3) matches only a camera-2 image -> skipped; query 1 ranks its match first
    cmc, mean_ap, minp = eval_sysu(dist, [1, 2], [1, 2], [3, 6], [2, 1])
    assert cmc.tolist() == [1.0, 1.0] and mean_ap == 1.0 and minp == 1.0


def test_llcm_ignores_same_identity_same_camera():
    dist = [[0.1, 0.2, 0.3]]
    cmc, mean_ap, minp = eval_llcm(dist, [1], [1, 2, 1], [2], [2, 1, 5])
    assert cmc.tolist() == [0.0, 1.0] and mean_ap == pytest.approx(0.5)
    # another identity in the query's camera is kept
    cmc, _, _ = eval_llcm(dist, [1], [2, 1, 3], [2], [2, 1, 5])
    assert cmc.tolist() == [0.0, 1.0, 1.0]


def test_map_and_minp_on_a_worked_ranking():
    # ranking: T F T F F T -> precisions at hits 1, 2/3, 3/6; hardest hit at rank 6
    g_pids = [1, 9, 1, 8, 7, 1]
    cmc, mean_ap, minp = eval_regdb([[0, 1, 2, 3, 4, 5]], [1], g_pids)
    assert mean_ap == pytest.approx((1 + 2 / 3 + 1 / 2) / 3) and minp == pytest.approx(3 / 6)
    assert cmc.tolist() == [1.0] * 6
    # a second query (identity 7) ranks its only match first: AP 1, INP 1; means over both queries
    dist = np.array([[0, 1, 2, 3, 4, 5], [1, 2, 3, 4, 0, 5]], dtype=float)
    cmc, mean_ap, minp = eval_regdb(dist, [1, 7], g_pids)
    assert mean_ap == pytest.approx(((1 + 2 / 3 + 1 / 2) / 3 + 1) / 2) and minp == pytest.approx((0.5 + 1) / 2)
    assert cmc[0] == 1.0
    dist[1] = [0, 2, 3, 4, 1, 5]  # now ranked F T: AP 1/2, INP 1/2
    cmc, mean_ap, minp = eval_regdb(dist, [1, 7], g_pids)
    assert cmc[:2].tolist() == [0.5, 1.0] and minp == pytest.approx((0.5 + 0.5) / 2)
    assert mean_ap == pytest.approx(((1 + 2 / 3 + 1 / 2) / 3 + 0.5) / 2)


def test_queries_without_a_true_match_are_skipped():
    rng = np.random.default_rng(3)
    dist, g_pids = rng.random((5, 30)), rng.integers(0, 6, 30)
    q_pids = np.array([0, 1, 2, 3, 99])  # identity 99 is not in the gallery
    cams_q, cams_g = np.ones(5, int), np.full(30, 4)
    for with_extra, without in [
        (eval_sysu(dist, q_pids, g_pids, cams_q, cams_g), eval_sysu(dist[:4], q_pids[:4], g_pids, cams_q[:4], cams_g)),
        (eval_regdb(dist, q_pids, g_pids), eval_regdb(dist[:4], q_pids[:4], g_pids)),
    ]:
        assert np.array_equal(with_extra[0], without[0]) and with_extra[1:] == without[1:]
    with pytest.raises(ValueError, match="none of the 1 queries has a true match"):
        eval_regdb(dist[:1], [99], g_pids)


def test_small_galleries_give_a_short_cmc():
    cmc, _, _ = eval_sysu(np.zeros((2, 6)), [0, 1], [0, 0, 1, 1, 2, 2], [1, 1], [1, 4, 1, 4, 1, 4])
    assert len(cmc) == 3 and cmc[-1] == 1.0
    cmc, _, _ = eval_regdb(np.zeros((2, 6)), [0, 1], [0, 0, 1, 1, 2, 2], max_rank=4)
    assert len(cmc) == 4


def test_inputs_are_checked_and_tensors_accepted():
    dist = torch.tensor([[0.2, 0.1]])
    cmc, mean_ap, _ = eval_regdb(dist, torch.tensor([5]), torch.tensor([4, 5]))
    assert cmc.tolist() == [1.0, 1.0] and mean_ap == 1.0
    with pytest.raises(ValueError, match="g_pids has 3 entries"):
        eval_regdb(dist, [5], [4, 5, 6])
    with pytest.raises(ValueError, match="NaN"):
        eval_regdb([[np.nan, 0.1]], [5], [4, 5])
    with pytest.raises(ValueError, match="max_rank"):
        eval_regdb(dist, [5], [4, 5], max_rank=0)


@pytest.mark.parametrize("seed", range(6))
def test_vectorised_metrics_equal_the_per_query_loop(seed):
    rng = np.random.default_rng(seed)
    num_q, num_g, num_ids = 40, int(rng.integers(5, 90)), int(rng.integers(3, 30))
    dist = rng.random((num_q, num_g))
    if seed % 2:
        dist = np.round(dist, 1)  # many ties: both use NumPy's default argsort, as the reference scripts
    q_pids, g_pids = rng.integers(0, num_ids, num_q), rng.integers(0, num_ids, num_g)
    g_pids[: min(num_ids, num_g)] = np.arange(min(num_ids, num_g))  # most queries have a match
    q_cams, g_cams = rng.integers(1, 7, num_q), rng.integers(1, 7, num_g)
    cases = {
        "sysu": eval_sysu(dist, q_pids, g_pids, q_cams, g_cams),
        "llcm": eval_llcm(dist, q_pids, g_pids, q_cams, g_cams),
        "regdb": eval_regdb(dist, q_pids, g_pids),
    }
    for rule, (cmc, mean_ap, minp) in cases.items():
        ref_cmc, ref_ap, ref_inp = reference_metrics(dist, q_pids, g_pids, q_cams, g_cams, rule=rule)
        np.testing.assert_allclose(cmc, ref_cmc, atol=1e-12, err_msg=rule)
        assert mean_ap == pytest.approx(ref_ap, abs=1e-12) and minp == pytest.approx(ref_inp, abs=1e-12), rule


def test_large_query_sets_are_scored_in_blocks(monkeypatch):
    import csdn.evaluation.metrics as evaluation

    rng = np.random.default_rng(9)
    dist, q_pids, g_pids = rng.random((50, 20)), rng.integers(0, 8, 50), rng.integers(0, 8, 20)
    q_cams, g_cams = rng.integers(1, 7, 50), rng.integers(1, 7, 20)
    whole = eval_sysu(dist, q_pids, g_pids, q_cams, g_cams)
    monkeypatch.setattr(evaluation, "_BLOCK_ELEMENTS", 60)  # 3 query rows per block
    blocked = eval_sysu(dist, q_pids, g_pids, q_cams, g_cams)
    assert np.array_equal(whole[0], blocked[0]) and whole[1:] == blocked[1:]
