"""Reliability of what csdn writes and reads: outputs never replace a file the user did not ask to
replace, saved weights carry their SHA-256, untrusted configs are checked before allocation, and
every Hub call ends within its deadline with a message that names the failure."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
import torch

from csdn import cli
from csdn.errors import OutputExistsError
from csdn.retrieval.embeddings import load_embeddings, manifest_path, save_embeddings


def run(capsys, *argv) -> tuple[int, str, str]:
    code = cli.main([str(a) for a in argv])
    captured = capsys.readouterr()
    return code, captured.out, captured.err


def _rows(count: int, dim: int = 8, seed: int = 0) -> np.ndarray:
    rows = np.random.default_rng(seed).standard_normal((count, dim)).astype(np.float32)
    return rows / np.linalg.norm(rows, axis=1, keepdims=True)


# ---------------------------------------------------------------------------- 1. outputs and manifests
def test_npy_and_safetensors_of_one_name_keep_their_own_manifests(tmp_path):
    save_embeddings(tmp_path / "e.npy", _rows(2), paths=["ir/a.png", "ir/b.png"], modality="infrared")
    save_embeddings(tmp_path / "e.safetensors", _rows(3), paths=["v/x.png", "v/y.png", "v/z.png"], modality="visible")
    assert manifest_path(tmp_path / "e.npy") == tmp_path / "e.npy.json"
    assert sorted(p.name for p in tmp_path.iterdir()) == ["e.npy", "e.npy.json", "e.safetensors", "e.safetensors.json"]
    npy, st = load_embeddings(tmp_path / "e.npy"), load_embeddings(tmp_path / "e.safetensors")
    assert (npy.paths, npy.modality) == (["ir/a.png", "ir/b.png"], "infrared")
    assert (st.paths, st.modality) == (["v/x.png", "v/y.png", "v/z.png"], "visible")


def test_a_manifest_of_the_old_naming_is_still_read_and_the_new_one_wins(tmp_path):
    np.save(tmp_path / "old.npy", _rows(2))
    old = {"format": "csdn-embeddings", "version": 1, "count": 2, "dim": 8, "paths": ["a.png", "b.png"]}
    (tmp_path / "old.json").write_text(json.dumps(old))
    assert load_embeddings(tmp_path / "old.npy").paths == ["a.png", "b.png"]
    (tmp_path / "old.npy.json").write_text(json.dumps({**old, "paths": ["new-a.png", "new-b.png"]}))
    assert load_embeddings(tmp_path / "old.npy").paths == ["new-a.png", "new-b.png"]


def test_save_embeddings_without_overwrite_refuses_and_writes_nothing(tmp_path):
    save_embeddings(tmp_path / "e.npy", _rows(2))
    before = (tmp_path / "e.npy").read_bytes()
    with pytest.raises(OutputExistsError, match=r"e\.npy already exists; pass --overwrite"):
        save_embeddings(tmp_path / "e.npy", _rows(3), overwrite=False)
    assert (tmp_path / "e.npy").read_bytes() == before


def test_embed_refuses_existing_output_and_never_touches_unrelated_json(capsys, tmp_path, tiny_model):
    model = tiny_model.save_pretrained(tmp_path / "model")
    image = tmp_path / "img" / "a.png"
    image.parent.mkdir()
    from PIL import Image

    Image.fromarray(np.random.default_rng(0).integers(0, 256, (48, 24, 3), dtype=np.uint8)).save(image)
    notes = tmp_path / "notes.json"
    notes.write_text("my notes")
    out = tmp_path / "notes.npy"
    base = ("embed", "--model", model, "--modality", "visible", image, "--output", out, "--quiet")
    code, stdout, _ = run(capsys, *base)
    assert code == 0 and "notes.npy.json" in stdout
    assert notes.read_text() == "my notes"  # a file the user did not name
    first = out.read_bytes()
    code, _, err = run(capsys, *base)
    assert code == 2 and "notes.npy already exists; pass --overwrite" in err
    assert out.read_bytes() == first
    code, _, _ = run(capsys, *base, "--overwrite")
    assert code == 0 and notes.read_text() == "my notes"


def test_match_refuses_existing_output_and_never_writes_over_an_input_or_its_manifest(capsys, tmp_path):
    for name, count in (("q", 2), ("g", 4)):
        save_embeddings(tmp_path / f"{name}.npy", _rows(count, seed=count))
    legacy = tmp_path / "q.json"  # what an old `csdn embed` wrote beside q.npy
    legacy.write_text(
        json.dumps({"format": "csdn-embeddings", "version": 1, "count": 2, "dim": 8, "paths": ["a", "b"]})
    )
    kept = {p: p.read_bytes() for p in tmp_path.iterdir()}
    for target in ("q.json", "q.npy.json", "g.npy"):
        for extra in ((), ("--overwrite",)):
            code, _, err = run(
                capsys, "match", tmp_path / "q.npy", tmp_path / "g.npy", "--output", tmp_path / target, *extra
            )
            assert code == 2, (target, extra)
            assert "input of this run" in err or "must end in" in err
    assert {p: p.read_bytes() for p in tmp_path.iterdir()} == kept
    ranking = tmp_path / "r.csv"
    ranking.write_text("mine")
    code, _, err = run(capsys, "match", tmp_path / "q.npy", tmp_path / "g.npy", "--output", ranking)
    assert code == 2 and "r.csv already exists; pass --overwrite" in err and ranking.read_text() == "mine"
    code, _, _ = run(capsys, "match", tmp_path / "q.npy", tmp_path / "g.npy", "--output", ranking, "--overwrite")
    assert code == 0 and ranking.read_text().startswith("query,rank,gallery,score")


def test_match_refuses_an_existing_visualize_picture_before_matching(capsys, tmp_path):
    for name, count in (("q", 2), ("g", 4)):
        save_embeddings(tmp_path / f"{name}.npy", _rows(count, seed=count))
    picture = tmp_path / "mine.png"
    picture.write_bytes(b"not yours")
    code, _, err = run(
        capsys, "match", tmp_path / "q.npy", tmp_path / "g.npy", "--output", tmp_path / "r.csv", "--visualize", picture
    )
    assert code == 2 and "mine.png already exists" in err
    assert picture.read_bytes() == b"not yours" and not (tmp_path / "r.csv").exists()


def test_eval_json_refuses_an_existing_file_and_a_non_json_name(capsys, tmp_path):
    image = tmp_path / "019.jpg"
    image.write_bytes(b"\xff\xd8 an image")
    code, _, err = run(
        capsys, "eval", "--dataset", "sysu", "--root", tmp_path / "nowhere", "--model", "x", "--json", image
    )
    assert code == 2 and "must end in .json" in err
    result = tmp_path / "result.json"
    result.write_text("{}")
    code, _, err = run(
        capsys, "eval", "--dataset", "sysu", "--root", tmp_path / "nowhere", "--model", "x", "--json", result
    )
    assert code == 2 and "result.json already exists; pass --overwrite" in err
    assert image.read_bytes() == b"\xff\xd8 an image" and result.read_text() == "{}"


def test_convert_into_a_folder_with_the_users_readme_refuses(capsys, tmp_path):
    from csdn.config import CSDNConfig
    from csdn.hub.official import to_official_state_dict
    from csdn.model.network import CSDN

    torch.manual_seed(0)
    torch.save(to_official_state_dict(CSDN(CSDNConfig.tiny(vision_heads=4, text_heads=1))), tmp_path / "m.pth")
    out = tmp_path / "project"
    out.mkdir()
    (out / "README.md").write_text("# my project")
    (out / "config.json").write_text('{"mine": 1}')
    args = ("convert", tmp_path / "m.pth", out, "--image-size", "64", "32")
    code, _, err = run(capsys, *args)
    assert code == 2 and "config.json already exists; pass --overwrite" in err
    assert (out / "README.md").read_text() == "# my project" and (out / "config.json").read_text() == '{"mine": 1}'
    assert not (out / "model.safetensors").exists()
    code, _, _ = run(capsys, *args, "--overwrite")
    assert code == 0 and (out / "model.safetensors").is_file()


def test_synth_refuses_a_folder_that_is_not_empty(capsys, tmp_path):
    root = tmp_path / "data"
    root.mkdir()
    (root / "keep.txt").write_text("keep")
    code, _, err = run(capsys, "synth", "--layout", "regdb", "--root", root, "--quiet")
    assert code == 2 and "not an empty folder" in err and (root / "keep.txt").read_text() == "keep"
    assert sorted(p.name for p in root.iterdir()) == ["keep.txt"]


# ---------------------------------------------------------------------------- 2. recorded SHA-256, finite weights
def _flip_one_bit_in_a_tensor(path: Path) -> None:
    """Flip a high exponent bit of the last float32 value (the data lies after the header)."""
    data = bytearray(path.read_bytes())
    data[-1] ^= 0x40
    path.write_bytes(bytes(data))


def test_save_pretrained_records_the_weights_sha256_in_config_and_card(tmp_path, tiny_model):
    from csdn.system.fileio import sha256_file

    folder = tiny_model.save_pretrained(tmp_path / "m")
    digest = sha256_file(folder / "model.safetensors")
    assert json.loads((folder / "config.json").read_text())["meta"]["weights_sha256"] == digest
    assert digest in (folder / "README.md").read_text()
    again = tiny_model.save_pretrained(tmp_path / "again")  # saving a loaded model records its new file, not the old
    import csdn

    reloaded = csdn.load(again)
    third = reloaded.save_pretrained(tmp_path / "third")
    assert json.loads((third / "config.json").read_text())["meta"]["weights_sha256"] == sha256_file(
        third / "model.safetensors"
    )


def test_a_local_folder_whose_weights_changed_is_refused_naming_the_file(tmp_path, tiny_model):
    import csdn
    from csdn.errors import IntegrityError, WeightsError

    folder = tiny_model.save_pretrained(tmp_path / "m")
    _flip_one_bit_in_a_tensor(folder / "model.safetensors")
    with pytest.raises(IntegrityError, match=r"model\.safetensors: this file changed after it was saved") as caught:
        csdn.load(folder)
    assert "config.json" in str(caught.value) and "download it again" in str(caught.value)
    assert isinstance(caught.value, WeightsError)


def test_weights_holding_nan_are_refused_naming_the_tensor(tmp_path, tiny_model):
    import csdn
    from csdn.errors import WeightsError

    name, tensor = next((n, t) for n, t in tiny_model.state_dict().items() if t.is_floating_point() and t.numel() > 1)
    with torch.no_grad():
        tensor.view(-1)[0] = float("nan")
    folder = tiny_model.save_pretrained(tmp_path / "m")  # a consistent file (hash recorded) of bad weights
    with pytest.raises(WeightsError, match=rf"tensor '{name}' holds 1 NaN or infinite value"):
        csdn.load(folder)


# ---------------------------------------------------------------------------- 3. untrusted config vs header
def test_a_config_claiming_millions_of_identities_fails_fast_before_building_the_model(tmp_path, tiny_model):
    import time

    from safetensors.torch import load_file, save_file

    import csdn
    from csdn.errors import WeightsError
    from csdn.io.pretrained import CONFIG_METADATA_KEY
    from csdn.io.safetensors import parse_header

    folder = tiny_model.save_pretrained(tmp_path / "m")
    metadata, _ = parse_header(folder / "model.safetensors")
    config = json.loads(metadata[CONFIG_METADATA_KEY])
    config["heads"]["num_classes"] = 3_000_000  # config format 2: the heads section
    evil = tmp_path / "evil.safetensors"
    save_file(
        load_file(str(folder / "model.safetensors")),
        str(evil),
        metadata={**metadata, CONFIG_METADATA_KEY: json.dumps(config)},
    )
    start = time.perf_counter()
    with pytest.raises(WeightsError, match=r"do not match the architecture.*3000000") as caught:
        csdn.load(evil)
    assert time.perf_counter() - start < 1.0
    assert "evil.safetensors" in str(caught.value)


# ---------------------------------------------------------------------------- 4. Hub faults, each within its deadline
DEADLINE = 2.0  # seconds given to each Hub call below
SLACK = 1.5  # thread start-up and the final check, on a loaded machine


@pytest.fixture
def hub_model(fake_hub, tiny_model, tmp_path):
    folder = tiny_model.save_pretrained(tmp_path / "hub-model")
    fake_hub.commit(
        "acme/csdn-tiny",
        {name: (folder / name).read_bytes() for name in ("model.safetensors", "config.json", "README.md")},
    )
    return fake_hub


def _load_fails(name: str = "hf-hub:acme/csdn-tiny", **options) -> tuple[Exception, float]:
    import time

    import csdn
    from csdn.errors import CSDNError

    start = time.perf_counter()
    with pytest.raises(CSDNError) as caught:
        csdn.load(name, progress=False, **options)
    return caught.value, time.perf_counter() - start


@pytest.mark.parametrize(
    "prefix, how, problem",
    [
        ("/acme/csdn-tiny/resolve/", "hang", "did not finish answering within 2 s"),
        ("/lfs/", "hang", "did not finish answering within 2 s"),
        ("/lfs/", "cut-body", "interrupted"),
        ("/acme/csdn-tiny/resolve/", 500, "server error"),
        ("/acme/csdn-tiny/resolve/", "html", "answered with something that is not the Hub (a web page?"),
        ("/lfs/", "html", "a web page in place of the file"),
    ],
)
def test_each_hub_fault_ends_within_the_deadline_with_its_own_message(hub_model, prefix, how, problem):
    from csdn.errors import WeightsNotAvailableError

    hub_model.fail(prefix, how)
    error, seconds = _load_fails(timeout=DEADLINE)
    assert seconds < DEADLINE + SLACK, seconds
    assert isinstance(error, WeightsNotAvailableError)
    message = str(error)
    assert "model.safetensors of the Hub repository acme/csdn-tiny (revision main)" in message
    assert problem in message, message
    assert "httpx" not in message.lower()


def test_a_missing_repository_is_not_reported_as_a_network_problem(hub_model):
    error, seconds = _load_fails("hf-hub:acme/nothing-here", timeout=DEADLINE)
    assert "does not exist on the Hub" in str(error) and seconds < DEADLINE + SLACK


def _closed_port_endpoint(monkeypatch) -> str:
    import socket

    from huggingface_hub import constants as hf_constants

    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        endpoint = f"http://127.0.0.1:{probe.getsockname()[1]}"
    monkeypatch.setattr(hf_constants, "ENDPOINT", endpoint)
    monkeypatch.setattr(
        hf_constants, "HUGGINGFACE_CO_URL_TEMPLATE", endpoint + "/{repo_id}/resolve/{revision}/{filename}"
    )
    return endpoint


def test_an_absent_network_is_said_at_once_without_retry_noise(fake_hub, monkeypatch, capsys):
    endpoint = _closed_port_endpoint(monkeypatch)
    error, seconds = _load_fails(timeout=10)
    assert seconds < 3, seconds  # not after huggingface_hub's retries (about 23 s by default)
    assert f"the Hub at {endpoint} cannot be reached" in str(error) and "HF_HUB_OFFLINE=1" in str(error)
    assert "Retrying" not in capsys.readouterr().err


def test_the_deadline_comes_from_the_environment_and_is_checked(hub_model, monkeypatch):
    from csdn.errors import HubTimeoutError

    hub_model.fail("/acme/csdn-tiny/resolve/", "hang")
    monkeypatch.setenv("CSDN_HUB_TIMEOUT", "1")
    error, seconds = _load_fails()
    assert isinstance(error, HubTimeoutError) and isinstance(error, TimeoutError)
    assert "within 1 s" in str(error) and "CSDN_HUB_TIMEOUT" in str(error) and seconds < 1 + SLACK
    monkeypatch.setenv("CSDN_HUB_TIMEOUT", "soon")
    import csdn

    with pytest.raises(ValueError, match="CSDN_HUB_TIMEOUT is 'soon'; set it to a number of seconds"):
        csdn.load("hf-hub:acme/csdn-tiny")
    with pytest.raises(ValueError, match="timeout= must be a positive number of seconds"):
        csdn.load("hf-hub:acme/csdn-tiny", timeout=0)


def test_push_to_hub_hung_or_offline_gives_a_clear_error_in_time(fake_hub, tiny_model, monkeypatch):
    import time

    from csdn.errors import HubError, HubTimeoutError
    from csdn.hub.loading import push_to_hub

    fake_hub.fail("/api/", "hang")
    start = time.perf_counter()
    with pytest.raises(HubTimeoutError, match="cannot upload to the Hub repository acme/pushed: .*within 2 s") as hung:
        push_to_hub(tiny_model, "acme/pushed", token="hf_test", timeout=DEADLINE)
    assert time.perf_counter() - start < DEADLINE + SLACK
    assert isinstance(hung.value, HubError)  # what push_to_hub documents; `except HubError` catches a timeout too

    endpoint = _closed_port_endpoint(monkeypatch)
    start = time.perf_counter()
    with pytest.raises(
        HubError,
        match=rf"cannot upload to the Hub repository acme/pushed: the Hub at {endpoint} "
        "cannot be reached",
    ) as caught:
        push_to_hub(tiny_model, "acme/pushed", token="hf_test", timeout=DEADLINE)
    assert time.perf_counter() - start < DEADLINE + SLACK
    assert "httpx" not in str(caught.value).lower()


def test_the_cli_reports_a_hung_hub_in_one_line(capsys, hub_model, monkeypatch, tmp_path):
    hub_model.fail("/acme/csdn-tiny/resolve/", "hang")
    monkeypatch.setenv("CSDN_HUB_TIMEOUT", "1")
    code, _, err = run(capsys, "info", "hf-hub:acme/csdn-tiny")
    assert code == 2 and err.startswith("csdn: error: cannot download model.safetensors")
    assert "within 1 s" in err and "Traceback" not in err


# ---------------------------------------------------------------------------- 5. --bit-depth
def test_embed_bit_depth_flag_scales_every_frame_as_the_camera_stated(capsys, tmp_path, tiny_model):
    from PIL import Image

    model = tiny_model.save_pretrained(tmp_path / "model")
    frame = tmp_path / "ir" / "f.png"
    frame.parent.mkdir()
    counts = np.random.default_rng(0).integers(0, 1024, (48, 24)).astype(np.uint16)  # a 10-bit camera
    counts[0, 0] = 1024  # one hot pixel: a per-frame guess would call this frame 12-bit
    Image.fromarray(counts).save(frame)
    outputs = {}
    for depth in ("12", "16"):
        out = tmp_path / f"e{depth}.npy"
        code, _, err = run(
            capsys,
            "embed",
            "--model",
            model,
            "--modality",
            "ir",
            frame,
            "--output",
            out,
            "--bit-depth",
            depth,
            "--quiet",
        )
        assert code == 0, err
        outputs[depth] = np.load(out)
    expected = tiny_model.embed_image([str(frame)], "infrared", bit_depth=16)
    np.testing.assert_allclose(outputs["16"], expected.numpy(), rtol=0, atol=1e-6)
    assert not np.allclose(outputs["12"], outputs["16"], atol=1e-3)
    with pytest.raises(SystemExit):
        cli.main(
            [
                "embed",
                "--model",
                str(model),
                "--modality",
                "ir",
                str(frame),
                "--output",
                str(tmp_path / "x.npy"),
                "--bit-depth",
                "11",
            ]
        )
    assert "invalid choice: 11" in capsys.readouterr().err
