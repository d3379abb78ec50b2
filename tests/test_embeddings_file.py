"""``csdn.retrieval.save_embeddings`` / ``load_embeddings``: the embeddings file ``csdn embed`` writes
and ``csdn match`` reads, round trips in both formats, files of the earlier writer, and bad inputs."""

from __future__ import annotations

import errno
import json
from pathlib import Path

import numpy as np
import pytest
import torch
from safetensors.torch import load_file, save_file

from csdn.errors import CSDNError, DiskFullError, EmbeddingsFileError
from csdn.retrieval import Embeddings, load_embeddings, save_embeddings

MANIFEST_KEYS = {
    "format",
    "version",
    "model",
    "modality",
    "flip",
    "precision",
    "dtype",
    "count",
    "dim",
    "paths",
    "file",
    "sha256",
}


def unit_rows(count: int, dim: int, seed: int = 0) -> torch.Tensor:
    vectors = torch.randn(count, dim, generator=torch.Generator().manual_seed(seed))
    return vectors / vectors.norm(dim=1, keepdim=True)


@pytest.mark.parametrize("name", ["e.npy", "e.safetensors"])
def test_round_trip(tmp_path, name):
    vectors = unit_rows(5, 12)
    paths = [f"cam3/{i:04d}.jpg" for i in range(5)]
    written = save_embeddings(
        tmp_path / "out" / name, vectors, paths=paths, model="sysu", modality="ir", flip=True, precision="fp32"
    )
    assert written == tmp_path / "out" / name
    manifest = json.loads((tmp_path / "out" / f"{name}.json").read_text())  # named after the whole file name
    assert set(manifest) == MANIFEST_KEYS
    assert (manifest["format"], manifest["version"]) == ("csdn-embeddings", 1)
    assert (manifest["count"], manifest["dim"]) == (5, 12)
    assert manifest["modality"] == "infrared"  # aliases are stored by their canonical name

    loaded = load_embeddings(written)
    assert isinstance(loaded, Embeddings)
    assert loaded.vectors.dtype == torch.float32 and torch.equal(loaded.vectors, vectors)
    assert (loaded.paths, loaded.model, loaded.modality, loaded.flip, loaded.precision) == (
        paths,
        "sysu",
        "infrared",
        True,
        "fp32",
    )
    assert (loaded.count, loaded.dim, len(loaded)) == (5, 12, 5)

    copy = load_embeddings(save_embeddings(tmp_path / "copy" / name, loaded))  # an Embeddings keeps its fields
    assert torch.equal(copy.vectors, vectors)
    assert (copy.paths, copy.model, copy.modality, copy.flip, copy.precision) == (
        paths,
        "sysu",
        "infrared",
        True,
        "fp32",
    )


def test_numpy_input_and_default_labels(tmp_path):
    array = unit_rows(3, 4).numpy().astype(np.float64)
    save_embeddings(tmp_path / "e.npy", array)
    stored = np.load(tmp_path / "e.npy")
    assert stored.dtype == np.float32 and stored.shape == (3, 4)
    loaded = load_embeddings(tmp_path / "e.npy")
    assert loaded.paths == ["0", "1", "2"] and loaded.model is None and loaded.modality is None


def test_files_of_the_earlier_writer_and_bare_arrays_are_read(tmp_path):
    """What `csdn embed` wrote before this module existed: np.save / a one-tensor safetensors file and a manifest."""
    vectors = unit_rows(2, 6)
    manifest = {
        "format": "csdn-embeddings",
        "version": 1,
        "model": "m",
        "modality": "visible",
        "flip": False,
        "precision": "bf16",
        "count": 2,
        "dim": 6,
        "paths": ["a.png", "b.png"],
    }
    np.save(tmp_path / "old.npy", vectors.numpy())
    save_file({"embeddings": vectors}, str(tmp_path / "old.safetensors"), metadata={"format": "pt"})
    for name in ("old.npy", "old.safetensors"):
        (tmp_path / name).with_suffix(".json").write_text(json.dumps(manifest, indent=1))
        loaded = load_embeddings(tmp_path / name)
        assert torch.equal(loaded.vectors, vectors)
        assert (loaded.paths, loaded.flip, loaded.precision) == (["a.png", "b.png"], False, "bf16")
    np.save(tmp_path / "bare.npy", np.ones((3, 2), dtype=np.float16))
    bare = load_embeddings(tmp_path / "bare.npy")
    assert (
        bare.paths == ["0", "1", "2"] and bare.vectors.dtype == torch.float16
    )  # kept as stored: match reads half precision


def test_written_safetensors_holds_one_embeddings_tensor(tmp_path):
    save_embeddings(tmp_path / "e.safetensors", unit_rows(2, 3))
    assert list(load_file(str(tmp_path / "e.safetensors"))) == ["embeddings"]


# ---------------------------------------------------------------------------- bad files
def _write(tmp_path: Path, name: str, array: np.ndarray, manifest: dict | None = None) -> Path:
    path = tmp_path / name
    if name.endswith(".npy"):
        np.save(path, array)
    else:
        save_file({"embeddings": torch.from_numpy(array)}, str(path))
    if manifest is not None:
        path.with_name(path.name + ".json").write_text(json.dumps(manifest))
    return path


@pytest.mark.parametrize("name", ["ids.npy", "ids.safetensors"])
def test_integer_arrays_are_refused_by_name_and_dtype(tmp_path, name):
    path = _write(tmp_path, name, np.arange(6, dtype=np.int64).reshape(2, 3))
    with pytest.raises(EmbeddingsFileError, match="floating-point") as caught:
        load_embeddings(path)
    message = str(caught.value)
    assert str(path) in message and ("int64" in message or "I64" in message)
    assert isinstance(caught.value, CSDNError) and isinstance(caught.value, ValueError)


def _manifest(count: int, dim: int, **changes) -> dict:
    return {
        "format": "csdn-embeddings",
        "version": 1,
        "count": count,
        "dim": dim,
        "paths": [f"{i}.jpg" for i in range(count)],
        **changes,
    }


@pytest.mark.parametrize(
    "array, manifest, message",
    [
        (np.ones((2, 3, 4), np.float32), None, r"shape \[2, 3, 4\]; embeddings are \[N, D\]"),
        (np.ones((0, 4), np.float32), None, "holds no embeddings"),
        (np.ones((3, 4), np.float32), _manifest(2, 4), r"does not describe .* \(3 rows of 4\): it lists 2 paths"),
        (np.ones((3, 4), np.float32), {**_manifest(3, 4), "count": 5}, "does not describe .* count 5"),
        (np.ones((3, 4), np.float32), _manifest(3, 4, version=2), "format version 2.*upgrade csdn-reid"),
        (np.ones((3, 4), np.float32), _manifest(3, 4, format="other"), "not a csdn-embeddings manifest"),
    ],
)
def test_inconsistent_files_are_refused(tmp_path, array, manifest, message):
    with pytest.raises(EmbeddingsFileError, match=message):
        load_embeddings(_write(tmp_path, "e.npy", array, manifest))


@pytest.mark.parametrize("name", ["e.npy", "e.safetensors"])
@pytest.mark.parametrize("bad", [np.nan, np.inf])
def test_rows_with_nan_or_inf_are_refused_with_their_index(tmp_path, name, bad):
    array = np.ones((4, 3), np.float32)
    array[2, 1] = bad
    path = _write(tmp_path, name, array, _manifest(4, 3))
    with pytest.raises(EmbeddingsFileError, match=r"row 2 \(2.jpg\) holds NaN or infinite values"):
        load_embeddings(path)


def test_unreadable_files(tmp_path):
    (tmp_path / "junk.npy").write_bytes(b"not an array")
    with pytest.raises(EmbeddingsFileError, match="junk.npy is not a readable .npy array"):
        load_embeddings(tmp_path / "junk.npy")
    (tmp_path / "junk.safetensors").write_bytes(b"\x01")
    with pytest.raises(EmbeddingsFileError, match="junk.safetensors is not a readable safetensors file"):
        load_embeddings(tmp_path / "junk.safetensors")
    save_file({"a": torch.ones(2, 2), "b": torch.ones(2, 2)}, str(tmp_path / "two.safetensors"))
    with pytest.raises(EmbeddingsFileError, match=r"holds \['a', 'b'\], not the one 'embeddings' tensor"):
        load_embeddings(tmp_path / "two.safetensors")
    _write(tmp_path, "m.npy", np.ones((1, 2), np.float32))
    (tmp_path / "m.json").write_text("{")
    with pytest.raises(EmbeddingsFileError, match="m.json is not JSON"):
        load_embeddings(tmp_path / "m.npy")
    with pytest.raises(FileNotFoundError, match="embeddings file not found"):
        load_embeddings(tmp_path / "missing.npy")
    with pytest.raises(ValueError, match="must end in .safetensors or .npy"):
        load_embeddings(tmp_path / "e.csv")


# ---------------------------------------------------------------------------- bad input to save
@pytest.mark.parametrize(
    "embeddings, options, message",
    [
        (torch.ones(2, 3, dtype=torch.int64), {}, "floating-point vectors, got dtype torch.int64"),
        (torch.ones(3), {}, r"must be \[N, D\], got shape \[3\]"),
        (torch.ones(2, 3), {"paths": ["a"]}, "1 paths for 2 embeddings"),
        (torch.tensor([[1.0, 0.0], [float("nan"), 1.0]]), {"paths": ["a", "b"]}, r"row 1 \(b\) holds NaN"),
        (torch.ones(2, 3), {"modality": "ultraviolet"}, "unknown modality"),
    ],
)
def test_save_refuses_bad_input_and_writes_nothing(tmp_path, embeddings, options, message):
    with pytest.raises(ValueError, match=message):
        save_embeddings(tmp_path / "e.npy", embeddings, **options)
    assert list(tmp_path.iterdir()) == []
    with pytest.raises(ValueError, match="must end in .safetensors or .npy"):
        save_embeddings(tmp_path / "e.pt", torch.ones(2, 3))
    assert list(tmp_path.iterdir()) == []


def test_a_full_disk_keeps_the_previous_file_and_names_it(tmp_path, monkeypatch):
    save_embeddings(tmp_path / "e.npy", unit_rows(2, 3), paths=["a", "b"])
    before = (tmp_path / "e.npy").read_bytes(), (tmp_path / "e.npy.json").read_text()

    def full(*args, **kwargs):
        raise OSError(errno.ENOSPC, "No space left on device")

    monkeypatch.setattr(np, "save", full)
    with pytest.raises(DiskFullError, match=r"cannot write .*e.npy: no space left on its disk.*free space"):
        save_embeddings(tmp_path / "e.npy", unit_rows(3, 3), paths=["x", "y", "z"])
    assert ((tmp_path / "e.npy").read_bytes(), (tmp_path / "e.npy.json").read_text()) == before
    assert sorted(p.name for p in tmp_path.iterdir()) == ["e.npy", "e.npy.json"]  # no temporary left behind
