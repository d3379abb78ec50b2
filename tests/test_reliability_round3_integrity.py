"""Issue 22, classes 3, 6, 7 and two class-10 messages: what describes data is bound to the data it describes.

* class 3: an embeddings manifest records its array's file name and SHA-256; a stale or copied manifest
  (same N and D) is refused on load, naming both files; an older manifest is read with a warning;
  matching files whose manifests name different models warns.
* class 6: sharded ``match`` ranks refuse galleries that differ anywhere (not only in their first and last
  rows), naming the ranks, the rows and the input.
* class 7: an export's metadata fields (modality, preprocessing, ...) are hashed into the graph itself;
  an edited field is refused on load, whether the graph is loaded alone or in its folder.
* class 10: ``format_version: "1"`` is called a string; a bfloat16 ``.npy`` without its manifest says so.
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
import warnings
from pathlib import Path

import numpy as np
import pytest
import torch
from test_cli import write_images

from csdn import cli
from csdn.errors import EmbeddingsFileError
from csdn.retrieval import match
from csdn.retrieval.embeddings import (
    MixedModelsWarning,
    UncheckedManifestWarning,
    load_embeddings,
    manifest_path,
    save_embeddings,
)


def _rows(count: int, dim: int, seed: int) -> torch.Tensor:
    rows = torch.randn(count, dim, generator=torch.Generator().manual_seed(seed))
    return rows / rows.norm(dim=1, keepdim=True)


def _one_error_line(capsys) -> str:
    err = capsys.readouterr().err
    assert err.startswith("csdn: error: ") and err.count("\n") == 1, err
    return err


# ---------------------------------------------------------------------------- class 3: manifests bound to arrays
@pytest.mark.parametrize("suffix", [".npy", ".safetensors"])
def test_a_manifest_copied_from_another_run_is_refused_naming_both_files(tmp_path, suffix):
    mine = save_embeddings(tmp_path / f"a{suffix}", _rows(4, 8, 0), paths=list("abcd"), model="m1", modality="ir")
    other = save_embeddings(tmp_path / f"b{suffix}", _rows(4, 8, 1), paths=list("wxyz"), model="m2", modality="vis")
    manifest = json.loads(manifest_path(mine).read_text())
    assert manifest["file"] == mine.name and len(manifest["sha256"]) == 64
    shutil.copy(manifest_path(other), manifest_path(mine))  # same N and D: only the hash tells them apart
    with pytest.raises(EmbeddingsFileError) as caught:
        load_embeddings(mine)
    message = str(caught.value)
    assert f"{manifest_path(mine)} does not belong to {mine}" in message
    assert f"written for {other.name}" in message and "csdn embed" in message


def test_a_manifest_left_over_from_an_array_rewritten_in_place_is_refused(tmp_path):
    path = save_embeddings(tmp_path / "e.npy", _rows(3, 5, 0), paths=["p", "q", "r"])
    np.save(path, _rows(3, 5, 7).numpy())  # same shape, other rows, manifest untouched
    with pytest.raises(EmbeddingsFileError, match="e.npy.json does not belong to .*e.npy: it was written for e.npy"):
        load_embeddings(path)


def test_renaming_an_array_with_its_manifest_keeps_it_readable(tmp_path):
    path = save_embeddings(tmp_path / "e.safetensors", _rows(3, 5, 0), paths=["p", "q", "r"])
    moved = tmp_path / "renamed.safetensors"
    path.rename(moved)
    manifest_path(path).rename(manifest_path(moved))
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        assert load_embeddings(moved).paths == ["p", "q", "r"]


def test_a_manifest_from_before_the_hash_is_read_with_a_warning(tmp_path):
    path = save_embeddings(tmp_path / "e.npy", _rows(2, 3, 0), paths=["p", "q"])
    manifest = json.loads(manifest_path(path).read_text())
    del manifest["file"], manifest["sha256"]
    manifest_path(path).write_text(json.dumps(manifest))
    with pytest.warns(UncheckedManifestWarning, match="e.npy.json records no SHA-256 of its array"):
        assert load_embeddings(path).paths == ["p", "q"]


def test_matching_files_of_different_models_warns_in_python(tmp_path):
    query = save_embeddings(tmp_path / "q.npy", _rows(2, 6, 0), model="sysu")
    gallery = save_embeddings(tmp_path / "g.npy", _rows(5, 6, 1), model="llcm")
    same = save_embeddings(tmp_path / "s.npy", _rows(5, 6, 1), model="sysu")
    with pytest.warns(MixedModelsWarning, match=r"different models \(sysu and llcm\)"):
        match(query, gallery, topk=2)
    with pytest.warns(MixedModelsWarning):
        match(load_embeddings(query), load_embeddings(gallery), topk=2)
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        match(query, same, topk=2)


def test_cli_embed_then_match_refuses_a_copied_manifest_and_warns_for_mixed_models(tmp_path, capsys):
    write_images(tmp_path / "query", 3, seed=1)
    write_images(tmp_path / "gallery", 3, seed=2)
    for side, modality in (("query", "ir"), ("gallery", "visible")):
        argv = ["embed", str(tmp_path / side), "--model", "synthetic-tiny", "--modality", modality, "--quiet"]
        assert cli.main([*argv, "--output", str(tmp_path / f"{side}.npy")]) == 0
    capsys.readouterr()  # what embed printed
    out = str(tmp_path / "r.csv")
    query, gallery = tmp_path / "query.npy", tmp_path / "gallery.npy"
    good = manifest_path(gallery).read_text()
    shutil.copy(manifest_path(query), manifest_path(gallery))  # 3 rows each: the labels would be the queries'
    assert cli.main(["match", str(query), str(gallery), "--output", out, "--quiet"]) == 2
    err = _one_error_line(capsys)
    assert "gallery.npy.json does not belong to" in err and "written for query.npy" in err
    assert not Path(out).exists()
    manifest_path(gallery).write_text(good.replace('"synthetic-tiny"', '"another-model"'))
    assert cli.main(["match", str(query), str(gallery), "--output", out, "--quiet"]) == 0
    err = capsys.readouterr().err
    assert (
        "csdn: warning: query and gallery were embedded with different models (synthetic-tiny and another-model)" in err
    )


# ---------------------------------------------------------------------------- class 10: embeddings message
def test_a_bfloat16_npy_without_its_manifest_says_the_manifest_is_missing(tmp_path):
    path = save_embeddings(tmp_path / "b.npy", _rows(3, 4, 0), dtype="bfloat16")
    manifest_path(path).unlink()
    with pytest.raises(EmbeddingsFileError, match=r"holds uint16 values and has no manifest \(b.npy.json\) beside it"):
        load_embeddings(path)


# ---------------------------------------------------------------------------- class 6: sharded galleries
TORCHRUN = [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node=2", "--no-python"]


def _torchrun_per_rank_folder(root: Path, *argv: str) -> subprocess.CompletedProcess:
    """``csdn ARGV`` on two ranks, rank r started in ``root/rankR``: two machines, each with its own copy."""
    command = f"cd rank$RANK && exec {sys.executable} -m csdn " + " ".join(argv)
    env = {**os.environ, "OMP_NUM_THREADS": "1", "PYTHONPATH": str(Path(__file__).parents[1])}
    return subprocess.run(
        [*TORCHRUN, "sh", "-c", command], cwd=root, env=env, capture_output=True, text=True, timeout=300
    )


@pytest.mark.parametrize("row", [10, 30])  # inside rank 0's rows 0-19, inside rank 1's rows 20-39
def test_torchrun_match_refuses_a_gallery_that_differs_inside_a_slice(tmp_path, row):
    query, gallery = _rows(3, 16, 0), _rows(40, 16, 1)
    for rank in (0, 1):
        folder = tmp_path / f"rank{rank}"
        rows = gallery.clone()
        if rank == 1:
            rows[row] = query[0]  # this rank's copy would hand query 0 a perfect top-1 the other copy lacks
        save_embeddings(folder / "q.npy", query, model="m")
        save_embeddings(folder / "g.npy", rows, model="m")
    done = _torchrun_per_rank_folder(tmp_path, "match", "q.npy", "g.npy", "--topk", "3", "--quiet", "--output", "r.csv")
    assert done.returncode != 0
    slice_rows = "0-19" if row < 20 else "20-39"
    expected = f"read different gallery embeddings (g.npy): rank {0 if row < 20 else 1} and rank"
    assert done.stderr.count(expected) == 2, done.stderr[-3000:]  # the same message on both ranks
    assert f"see different rows in {slice_rows}" in done.stderr
    assert not (tmp_path / "rank0" / "r.csv").exists()


def test_torchrun_match_of_identical_copies_still_runs(tmp_path):
    query, gallery = _rows(3, 16, 0), _rows(40, 16, 1)
    for rank in (0, 1):
        save_embeddings(tmp_path / f"rank{rank}" / "q.npy", query, model="m")
        save_embeddings(tmp_path / f"rank{rank}" / "g.npy", gallery, model="m")
    done = _torchrun_per_rank_folder(tmp_path, "match", "q.npy", "g.npy", "--topk", "3", "--quiet", "--output", "r.csv")
    assert done.returncode == 0, done.stderr[-3000:]
    single = match(query, gallery, topk=3)
    lines = (tmp_path / "rank0" / "r.csv").read_text().splitlines()[1:]
    assert [int(line.split(",")[2]) for line in lines] == single.indices.reshape(-1).tolist()


# ---------------------------------------------------------------------------- class 7: export metadata bound to its graph
@pytest.fixture(scope="module")
def export(tmp_path_factory) -> Path:
    pytest.importorskip("onnxruntime", reason="needs the csdn-reid[onnx] extra (CI installs it)")
    out = tmp_path_factory.mktemp("export") / "onnx"
    assert cli.main(["export", "synthetic-tiny", str(out), "--quiet"]) == 0
    return out


def _edit(path: Path, **changes) -> None:
    path.write_text(json.dumps({**json.loads(path.read_text()), **changes}))


def test_swapped_modality_labels_are_refused_by_the_runtime_and_export_info(export, tmp_path, capsys):
    from csdn.errors import ArtifactError
    from csdn.runtime import ExportedEmbedder

    copy = Path(shutil.copytree(export, tmp_path / "copy"))
    _edit(copy / "visible.onnx.json", modality="infrared")
    _edit(copy / "infrared.onnx.json", modality="visible")
    with pytest.raises(ArtifactError, match="does not hold the metadata .*onnx was exported with: one of its fields"):
        ExportedEmbedder(copy)
    for path in (copy, copy / "visible.onnx"):
        assert cli.main(["export-info", str(path)]) == 2
        assert "was changed after export" in _one_error_line(capsys)


@pytest.mark.parametrize(
    "change",
    [{"mean": [0.5, 0.5, 0.5]}, {"std": [0.2, 0.2, 0.2]}, {"interpolation": "nearest"}, {"image_size": [128, 64]}],
)
def test_edited_preprocessing_is_refused_when_a_graph_is_loaded_on_its_own(export, tmp_path, change):
    from csdn.errors import ArtifactError
    from csdn.runtime import ExportedEmbedder, read_metadata

    copy = Path(shutil.copytree(export, tmp_path / "copy"))
    for name in ("visible", "infrared"):  # both files alike: the folder's consistency check cannot see it
        _edit(copy / f"{name}.onnx.json", **change)
    for target in (copy / "visible.onnx", copy):
        with pytest.raises(ArtifactError, match="was changed after export, so the graph would run with preprocessing"):
            ExportedEmbedder(target)
    with pytest.raises(ArtifactError, match="infrared.onnx.json does not hold the metadata infrared.onnx was"):
        read_metadata(copy / "infrared.onnx")


def _restamp(artifact: Path, stamp: str | None, version: int) -> None:
    """The graph rewritten with ``stamp`` (None: none) and its metadata made consistent with it otherwise."""
    import onnx

    from csdn.runtime.metadata import GRAPH_KEY
    from csdn.system.fileio import sha256_file

    proto = onnx.load(str(artifact))
    kept = [(p.key, p.value) for p in proto.metadata_props if p.key != GRAPH_KEY]
    del proto.metadata_props[:]
    for key, value in kept + ([(GRAPH_KEY, stamp)] if stamp else []):
        entry = proto.metadata_props.add()
        entry.key, entry.value = key, value
    onnx.save(proto, str(artifact))
    meta = artifact.with_name(artifact.name + ".json")
    _edit(meta, format_version=version, files={artifact.name: sha256_file(artifact)})


def test_an_export_from_before_the_binding_loads_with_a_warning_and_a_stripped_one_is_refused(export, tmp_path):
    from csdn.errors import ArtifactError
    from csdn.runtime import ExportedEmbedder
    from csdn.runtime.metadata import UnboundMetadataWarning, graph_stamp

    copy = Path(shutil.copytree(export, tmp_path / "copy"))
    assert graph_stamp(export / "visible.onnx", "onnx") is not None
    for name in ("visible", "infrared"):  # what csdn-reid wrote before: format_version 1, nothing in the graph
        _restamp(copy / f"{name}.onnx", None, 1)
    with pytest.warns(UnboundMetadataWarning, match="format_version 1, whose graph does not record its metadata"):
        embedder = ExportedEmbedder(copy)
    rgb = np.random.default_rng(0).integers(0, 256, size=(2, 64, 32, 3), dtype=np.uint8)
    np.testing.assert_allclose(embedder.embed_image(rgb, "visible"), ExportedEmbedder(export).embed_image(rgb, "vis"))
    _edit(copy / "visible.onnx.json", format_version=2)  # a current export whose graph lost its record
    with pytest.raises(ArtifactError, match="visible.onnx was exported with: the graph records none"):
        ExportedEmbedder(copy / "visible.onnx")
    _restamp(copy / "infrared.onnx", "0" * 64, 1)  # a graph that records a hash is checked whatever the version
    with pytest.raises(ArtifactError, match="one of its fields .* was changed after export"):
        ExportedEmbedder(copy / "infrared.onnx")


def test_openvino_graphs_carry_their_metadata_hash_too(tmp_path):
    pytest.importorskip("openvino", reason="needs the csdn-reid[openvino] extra (CI installs it)")
    import csdn
    from csdn.errors import ArtifactError
    from csdn.export import export_model
    from csdn.runtime import ExportedEmbedder
    from csdn.runtime.metadata import fields_sha256, graph_stamp, read_metadata

    out = tmp_path / "ov"
    (artifact,) = export_model(csdn.load("synthetic-tiny", progress=False), out, format="openvino", modality="ir")
    assert graph_stamp(artifact, "openvino") == fields_sha256(read_metadata(artifact))
    _edit(out / "infrared.xml.json", modality="visible")
    with pytest.raises(ArtifactError, match="infrared.xml.json does not hold the metadata infrared.xml was exported"):
        ExportedEmbedder(artifact)


# ---------------------------------------------------------------------------- class 10: metadata format_version
def test_a_string_format_version_is_called_a_string_not_newer(export, tmp_path):
    from csdn.errors import ArtifactError
    from csdn.runtime import read_metadata

    copy = Path(shutil.copytree(export, tmp_path / "copy"))
    for bad, shown in (("1", "'1' (str)"), (1.0, "1.0 (float)"), (True, "True (bool)"), (0, "0 (int)")):
        _edit(copy / "visible.onnx.json", format_version=bad)
        with pytest.raises(
            ArtifactError, match=r"format_version must be a whole number \(1, 2, \.\.\.\), got "
        ) as caught:
            read_metadata(copy / "visible.onnx")
        assert shown in str(caught.value) and "newer" not in str(caught.value)


def test_a_share_digest_is_of_the_stored_bytes_whatever_the_block_size(monkeypatch):
    import csdn.retrieval.sharded as sharded

    gallery = _rows(50, 8, 3)
    whole = sharded.share_digest(gallery, 0, 50)
    assert sharded.share_digest(gallery.numpy(), 0, 50) == whole  # a tensor or an array (a memory map) alike
    monkeypatch.setattr(sharded, "_HASH_BYTES", 64)  # two rows a block
    assert sharded.share_digest(gallery, 0, 50) == whole
    changed = gallery.bfloat16().clone()
    changed[25, 3] += 1
    assert sharded.share_digest(changed, 20, 30) != sharded.share_digest(gallery.bfloat16(), 20, 30)
    assert sharded.share_digest(changed, 0, 20) == sharded.share_digest(gallery.bfloat16(), 0, 20)
