"""The zoo's two axes: registry entries named <architecture>.<tag> with their short names as aliases,
architecture presets read from data files, and create_model over the architecture -> class table."""

from __future__ import annotations

import dataclasses
import json
from pathlib import Path

import pytest
import torch

import csdn
from csdn.config import CSDNConfig, architecture_names, read_preset
from csdn.hub.factory import ARCHITECTURES, create_model
from csdn.hub.registry import Registry, model_info, open_registry

PAPER_ALIASES = {
    "sysu": "csdn_rn50.sysu",
    "regdb": "csdn_rn50.regdb",
    "llcm": "csdn_rn50.llcm",
    "synthetic-tiny": "csdn_tiny.synthetic",
}


def write_registry(path: Path, models: dict, aliases: dict | None = None, version: int = 2) -> Path:
    data = {"format_version": version, "models": models, **({"aliases": aliases} if aliases is not None else {})}
    path.write_text(json.dumps(data))
    return path


# ---------------------------------------------------------------------------- registry
def test_installed_entries_carry_their_architecture_and_the_short_names_are_aliases():
    registry = open_registry()
    assert registry.format_version == 2
    for name, entry in registry.entries.items():
        assert entry.architecture in architecture_names() and entry.architecture in ARCHITECTURES
        assert name == f"{entry.architecture}.{entry.tag}"
    for alias, full in PAPER_ALIASES.items():
        assert registry.get(alias) is registry.get(full)
        assert model_info(alias).name == full
    assert set(PAPER_ALIASES) | set(PAPER_ALIASES.values()) <= set(csdn.list_models())


def test_an_alias_and_its_full_name_load_the_same_bundled_model():
    by_alias, by_name = csdn.load("synthetic-tiny", progress=False), csdn.load("csdn_tiny.synthetic", progress=False)
    reference = by_alias.state_dict()
    assert all(torch.equal(tensor, reference[key]) for key, tensor in by_name.state_dict().items())


@pytest.mark.parametrize(
    "models, aliases, message",
    [
        ({"x.a": {"repo_id": "a/b", "dataset": "d", "description": "x"}}, {}, "needs an 'architecture'"),
        (
            {"a": {"architecture": "csdn_rn50", "repo_id": "a/b", "dataset": "d", "description": "x"}},
            {},
            r"must be named 'csdn_rn50.<tag>'",
        ),
        (
            {"csdn_rn50.a": {"architecture": "csdn_rn50", "repo_id": "a/b", "dataset": "d", "description": "x"}},
            {"a": "csdn_rn50.b"},
            "'a' points at 'csdn_rn50.b', which is not a registered model",
        ),
    ],
)
def test_format_2_entries_and_aliases_are_checked(tmp_path, models, aliases, message):
    with pytest.raises(ValueError, match=message):
        Registry(write_registry(tmp_path / "r.json", models, aliases))


def test_format_1_registries_are_still_read_and_have_no_aliases(tmp_path):
    path = write_registry(
        tmp_path / "r.json", {"demo": {"repo_id": "a/b", "dataset": "d", "description": "x"}}, None, 1
    )
    registry = Registry(path)
    assert registry.names() == ["demo"] and registry.get("demo").architecture is None
    assert registry.get("demo").tag == "demo"
    with pytest.raises(ValueError, match="aliases need format_version 2"):
        Registry(
            write_registry(
                tmp_path / "r.json", {"d": {"repo_id": "a/b", "dataset": "d", "description": "x"}}, {"e": "d"}, 1
            )
        )
    with pytest.raises(ValueError, match="reads versions 1, 2"):
        Registry(write_registry(tmp_path / "r.json", {}, None, 3))


# ---------------------------------------------------------------------------- presets
def test_presets_are_data_files_behind_the_classmethods():
    assert architecture_names() == sorted(ARCHITECTURES)  # every preset has a class and every class a preset
    assert CSDNConfig.rn50() == CSDNConfig(architecture="csdn_rn50", **read_preset("csdn_rn50")["config"])
    assert CSDNConfig.tiny() == CSDNConfig(architecture="csdn_tiny", **read_preset("csdn_tiny")["config"])
    assert CSDNConfig.rn50().feature_grid == (18, 9) and CSDNConfig.rn50().test_feature_dim == 3072
    assert CSDNConfig.tiny(num_classes=3, vision_heads=4).vision_heads == 4
    with pytest.raises(ValueError, match="unknown architecture 'csdn_vit'; known: csdn_rn50, csdn_tiny"):
        CSDNConfig.preset("csdn_vit")
    with pytest.raises(ValueError, match="unknown CSDN config field.*widht"):
        CSDNConfig.tiny(widht=3)


# ---------------------------------------------------------------------------- create_model
def test_create_model_builds_an_architecture_from_its_preset_and_embeds():
    torch.manual_seed(0)
    model = create_model("csdn_tiny", num_classes=5).eval()
    assert isinstance(model, csdn.CSDN) and model.config == CSDNConfig.tiny(num_classes=5)
    images = torch.rand(2, 3, *model.config.image_size)
    embedding = model.embed_image(images, "infrared", progress=False)
    assert embedding.shape == (2, 2 * model.config.test_feature_dim)
    assert torch.allclose(embedding.norm(dim=1), torch.ones(2), atol=1e-5)
    assert csdn.create_model is create_model


def test_create_model_with_pretrained_weights_by_tag_full_name_or_path(tmp_path):
    bundled = csdn.load("synthetic-tiny", progress=False)
    reference = bundled.state_dict()
    bundled.save_pretrained(tmp_path / "copy")
    for pretrained in ("synthetic", "csdn_tiny.synthetic", tmp_path / "copy"):
        model = create_model("csdn_tiny", pretrained, progress=False)
        assert not model.training
        assert all(torch.equal(tensor, reference[key]) for key, tensor in model.state_dict().items())


def test_create_model_refuses_unknown_architectures_and_weights_of_another_one():
    with pytest.raises(ValueError, match="unknown architecture 'resnet'; known: csdn_rn50, csdn_tiny"):
        create_model("resnet")
    with pytest.raises(ValueError, match="architecture 'csdn_tiny', not 'csdn_rn50'.*create_model\\('csdn_tiny'"):
        create_model("csdn_rn50", "synthetic-tiny")


def test_presets_are_format_2_and_format_1_presets_in_an_extra_folder_are_still_read(tmp_path, monkeypatch):
    from csdn.config import ARCHITECTURES_ENV, read_preset
    from csdn.hub.architectures import register_architecture

    assert read_preset("csdn_rn50")["format_version"] == 2 and read_preset("csdn_rn50")["clip"] == "RN50"
    flat = {"format_version": 1, "architecture": "old_tiny", "config": {**read_preset("csdn_tiny")["config"]}}
    (tmp_path / "old_tiny.json").write_text(json.dumps(flat))
    with pytest.raises(ValueError, match="'old_tiny' has no preset file"):
        register_architecture("old_tiny", csdn.CSDN)
    monkeypatch.setenv(ARCHITECTURES_ENV, str(tmp_path))
    assert "old_tiny" in architecture_names()
    assert CSDNConfig.preset("old_tiny") == dataclasses.replace(CSDNConfig.tiny(), architecture="old_tiny")
    (tmp_path / "csdn_rn50.json").write_text("{}")  # an extra folder cannot replace an installed preset
    assert CSDNConfig.preset("csdn_rn50") == CSDNConfig.rn50()
