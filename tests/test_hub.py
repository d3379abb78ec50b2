"""Weights I/O: save_pretrained / load round trips, the registry, and Hub downloads and uploads.

Hub traffic goes to ``hub_server.FakeHub`` on 127.0.0.1 through the real huggingface_hub client.
"""

from __future__ import annotations

import hashlib
import json
import shutil
from pathlib import Path

import numpy as np
import pytest
import torch
from safetensors import safe_open
from safetensors.torch import load_file, save_file

import csdn
from csdn.config import CSDNConfig, split_provenance
from csdn.hub import loading as hub
from csdn.hub.loading import WeightsError, WeightsNotAvailableError
from csdn.hub.official import from_official, to_official_state_dict
from csdn.hub.registry import AUTHORS_RELEASE, Registry, list_models, model_info
from csdn.model.network import CSDN

FILES = {"model.safetensors", "config.json", "README.md"}


def _images(seed: int = 0, count: int = 3) -> list[np.ndarray]:
    rng = np.random.default_rng(seed)
    return [rng.integers(0, 256, size=(80, 40, 3), dtype=np.uint8) for _ in range(count)]


def assert_same_weights(expected: CSDN, actual: CSDN) -> None:
    """Same tensors bit for bit, same config, eval mode."""
    assert not actual.training
    assert actual.config.to_dict() == expected.config.to_dict()
    want, got = expected.state_dict(), actual.state_dict()
    assert list(got) == list(want)
    for name in want:
        assert got[name].dtype == want[name].dtype, name
        assert torch.equal(got[name], want[name]), name


def assert_identical(expected: CSDN, actual: CSDN) -> None:
    """Same weights and config, and bit-identical embeddings in both modalities."""
    assert_same_weights(expected, actual)
    for modality in ("visible", "infrared"):
        assert torch.equal(actual.embed_image(_images(), modality), expected.embed_image(_images(), modality))


def other_model(seed: int) -> CSDN:
    torch.manual_seed(seed)
    return CSDN(CSDNConfig.tiny()).eval()


def saved_files(model: CSDN, directory: Path) -> dict[str, bytes]:
    hub.save_pretrained(model, directory)
    return {name: (directory / name).read_bytes() for name in FILES}


def write_registry(path: Path, **entries: dict) -> Path:
    path.write_text(json.dumps({"format_version": 1, "models": entries}))
    return path


def sha256(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


# ---------------------------------------------------------------------------- save / load
def test_saved_folder_is_self_describing(tiny_model, tmp_path):
    out = hub.save_pretrained(tiny_model, tmp_path / "out", extra_meta={"dataset": "SYSU-MM01"})
    assert sorted(p.name for p in out.iterdir()) == sorted(FILES)  # no temporary files left behind
    metadata, tensors = hub.read_safetensors_header(out / "model.safetensors")
    assert metadata["format"] == "pt"
    stored, stored_provenance = split_provenance(json.loads(metadata["csdn_config"]))
    sidecar, sidecar_provenance = split_provenance(json.loads((out / "config.json").read_text()))
    # config.json adds the file's SHA-256 (the file cannot hold its own hash)
    digest = hashlib.sha256((out / "model.safetensors").read_bytes()).hexdigest()
    assert sidecar_provenance.pop("weights_sha256") == digest
    assert stored == sidecar and stored_provenance == sidecar_provenance
    assert stored_provenance == {"dataset": "SYSU-MM01"}
    assert tiny_model.provenance == {}  # extra_meta goes to the file, not into the model
    assert set(tensors) == set(tiny_model.state_dict())
    card = (out / "README.md").read_text()
    params = sum(p.numel() for p in tiny_model.parameters())
    for text in (
        "SYSU-MM01",
        f"{params:,}",
        "64x32",
        "576-d",
        "arXiv:2401.05806",
        "IEEE Transactions on Multimedia",
        "csdn.load(",
        "embed_image",
        "library_name: csdn-reid",
    ):
        assert text in card, text


def test_saving_is_deterministic(tiny_model, tmp_path):
    # the same model always gives the same bytes, so a file's SHA-256 identifies the model
    first = saved_files(tiny_model, tmp_path / "a")["model.safetensors"]
    assert saved_files(tiny_model, tmp_path / "b")["model.safetensors"] == first


def test_safetensors_writer_round_trips_every_dtype_and_shared_memory(tmp_path):
    base = torch.randn(4, 4)
    tensors = {
        "transposed": base.t(),
        "same_storage": base,
        "row_view": base[1],
        "scalar": torch.tensor(2.5, dtype=torch.float64),
        "half": torch.randn(3).half(),
        "bf16": torch.randn(2, 3).bfloat16(),
        "i64": torch.arange(5),
        "i8": torch.tensor([-3, 4], dtype=torch.int8),
        "flags": torch.tensor([True, False]),
        "empty": torch.zeros(0, 7),
    }
    hub.write_safetensors(tmp_path / "t.safetensors", tensors, {"b": "2", "a": "1"})
    loaded = load_file(str(tmp_path / "t.safetensors"))
    assert set(loaded) == set(tensors)
    for name, tensor in tensors.items():
        assert loaded[name].dtype == tensor.dtype and torch.equal(loaded[name], tensor), name
    with safe_open(str(tmp_path / "t.safetensors"), "pt") as handle:
        assert handle.metadata() == {"a": "1", "b": "2"}
    with pytest.raises(ValueError, match="complex64"):
        hub.write_safetensors(tmp_path / "c.safetensors", {"z": torch.zeros(2, dtype=torch.complex64)}, {})


def test_model_card_lists_metrics(tiny_model, tmp_path):
    metrics = {"all-search": {"rank1": 71.25, "mAP": 68.5}, "indoor-search": {"rank1": 80.0, "mAP": 84.75}}
    out = hub.save_pretrained(tiny_model, tmp_path, extra_meta={"metrics": metrics}, repo_id="acme/csdn")
    card = (out / "README.md").read_text()
    assert "| protocol | rank1 | mAP |" in card
    assert "| all-search | 71.25 | 68.50 |" in card
    assert "| indoor-search | 80.00 | 84.75 |" in card
    assert 'csdn.load("hf-hub:acme/csdn")' in card
    hub.save_pretrained(tiny_model, tmp_path / "bare", model_card=False)
    assert not (tmp_path / "bare" / "README.md").exists()


def test_directory_round_trip_is_bit_identical(tiny_model, tmp_path):
    tiny_model.save_pretrained(tmp_path / "model")
    assert_identical(tiny_model, csdn.load(tmp_path / "model"))
    assert_same_weights(tiny_model, csdn.load(str(tmp_path / "model")))


def test_single_file_round_trip_is_bit_identical(tiny_model, tmp_path):
    hub.save_pretrained(tiny_model, tmp_path / "model")
    alone = tmp_path / "elsewhere" / "csdn-tiny.safetensors"
    alone.parent.mkdir()
    shutil.copy(tmp_path / "model" / "model.safetensors", alone)
    assert_identical(tiny_model, csdn.load(alone))


def test_converted_official_checkpoint_reloads_bit_identical(tmp_path):
    # CLIP's head-count convention (width / 64), the one conversion infers from tensor shapes
    torch.manual_seed(0)
    original = CSDN(CSDNConfig.tiny(vision_heads=4, text_heads=1)).eval()
    torch.save(to_official_state_dict(original), tmp_path / "model_119.pth")
    converted = from_official(tmp_path / "model_119.pth", image_size=(64, 32), dataset="sysu")
    converted.save_pretrained(tmp_path / "out")
    reloaded = csdn.load(tmp_path / "out")
    assert_identical(converted, reloaded)
    assert reloaded.provenance["dataset"] == "sysu"
    assert reloaded.provenance["source"] == "model_119.pth"
    for modality in ("visible", "infrared"):
        assert torch.equal(reloaded.embed_image(_images(), modality), original.embed_image(_images(), modality))


def test_load_moves_to_device_and_rejects_bad_devices(tiny_model, tmp_path):
    hub.save_pretrained(tiny_model, tmp_path)
    assert next(csdn.load(tmp_path, device="cpu").parameters()).device.type == "cpu"
    with pytest.raises(ValueError, match="invalid device"):
        csdn.load(tmp_path, device="no-such-device")


def test_atomic_write_keeps_the_old_file_when_writing_fails(tmp_path):
    target = tmp_path / "model.safetensors"
    target.write_bytes(b"old")

    def failing(temp: Path) -> None:
        temp.write_bytes(b"half")
        raise OSError("disk full")

    with pytest.raises(OSError, match="disk full"):
        hub.atomic_write(target, failing)
    assert target.read_bytes() == b"old"
    assert [p.name for p in tmp_path.iterdir()] == ["model.safetensors"]
    hub.atomic_write(target, lambda temp: temp.write_bytes(b"new"))
    assert target.read_bytes() == b"new"


def test_save_into_a_file_path_is_refused(tiny_model, tmp_path):
    (tmp_path / "file").write_text("x")
    with pytest.raises(ValueError, match="not a directory"):
        hub.save_pretrained(tiny_model, tmp_path / "file")


# ---------------------------------------------------------------------------- bad files
@pytest.mark.parametrize(
    "corrupt, message",
    [
        (lambda data: data[: len(data) // 2], "truncated"),
        (lambda data: data[:5], "only 5 bytes long"),
        (lambda data: b"PK\x03\x04 this is a zip archive, not safetensors" * 10, "header"),
        (lambda data: data + b"\0" * 16, "16 unexpected bytes"),
    ],
)
def test_invalid_safetensors_files_are_refused_with_the_path(tiny_model, tmp_path, corrupt, message):
    files = saved_files(tiny_model, tmp_path / "model")
    target = tmp_path / "model" / "model.safetensors"
    target.write_bytes(corrupt(files["model.safetensors"]))
    with pytest.raises(WeightsError, match=message) as caught:
        csdn.load(tmp_path / "model")
    text = str(caught.value)
    assert str(target) in text and "not a valid safetensors file" in text and "was not loaded" in text
    with pytest.raises(WeightsError, match=message):
        hub.read_safetensors_header(target)


def test_tensor_mismatches_are_reported_by_name(tiny_model, tmp_path):
    state = {k: v.clone() for k, v in tiny_model.state_dict().items()}
    config = tiny_model.config.to_json()
    del state["fusion.out_proj.bias"]
    state["extra.weight"] = torch.zeros(2)
    state["gem_head.classifier.weight"] = torch.zeros(9, tiny_model.config.feature_dim)
    state["gem_head.bn.num_batches_tracked"] = torch.zeros(())  # float where the model keeps int64
    save_file(state, str(tmp_path / "bad.safetensors"), metadata={"csdn_config": config})
    with pytest.raises(WeightsError) as caught:
        csdn.load(tmp_path / "bad.safetensors")
    text = str(caught.value)
    assert "missing tensors (1): fusion.out_proj.bias" in text
    assert "unexpected tensors (1): extra.weight" in text
    assert "gem_head.classifier.weight: shape [9, 256] in the file, [8, 256] in the model" in text
    assert "gem_head.bn.num_batches_tracked: dtype F32" in text


def test_config_json_must_agree_with_the_stored_config(tiny_model, tmp_path):
    hub.save_pretrained(tiny_model, tmp_path)
    edited = json.loads((tmp_path / "config.json").read_text())
    edited["heads"]["num_classes"] = 9  # config.json format 2: the heads section
    edited["meta"] = {"note": "meta may differ"}
    (tmp_path / "config.json").write_text(json.dumps(edited))
    with pytest.raises(WeightsError, match=r"num_classes: 8 in the metadata, 9 in config.json"):
        csdn.load(tmp_path)


def test_config_json_is_used_when_the_metadata_has_none(tiny_model, tmp_path):
    save_file(dict(tiny_model.state_dict()), str(tmp_path / "model.safetensors"))
    with pytest.raises(WeightsError, match="architecture is unknown"):
        csdn.load(tmp_path)
    (tmp_path / "config.json").write_text(tiny_model.config.to_json())
    assert_same_weights(tiny_model, csdn.load(tmp_path))


def test_invalid_stored_config_is_explained(tiny_model, tmp_path):
    save_file(dict(tiny_model.state_dict()), str(tmp_path / "x.safetensors"), metadata={"csdn_config": '{"bogus": 1}'})
    with pytest.raises(WeightsError, match="holds no valid CSDN config.*bogus"):
        csdn.load(tmp_path / "x.safetensors")


def test_name_resolution_errors_say_what_to_do(tmp_path):
    for name in ("model_119.pth", "MODEL_119.PTH", "last.ckpt"):  # any case: named like a PyTorch checkpoint
        checkpoint = tmp_path / name
        checkpoint.write_bytes(b"not really")
        with pytest.raises(ValueError, match="csdn convert"):
            csdn.load(checkpoint)
    with pytest.raises(FileNotFoundError, match="hf-hub:acme/model"):
        csdn.load("acme/model")
    with pytest.raises(FileNotFoundError, match="model.safetensors"):
        csdn.load(tmp_path)  # a folder without a model
    with pytest.raises(ValueError, match="not a registered model.*sysu"):
        csdn.load("no-such-model")
    with pytest.raises(ValueError, match="not a Hub model id"):
        csdn.load("hf-hub:just-a-name")
    with pytest.raises(ValueError, match="pins revision"):
        csdn.load("hf-hub:acme/model@v1", revision="v2")


# ---------------------------------------------------------------------------- registry
def test_installed_registry_lists_the_paper_models():
    names = list_models()
    assert names == sorted(names)
    assert {"sysu", "regdb", "llcm"} <= set(names)
    assert csdn.list_models() == names
    entry = model_info("sysu")
    assert entry.repo_id == "csdn-reid/csdn-rn50-sysu"
    assert entry.filename == "model.safetensors"
    assert entry.dataset == "SYSU-MM01"
    assert entry.sha256 is None
    with pytest.raises(ValueError, match="registered models: .*sysu"):
        model_info("nope")


def test_registry_path_can_be_injected(tmp_path, monkeypatch):
    path = write_registry(
        tmp_path / "r.json",
        zeta={"repo_id": "a/b", "dataset": "d", "description": "x"},
        alpha={"repo_id": "a/c", "dataset": "d", "description": "y"},
    )
    assert list_models(registry=path) == ["alpha", "zeta"]
    monkeypatch.setenv("CSDN_REGISTRY", str(path))
    assert list_models() == ["alpha", "zeta"]
    assert model_info("alpha").repo_id == "a/c"


@pytest.mark.parametrize(
    "entry, message",
    [
        ({"dataset": "d", "description": "x"}, "needs a 'repo_id'"),
        ({"repo_id": "a/b", "dataset": "d", "description": "x", "sha": "00"}, "unknown field.*sha"),
        ({"repo_id": "a/b", "dataset": "d", "description": "x", "sha256": "ABC"}, "64 lowercase hex"),
        ({"repo_id": "no-slash", "dataset": "d", "description": "x"}, "org/name"),
        ({"repo_id": "a/b", "description": "x"}, "dataset"),
        ({"bundled": "../elsewhere", "dataset": "d", "description": "x"}, "inside"),
    ],
)
def test_invalid_registry_entries_name_the_problem(tmp_path, entry, message):
    with pytest.raises(ValueError, match=message):
        Registry(write_registry(tmp_path / "r.json", broken=entry))


def test_bundled_model_loads_without_network(tiny_model, tmp_path, fake_hub, hub_offline):
    files = saved_files(tiny_model, tmp_path / "weights" / "synthetic-tiny")
    registry = write_registry(
        tmp_path / "weights" / "registry.json",
        **{
            "synthetic-tiny": {
                "bundled": "synthetic-tiny",
                "sha256": sha256(files["model.safetensors"]),
                "dataset": "synthetic",
                "description": "bundled",
            }
        },
    )
    assert_identical(tiny_model, csdn.load("synthetic-tiny", registry=registry))
    assert fake_hub.requests == []

    replaced = saved_files(other_model(1), tmp_path / "other")["model.safetensors"]
    (tmp_path / "weights" / "synthetic-tiny" / "model.safetensors").write_bytes(replaced)
    with pytest.raises(WeightsError, match="SHA-256.*registry entry 'synthetic-tiny'.*Reinstall"):
        csdn.load("synthetic-tiny", registry=registry)
    shutil.rmtree(tmp_path / "weights" / "synthetic-tiny")
    with pytest.raises(WeightsNotAvailableError, match="bundled model 'synthetic-tiny' is missing"):
        csdn.load("synthetic-tiny", registry=registry)


# ---------------------------------------------------------------------------- Hub downloads
def test_hub_download_then_offline_reuse_from_the_cache(tiny_model, tmp_path, fake_hub, monkeypatch):
    fake_hub.commit("acme/csdn-tiny", saved_files(tiny_model, tmp_path / "m"))
    assert_identical(tiny_model, csdn.load("hf-hub:acme/csdn-tiny", progress=False))
    assert "/acme/csdn-tiny/resolve/main/model.safetensors" in fake_hub.paths_requested("HEAD")
    blob = sha256(fake_hub.files("acme/csdn-tiny")["model.safetensors"])
    assert f"/lfs/{blob}" in fake_hub.paths_requested("GET")
    assert list(Path(tmp_path / "hf-cache").glob(f"models--acme--csdn-tiny/blobs/{blob}"))

    downloads = len(fake_hub.paths_requested("GET"))
    assert_same_weights(tiny_model, csdn.load("hf-hub:acme/csdn-tiny"))  # second load: a HEAD, no download
    assert len(fake_hub.paths_requested("GET")) == downloads

    import huggingface_hub.constants as hf_constants

    monkeypatch.setattr(hf_constants, "HF_HUB_OFFLINE", True)
    requests = len(fake_hub.requests)
    assert_same_weights(tiny_model, csdn.load("hf-hub:acme/csdn-tiny"))
    assert_same_weights(tiny_model, csdn.load("hf-hub:acme/csdn-tiny", local_files_only=True))
    assert len(fake_hub.requests) == requests


def test_cache_dir_argument_is_used(tiny_model, tmp_path, fake_hub):
    fake_hub.commit("acme/csdn-tiny", saved_files(tiny_model, tmp_path / "m"))
    csdn.load("hf-hub:acme/csdn-tiny", cache_dir=tmp_path / "mine")
    assert list((tmp_path / "mine").glob("models--acme--csdn-tiny/snapshots/*/model.safetensors"))
    assert not (tmp_path / "hf-cache").exists()


def test_pinned_revisions_load_their_own_weights(tmp_path, fake_hub):
    first, second = other_model(1), other_model(2)
    commit1 = fake_hub.commit("acme/csdn", saved_files(first, tmp_path / "1"))
    commit2 = fake_hub.commit("acme/csdn", saved_files(second, tmp_path / "2"))
    fake_hub.commit("acme/csdn", saved_files(first, tmp_path / "1"), branch="v1")
    registry = write_registry(
        tmp_path / "r.json",
        pinned={
            "repo_id": "acme/csdn",
            "revision": commit1,
            "dataset": "d",
            "description": "x",
            "sha256": sha256((tmp_path / "1" / "model.safetensors").read_bytes()),
        },
    )
    assert_same_weights(first, csdn.load("pinned", registry=registry))
    # revision= overrides the pin; the registry's hash belongs to the pin, so it is not applied here
    assert_same_weights(second, csdn.load("pinned", registry=registry, revision=commit2))
    assert_same_weights(second, csdn.load("hf-hub:acme/csdn"))
    assert_same_weights(first, csdn.load(f"hf-hub:acme/csdn@{commit1}"))
    assert_same_weights(first, csdn.load("hf-hub:acme/csdn", revision="v1"))
    with pytest.raises(WeightsNotAvailableError, match="no such revision"):
        csdn.load("hf-hub:acme/csdn@v9")


def test_registry_sha256_mismatch_is_refused(tmp_path, fake_hub):
    fake_hub.commit("acme/csdn", saved_files(other_model(1), tmp_path / "1"))
    wrong = sha256(b"the published file")
    registry = write_registry(
        tmp_path / "r.json", pinned={"repo_id": "acme/csdn", "sha256": wrong, "dataset": "d", "description": "x"}
    )
    with pytest.raises(WeightsError) as caught:
        csdn.load("pinned", registry=registry)
    text = str(caught.value)
    actual = sha256((tmp_path / "1" / "model.safetensors").read_bytes())
    assert f"its SHA-256 is {actual}, but the registry entry 'pinned' expects {wrong}" in text
    assert "was not loaded" in text and "force_download=True" in text and "Delete the cached file" in text


def test_missing_repo_file_and_revision_give_clear_errors(tmp_path, fake_hub):
    with pytest.raises(WeightsNotAvailableError, match="acme/missing.*does not exist on the Hub"):
        csdn.load("hf-hub:acme/missing")
    fake_hub.commit("acme/empty", {"README.md": b"# nothing here\n"})
    with pytest.raises(WeightsNotAvailableError, match="has no file model.safetensors"):
        csdn.load("hf-hub:acme/empty")
    registry = write_registry(tmp_path / "r.json", ours={"repo_id": "acme/missing", "dataset": "d", "description": "x"})
    with pytest.raises(WeightsNotAvailableError, match="(?s)'ours'.*does not exist.*Load a local copy instead"):
        csdn.load("ours", registry=registry)


def test_truncated_hub_file_is_refused(tiny_model, tmp_path, fake_hub):
    files = saved_files(tiny_model, tmp_path / "m")
    files["model.safetensors"] = files["model.safetensors"][:-1000]
    fake_hub.commit("acme/broken", files)
    with pytest.raises(WeightsError, match="truncated.*was not loaded.*force_download=True"):
        csdn.load("hf-hub:acme/broken")


def test_corrupted_cache_is_detected_and_force_download_repairs_it(tiny_model, tmp_path, fake_hub):
    fake_hub.commit("acme/csdn-tiny", saved_files(tiny_model, tmp_path / "m"))
    csdn.load("hf-hub:acme/csdn-tiny")
    blob = next((tmp_path / "hf-cache").glob("models--acme--csdn-tiny/blobs/*"))
    data = bytearray(blob.read_bytes())
    data[-100] ^= 0xFF  # one flipped bit pattern deep inside a tensor: the header still parses
    blob.write_bytes(bytes(data))
    with pytest.raises(WeightsError, match=f"SHA-256.*the Hub \\(acme/csdn-tiny@main\\) expects {blob.name}"):
        csdn.load("hf-hub:acme/csdn-tiny")
    assert_same_weights(tiny_model, csdn.load("hf-hub:acme/csdn-tiny", force_download=True))
    assert_same_weights(tiny_model, csdn.load("hf-hub:acme/csdn-tiny"))


def _assert_convert_instructions(text: str) -> None:
    assert "'sysu' (csdn-reid/csdn-rn50-sysu, revision main) are not available" in text
    assert "model_119.pth" in text and AUTHORS_RELEASE in text
    assert "csdn convert model_119.pth out/ --dataset sysu" in text
    assert 'csdn.load("out/")' in text


def test_unpublished_registry_model_offline_explains_how_to_convert(fake_hub, hub_offline):
    with pytest.raises(WeightsNotAvailableError) as caught:
        csdn.load("sysu")
    _assert_convert_instructions(str(caught.value))
    assert "not in the local cache" in str(caught.value)
    assert fake_hub.requests == []


def test_unpublished_registry_model_online_explains_how_to_convert(fake_hub):
    with pytest.raises(WeightsNotAvailableError) as caught:
        csdn.load("sysu")
    _assert_convert_instructions(str(caught.value))
    assert "does not exist on the Hub" in str(caught.value)
    assert "/csdn-reid/csdn-rn50-sysu/resolve/main/model.safetensors" in fake_hub.paths_requested("HEAD")


# ---------------------------------------------------------------------------- uploads
def test_push_to_hub_uploads_a_loadable_model(tiny_model, fake_hub):
    commit = hub.push_to_hub(
        tiny_model, "acme/pushed", token="hf_test_token", private=True, commit_message="first upload"
    )
    assert fake_hub.paths_requested("POST")[0] == "/api/repos/create"
    uploaded = fake_hub.files("acme/pushed")
    assert set(uploaded) == FILES
    assert commit.oid == fake_hub.branches["acme/pushed"]["main"]
    assert 'csdn.load("hf-hub:acme/pushed")' in uploaded["README.md"].decode()
    assert all(r["authorization"] == "Bearer hf_test_token" for r in fake_hub.requests)
    assert_identical(tiny_model, csdn.load("hf-hub:acme/pushed"))

    second = other_model(3)
    hub.push_to_hub(second, "acme/pushed", token="hf_test_token")  # the repository exists: a new commit
    assert_same_weights(second, csdn.load("hf-hub:acme/pushed"))
    assert_same_weights(tiny_model, csdn.load("hf-hub:acme/pushed", revision=commit.oid))


def test_push_to_hub_checks_the_repo_id(tiny_model):
    with pytest.raises(ValueError, match="org/name"):
        hub.push_to_hub(tiny_model, "no-namespace")
