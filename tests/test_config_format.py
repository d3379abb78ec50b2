"""Config format 2: the architecture named and written in nested sections, provenance beside it as its
own record, every size bounded before anything is built, and format-1 (flat) configs and folders still read."""

from __future__ import annotations

import dataclasses
import json
import time
from pathlib import Path

import pytest
import torch

import csdn
from csdn.config import PROVENANCE_KEY, SECTIONS, CSDNConfig, infer_architecture
from csdn.errors import SettingError, WeightsError
from csdn.io.pretrained import CONFIG_METADATA_KEY, CONFIG_NAME, WEIGHTS_NAME
from csdn.io.provenance import trained_on, training_data
from csdn.io.safetensors import read_safetensors_header, write_safetensors

REPO = Path(__file__).resolve().parent.parent


def format_1(config: CSDNConfig) -> dict:
    """The flat dict today's main wrote (format 1): every field at the top level, meta among them."""
    data = {key: list(v) if isinstance(v, tuple) else v for key, v in dataclasses.asdict(config).items()}
    del data["architecture"]
    return {"model_type": "csdn", "format_version": 1, **data}


def test_format_2_names_the_architecture_and_nests_the_sections():
    config = CSDNConfig.tiny(num_classes=5, meta={"dataset": "sysu"})
    data = config.to_dict()
    assert data["format_version"] == 2 and data["architecture"] == "csdn_tiny"
    assert set(data) == {"model_type", "format_version", "architecture", PROVENANCE_KEY, *SECTIONS}
    assert data["vision"]["width"] == 8 and data["text"]["layers"] == 1 and data["heads"]["num_classes"] == 5
    assert data["preprocess"]["mean"] == [0.485, 0.456, 0.406]
    assert data[PROVENANCE_KEY] == {"dataset": "sysu"}  # beside the architecture, not in a section
    assert PROVENANCE_KEY not in config.architecture_dict()
    again = CSDNConfig.from_dict(data)
    assert again == config and again.meta == config.meta


def test_provenance_is_no_part_of_the_architecture():
    assert CSDNConfig.tiny(meta={"dataset": "sysu"}) == CSDNConfig.tiny(meta={"dataset": "llcm"})
    assert CSDNConfig.tiny() != CSDNConfig.tiny(num_classes=9)


def test_format_1_configs_are_read_and_given_an_architecture():
    rn50 = CSDNConfig.from_dict(format_1(CSDNConfig.rn50(meta={"trial": 2})))
    assert rn50 == CSDNConfig.rn50() and rn50.architecture == "csdn_rn50" and rn50.meta == {"trial": 2}
    tiny = CSDNConfig.from_dict(format_1(CSDNConfig.tiny()))
    assert tiny.architecture == "csdn_tiny" and tiny == CSDNConfig.tiny()
    odd = format_1(CSDNConfig.tiny(vision_width=16, vision_heads=4))  # sizes of no preset: the small one
    assert infer_architecture(odd) == "csdn_tiny"


@pytest.mark.parametrize(
    "change, message",
    [
        ({"vision": {"widht": 3}}, r"section 'vision': widht; known: image_size, layers, width"),
        ({"towers": {}}, "unknown CSDN config field.*towers; known sections: vision, text, heads, preprocess"),
        ({"format_version": "1"}, r"format_version '1'; it must be an integer"),
        ({"format_version": 3}, r"format_version 3.*upgrade"),
        ({"architecture": None}, "needs its 'architecture'"),
    ],
)
def test_format_2_problems_are_named(change, message):
    data = CSDNConfig.tiny().to_dict()
    for key, value in change.items():
        if isinstance(value, dict) and key in data:
            data[key] = {**data[key], **value}
        elif value is None:
            del data[key]
        else:
            data[key] = value
    with pytest.raises(ValueError, match=message):
        CSDNConfig.from_dict(data)


@pytest.mark.parametrize(
    "field, value, allowed",
    [
        ("text_layers", 100000, r"\[1, 128\]"),
        ("vision_width", 10**6, r"\[1, 1024\]"),
        ("num_classes", 0, r"\[1, 10000000\]"),
        ("vision_layers", (1, 1, 1, 10**5), r"\[1, 128\]"),
        ("image_size", (10**6, 32), r"\[1, 8192\]"),
        ("text_layers", "12", r"an integer in \[1, 128\], got .12."),
    ],
)
def test_every_size_is_bounded_before_anything_is_built(field, value, allowed):
    started = time.perf_counter()
    with pytest.raises(SettingError, match=rf"{field} must .*{allowed}"):
        CSDNConfig.tiny(**{field: value})
    assert time.perf_counter() - started < 0.5


def test_an_absurd_config_in_a_saved_folder_is_refused_at_once(tiny_model, tmp_path):
    folder = tiny_model.save_pretrained(tmp_path / "m")
    data = json.loads((folder / CONFIG_NAME).read_text())
    data["text"]["layers"] = 100000
    data["meta"] = {}  # no recorded hash: the weights file is rewritten below
    (folder / CONFIG_NAME).write_text(json.dumps(data))
    metadata, _ = read_safetensors_header(folder / WEIGHTS_NAME)
    state = tiny_model.state_dict()
    write_safetensors(folder / WEIGHTS_NAME, state, {**metadata, CONFIG_METADATA_KEY: json.dumps(data)})
    started = time.perf_counter()
    with pytest.raises(WeightsError, match=r"text_layers must be at most 128 \(allowed \[1, 128\]\), got 100000"):
        csdn.load(folder)
    assert time.perf_counter() - started < 5  # hashing and parsing; nothing of 100000 layers is built


def test_a_format_1_folder_written_by_the_previous_release_loads_with_its_provenance(tiny_model, tmp_path):
    tiny_model.config.meta.update(training_data("regdb", 2))
    folder = tiny_model.save_pretrained(tmp_path / "v2")
    legacy = tmp_path / "v1"
    legacy.mkdir()
    old = format_1(tiny_model.config)
    metadata, _ = read_safetensors_header(folder / WEIGHTS_NAME)
    write_safetensors(
        legacy / WEIGHTS_NAME, tiny_model.state_dict(), {**metadata, CONFIG_METADATA_KEY: json.dumps(old)}
    )
    (legacy / CONFIG_NAME).write_text(json.dumps(old))
    loaded = csdn.load(legacy)
    assert loaded.config == tiny_model.config and loaded.config.architecture == "csdn_tiny"
    assert trained_on(loaded.config.meta) == trained_on(tiny_model.config.meta)  # meta became provenance
    assert all(torch.equal(v, tiny_model.state_dict()[k]) for k, v in loaded.state_dict().items())
    # and saving it again writes format 2
    again = json.loads((loaded.save_pretrained(tmp_path / "again") / CONFIG_NAME).read_text())
    assert again["format_version"] == 2 and again[PROVENANCE_KEY]["trial"] == 2


def test_the_bundled_model_is_a_format_1_folder_and_still_loads():
    sidecar = json.loads((REPO / "weights/synthetic-tiny/config.json").read_text())
    assert sidecar["format_version"] == 1
    model = csdn.load("synthetic-tiny", progress=False)
    assert model.config.architecture == "csdn_tiny" and model.config.meta["reproduce"]


def test_a_config_json_that_is_not_utf8_is_named(tiny_model, tmp_path):
    folder = tiny_model.save_pretrained(tmp_path / "m")
    (folder / CONFIG_NAME).write_bytes(b'{"meta": "\xff\xfe"}')
    with pytest.raises(WeightsError, match=rf"{folder / CONFIG_NAME} is not UTF-8 text"):
        csdn.load(folder)
