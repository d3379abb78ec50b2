"""``csdn publish``: the authors' checkpoint converted, evaluated on the standard protocol, carded with the
metrics and pushed, in one command, against the local fake Hub with a tiny model and synthetic data."""

from __future__ import annotations

import hashlib
import json
import math
import re

import pytest
import torch
from huggingface_hub import ModelCard
from official_format import official_state_dict

import csdn
from csdn import CSDNConfig, cli
from csdn.cli.publish import card_provenance
from csdn.data.synthetic import write_regdb
from csdn.hub.official import from_official
from csdn.system.fileio import sha256_file


@pytest.fixture
def checkpoint(tmp_path):
    """A tiny checkpoint in the authors' format (``model_119.pth``)."""
    path = tmp_path / "model_119.pth"
    torch.save(official_state_dict(CSDNConfig.tiny(num_classes=6)), path)
    return path


def _publish(*args: str) -> int:
    # the synthetic trees are not the benchmarks' full test sets (tests/test_runs_round2.py: refused without it)
    return cli.main(["publish", *map(str, args), "--quiet", "--allow-nonstandard"])


def _metrics(card: ModelCard) -> dict[tuple[str, str], float]:
    return {(r.dataset_config, r.metric_type): r.metric_value for r in card.data.eval_results}


def test_publish_converts_evaluates_cards_and_pushes(checkpoint, tiny_sysu, fake_hub, capsys):
    code = _publish(checkpoint, "acme/csdn-sysu", "--dataset", "sysu", "--root", tiny_sysu, "--image-size", 64, 32)
    out = capsys.readouterr().out
    assert code == 0, out
    files = fake_hub.files("acme/csdn-sysu")
    assert set(files) == {"model.safetensors", "config.json", "README.md"}

    card = ModelCard(files["README.md"].decode())
    assert card.data.datasets == ["sysu-mm01"] and card.data.library_name == "csdn-reid"
    assert card.data.model_name == "csdn-sysu"
    # the numbers are those of the standard protocol, recomputed here from the same checkpoint
    model = from_official(checkpoint, image_size=(64, 32))
    metrics = _metrics(card)
    for mode in ("all", "indoor"):
        expected = csdn.evaluate(model, "sysu", root=tiny_sysu, mode=mode, progress=False)
        assert len(expected.searches[0].trials) == 10
        where = f"{mode}-search single-shot, infrared->visible"
        assert math.isclose(metrics[(where, "rank-1")], 100 * expected.rank1, abs_tol=0.006)
        assert math.isclose(metrics[(where, "map")], 100 * expected.mAP, abs_tol=0.006)
        assert math.isclose(metrics[(where, "minp")], 100 * expected.mINP, abs_tol=0.006)
    assert len(metrics) == 6

    # the printed registry entry pins exactly what was pushed
    entry = json.loads(out[out.index("{") :])
    assert entry["revision"] == fake_hub.branches["acme/csdn-sysu"]["main"]
    assert entry["sha256"] == hashlib.sha256(files["model.safetensors"]).hexdigest()
    loaded = csdn.load("hf-hub:acme/csdn-sysu", revision=entry["revision"])
    assert loaded.provenance["dataset"] == "SYSU-MM01" and loaded.provenance["source"] == "model_119.pth"


def test_dry_run_writes_the_folder_and_pushes_nothing(checkpoint, tiny_sysu, fake_hub, tmp_path, monkeypatch, capsys):
    monkeypatch.chdir(tmp_path)
    assert (
        _publish(
            checkpoint,
            "acme/csdn-sysu",
            "--dataset",
            "sysu",
            "--root",
            tiny_sysu,
            "--image-size",
            64,
            32,
            "--dry-run",
            "--license",
            "mit",
        )
        == 0
    )
    folder = tmp_path / "csdn-sysu"  # the repository's name, in the working directory
    assert sorted(p.name for p in folder.iterdir()) == ["README.md", "config.json", "model.safetensors"]
    assert fake_hub.requests == []
    card = ModelCard.load(folder / "README.md")
    assert card.data.license == "mit" and len(card.data.eval_results) == 6
    assert 'csdn.load("hf-hub:acme/csdn-sysu")' in card.text
    assert "nothing was pushed" in capsys.readouterr().out

    before = sha256_file(folder / "model.safetensors")
    assert (
        _publish(
            checkpoint, "acme/csdn-sysu", "--dataset", "sysu", "--root", tiny_sysu, "--image-size", 64, 32, "--dry-run"
        )
        == 2
    )
    assert "--overwrite" in capsys.readouterr().err
    assert sha256_file(folder / "model.safetensors") == before


def test_a_saved_model_on_regdb_records_both_directions(tiny_model, tmp_path, fake_hub, capsys):
    root = tmp_path / "regdb"
    write_regdb(root, 4, 4, 2, 2, seed=1)
    tiny_model.save_pretrained(tmp_path / "model")
    assert (
        _publish(
            tmp_path / "model",
            "acme/csdn-regdb",
            "--dataset",
            "regdb",
            "--root",
            root,
            "--trial",
            2,
            "--dry-run",
            "--output",
            tmp_path / "release",
        )
        == 0
    )
    card = ModelCard.load(tmp_path / "release" / "README.md")
    configs = {r.dataset_config for r in card.data.eval_results}
    assert configs == {"trial 2, visible->infrared", "trial 2, infrared->visible"}
    assert {r.dataset_name for r in card.data.eval_results} == {"RegDB"}
    assert re.search(r"\| RegDB \| trial 2 \| visible->infrared \| 1 \|", card.text)


@pytest.mark.parametrize(
    "args, message",
    [
        (["acme-no-org", "--dataset", "sysu"], "org/name"),
        (["acme/x", "--dataset", "sysu", "--trial", "3"], "--trial applies to --dataset regdb only"),
    ],
)
def test_bad_arguments_fail_before_any_work(checkpoint, tiny_sysu, fake_hub, capsys, args, message):
    assert _publish(checkpoint, *args, "--root", tiny_sysu) == 2
    assert message in capsys.readouterr().err
    assert fake_hub.requests == []


def test_a_missing_dataset_folder_is_named(checkpoint, tmp_path, capsys):
    assert _publish(checkpoint, "acme/x", "--dataset", "llcm", "--root", tmp_path / "nowhere") == 2
    assert "--root" in capsys.readouterr().err


def test_an_rn50_model_names_clip_rn50_as_its_base_model(rn50_model, tiny_model):
    assert card_provenance(rn50_model, "llcm", None) == {
        "dataset": "LLCM",
        "license": "other",
        "base_model": "timm/resnet50_clip.openai",
    }
    assert "base_model" not in card_provenance(tiny_model, "sysu", "mit")
