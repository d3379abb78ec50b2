"""Issue 22, class 9: outputs are checked before the work and written together: file names that are not
UTF-8 or hold a newline, a --visualize that fails, and folders that cannot be written leave nothing half-done."""

from __future__ import annotations

import os
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from csdn import cli
from csdn.retrieval.embeddings import save_embeddings
from csdn.retrieval.visualize import draw_ranking, query_caption
from csdn.system.fileio import atomic_write_text


def _image(path: Path, seed: int) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    Image.fromarray(np.random.default_rng(seed).integers(0, 256, (48, 24, 3), dtype=np.uint8)).save(path)
    return path


def _bytes_name(folder: Path, raw: bytes) -> Path:
    """A file whose name is the bytes ``raw`` (not UTF-8), made through the bytes file-system API."""
    os.makedirs(folder, exist_ok=True)
    path = os.path.join(os.fsencode(folder), raw)
    Image.new("RGB", (24, 48), (200, 10, 10)).save(open(path, "wb"), format="PNG")
    return Path(os.fsdecode(path))


@pytest.mark.parametrize("raw", [b"caf\xe9.png", b"two\nlines.png"])
@pytest.mark.parametrize("suffix", [".csv", ".json"])
def test_match_with_odd_file_names_writes_the_ranking_and_the_picture(capsys, tmp_path, raw, suffix):
    odd = _bytes_name(tmp_path / "g", raw)
    _image(tmp_path / "g" / "plain.png", 1)
    output = tmp_path / f"r{suffix}"
    code = cli.main(  # the odd name is a query too, so it is written under its picture
        ["match", str(tmp_path / "g"), str(tmp_path / "g"), "--model", "synthetic-tiny", "--output", str(output)]
        + ["--visualize", str(tmp_path / "p.png"), "--quiet"]
    )
    assert code == 0, capsys.readouterr().err
    assert os.fsencode(odd) in output.read_bytes() or raw[:3] in output.read_bytes()
    assert Image.open(tmp_path / "p.png").size[0] > 0


def test_a_caption_is_one_printable_line():
    assert query_caption("a/two\nlines.png", None) == "two?lines.png"
    assert query_caption(os.fsdecode(b"a/caf\xe9.png"), None) == "caf?.png"


def test_draw_ranking_draws_odd_names(tmp_path):
    odd = _bytes_name(tmp_path, b"two\nlines.png")
    picture = draw_ranking([str(odd)], [str(odd)], np.array([[0]]), topk=1)
    assert picture.size[0] > 0


def test_a_failed_visualize_leaves_no_ranking(capsys, tmp_path):
    images = [str(_image(tmp_path / "g" / f"{i}.png", i)) for i in range(2)]
    save_embeddings(tmp_path / "g.npy", np.eye(2, 4, dtype=np.float32), paths=images, modality="visible")
    save_embeddings(tmp_path / "q.npy", np.eye(1, 4, dtype=np.float32), paths=images[:1], modality="infrared")
    (tmp_path / "g" / "1.png").write_bytes(b"no longer a picture")
    argv = ["match", str(tmp_path / "q.npy"), str(tmp_path / "g.npy"), "--output", str(tmp_path / "r.csv")]
    code = cli.main([*argv, "--visualize", str(tmp_path / "p.png"), "--quiet"])
    err = capsys.readouterr().err
    assert code == 2 and err.startswith("csdn: error:") and err.count("\n") == 1
    assert not (tmp_path / "r.csv").exists() and not (tmp_path / "p.png").exists()
    assert [p.name for p in tmp_path.iterdir() if p.name.startswith(".")] == []  # no temporary file left
    (tmp_path / "g" / "1.png").unlink()
    _image(tmp_path / "g" / "1.png", 1)
    assert cli.main([*argv, "--visualize", str(tmp_path / "p.png"), "--quiet"]) == 0  # the rerun is not refused


def test_ids_from_folders_refuses_folders_that_are_not_numbers(capsys, tmp_path):
    images = [str(_image(tmp_path / "people" / name / "a.png", i)) for i, name in enumerate(["0001", "bob"])]
    save_embeddings(tmp_path / "g.npy", np.eye(2, 4, dtype=np.float32), paths=images, modality="visible")
    code = cli.main(
        ["match", str(tmp_path / "g.npy"), str(tmp_path / "g.npy"), "--output", str(tmp_path / "r.csv")]
        + ["--visualize", str(tmp_path / "p.png"), "--ids-from-folders", "--quiet"]
    )
    err = capsys.readouterr().err
    assert code == 2 and "folders without a number" in err and "bob" in err
    assert not (tmp_path / "r.csv").exists()


def test_an_unwritable_output_folder_is_refused_before_the_work(capsys, tmp_path, monkeypatch):
    save_embeddings(tmp_path / "g.npy", np.eye(2, 4, dtype=np.float32))
    locked = tmp_path / "locked"
    locked.mkdir()
    real_access = os.access  # the tests may run as root, who writes anywhere: the folder is read-only by decree
    monkeypatch.setattr(os, "access", lambda path, mode: Path(path) != locked and real_access(path, mode))
    import csdn.retrieval.sharded as sharded

    monkeypatch.setattr(sharded, "match_on_ranks", lambda *a, **k: pytest.fail("matched before the check"))
    code = cli.main(["match", str(tmp_path / "g.npy"), str(tmp_path / "g.npy"), "--output", str(locked / "r.csv")])
    err = capsys.readouterr().err
    assert code == 2 and "locked/r.csv" in err and "not writable" in err


def test_a_write_error_names_the_users_file_not_the_temporary_one(tmp_path, monkeypatch):
    import errno

    def read_only(temp: Path, *args, **kwargs):
        raise OSError(errno.EROFS, "Read-only file system", str(temp))

    monkeypatch.setattr(Path, "write_text", read_only)
    with pytest.raises(OSError) as caught:
        atomic_write_text(tmp_path / "mine.txt", "x")
    message = str(caught.value)
    assert f"cannot write {tmp_path / 'mine.txt'}" in message and ".mine.txt." not in message
    assert "Read-only file system" in message and caught.value.errno == errno.EROFS
