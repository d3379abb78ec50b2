"""The ``csdn`` command's one error policy: each failure that used to escape as a traceback now
exits 2 with ``csdn: error: <what is wrong and what to do>``; ``--debug`` before or after the
sub-command shows the traceback instead, for every kind of sub-command (``eval`` and ``synth``
included, which used to print their own errors)."""

from __future__ import annotations

import errno
import os
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import PIL.Image
import pytest
import torch
from PIL import Image

import csdn
from csdn import cli
from csdn.errors import (
    DatasetLayoutError,
    DeviceError,
    DiskFullError,
    EmbeddingsFileError,
    ImageDecodeError,
    WeightsNotAvailableError,
)

CPU_ONLY = pytest.mark.skipif(
    torch.version.cuda is not None or torch.version.hip is not None, reason="needs a torch build without CUDA"
)


def write_images(folder: Path, count: int) -> Path:
    """``count`` 48x24 PNG crops (1,152 pixels each) in ``folder``."""
    rng = np.random.default_rng(0)
    folder.mkdir(parents=True, exist_ok=True)
    for i in range(count):
        Image.fromarray(rng.integers(0, 256, size=(48, 24, 3), dtype=np.uint8)).save(folder / f"{i:04d}.png")
    return folder


@pytest.fixture
def saved_model(tiny_model, tmp_path) -> Path:
    return tiny_model.save_pretrained(tmp_path / "model")


@pytest.fixture
def images(tmp_path) -> Path:
    return write_images(tmp_path / "images", 2)


def fails(capsys, argv: list, error: type[Exception] | tuple[type[Exception], ...]) -> str:
    """Run ``csdn argv``: exit status 2 and one ``csdn: error:`` line; with ``--debug`` before and after
    the sub-command, ``error`` is raised instead. Returns the message."""
    argv = [str(a) for a in argv]
    code = cli.main(argv)
    err = capsys.readouterr().err
    assert code == 2, err
    # huggingface_hub may log warnings (retries) before it: the error is the last thing printed
    message = err[err.index("csdn: error: ") :]
    assert "Traceback" not in message and message.count("csdn: error: ") == 1
    for debug in (["--debug", *argv], [*argv, "--debug"]):
        with pytest.raises(error):
            cli.main(debug)
        capsys.readouterr()
    return message[len("csdn: error: ") :]


# ---------------------------------------------------------------------------- an image over PIL's size limit
def test_an_image_over_pils_size_limit_names_file_size_and_limit(capsys, tmp_path, saved_model, images, monkeypatch):
    monkeypatch.setattr(PIL.Image, "MAX_IMAGE_PIXELS", 100)  # PIL refuses more than twice this: 200 pixels
    message = fails(
        capsys,
        ["embed", "--model", saved_model, "--modality", "ir", images, "--output", tmp_path / "e.npy", "--quiet"],
        ImageDecodeError,
    )
    assert str(images / "0000.png") in message
    assert "it has 1,152 pixels, over PIL's limit of 200" in message and "MAX_IMAGE_PIXELS" in message
    assert not (tmp_path / "e.npy").exists()


# ---------------------------------------------------------------------------- --device cuda without CUDA
@CPU_ONLY
def test_device_cuda_on_a_cpu_build_says_what_to_use(capsys, tmp_path, saved_model, images):
    message = fails(
        capsys,
        [
            "embed",
            "--model",
            saved_model,
            "--modality",
            "ir",
            images,
            "--output",
            tmp_path / "e.npy",
            "--device",
            "cuda",
        ],
        DeviceError,
    )
    assert "this torch build has no CUDA; use --device cpu" in message and "install a CUDA build of torch" in message
    assert not (tmp_path / "e.npy").exists()


@CPU_ONLY
def test_device_cuda_on_a_cpu_build_for_eval_and_train(capsys, tmp_path, saved_model):
    eval_message = fails(
        capsys,
        ["eval", "--dataset", "sysu", "--root", tmp_path, "--model", saved_model, "--device", "cuda:1", "--quiet"],
        DeviceError,
    )
    train_message = fails(
        capsys,
        [
            "train",
            "--dataset",
            "folder",
            "--root",
            tmp_path,
            "--output",
            tmp_path / "run",
            "--init",
            "tiny",
            "--device",
            "cuda",
            "--no-progress",
        ],
        DeviceError,
    )
    for message in (eval_message, train_message):
        assert "this torch build has no CUDA; use --device cpu" in message
    assert not (tmp_path / "run").exists()


@CPU_ONLY
def test_device_cuda_in_a_real_process_prints_no_traceback(tmp_path, saved_model, images):
    env = {**os.environ, "PYTHONPATH": str(Path(csdn.__file__).parent.parent)}
    done = subprocess.run(
        [
            sys.executable,
            "-m",
            "csdn",
            "embed",
            "--model",
            str(saved_model),
            "--modality",
            "ir",
            str(images),
            "--output",
            str(tmp_path / "e.npy"),
            "--device",
            "cuda",
        ],
        env=env,
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert done.returncode == 2
    assert done.stderr.startswith("csdn: error: ") and "no CUDA" in done.stderr and "Traceback" not in done.stderr


# ---------------------------------------------------------------------------- an int .npy given to match
def test_an_integer_npy_given_to_match_names_file_and_dtype(capsys, tmp_path):
    np.save(tmp_path / "ids.npy", np.arange(8, dtype=np.int64).reshape(2, 4))
    np.save(tmp_path / "g.npy", np.ones((3, 4), dtype=np.float32))
    message = fails(
        capsys, ["match", tmp_path / "ids.npy", tmp_path / "g.npy", "--output", tmp_path / "r.csv"], EmbeddingsFileError
    )
    assert str(tmp_path / "ids.npy") in message and "int64" in message and "floating-point vectors [N, D]" in message
    assert not (tmp_path / "r.csv").exists()


# ---------------------------------------------------------------------------- a Hub transfer error
@pytest.fixture
def hub_model(fake_hub, tiny_model, tmp_path, monkeypatch):
    """``acme/csdn-tiny`` on the fake Hub; huggingface_hub's retry back-off does not wait."""
    folder = tiny_model.save_pretrained(tmp_path / "hub-model")
    fake_hub.commit(
        "acme/csdn-tiny",
        {name: (folder / name).read_bytes() for name in ("model.safetensors", "config.json", "README.md")},
    )
    monkeypatch.setattr(time, "sleep", lambda seconds: None)
    return fake_hub


@pytest.mark.parametrize(
    "prefix, how, problem",
    [
        ("/acme/csdn-tiny/resolve/", 503, "the Hub answered HTTP 503"),  # retried by huggingface_hub, then given up
        ("/acme/csdn-tiny/resolve/", "cut", "the connection failed (RemoteProtocolError"),
        ("/lfs/", 500, "the Hub answered HTTP 500"),  # the download itself, after a good HEAD
    ],
)
def test_a_hub_transfer_error_names_repo_and_file_and_the_way_out(
    capsys, tmp_path, hub_model, images, prefix, how, problem
):
    hub_model.fail(prefix, how)
    for argv in (
        ["info", "hf-hub:acme/csdn-tiny"],
        [
            "embed",
            "--model",
            "hf-hub:acme/csdn-tiny",
            "--modality",
            "ir",
            images,
            "--output",
            tmp_path / "e.npy",
            "--quiet",
        ],
    ):
        message = fails(capsys, argv, WeightsNotAvailableError)
        assert "model.safetensors of the Hub repository acme/csdn-tiny (revision main)" in message
        assert problem in message
        assert "check the connection, or set HF_HUB_OFFLINE=1 to use the cache" in message
    assert not (tmp_path / "e.npy").exists()


# ---------------------------------------------------------------------------- a full disk
def _disk_full(*args, **kwargs):
    raise OSError(errno.ENOSPC, "No space left on device")


def test_a_full_disk_names_the_output_and_says_free_space(capsys, tmp_path, saved_model, images, monkeypatch):
    monkeypatch.setattr(np, "save", _disk_full)
    message = fails(
        capsys,
        ["embed", "--model", saved_model, "--modality", "ir", images, "--output", tmp_path / "e.npy", "--quiet"],
        DiskFullError,
    )
    assert f"cannot write {tmp_path / 'e.npy'}: no space left on its disk" in message and "free space" in message
    monkeypatch.undo()

    rng = np.random.default_rng(0)
    np.save(tmp_path / "q.npy", rng.standard_normal((2, 4)).astype(np.float32))
    np.save(tmp_path / "g.npy", rng.standard_normal((3, 4)).astype(np.float32))
    monkeypatch.setattr(Path, "write_text", _disk_full)
    message = fails(
        capsys, ["match", tmp_path / "q.npy", tmp_path / "g.npy", "--output", tmp_path / "r.csv"], DiskFullError
    )
    assert f"cannot write {tmp_path / 'r.csv'}: no space left on its disk" in message
    assert sorted(p.name for p in tmp_path.iterdir() if p.name.startswith(".")) == []  # no temporaries left


def test_a_full_disk_outside_atomic_writes_still_says_free_space(capsys, tmp_path, monkeypatch):
    def full(self, fp, *args, **kwargs):
        raise OSError(errno.ENOSPC, "No space left on device", str(fp))

    monkeypatch.setattr(Image.Image, "save", full)
    message = fails(
        capsys,
        [
            "synth",
            "--layout",
            "regdb",
            "--root",
            tmp_path / "r",
            "--train-ids",
            "1",
            "--test-ids",
            "1",
            "--images",
            "1",
            "--trials",
            "1",
            "--quiet",
        ],
        OSError,
    )
    assert message.startswith("no space left on the disk writing ") and "free space" in message


# ---------------------------------------------------------------------------- eval and synth obey --debug
def test_eval_errors_obey_the_policy(capsys, tmp_path, saved_model):
    message = fails(
        capsys,
        ["eval", "--dataset", "llcm", "--root", tmp_path / "missing", "--model", saved_model, "--quiet"],
        DatasetLayoutError,
    )
    assert "root folder does not exist" in message
    assert "at least 1" in fails(
        capsys,
        ["eval", "--dataset", "sysu", "--root", tmp_path, "--model", saved_model, "--batch-size", "0"],
        ValueError,
    )


def test_synth_errors_obey_the_policy(capsys, tmp_path):
    message = fails(capsys, ["synth", "--layout", "sysu", "--root", tmp_path / "s", "--cameras", "4"], ValueError)
    assert "--cameras applies to --layout llcm only" in message
    (tmp_path / "full").mkdir()
    (tmp_path / "full" / "x").write_text("x")
    assert "not an empty folder" in fails(
        capsys, ["synth", "--layout", "sysu", "--root", tmp_path / "full"], (ValueError, OSError)
    )


# ---------------------------------------------------------------------------- anything else
def test_an_unexpected_error_points_to_debug(capsys, monkeypatch):
    import csdn.hub.registry

    def broken(*args, **kwargs):
        raise KeyError("entries")

    monkeypatch.setattr(csdn.hub.registry, "open_registry", broken)
    message = fails(capsys, ["models"], KeyError)
    assert message.strip() == "'entries' (KeyError; run with --debug for the traceback)"


def test_ctrl_c_exits_130(capsys, monkeypatch):
    import csdn.hub.registry

    def interrupted(*args, **kwargs):
        raise KeyboardInterrupt

    monkeypatch.setattr(csdn.hub.registry, "open_registry", interrupted)
    for argv in (["models"], ["--debug", "models"]):
        assert cli.main(argv) == 130
        assert capsys.readouterr().err == "csdn: interrupted\n"
