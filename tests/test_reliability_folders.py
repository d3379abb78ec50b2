"""A user's own folders of images work in Python as on the command line: folders as inputs everywhere,
unreadable images skipped with a report (or all listed), hidden files ignored, ``csdn eval --dataset
folder``, ``evaluate`` taking a model name, two-direction results that refuse to pick one, and command-line
messages that name the flags the user typed."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
import torch
from _train_synthetic import write_identities
from PIL import Image

import csdn
from csdn import cli
from csdn.errors import AmbiguousResultError, ImageDecodeError, SkippedImagesWarning
from csdn.images.files import expand_folders, images_in

TOLERANCE = 1e-5  # embeddings of the same images computed in differently composed batches


def run(capsys, *argv) -> tuple[int, str, str]:
    code = cli.main([str(a) for a in argv])
    captured = capsys.readouterr()
    return code, captured.out, captured.err


def _save_image(path: Path, seed: int) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    Image.fromarray(np.random.default_rng(seed).integers(0, 256, (48, 24, 3), dtype=np.uint8)).save(path)
    return path


@pytest.fixture
def camera_folder(tmp_path) -> Path:
    """day_cams/ with nested images, hidden files and folders, and a text file."""
    root = tmp_path / "day_cams"
    for seed, name in enumerate(["cam2/b.png", "cam1/a.jpg", "cam1/sub/c.png", "d.bmp"]):
        _save_image(root / name, seed)
    _save_image(root / ".hidden.png", 10)
    _save_image(root / "cam1" / "._a.jpg", 11)  # a macOS resource fork copied with the folder
    _save_image(root / ".thumbnails" / "x.png", 12)
    (root / "notes.txt").write_text("not an image")
    return root


EXPECTED = ["cam1/a.jpg", "cam1/sub/c.png", "cam2/b.png", "d.bmp"]


# ---------------------------------------------------------------------------- folders as inputs
def test_one_scanner_lists_images_sorted_recursively_without_hidden_files(camera_folder):
    assert [p.relative_to(camera_folder).as_posix() for p in images_in(camera_folder)] == EXPECTED
    assert [p.name for p in images_in(camera_folder / "cam1", recursive=False)] == ["a.jpg"]
    empty = camera_folder.parent / "empty"
    (empty / ".cache").mkdir(parents=True)
    _save_image(empty / ".cache" / "x.png", 0)
    with pytest.raises(FileNotFoundError, match="no images in folder .*empty"):
        expand_folders([empty])
    with pytest.raises(FileNotFoundError, match="no such image file or folder: .*missing"):
        expand_folders([camera_folder / "missing"])


def test_embed_image_takes_a_folder_as_its_sorted_images(camera_folder, tiny_model):
    from_folder = tiny_model.embed_image(str(camera_folder) + "/", "visible")
    listed = tiny_model.embed_image([str(camera_folder / name) for name in EXPECTED], "visible", batch_size=3)
    assert from_folder.shape == listed.shape == (4, tiny_model.config.test_feature_dim * 2)
    assert torch.allclose(from_folder, listed, atol=TOLERANCE)
    mixed = tiny_model.embed_image([camera_folder / "cam2", str(camera_folder / "d.bmp")], "visible")
    assert torch.allclose(mixed, listed[2:], atol=TOLERANCE)


def test_one_unreadable_image_stops_the_call_by_default_and_is_skipped_with_a_report_on_request(
    camera_folder, tiny_model
):
    (camera_folder / "cam1" / "broken.png").write_bytes(b"\x89PNG not really")
    (camera_folder / "cam2" / "empty.jpg").write_bytes(b"")
    with pytest.raises(ImageDecodeError, match="broken.png"):
        tiny_model.embed_image(camera_folder, "visible")
    with pytest.warns(SkippedImagesWarning) as caught:
        kept = tiny_model.embed_image(camera_folder, "visible", on_error="skip")
    skipped = caught[0].message.skipped
    assert sorted(Path(s.source).name for s in skipped) == ["broken.png", "empty.jpg"]
    assert all("cannot read image" in s.reason for s in skipped)
    assert "broken.png" in str(caught[0].message) and "empty.jpg" in str(caught[0].message)
    good = tiny_model.embed_image([str(camera_folder / name) for name in EXPECTED], "visible")
    assert torch.allclose(kept, good, atol=TOLERANCE)


def test_the_report_says_which_input_each_row_is(camera_folder, tiny_model):
    from csdn.inference.embed import embed_with_report

    (camera_folder / "cam1" / "bad.jpg").write_bytes(b"junk")
    report = embed_with_report(tiny_model, [camera_folder], "infrared", on_error="skip")
    names = [Path(report.sources[i]).relative_to(camera_folder).as_posix() for i in report.kept]
    assert names == EXPECTED and report.embeddings.shape[0] == 4
    assert [report.sources[s.index] for s in report.skipped] == [str(camera_folder / "cam1" / "bad.jpg")]


def test_nothing_readable_is_an_error_even_when_skipping(tmp_path, tiny_model):
    (tmp_path / "a.png").write_bytes(b"junk")
    (tmp_path / "b.png").write_bytes(b"junk")
    with pytest.raises(ImageDecodeError, match=r"none of the 2 images could be read:\n.*a\.png.*\n.*b\.png"):
        tiny_model.embed_image(tmp_path, "visible", on_error="skip")
    with pytest.raises(ValueError, match="on_error must be 'raise' or 'skip'"):
        tiny_model.embed_image(tmp_path, "visible", on_error="ignore")


def test_nan_tensors_in_a_list_are_named_by_position(tiny_model):
    good = torch.zeros(3, 64, 32)
    bad = good.clone()
    bad[0, 1, 1] = float("nan")
    with pytest.raises(Exception, match=r"image 1, 3 of this call"):
        tiny_model.embed_image([good, bad, good, bad], "visible")


def test_match_takes_folders_and_embeddings_files_and_names_the_rows(camera_folder, tiny_model, tmp_path):
    gallery = tmp_path / "gallery"
    for seed, name in enumerate(["p1/x.png", "p2/y.png", "p3/z.png"]):
        _save_image(gallery / name, 20 + seed)
    result = csdn.match(camera_folder, gallery, topk=2, model=tiny_model)
    assert isinstance(result, csdn.retrieval.NamedMatches)
    assert [Path(n).relative_to(camera_folder).as_posix() for n in result.query_names] == EXPECTED
    assert [Path(n).name for n in result.gallery_names] == ["x.png", "y.png", "z.png"]
    query = tiny_model.embed_image(camera_folder, "infrared")
    plain = csdn.match(query, tiny_model.embed_image(gallery, "visible"), topk=2)
    assert torch.equal(result.indices, plain.indices)
    assert result.named()[0][0][0] == result.gallery_names[int(plain.indices[0, 0])]

    saved = tmp_path / "q.npy"
    csdn.retrieval.save_embeddings(saved, query, paths=[str(p) for p in images_in(camera_folder)])
    from_file = csdn.match(saved, gallery, topk=2, model=tiny_model)
    assert from_file.query_names == result.query_names and torch.equal(from_file.indices, result.indices)
    with pytest.raises(ValueError, match="pass model="):
        csdn.match(camera_folder, gallery)


# ---------------------------------------------------------------------------- command line
def test_cli_embed_skip_bad_images_lists_each_and_labels_only_the_embedded(capsys, camera_folder, tiny_model, tmp_path):
    model = tiny_model.save_pretrained(tmp_path / "model")
    (camera_folder / "cam1" / "broken.png").write_bytes(b"junk")
    out = tmp_path / "e.npy"
    base = ("embed", camera_folder, "--model", model, "--modality", "visible", "--output", out, "--quiet")
    code, _, err = run(capsys, *base)
    assert code == 2 and "broken.png" in err and not out.exists()
    code, _, err = run(capsys, *base, "--skip-bad-images")
    assert code == 0 and "skipped 1 of 5 visible images" in err and "broken.png" in err
    manifest = json.loads((tmp_path / "e.npy.json").read_text())
    assert [Path(p).relative_to(camera_folder).as_posix() for p in manifest["paths"]] == EXPECTED
    assert np.load(out).shape[0] == 4


@pytest.fixture
def id_folders(tmp_path) -> Path:
    root = write_identities(tmp_path / "ids", [3, 7, 12], per_modality=3)
    _save_image(root / "visible" / "0003" / ".hidden.png", 1)
    return root


def test_eval_on_a_folder_reports_each_direction_by_name(capsys, id_folders, tiny_model, tmp_path):
    model = tiny_model.save_pretrained(tmp_path / "model")
    out = tmp_path / "result.json"
    code, stdout, _ = run(
        capsys, "eval", "--dataset", "folder", "--root", id_folders, "--model", model, "--json", out, "--quiet"
    )
    assert code == 0
    assert "infrared->visible  (9 queries, 9 gallery images)" in stdout
    assert "visible->infrared  (9 queries, 9 gallery images)" in stdout  # the hidden file is not an image
    saved = json.loads(out.read_text())
    assert [s["direction"] for s in saved["searches"]] == ["infrared->visible", "visible->infrared"]


def test_evaluate_takes_a_model_name_and_a_two_direction_result_refuses_to_pick_one(id_folders, tiny_model, tmp_path):
    path = tiny_model.save_pretrained(tmp_path / "model")
    by_name = csdn.evaluate(str(path), "folder", id_folders, progress=False)
    by_object = csdn.evaluate(tiny_model, "folder", id_folders, progress=False)
    assert by_name.to_dict() == by_object.to_dict()
    with pytest.raises(
        AmbiguousResultError,
        match=r"2 search directions \(infrared->visible, visible->infrared\)"
        r".*result\['infrared->visible'\] or result\['visible->infrared'\]",
    ):
        _ = by_name.rank1
    with pytest.raises(AmbiguousResultError):
        _ = by_name.mean
    assert 0 <= by_name["v2i"].rank1 <= 1 and by_name["t2v"].mAP == by_name.searches[0].mAP
    one = csdn.evaluate(tiny_model, "folder", id_folders, direction="v2i", progress=False)
    assert one.rank1 == pytest.approx(by_name["v2i"].rank1)
    with pytest.raises(TypeError, match="has no embed_image"):
        csdn.evaluate(42, "folder", id_folders)


def test_training_lists_every_unreadable_image_before_it_starts(capsys, id_folders, tmp_path):
    (id_folders / "visible" / "0003" / "9.png").write_bytes(b"junk")
    (id_folders / "infrared" / "0007" / "9.png").write_bytes(b"")
    out = tmp_path / "run"
    code, _, err = run(
        capsys,
        "train",
        "--dataset",
        "folder",
        "--root",
        id_folders,
        "--output",
        out,
        "--init",
        "tiny",
        "--no-progress",
        "--ids-per-batch",
        "2",
    )
    assert code == 2 and "2 of the 20 training images cannot be read" in err
    assert "0003/9.png" in err and "0007/9.png" in err and "--skip-bad-images" in err
    assert not out.exists()


def test_skipping_unreadable_training_images_keeps_the_rest(id_folders):
    from csdn.train.data import read_image_folder
    from csdn.train.imagecheck import check_training_images

    data = read_image_folder(id_folders)
    assert check_training_images(data) is data
    (id_folders / "visible" / "0003" / "0.png").write_bytes(b"junk")
    with pytest.warns(SkippedImagesWarning, match="0003/0.png"):
        kept = check_training_images(read_image_folder(id_folders), "skip")
    assert len(kept.visible_images) == 8 and len(kept.infrared_images) == 9
    assert str(id_folders / "visible" / "0003" / "0.png") not in kept.visible_images
    assert list(kept.visible_labels) == [0, 0, 1, 1, 1, 2, 2, 2] and kept.pids == [3, 7, 12]
    for name in ("1.png", "2.png"):
        (id_folders / "visible" / "0003" / name).write_bytes(b"junk")
    with pytest.raises(ImageDecodeError, match=r"would leave 1 identities \(e.g. \[3\]\) without images"):
        check_training_images(read_image_folder(id_folders), "skip")


def test_cli_messages_name_the_flags_the_user_typed(capsys, id_folders, tmp_path, fake_hub):
    code, _, err = run(
        capsys,
        "train",
        "--dataset",
        "folder",
        "--root",
        id_folders,
        "--output",
        tmp_path / "a",
        "--init",
        "tiny",
        "--no-progress",
        "--ids-per-batch",
        "5",
    )
    assert code == 2 and "--ids-per-batch 5; lower --ids-per-batch to at most 3" in err and "ids_per_batch" not in err
    code, _, err = run(
        capsys,
        "train",
        "--dataset",
        "folder",
        "--root",
        id_folders,
        "--output",
        tmp_path / "b",
        "--init",
        "tiny",
        "--no-progress",
        "--images-per-id",
        "1",
    )
    assert code == 2 and "--images-per-id must be at least 2" in err

    # the RN50 weights come from the Hub: an empty local fake Hub has no such repository
    code, _, err = run(
        capsys,
        "train",
        "--dataset",
        "folder",
        "--root",
        id_folders,
        "--output",
        tmp_path / "c",
        "--no-progress",
        "--ids-per-batch",
        "2",
    )
    assert code == 2 and "cannot get the CLIP RN50 weights" in err
    assert "pass the path of a local CLIP file to --init" in err and "source='openai'" not in err


def test_python_messages_keep_python_names(id_folders):
    from csdn.train import TrainConfig
    from csdn.train.data import read_image_folder
    from csdn.train.sampler import check_ids_per_batch

    with pytest.raises(ValueError, match="lower ids_per_batch to at most 3"):
        check_ids_per_batch(read_image_folder(id_folders), 5)
    with pytest.raises(ValueError, match="^images_per_id must be at least 2"):
        TrainConfig(images_per_id=1).validate()


def test_cli_warnings_are_one_line_without_python_source(capsys, id_folders, tmp_path):
    (id_folders / "visible" / "0003" / "0.png").write_bytes(b"junk")
    code, _, err = run(
        capsys,
        "train",
        "--dataset",
        "folder",
        "--root",
        id_folders,
        "--output",
        tmp_path / "run",
        "--init",
        "tiny",
        "--no-progress",
        "--ids-per-batch",
        "2",
        "--skip-bad-images",
        "--epochs-stage1",
        "0",
        "--epochs-stage2",
        "0",
        "--epochs-stage3",
        "1",
        "--steps-per-epoch",
        "1",
    )
    assert code == 0, err
    assert "csdn: warning: skipped 1 image(s) that could not be read:" in err and "0003/0.png" in err
    assert ".py:" not in err  # no "file.py:123: SkippedImagesWarning" line


def test_cli_match_skips_bad_gallery_images_on_request(capsys, camera_folder, tiny_model, tmp_path):
    model = tiny_model.save_pretrained(tmp_path / "model")
    gallery = tmp_path / "gallery"
    for seed, name in enumerate(["p1/x.png", "p2/y.png"]):
        _save_image(gallery / name, 30 + seed)
    (gallery / "p2" / "torn.jpg").write_bytes(b"\xff\xd8 torn")
    out = tmp_path / "ranked.csv"
    base = ("match", camera_folder, gallery, "--model", model, "--output", out, "--quiet", "--topk", "3")
    code, _, err = run(capsys, *base)
    assert code == 2 and "torn.jpg" in err and not out.exists()
    code, _, err = run(capsys, *base, "--skip-bad-images")
    assert code == 0 and "skipped 1 of 3 visible images" in err and "torn.jpg" in err
    galleries = {line.split(",")[2] for line in out.read_text().splitlines()[1:]}
    assert {Path(g).name for g in galleries} == {"x.png", "y.png"}


def test_run_settings_are_named_by_their_flags(capsys, id_folders, tmp_path):
    code, _, err = run(
        capsys,
        "train",
        "--dataset",
        "folder",
        "--root",
        id_folders,
        "--output",
        tmp_path / "run",
        "--init",
        "tiny",
        "--no-progress",
        "--ids-per-batch",
        "2",
        "--workers",
        "-1",
    )
    assert code == 2 and "--workers must be a whole number of processes >= 0, got -1" in err
    assert not (tmp_path / "run").exists()
