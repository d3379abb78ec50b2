"""``csdn.evaluate``: every image embedded once over all trials and directions, correct scores, caching, CLI."""

from __future__ import annotations

import json

import numpy as np
import pytest
import torch
from vireid_trees import CountingModel, make_llcm, make_regdb, make_sysu

import csdn
from csdn import CSDNConfig, cli
from csdn.data import LLCM, SYSUMM01, RegDB
from csdn.data.samples import sample_arrays
from csdn.evaluation import eval_llcm, eval_regdb, eval_sysu
from csdn.model.network import CSDN


@pytest.fixture
def sysu_root(tmp_path):
    return make_sysu(tmp_path / "sysu", test_ids=(3, 5, 7, 9, 11), images=4, absent=[(5, 2), (9, 6)])


def _expected_scores(model, query, gallery, metric):
    q = model.embed_image([s.path for s in query], query[0].modality).numpy()
    g = model.embed_image([s.path for s in gallery], gallery[0].modality).numpy()
    (q_pids, q_cams), (g_pids, g_cams) = sample_arrays(query), sample_arrays(gallery)
    if metric is eval_regdb:
        return metric(-(q @ g.T), q_pids, g_pids)
    return metric(-(q @ g.T), q_pids, g_pids, q_cams, g_cams)


def test_sysu_ten_trials_embed_each_image_once(sysu_root):
    model = CountingModel()
    result = csdn.evaluate(model, "sysu", sysu_root, progress=False)
    reader = SYSUMM01(sysu_root)
    needed = {s.path for s in reader.query()} | {s.path for t in range(10) for s in reader.gallery(trial=t)}
    assert set(model.counts) == needed and set(model.counts.values()) == {1}
    assert sorted(model.calls) == [("infrared", len(reader.query())), ("visible", len(needed) - len(reader.query()))]
    search = result["infrared->visible"]
    assert [t.trial for t in search.trials] == list(range(10))
    for trial in (0, 7):
        cmc, mean_ap, minp = _expected_scores(CountingModel(), reader.query(), reader.gallery(trial=trial), eval_sysu)
        got = search.trials[trial]
        assert np.allclose(got.cmc, cmc) and got.mAP == pytest.approx(mean_ap) and got.mINP == pytest.approx(minp)
    assert result.rank1 == pytest.approx(np.mean([t.cmc[0] for t in search.trials]))
    assert result.std["mAP"] == pytest.approx(np.std([t.mAP for t in search.trials], ddof=1))
    assert result.settings == {"mode": "all", "shots": 1, "trials": list(range(10)), "flip": True, "rerank": False}


def test_sysu_indoor_multishot_and_selected_trials(sysu_root):
    model = CountingModel()
    result = csdn.evaluate(model, SYSUMM01(sysu_root), mode="indoor", shots=10, trials=[2, 5], progress=False)
    trials = result.searches[0].trials
    assert [t.trial for t in trials] == [2, 5] and trials[0].num_gallery == (5 * 2 - 1) * 4
    assert set(model.counts.values()) == {1}


def test_regdb_both_directions_share_embeddings(tmp_path):
    root = make_regdb(tmp_path / "regdb", trials=2, ids=6, images=3)
    model = CountingModel()
    result = csdn.evaluate(model, "regdb", root, trials=[1, 2], progress=False)
    assert [s.direction for s in result.searches] == ["visible->infrared", "infrared->visible"]
    reader = RegDB(root)
    test_images = {s.path for t in (1, 2) for s in reader.query(trial=t) + reader.gallery(trial=t)}
    assert set(model.counts) == test_images and set(model.counts.values()) == {1}
    cmc, mean_ap, _ = _expected_scores(CountingModel(), reader.query("t2v", 2), reader.gallery("t2v", 2), eval_regdb)
    got = result["thermal->visible"].trials[1]
    assert np.allclose(got.cmc, cmc) and got.mAP == pytest.approx(mean_ap)
    # by default only the reader's own split: a RegDB model is trained per split
    assert csdn.evaluate(CountingModel(), "regdb", root, progress=False).settings["trials"] == [1]
    assert csdn.evaluate(CountingModel(), RegDB(root, trial=2), progress=False).settings["trials"] == [2]


def test_llcm_directions(tmp_path):
    root = make_llcm(tmp_path / "llcm")
    model = CountingModel()
    result = csdn.evaluate(model, LLCM(root), direction="v2i", trials=[0, 1, 2], progress=False)
    assert [s.direction for s in result.searches] == ["visible->infrared"] and set(model.counts.values()) == {1}
    reader = LLCM(root)
    probes, gallery = reader.search("v2i", 1)  # the drawn infrared images probe every visible image
    assert probes == reader.gallery("v2i", 1) and gallery == reader.query("v2i")
    cmc, mean_ap, minp = _expected_scores(CountingModel(), probes, gallery, eval_llcm)
    got = result.searches[0].trials[1]
    assert (got.num_query, got.num_gallery) == (len(probes), len(gallery))
    assert np.allclose(got.cmc, cmc) and got.mAP == pytest.approx(mean_ap) and got.mINP == pytest.approx(minp)


def test_real_tiny_csdn_embeds_each_image_once(sysu_root, monkeypatch):
    torch.manual_seed(0)
    model = CSDN(CSDNConfig.tiny()).eval()
    embedded: list[str] = []
    original = model.embed_image

    def counting(images, modality, **options):
        embedded.extend(images)
        return original(images, modality, **options)

    monkeypatch.setattr(model, "embed_image", counting)
    result = csdn.evaluate(model, "sysu", sysu_root, batch_size=16, progress=False)
    assert len(embedded) == len(set(embedded))
    reader = SYSUMM01(sysu_root)
    assert set(embedded) == {s.path for s in reader.query()} | {
        s.path for t in range(10) for s in reader.gallery(trial=t)
    }
    cmc, mean_ap, minp = _expected_scores(model, reader.query(), reader.gallery(trial=4), eval_sysu)
    got = result.searches[0].trials[4]
    assert np.allclose(got.cmc, cmc, atol=1e-6) and got.mAP == pytest.approx(mean_ap, abs=1e-5)
    assert 0 <= result.mINP <= result.mAP <= 1 and len(result.cmc) == 5  # 5 test identities


def test_readers_read_the_synthetic_generators_trees(tmp_path):
    from csdn.data.synthetic import write_llcm, write_regdb, write_sysu

    sysu = SYSUMM01(write_sysu(tmp_path / "sysu", 4, 3, 2, size=(32, 16)).root)
    assert sysu.train.num_classes == 4 and {s.pid for s in sysu.query()} == set(sysu.test_ids)
    regdb = RegDB(write_regdb(tmp_path / "regdb", 4, 4, 2, 2, size=(32, 16)).root, trial=2)
    assert regdb.train.num_classes == 4 and len(regdb.query("t2v")) == 4 * 2
    llcm = LLCM(write_llcm(tmp_path / "llcm", 4, 3, 2, 4, size=(32, 16)).root)
    assert llcm.train.num_classes == 4 and all(1 <= s.camid <= 4 for s in llcm.train.visible + llcm.train.infrared)
    result = csdn.evaluate(CountingModel(), llcm, trials=[0, 1], progress=False)
    assert [s.direction for s in result.searches] == ["infrared->visible", "visible->infrared"]


def test_disk_cache_skips_the_second_embedding(sysu_root, tmp_path):
    cache = tmp_path / "cache"
    model = CountingModel()
    first = csdn.evaluate(model, "sysu", sysu_root, trials=[0, 1], cache_dir=cache, progress=False)
    files = list(cache.iterdir())
    assert len(files) == 1 and files[0].suffix == ".npz"  # no temporary files left behind
    model.counts.clear()
    second = csdn.evaluate(model, "sysu", sysu_root, trials=[0, 1, 2], cache_dir=cache, progress=False)
    reader = SYSUMM01(sysu_root)
    new = {s.path for s in reader.gallery(trial=2)} - {s.path for t in (0, 1) for s in reader.gallery(trial=t)}
    assert set(model.counts) == new  # only trial 2's new gallery images
    assert second.searches[0].trials[1].to_dict() == first.searches[0].trials[1].to_dict()
    model.counts.clear()
    csdn.evaluate(model, "sysu", sysu_root, trials=[0], flip=False, cache_dir=cache, progress=False)
    assert model.counts  # other settings: another cache entry
    model.counts.clear()
    with torch.no_grad():
        model.scale.fill_(2.0)  # other weights: re-embed
    csdn.evaluate(model, "sysu", sysu_root, trials=[0], cache_dir=cache, progress=False)
    assert model.counts
    assert len(list(cache.iterdir())) == 3


def test_corrupt_cache_is_rebuilt(sysu_root, tmp_path):
    model = CountingModel()
    cache = tmp_path / "cache"
    csdn.evaluate(model, "sysu", sysu_root, trials=[0], cache_dir=cache, progress=False)
    (cache_file,) = cache.iterdir()
    cache_file.write_bytes(b"not an npz")
    model.counts.clear()
    csdn.evaluate(model, "sysu", sysu_root, trials=[0], cache_dir=cache, progress=False)
    assert model.counts and np.load(cache_file)["vectors"].shape[0] == sum(1 for _ in model.counts)


def test_rerank_is_opt_in_and_changes_distances(sysu_root):
    plain = csdn.evaluate(CountingModel(), "sysu", sysu_root, trials=[0], progress=False)
    reranked = csdn.evaluate(CountingModel(), "sysu", sysu_root, trials=[0], rerank=True, progress=False)
    assert reranked.settings["rerank"] is True and plain.settings["rerank"] is False
    assert reranked.mAP != plain.mAP and 0 < reranked.mAP <= 1
    assert "not part of the paper's protocol" in str(reranked) and "re-ranking" not in str(plain)


def test_result_table_and_json(sysu_root, tmp_path):
    result = csdn.evaluate(CountingModel(), "sysu", sysu_root, trials=[0, 1, 2], progress=False)
    text = str(result)
    assert "SYSU-MM01" in text and "infrared->visible" in text and "mean" in text and "std" in text
    assert f"{100 * result.rank1:.2f}" in text and f"{100 * result.mINP:.2f}" in text
    data = json.loads(result.to_json())
    assert data["dataset"] == "SYSU-MM01" and data["settings"]["trials"] == [0, 1, 2]
    search = data["searches"][0]
    assert search["mean"]["rank1"] == pytest.approx(result.rank1) and len(search["trials"]) == 3
    assert search["trials"][0]["num_query"] == len(SYSUMM01(sysu_root).query())


def test_bad_arguments_are_explained(sysu_root, tmp_path):
    model = CountingModel()
    with pytest.raises(ValueError, match="unknown dataset"):
        csdn.evaluate(model, "market", sysu_root)
    with pytest.raises(ValueError, match="needs root="):
        csdn.evaluate(model, "sysu")
    with pytest.raises(ValueError, match="already has its folder"):
        csdn.evaluate(model, SYSUMM01(sysu_root), sysu_root)
    with pytest.raises(ValueError, match="has no mode setting"):
        csdn.evaluate(model, "regdb", make_regdb(tmp_path / "regdb", trials=1), mode="indoor", progress=False)
    with pytest.raises(ValueError, match="searches infrared->visible, not visible->infrared"):
        csdn.evaluate(model, "sysu", sysu_root, direction="v2i", progress=False)
    with pytest.raises(TypeError, match="embed_image"):
        csdn.evaluate(object(), "sysu", sysu_root, progress=False)
    with pytest.raises(ValueError, match="trials is empty"):
        csdn.evaluate(model, "sysu", sysu_root, trials=[], progress=False)


def test_cli_eval_prints_table_and_writes_json(sysu_root, tmp_path, monkeypatch, capsys):
    import csdn.hub.loading

    loaded = []
    monkeypatch.setattr(csdn.hub.loading, "load", lambda name, **kw: loaded.append(name) or CountingModel())
    out = tmp_path / "out" / "sysu.json"
    code = cli.main(
        [
            "eval",
            "--dataset",
            "sysu",
            "--root",
            str(sysu_root),
            "--model",
            "my-model",
            "--trials",
            "0",
            "1",
            "--direction",
            "both",
            "--json",
            str(out),
            "--quiet",
        ]
    )
    assert code == 0 and loaded == ["my-model"]
    printed = capsys.readouterr().out
    assert "infrared->visible" in printed and "trial" in printed
    assert json.loads(out.read_text())["settings"]["trials"] == [0, 1]


def test_cli_eval_reports_a_broken_dataset(tmp_path, monkeypatch, capsys):
    import csdn.hub.loading

    monkeypatch.setattr(csdn.hub.loading, "load", lambda name, **kw: CountingModel())
    code = cli.main(["eval", "--dataset", "llcm", "--root", str(tmp_path / "missing"), "--model", "x", "--quiet"])
    assert code == 2
    err = capsys.readouterr().err
    assert err.startswith("csdn: error: ") and "root folder does not exist" in err
