"""Model cards to Hub standard: the YAML header, read back with huggingface_hub's own parsers, holds the
library, license, task, tags, datasets, base model and a model-index with every recorded evaluation."""

from __future__ import annotations

import math

import pytest
from huggingface_hub import ModelCard
from huggingface_hub.repocard import metadata_load

import csdn
from csdn import hub
from csdn.io.card import evaluation_records, protocol_label


@pytest.fixture
def results(tiny_model, tiny_sysu):
    """Two real evaluations of the tiny model: all-search and indoor-search, two trials each."""
    return [
        csdn.evaluate(tiny_model, "sysu", root=tiny_sysu, mode=mode, trials=[0, 1], progress=False)
        for mode in ("all", "indoor")
    ]


def _metrics(card_data) -> dict[tuple[str, str, str], float]:
    """(dataset, config, metric type) -> value, from a parsed model-index."""
    return {(r.dataset_name, r.dataset_config, r.metric_type): r.metric_value for r in card_data.eval_results}


def test_header_parses_back_with_huggingface_hub(tiny_model, results, tmp_path):
    tiny_model.provenance.update(dataset="sysu", license="mit", base_model="timm/resnet50_clip.openai")
    folder = hub.save_pretrained(tiny_model, tmp_path / "model", repo_id="acme/csdn-sysu", evaluation=results)

    header = metadata_load(folder / "README.md")
    assert header["library_name"] == "csdn-reid" and header["license"] == "mit"
    assert header["pipeline_tag"] == "image-feature-extraction"
    assert header["datasets"] == ["sysu-mm01"] and header["base_model"] == "timm/resnet50_clip.openai"
    assert {"person-reid", "visible-infrared"} <= set(header["tags"])

    card = ModelCard.load(folder / "README.md")
    assert card.data.model_name == "csdn-sysu"
    metrics = _metrics(card.data)
    assert len(metrics) == 2 * 3  # two protocols x rank-1, mAP, mINP
    for result, mode in zip(results, ("all", "indoor")):
        where = ("SYSU-MM01", f"{mode}-search single-shot, infrared->visible")
        assert math.isclose(metrics[(*where, "rank-1")], 100 * result.rank1, abs_tol=0.006)
        assert math.isclose(metrics[(*where, "map")], 100 * result.mAP, abs_tol=0.006)
        assert math.isclose(metrics[(*where, "minp")], 100 * result.mINP, abs_tol=0.006)
    assert all(r.task_type == "image-feature-extraction" and r.dataset_split == "test" for r in card.data.eval_results)
    # the records travel with the weights, so the card can be written again from a loaded model
    assert csdn.load(folder).provenance["evaluation"] == evaluation_records(results)


def test_a_new_result_replaces_the_same_protocol_and_keeps_the_others(tiny_model, results, tmp_path):
    hub.save_pretrained(tiny_model, tmp_path / "m", evaluation=results)
    loaded = csdn.load(tmp_path / "m")
    changed = dict(evaluation_records(results[0])[0], rank1=0.5)
    hub.save_pretrained(loaded, tmp_path / "m", evaluation=[changed])
    metrics = _metrics(ModelCard.load(tmp_path / "m" / "README.md").data)
    assert metrics[("SYSU-MM01", "all-search single-shot, infrared->visible", "rank-1")] == 50.0
    assert ("SYSU-MM01", "indoor-search single-shot, infrared->visible", "rank-1") in metrics
    assert len(metrics) == 6


def test_push_to_hub_writes_the_evaluation_into_the_uploaded_card(tiny_model, results, fake_hub):
    hub.push_to_hub(tiny_model, "acme/pushed", token="hf_test", evaluation=results[0])
    text = fake_hub.files("acme/pushed")["README.md"].decode()
    metrics = _metrics(ModelCard(text).data)
    assert metrics[("SYSU-MM01", "all-search single-shot, infrared->visible", "map")] == pytest.approx(
        100 * results[0].mAP, abs=0.006
    )


def test_a_card_without_evaluations_has_no_model_index(tiny_model, tmp_path):
    folder = hub.save_pretrained(tiny_model, tmp_path / "m")
    header = metadata_load(folder / "README.md")
    assert "model-index" not in header and header["library_name"] == "csdn-reid"
    assert "datasets" not in header and "base_model" not in header


def test_bad_evaluation_records_are_refused(tiny_model, results, tmp_path):
    record = evaluation_records(results[0])[0]
    with pytest.raises(ValueError, match="fraction in \\[0, 1\\]"):
        hub.save_pretrained(tiny_model, tmp_path / "a", evaluation=[dict(record, mAP=float("nan"))])
    with pytest.raises(ValueError, match="fraction in \\[0, 1\\]"):
        hub.save_pretrained(tiny_model, tmp_path / "b", evaluation=[dict(record, rank1=71.2)])  # a percentage
    with pytest.raises(ValueError, match="lacks mINP"):
        hub.save_pretrained(tiny_model, tmp_path / "c", evaluation=[{k: v for k, v in record.items() if k != "mINP"}])
    with pytest.raises(TypeError, match="csdn.evaluate"):
        hub.save_pretrained(tiny_model, tmp_path / "d", evaluation=[3.5])
    assert not (tmp_path / "a").exists()


def test_protocol_labels_name_what_changes_the_numbers():
    assert (
        protocol_label({"mode": "indoor", "shots": 10, "trials": [0], "flip": True, "rerank": False})
        == "indoor-search 10-shot"
    )
    assert protocol_label({"trials": [1], "flip": True, "rerank": True}) == "trial 1 re-ranked"
    assert protocol_label({"shots": 1, "trials": [0, 1], "flip": False, "rerank": False}) == "single-shot no flip"
