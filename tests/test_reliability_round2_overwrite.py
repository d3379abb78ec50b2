"""Issue 22, class 1: ``--visualize`` (and ``draw_ranking(output=...)``) never writes over an image it read,
whether the images came from a folder or from an embeddings file's manifest, with or without --overwrite."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from csdn import cli
from csdn.errors import OutputExistsError
from csdn.retrieval.embeddings import save_embeddings
from csdn.retrieval.visualize import draw_ranking


def _image(path: Path, seed: int) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    Image.fromarray(np.random.default_rng(seed).integers(0, 256, (48, 24, 3), dtype=np.uint8)).save(path)
    return path


@pytest.fixture
def folders(tmp_path) -> tuple[Path, Path]:
    for i in range(2):
        _image(tmp_path / "q" / f"{i}.png", i)
    for i in range(3):
        _image(tmp_path / "g" / f"{i}.png", 10 + i)
    return tmp_path / "q", tmp_path / "g"


def _snapshot(*folders: Path) -> dict[Path, bytes]:
    return {p: p.read_bytes() for folder in folders for p in sorted(folder.rglob("*")) if p.is_file()}


@pytest.mark.parametrize("victim", ["q/0.png", "g/2.png"])
@pytest.mark.parametrize("overwrite", [False, True])
def test_match_visualize_never_replaces_an_input_image_of_a_folder(capsys, tmp_path, folders, victim, overwrite):
    before = _snapshot(*folders)
    argv = [*map(str, folders), "--model", "synthetic-tiny", "--output", str(tmp_path / "r.csv")]
    argv += ["--visualize", str(tmp_path / victim), "--quiet"] + (["--overwrite"] if overwrite else [])
    assert cli.main(["match", *argv]) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and "input" in err and victim.split("/")[1] in err
    assert _snapshot(*folders) == before and not (tmp_path / "r.csv").exists()


def test_match_visualize_never_replaces_an_image_listed_in_a_manifest(capsys, tmp_path, folders):
    images = sorted(str(p) for p in folders[1].iterdir())
    rows = np.eye(3, 4, dtype=np.float32)
    save_embeddings(tmp_path / "g.npy", rows, paths=images, modality="visible")
    save_embeddings(tmp_path / "q.npy", rows[:1], paths=[str(folders[0] / "0.png")], modality="infrared")
    before = _snapshot(*folders)
    for victim in (images[1], str(folders[0] / "0.png")):
        code = cli.main(
            ["match", str(tmp_path / "q.npy"), str(tmp_path / "g.npy"), "--output", str(tmp_path / "r.csv")]
            + ["--visualize", victim, "--overwrite", "--quiet"]
        )
        err = capsys.readouterr().err
        assert code == 2 and "input image" in err and Path(victim).name in err
    assert _snapshot(*folders) == before and not (tmp_path / "r.csv").exists()


def test_match_visualize_refuses_a_symlink_to_an_input_image(capsys, tmp_path, folders):
    link = tmp_path / "picture.png"
    link.symlink_to(folders[1] / "1.png")
    before = _snapshot(*folders)
    code = cli.main(
        ["match", *map(str, folders), "--model", "synthetic-tiny", "--output", str(tmp_path / "r.csv")]
        + ["--visualize", str(link), "--overwrite", "--quiet"]
    )
    assert code == 2 and "input" in capsys.readouterr().err
    assert _snapshot(*folders) == before


def test_draw_ranking_refuses_to_write_over_one_of_its_images(tmp_path, folders):
    queries = [str(folders[0] / "0.png")]
    gallery = sorted(str(p) for p in folders[1].iterdir())
    before = _snapshot(*folders)
    for victim in (queries[0], gallery[2]):
        with pytest.raises(OutputExistsError, match="is one of the images drawn"):
            draw_ranking(queries, gallery, np.array([[0, 1]]), topk=2, output=victim)
    assert _snapshot(*folders) == before
    draw_ranking(queries, gallery, np.array([[0, 1]]), topk=2, output=tmp_path / "ok.png")
    assert Image.open(tmp_path / "ok.png").size[0] > 0


def test_match_visualize_beside_the_inputs_still_works(capsys, tmp_path, folders):
    code = cli.main(
        ["match", *map(str, folders), "--model", "synthetic-tiny", "--output", str(tmp_path / "r.csv")]
        + ["--visualize", str(tmp_path / "picture.png"), "--quiet"]
    )
    assert code == 0, capsys.readouterr().err
    assert (tmp_path / "picture.png").is_file() and (tmp_path / "r.csv").is_file()
