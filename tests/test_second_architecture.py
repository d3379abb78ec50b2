"""Adding a backbone is one new file (tests/plainconv_backbone.py), one preset
(tests/architectures/test_plainconv.json) and one registry row: the second architecture is then
created, loaded by its registry name, embedded, saved and loaded again through the same entry points
as the package's own, and the code written for CLIP's ResNet layout steps aside for it."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch
import torch.nn.functional as F
from plainconv_backbone import ARCHITECTURE, PlainConvCSDN

import csdn
from csdn.config import ARCHITECTURES_ENV, CSDNConfig, architecture_names
from csdn.hub.architectures import ARCHITECTURES, register_architecture
from csdn.io.card import backbone_name
from csdn.train.initialise import initial_model

PRESETS = Path(__file__).resolve().parent / "architectures"


@pytest.fixture
def plainconv(monkeypatch):
    """The preset folder on the search path and the class in the table, for one test."""
    monkeypatch.setenv(ARCHITECTURES_ENV, str(PRESETS))
    register_architecture(ARCHITECTURE, PlainConvCSDN)
    yield
    ARCHITECTURES.pop(ARCHITECTURE)


@pytest.fixture
def registry(plainconv, tmp_path) -> Path:
    """A registry with the one row the new backbone needs, its weights in a bundled folder."""
    torch.manual_seed(3)
    csdn.create_model(ARCHITECTURE).save_pretrained(tmp_path / "demo")
    row = {"architecture": ARCHITECTURE, "bundled": "demo", "dataset": "synthetic", "description": "test backbone"}
    path = tmp_path / "registry.json"
    data = {
        "format_version": 2,
        "models": {f"{ARCHITECTURE}.demo": row},
        "aliases": {"plainconv": "test_plainconv.demo"},
    }
    path.write_text(json.dumps(data))
    return path


def test_create_model_builds_the_new_backbone_from_its_preset_and_embeds(plainconv):
    assert ARCHITECTURE in architecture_names()
    torch.manual_seed(0)
    model = csdn.create_model(ARCHITECTURE, num_classes=6).eval()
    assert type(model) is PlainConvCSDN and model.config == CSDNConfig.preset(ARCHITECTURE, num_classes=6)
    assert model.config.architecture == ARCHITECTURE and not hasattr(model.trunk, "layer1")  # not CLIP's trunk
    images = torch.rand(3, 3, *model.config.image_size)
    embedding = model.embed_image(images, "visible", flip=False, progress=False)
    expected = F.normalize(model.image_features(images, "visible"), dim=1)
    torch.testing.assert_close(embedding, expected, atol=1e-5, rtol=0)  # the unfolded path, same numbers
    flipped = model.embed_image(list(images), "infrared", progress=False)
    assert flipped.shape == (3, 2 * model.config.test_feature_dim) and torch.isfinite(flipped).all()
    assert "plain convolutions (stages [1, 1, 1, 1], width 8)" == backbone_name(model.config)


def test_a_registry_row_loads_it_by_name_alias_and_tag_and_it_saves_and_reloads(registry, tmp_path):
    by_name = csdn.load(f"{ARCHITECTURE}.demo", registry=registry)
    reference = by_name.state_dict()
    for model in (
        csdn.load("plainconv", registry=registry),
        csdn.create_model(ARCHITECTURE, "demo", registry=registry),
        PlainConvCSDN.from_pretrained(registry.parent / "demo"),
    ):
        assert type(model) is PlainConvCSDN and not model.training
        assert all(torch.equal(tensor, reference[key]) for key, tensor in model.state_dict().items())
    images = torch.rand(2, 3, *by_name.config.image_size)
    before = by_name.embed_image(images, "infrared", progress=False)
    folder = by_name.save_pretrained(tmp_path / "copy", extra_meta={"dataset": "synthetic"})
    assert json.loads((folder / "config.json").read_text())["architecture"] == ARCHITECTURE
    card = (folder / "README.md").read_text()
    assert "Backbone: plain convolutions" in card
    assert "attention pool" not in card and "stem per modality" not in card  # CSDN-RN50's structure is not claimed
    again = csdn.load(folder)
    assert type(again) is PlainConvCSDN and again.provenance["dataset"] == "synthetic"
    torch.testing.assert_close(again.embed_image(images, "infrared", progress=False), before, atol=1e-6, rtol=0)


def test_training_can_start_from_the_new_architecture(plainconv):
    model = initial_model(ARCHITECTURE, num_classes=5)
    assert type(model) is PlainConvCSDN and model.config.num_classes == 5


def test_without_its_table_row_a_saved_model_of_it_is_refused_by_name(registry, tmp_path):
    folder = csdn.load(f"{ARCHITECTURE}.demo", registry=registry).save_pretrained(tmp_path / "copy")
    ARCHITECTURES.pop(ARCHITECTURE)
    try:
        with pytest.raises(ValueError, match="unknown architecture 'test_plainconv'; known: csdn_rn50, csdn_tiny"):
            csdn.load(folder)
    finally:
        ARCHITECTURES[ARCHITECTURE] = PlainConvCSDN


def test_it_exports_unfolded_and_the_graph_passes_its_own_verification(plainconv, tmp_path):
    from csdn.export.api import export_model

    torch.manual_seed(1)
    model = csdn.create_model(ARCHITECTURE).eval()
    files = export_model(model, tmp_path / "exported", modality="visible")
    assert [path.name for path in files] == ["visible.onnx"]
    record = json.loads((tmp_path / "exported" / "visible.onnx.json").read_text())
    assert record["verification"]["passed"] and record["feature_dim"] == model.config.test_feature_dim


def test_its_int8_graph_keeps_float_the_modules_it_declares(plainconv, tmp_path):
    import numpy as np
    import onnx

    from csdn.export.graph import INPUT_NAME, write_onnx
    from csdn.export.quantize import quantize_int8

    torch.manual_seed(1)
    model = csdn.create_model(ARCHITECTURE).eval()
    graph = write_onnx(model, "infrared", tmp_path / "fp32.onnx")
    keep = graph.node_prefixes(PlainConvCSDN.int8_float_modules)  # its own names, not CLIP's trunk.layer1.0
    assert keep == ("/stem_infrared/", "/trunk/trunk.0/")
    calibration = [np.random.default_rng(0).standard_normal((4, 3, *model.config.image_size)).astype(np.float32)]
    quantize_int8(tmp_path / "fp32.onnx", tmp_path / "int8.onnx", calibration, INPUT_NAME, keep)
    nodes = onnx.load(str(tmp_path / "int8.onnx")).graph.node
    dequantized = {out for node in nodes if node.op_type == "DequantizeLinear" for out in node.output}
    convs = {node.name: node.input[1] not in dequantized for node in nodes if node.op_type == "Conv"}
    stem_convs = [
        m for name, m in model.named_modules() if name.startswith("stem_infrared") and isinstance(m, torch.nn.Conv2d)
    ]
    kept = sorted(name for name, is_float in convs.items() if is_float)
    assert len(kept) == len(stem_convs) + 1 and all(name.startswith(keep) for name in kept)  # + trunk.0's conv
    assert not all(convs.values())  # the rest of the trunk is quantised
