"""The demo model shipped in weights/synthetic-tiny: registered, loads offline by default, and still
scores what its model card records on freshly generated held-out people."""

from __future__ import annotations

import json

import huggingface_hub.constants as hf_constants
import pytest
import torch
from huggingface_hub import ModelCard

import csdn
from csdn.data.synthetic import write_sysu
from csdn.hub.registry import default_registry_path, open_registry
from csdn.system.fileio import sha256_file

NAME = "synthetic-tiny"
# Recorded and recomputed scores may differ by float summation order across machines.
TOLERANCE = 0.02


@pytest.fixture
def no_network(monkeypatch, tmp_path):
    """Offline mode, an empty Hub cache and an endpoint nothing listens on: any download attempt fails."""
    monkeypatch.setattr(hf_constants, "HF_HUB_OFFLINE", True)
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    monkeypatch.setattr(hf_constants, "ENDPOINT", "http://127.0.0.1:9")
    monkeypatch.setattr(hf_constants, "HF_HUB_CACHE", str(tmp_path / "empty-cache"))
    monkeypatch.delenv("CSDN_REGISTRY", raising=False)


@pytest.fixture(scope="module")
def bundled() -> csdn.CSDN:
    return csdn.load(NAME, progress=False)


def test_registered_as_the_bundled_default_with_its_hash():
    registry = open_registry()
    entry = registry.get(NAME)
    assert csdn.DEFAULT_MODEL == NAME
    assert entry.bundled == NAME and entry.repo_id is None
    weights = registry.bundled_dir(entry) / "model.safetensors"
    assert entry.sha256 == sha256_file(weights)
    assert weights.stat().st_size < 25 * 10**6  # small enough to ship inside the package (the wheel limit)


def test_loads_offline_by_name_and_by_default(no_network, bundled):
    by_name = csdn.load(NAME, progress=False)
    default = csdn.load(progress=False)
    assert not by_name.training and not default.training
    reference = bundled.state_dict()
    for model in (by_name, default):
        assert all(torch.equal(tensor, reference[name]) for name, tensor in model.state_dict().items())
    assert by_name.config.image_size == (64, 32)


def test_model_card_and_config_describe_how_it_was_made(bundled):
    folder = default_registry_path().parent / NAME
    card = (folder / "README.md").read_text(encoding="utf-8")
    meta = bundled.provenance
    assert meta["reproduce"] == "python examples/train_synthetic_tiny.py" and meta["reproduce"] in card
    assert "not a model for real cameras" in card
    sidecar = json.loads((folder / "config.json").read_text())["meta"]
    # config.json also records the weights' SHA-256 (a file's own metadata cannot hold its hash)
    assert sidecar.pop("weights_sha256") == sha256_file(folder / "model.safetensors")
    assert sidecar == meta
    assert "untrained" in meta["baselines"] and "untrained" in card
    # the three stages trained a model that clearly beats its own random initialisation
    trained, untrained = meta["metrics"]["all-search"], meta["baselines"]["untrained"]["all-search"]
    assert trained["mAP"] > 2 * untrained["mAP"] and trained["rank1"] > 2 * untrained["rank1"]
    assert f"{100 * trained['rank1']:.1f} ± {100 * trained['rank1_std']:.1f}" in card


def test_model_card_header_holds_the_held_out_scores(bundled):
    card = ModelCard.load(default_registry_path().parent / NAME / "README.md")
    assert card.data.library_name == "csdn-reid" and card.data.license == "mit"
    assert card.data.model_name == NAME and card.data.datasets == ["csdn-reid-synthetic-pedestrians"]
    values = {(r.dataset_config, r.metric_type): r.metric_value for r in card.data.eval_results}
    for protocol in ("all", "indoor"):
        recorded = bundled.provenance["metrics"][f"{protocol}-search"]
        where = f"{protocol}-search single-shot, infrared->visible"
        for key, metric in (("rank1", "rank-1"), ("mAP", "map"), ("mINP", "minp")):
            assert values[(where, metric)] == pytest.approx(100 * recorded[key], abs=0.01)


def test_reproduces_its_recorded_check_evaluation(bundled, tmp_path):
    check = bundled.provenance["check"]
    generator = dict(check["generator"])
    assert generator.pop("layout") == "sysu"
    write_sysu(tmp_path / "people", **{**generator, "size": tuple(generator["size"])})
    result = csdn.evaluate(bundled, "sysu", root=tmp_path / "people", progress=False, **check["protocol"])
    assert result.rank1 == pytest.approx(check["rank1"], abs=TOLERANCE)
    assert result.mAP == pytest.approx(check["mAP"], abs=TOLERANCE)
