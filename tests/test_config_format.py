"""Config format 2: the architecture named and written in nested sections, provenance beside it as its
own record (the model's, not the config's), every size bounded before anything is built, and format-1
(flat) configs and folders still read."""

from __future__ import annotations

import dataclasses
import hashlib
import json
import time
from pathlib import Path

import pytest
import torch

import csdn
from csdn.config import (
    PROVENANCE_KEY,
    SECTIONS,
    CSDNConfig,
    document_json,
    infer_architecture,
    join_provenance,
    split_provenance,
)
from csdn.errors import SettingError, WeightsError
from csdn.io.pretrained import CONFIG_METADATA_KEY, CONFIG_NAME, WEIGHTS_NAME
from csdn.io.provenance import trained_on, training_data
from csdn.io.safetensors import read_safetensors_header, write_safetensors

REPO = Path(__file__).resolve().parent.parent


def format_1(config: CSDNConfig, meta: dict | None = None) -> dict:
    """The flat dict the previous release wrote (format 1): every field at the top level, meta among them."""
    data = {key: list(v) if isinstance(v, tuple) else v for key, v in dataclasses.asdict(config).items()}
    del data["architecture"]
    return {"model_type": "csdn", "format_version": 1, **data, PROVENANCE_KEY: dict(meta or {})}


def test_format_2_names_the_architecture_and_nests_the_sections():
    config = CSDNConfig.tiny(num_classes=5)
    data = join_provenance(config, {"dataset": "sysu"})
    assert data["format_version"] == 2 and data["architecture"] == "csdn_tiny"
    assert set(data) == {"model_type", "format_version", "architecture", PROVENANCE_KEY, *SECTIONS}
    assert data["vision"]["width"] == 8 and data["text"]["layers"] == 1 and data["heads"]["num_classes"] == 5
    assert data["preprocess"]["mean"] == [0.485, 0.456, 0.406]
    assert data[PROVENANCE_KEY] == {"dataset": "sysu"}  # beside the architecture, not in a section
    assert PROVENANCE_KEY not in config.to_dict()
    again, provenance = split_provenance(data)
    assert again == config and provenance == {"dataset": "sysu"}


def test_a_config_neither_holds_nor_accepts_provenance():
    assert "meta" not in {field.name for field in dataclasses.fields(CSDNConfig)}
    assert not hasattr(CSDNConfig.tiny(), "meta")
    with pytest.raises(TypeError, match="meta"):
        CSDNConfig(meta={"dataset": "sysu"})  # type: ignore[call-arg]
    with pytest.raises(ValueError, match="unknown CSDN config field.*meta"):
        CSDNConfig.tiny(meta={"dataset": "sysu"})
    with pytest.raises(ValueError, match="provenance record.*split_provenance"):
        CSDNConfig.from_dict(join_provenance(CSDNConfig.tiny(), {"dataset": "sysu"}))
    with pytest.raises(SettingError, match="meta .the provenance record. must be an object, got list"):
        split_provenance({**CSDNConfig.tiny().to_dict(), PROVENANCE_KEY: ["sysu"]})


def test_provenance_is_no_part_of_the_architecture():
    sysu, _ = split_provenance(join_provenance(CSDNConfig.tiny(), {"dataset": "sysu"}))
    llcm, _ = split_provenance(join_provenance(CSDNConfig.tiny(), {"dataset": "llcm"}))
    assert sysu == llcm == CSDNConfig.tiny()
    assert CSDNConfig.tiny() != CSDNConfig.tiny(num_classes=9)


def test_format_1_and_2_documents_split_into_config_and_provenance():
    record = {"dataset": "regdb", "trial": 2, "evaluation": [{"dataset": "regdb", "rank1": 0.5}]}
    for document in (format_1(CSDNConfig.tiny(), record), join_provenance(CSDNConfig.tiny(), record)):
        config, provenance = split_provenance(json.loads(json.dumps(document)))
        assert config == CSDNConfig.tiny() and config.architecture == "csdn_tiny" and provenance == record
        provenance["evaluation"][0]["rank1"] = 0.0  # a copy: the document is not changed through it
        assert document[PROVENANCE_KEY]["evaluation"][0]["rank1"] == 0.5
    config, provenance = split_provenance(CSDNConfig.tiny().to_dict())  # no record: an empty one
    assert config == CSDNConfig.tiny() and provenance == {}
    # the saved text is today's config.json layout: one sorted, indented object, meta a top-level key
    text = document_json(CSDNConfig.tiny(), record)
    assert text == json.dumps({**CSDNConfig.tiny().to_dict(), "meta": record}, indent=2, sort_keys=True)


def test_format_1_configs_are_read_and_given_an_architecture():
    rn50, provenance = split_provenance(format_1(CSDNConfig.rn50(), {"trial": 2}))
    assert rn50 == CSDNConfig.rn50() and rn50.architecture == "csdn_rn50" and provenance == {"trial": 2}
    tiny = CSDNConfig.from_dict({k: v for k, v in format_1(CSDNConfig.tiny()).items() if k != PROVENANCE_KEY})
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
    tiny_model.provenance.update(training_data("regdb", 2))
    folder = tiny_model.save_pretrained(tmp_path / "v2")
    legacy = tmp_path / "v1"
    legacy.mkdir()
    old = format_1(tiny_model.config, tiny_model.provenance)
    metadata, _ = read_safetensors_header(folder / WEIGHTS_NAME)
    write_safetensors(
        legacy / WEIGHTS_NAME, tiny_model.state_dict(), {**metadata, CONFIG_METADATA_KEY: json.dumps(old)}
    )
    (legacy / CONFIG_NAME).write_text(json.dumps(old))
    loaded = csdn.load(legacy)
    assert loaded.config == tiny_model.config and loaded.config.architecture == "csdn_tiny"
    assert trained_on(loaded.provenance) == trained_on(tiny_model.provenance)  # meta became provenance
    assert all(torch.equal(v, tiny_model.state_dict()[k]) for k, v in loaded.state_dict().items())
    # and saving it again writes format 2
    again = json.loads((loaded.save_pretrained(tmp_path / "again") / CONFIG_NAME).read_text())
    assert again["format_version"] == 2 and again[PROVENANCE_KEY]["trial"] == 2


def test_the_bundled_model_is_a_format_1_folder_and_still_loads():
    sidecar = json.loads((REPO / "weights/synthetic-tiny/config.json").read_text())
    assert sidecar["format_version"] == 1
    model = csdn.load("synthetic-tiny", progress=False)
    assert model.config.architecture == "csdn_tiny" and model.provenance["reproduce"]


def test_a_config_json_that_is_not_utf8_is_named(tiny_model, tmp_path):
    folder = tiny_model.save_pretrained(tmp_path / "m")
    (folder / CONFIG_NAME).write_bytes(b'{"meta": "\xff\xfe"}')
    with pytest.raises(WeightsError, match=rf"{folder / CONFIG_NAME} is not UTF-8 text"):
        csdn.load(folder)


def test_a_save_load_round_trip_keeps_the_provenance_beside_the_config(tiny_model, tmp_path):
    tiny_model.provenance.update(training_data("regdb", 2), note={"epochs": [1, 2]})
    recorded = json.loads(json.dumps(tiny_model.provenance))
    folder = tiny_model.save_pretrained(tmp_path / "m", extra_meta={"license": "mit"})
    assert tiny_model.provenance == recorded  # extra_meta goes to the files, not into the model
    saved = {**recorded, "license": "mit"}
    # config.json: the document, the weights' hash added to its meta; the metadata: the same without the hash
    digest = hashlib.sha256((folder / WEIGHTS_NAME).read_bytes()).hexdigest()
    text = (folder / CONFIG_NAME).read_text()
    assert text == document_json(tiny_model.config, {**saved, "weights_sha256": digest}) + "\n"
    assert list(json.loads(text)) == sorted(["architecture", "format_version", "model_type", "meta", *SECTIONS])
    metadata, _ = read_safetensors_header(folder / WEIGHTS_NAME)
    assert metadata[CONFIG_METADATA_KEY] == document_json(tiny_model.config, saved)

    loaded = csdn.load(folder, device="cpu")
    assert loaded.config == tiny_model.config and loaded.provenance == saved
    assert not hasattr(loaded.config, "meta")
    loaded.provenance["note"]["epochs"].append(3)  # the loaded record is the model's own
    assert csdn.load(folder, device="cpu").provenance["note"] == {"epochs": [1, 2]}
    assert csdn.load_config(folder) == tiny_model.config
    from csdn.hub.loading import load_saved_config

    assert load_saved_config(folder) == (tiny_model.config, saved)
    assert load_saved_config(folder, local_files_only=True, timeout=5) == (tiny_model.config, saved)
    with pytest.raises(TypeError, match="load_config's keywords, not force"):
        load_saved_config(folder, force=True)
    # saving what was loaded writes the same bytes again
    loaded.provenance["note"]["epochs"].pop()
    again = loaded.save_pretrained(tmp_path / "again")
    for name in (CONFIG_NAME, WEIGHTS_NAME):  # (the card lists the record in its order: the loaded one is sorted)
        assert (again / name).read_bytes() == (folder / name).read_bytes(), name
