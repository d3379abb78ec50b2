"""Reliability, round 3, the Hub and model files: Hub failures told from huggingface_hub's typed errors (so
they hold when its logging is silenced), invalid repository ids in our words, no partial download left
behind by a call given up at its deadline, a corrupted cache copy removed so the next call fetches it
again, and checkpoints or CLIP files that cannot be read named in one line (code objects refused)."""

from __future__ import annotations

import hashlib
import json
import logging
import os
import pickle
import socket
import time
import zipfile
from pathlib import Path

import pytest
import torch

import csdn
from csdn import cli
from csdn.errors import CheckpointError, CLIPWeightsError, HubTimeoutError, WeightsError, WeightsNotAvailableError

DEADLINE = 2.0  # seconds given to each Hub call below
SLACK = 1.5  # thread start-up and the final check, on a loaded machine


def run(capsys, *argv) -> tuple[int, str]:
    """``csdn argv``: the exit status and what it printed on stderr."""
    code = cli.main([str(a) for a in argv])
    return code, capsys.readouterr().err


def one_error_line(err: str) -> str:
    """The single ``csdn: error:`` line the CLI printed (and nothing else)."""
    lines = err.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("csdn: error: "), err
    return lines[0]


@pytest.fixture
def hub_model(fake_hub, tiny_model, tmp_path):
    folder = tiny_model.save_pretrained(tmp_path / "hub-model")
    fake_hub.commit(
        "acme/csdn-tiny",
        {name: (folder / name).read_bytes() for name in ("model.safetensors", "config.json", "README.md")},
    )
    return fake_hub


def _blobs(tmp_path: Path, repo: str = "acme--csdn-tiny") -> Path:
    return tmp_path / "hf-cache" / f"models--{repo}" / "blobs"


# ---------------------------------------------------------------------------- typed errors, not log text
@pytest.fixture
def silenced_hub_logging():
    """huggingface_hub's warnings switched off, as an application may do: the diagnosis must not need them."""
    logger = logging.getLogger("huggingface_hub")
    level = logger.level
    logger.setLevel(logging.CRITICAL)
    yield
    logger.setLevel(level)


def test_a_server_error_is_named_even_when_huggingface_hubs_logging_is_silenced(hub_model, silenced_hub_logging):
    hub_model.fail("/acme/csdn-tiny/resolve/", 500)
    start = time.perf_counter()
    with pytest.raises(WeightsNotAvailableError) as caught:
        csdn.load("hf-hub:acme/csdn-tiny", progress=False, timeout=DEADLINE)
    assert time.perf_counter() - start < DEADLINE + SLACK
    assert "the Hub answered HTTP 500 (a server error)" in str(caught.value)


def test_an_absent_network_is_said_at_once_even_when_logging_is_silenced(fake_hub, monkeypatch, silenced_hub_logging):
    from huggingface_hub import constants as hf_constants

    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        endpoint = f"http://127.0.0.1:{probe.getsockname()[1]}"
    monkeypatch.setattr(hf_constants, "ENDPOINT", endpoint)
    monkeypatch.setattr(
        hf_constants, "HUGGINGFACE_CO_URL_TEMPLATE", endpoint + "/{repo_id}/resolve/{revision}/{filename}"
    )
    start = time.perf_counter()
    with pytest.raises(WeightsNotAvailableError, match=f"the Hub at {endpoint} cannot be reached") as caught:
        csdn.load("hf-hub:acme/csdn-tiny", progress=False, timeout=10)
    assert time.perf_counter() - start < 3  # not after huggingface_hub's retries
    assert not isinstance(caught.value, HubTimeoutError)


def test_a_gated_or_private_repository_is_told_from_the_http_status(hub_model):
    hub_model.fail("/acme/csdn-tiny/resolve/", 403)
    with pytest.raises(WeightsNotAvailableError, match=r"the Hub refused access \(HTTP 403\).*needs a valid token"):
        csdn.load("hf-hub:acme/csdn-tiny", progress=False, timeout=DEADLINE)


def test_the_transfer_module_reads_no_log_records_or_message_text():
    import csdn.hub.transfer as transfer

    source = Path(transfer.__file__).read_text()
    for scraping in ("getMessage", ".lower()", "__name__ ==", "__name__ in", "in str(", "startswith("):
        assert scraping not in source, scraping


# ---------------------------------------------------------------------------- repository ids
@pytest.mark.parametrize(
    "repo_id", ["org/..", "org/na--me", "-org/name", "org/name.", "org/name.git", "org/" + "a" * 97, "org/a/b"]
)
def test_an_invalid_hub_id_is_refused_in_our_words_naming_it(fake_hub, repo_id):
    from huggingface_hub.errors import HFValidationError

    with pytest.raises(ValueError) as caught:
        csdn.load(f"hf-hub:{repo_id}")
    message = str(caught.value)
    assert not isinstance(caught.value, HFValidationError)
    assert f"'hf-hub:{repo_id}' is not a Hub model id" in message
    assert "'hf-hub:org/repo'" in message and "without '--' or '..'" in message
    assert fake_hub.requests == []


def test_an_invalid_hub_id_on_the_command_line_is_one_line(capsys, fake_hub):
    code, err = run(capsys, "info", "hf-hub:org/..")
    assert code == 2
    line = one_error_line(err)
    assert "'hf-hub:org/..' is not a Hub model id" in line and "Repo id must" not in line


def test_push_to_hub_refuses_an_invalid_repo_id_in_our_words(tiny_model, fake_hub):
    from huggingface_hub.errors import HFValidationError

    with pytest.raises(ValueError, match=r"repo_id must look like 'org/name'.*got 'acme/\.\.'") as caught:
        csdn.hub.push_to_hub(tiny_model, "acme/..", token="hf_test")
    assert not isinstance(caught.value, HFValidationError) and fake_hub.requests == []


# ---------------------------------------------------------------------------- partial downloads
def test_a_download_given_up_at_the_deadline_leaves_no_partial_file_but_keeps_others(hub_model, tmp_path):
    blob = hashlib.sha256(hub_model.files("acme/csdn-tiny")["model.safetensors"]).hexdigest()
    blobs = _blobs(tmp_path)
    blobs.mkdir(parents=True)
    foreign = blobs / f"{blob}.0123abcd.incomplete"  # another download's, begun before ours
    foreign.write_bytes(b"someone else's bytes")
    hub_model.fail("/lfs/", "cut-body")  # the transfer starts, then keeps breaking: ours is being written
    with pytest.raises(HubTimeoutError, match="the transfer of the file began but was interrupted"):
        csdn.load("hf-hub:acme/csdn-tiny", progress=False, timeout=DEADLINE)
    assert sorted(p.name for p in blobs.glob("*.incomplete")) == [foreign.name]
    assert foreign.read_bytes() == b"someone else's bytes"


def test_a_hung_transfer_given_up_leaves_no_partial_file(hub_model, tmp_path):
    hub_model.fail("/lfs/", "hang")
    with pytest.raises(HubTimeoutError, match="did not finish answering within 1 s"):
        csdn.load("hf-hub:acme/csdn-tiny", progress=False, timeout=1)
    assert list(_blobs(tmp_path).glob("*.incomplete")) == []


# ---------------------------------------------------------------------------- corrupted cache copies
def _corrupt(blob: Path) -> None:
    data = bytearray(blob.read_bytes())
    data[-100] ^= 0xFF  # deep inside a tensor: the header still parses
    blob.write_bytes(bytes(data))


def test_a_corrupted_cache_copy_is_removed_so_the_next_load_downloads_it_again(hub_model, tiny_model, tmp_path):
    csdn.load("hf-hub:acme/csdn-tiny", progress=False)
    (blob,) = _blobs(tmp_path).iterdir()
    _corrupt(blob)
    with pytest.raises(WeightsError) as caught:
        csdn.load("hf-hub:acme/csdn-tiny", progress=False)
    message = str(caught.value)
    assert f"expects {blob.name}" in message and "was removed from the Hub cache" in message
    assert "the next load downloads it again" in message and "Delete the cached file" not in message
    assert not blob.exists()
    downloads = hub_model.paths_requested("GET").count(f"/lfs/{blob.name}")
    reloaded = csdn.load("hf-hub:acme/csdn-tiny", progress=False)  # no force_download needed
    assert hub_model.paths_requested("GET").count(f"/lfs/{blob.name}") == downloads + 1
    assert torch.equal(
        reloaded.state_dict()["gem_head.classifier.weight"], tiny_model.state_dict()["gem_head.classifier.weight"]
    )


def test_a_corrupted_copy_of_a_registry_model_is_removed_and_a_pin_mismatch_is_kept(hub_model, tmp_path):
    good = hashlib.sha256(hub_model.files("acme/csdn-tiny")["model.safetensors"]).hexdigest()

    def registry(sha256: str) -> Path:
        entry = {"repo_id": "acme/csdn-tiny", "sha256": sha256, "dataset": "d", "description": "x"}
        path = tmp_path / f"registry-{sha256[:8]}.json"
        path.write_text(json.dumps({"format_version": 1, "models": {"pinned": entry}}))
        return path

    csdn.load("pinned", registry=registry(good), progress=False)
    blob = _blobs(tmp_path) / good
    _corrupt(blob)
    with pytest.raises(WeightsError, match=rf"registry entry 'pinned' expects {good}.*removed from the Hub cache"):
        csdn.load("pinned", registry=registry(good), progress=False)
    assert not blob.exists()
    csdn.load("pinned", registry=registry(good), progress=False)  # downloaded again, and good
    wrong = "0" * 64  # the cache holds what the Hub sent; the pin is what differs: nothing to re-download
    with pytest.raises(WeightsError, match="Delete the cached file"):
        csdn.load("pinned", registry=registry(wrong), progress=False)
    assert blob.is_file()


def test_a_corrupted_cached_clip_file_is_removed_so_the_next_call_downloads_it_again(fake_hub, tmp_path):
    from csdn.hub.clip import download_from_hub

    payload = os.urandom(4096)
    commit = fake_hub.commit("timm/resnet50_clip.openai", {"open_clip_model.safetensors": payload})
    digest = hashlib.sha256(payload).hexdigest()
    registry = tmp_path / "registry.json"
    clip = {"repo_id": "timm/resnet50_clip.openai", "filename": "open_clip_model.safetensors"}
    registry.write_text(
        json.dumps(
            {"format_version": 1, "models": {}, "clip": {"RN50": {**clip, "revision": commit, "sha256": digest}}}
        )
    )
    path = download_from_hub("RN50", registry=registry, progress=False)
    blob = path.resolve()
    blob.write_bytes(b"x" + payload[1:])
    with pytest.raises(CLIPWeightsError, match="removed from the Hub cache, so the next call downloads it again"):
        download_from_hub("RN50", registry=registry, progress=False)
    assert not blob.exists()
    assert download_from_hub("RN50", registry=registry, progress=False).read_bytes() == payload


# ---------------------------------------------------------------------------- files that cannot be read
class _RunsCode:
    """Unpickling this calls ``exec``: what a hostile checkpoint holds."""

    def __init__(self, marker: Path) -> None:
        self.marker = marker

    def __reduce__(self):
        return (exec, (f"open({str(self.marker)!r}, 'w').write('ran')",))


def _hostile_files(tmp_path: Path) -> list[Path]:
    """A ``torch.save`` zip and a bare pickle, each holding code beside a tensor."""
    marker = tmp_path / "ran.txt"
    archive, bare = tmp_path / "evil.pth", tmp_path / "evil-bare.pth"
    torch.save({"module.x": torch.zeros(2), "payload": _RunsCode(marker)}, archive)
    with open(bare, "wb") as handle:
        pickle.dump({"payload": _RunsCode(marker)}, handle, protocol=4)
    return [archive, bare]


def _torchscript_file(tmp_path: Path) -> Path:
    path = tmp_path / "evil_ts.pt"
    torch.jit.save(torch.jit.script(torch.nn.Linear(2, 2)), str(path))
    return path


def _assert_refused_for_safety(message: str, path: Path) -> None:
    assert f"cannot read {path}, it is not a readable" in message and "it holds Python code objects" in message
    assert "builtin" in message and ".exec" in message
    assert "refused for safety" in message and "\n" not in message
    assert "weights_only" not in message and "download it again" not in message


def test_convert_refuses_code_objects_for_safety_in_one_line(capsys, tmp_path):
    from csdn.hub.official import from_official

    for path in _hostile_files(tmp_path):
        with pytest.raises(CheckpointError) as caught:
            from_official(path)
        _assert_refused_for_safety(str(caught.value), path)
        code, err = run(capsys, "convert", path, tmp_path / f"out-{path.stem}")
        assert code == 2
        _assert_refused_for_safety(one_error_line(err).removeprefix("csdn: error: "), path)
    assert not (tmp_path / "ran.txt").exists()


def test_convert_names_a_torchscript_archive_and_an_unreadable_file(capsys, tmp_path):
    from csdn.hub.official import from_official

    script = _torchscript_file(tmp_path)
    with pytest.raises(
        CheckpointError, match=rf"cannot read {script}, it is not a readable checkpoint.*: it is a TorchScript archive"
    ):
        from_official(script)
    empty = tmp_path / "empty.pth"
    empty.write_bytes(b"")
    with pytest.raises(
        CheckpointError, match=rf"cannot read {empty}, it is not a readable checkpoint.* \(it ends early\)"
    ):
        from_official(empty)
    code, err = run(capsys, "convert", script, tmp_path / "out")
    assert code == 2 and str(script) in one_error_line(err) and "weights_only" not in err


def _broken_clip_files(tmp_path: Path) -> list[Path]:
    """Files that are no readable CLIP weights, each of a kind torch or safetensors fails on without a name."""
    empty = tmp_path / "empty.pt"
    empty.write_bytes(b"")
    garbage = tmp_path / "garbage.bin"
    garbage.write_bytes(bytes(range(256)) * 4)
    header = tmp_path / "bad-header.safetensors"
    header.write_bytes(b"\x10\x00\x00\x00\x00\x00\x00\x00{not json at all")
    from safetensors.torch import save_file

    cut = tmp_path / "cut.safetensors"
    save_file({"visual.proj": torch.zeros(64, 64)}, str(cut))
    cut.write_bytes(cut.read_bytes()[:-100])
    damaged = tmp_path / "damaged_ts.pt"  # a TorchScript zip whose code was replaced by junk
    source = _torchscript_file(tmp_path)
    with zipfile.ZipFile(source) as original, zipfile.ZipFile(damaged, "w") as out:
        for item in original.infolist():
            data = original.read(item)
            out.writestr(item, b"junk" if item.filename.endswith((".pkl", ".py")) else data)
    return [empty, garbage, header, cut, damaged]


def test_read_clip_state_dict_names_the_file_and_what_it_expected(tmp_path):
    from safetensors import SafetensorError

    from csdn.hub.clip import read_clip_state_dict

    for path in _broken_clip_files(tmp_path):
        with pytest.raises(CLIPWeightsError) as caught:
            read_clip_state_dict(path)
        message = str(caught.value)
        assert not isinstance(caught.value, SafetensorError)
        assert str(path) in message and "CLIP" in message and "\n" not in message, message
    for path in _hostile_files(tmp_path):
        with pytest.raises(CLIPWeightsError) as caught:
            read_clip_state_dict(path)
        _assert_refused_for_safety(str(caught.value), path)
    assert not (tmp_path / "ran.txt").exists()


def test_train_init_with_a_file_that_is_not_clip_names_it(capsys, tmp_path, tiny_sysu):
    from csdn.train.initialise import initial_model

    script = _torchscript_file(tmp_path)
    with pytest.raises(CLIPWeightsError, match=rf"{script}: not a CLIP ResNet state dict"):
        initial_model(script, 4)
    for path in [script, *_broken_clip_files(tmp_path)[:3], _hostile_files(tmp_path)[0]]:
        code, err = run(
            capsys,
            "train",
            "--dataset",
            "sysu",
            "--root",
            tiny_sysu,
            "--output",
            tmp_path / f"run-{path.stem}",
            "--init",
            path,
            "--no-progress",
            "--ids-per-batch",
            "2",
            "--images-per-id",
            "2",
        )
        assert code == 2
        line = one_error_line(err)
        assert str(path) in line and "weights_only" not in line, line
    assert not (tmp_path / "ran.txt").exists()
