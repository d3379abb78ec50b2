"""The README's first commands: ``csdn demo`` (and examples/quickstart.py over it) and ``csdn match --visualize``,
with the bundled model."""

from __future__ import annotations

import os
import re
import subprocess
import sys
from pathlib import Path

import pytest
from PIL import Image

from csdn import cli
from csdn.data.synthetic import write_sysu
from csdn.retrieval.visualize import GAP, GREEN, GREY, LABEL_H, RED

REPOSITORY = Path(__file__).resolve().parent.parent


def _offline_env(tmp_path: Path) -> dict[str, str]:
    """Offline, with an empty Hub cache and an endpoint nothing listens on."""
    env = {key: value for key, value in os.environ.items() if not key.startswith(("HF_", "CSDN_"))}
    return {**env, "HF_HUB_OFFLINE": "1", "HF_ENDPOINT": "http://127.0.0.1:9", "HF_HOME": str(tmp_path / "hf")}


def _border_colours(picture: Image.Image, cell=(64, 128)) -> list[tuple[int, int, int]]:
    """The colour of each ranked tile's left border in the first row (layout of csdn.retrieval.visualize.draw_ranking)."""
    border, gap = 4, 12
    tile_w = cell[0] + 2 * border
    colours = []
    x = gap + tile_w + 2 * gap
    while x + tile_w <= picture.width:
        colours.append(picture.getpixel((x + 1, gap + cell[1] // 2)))
        x += tile_w + gap
    return colours


def test_quickstart_runs_offline_and_draws_the_ranking(tmp_path):
    output = tmp_path / "ranking.png"
    done = subprocess.run(
        [sys.executable, str(REPOSITORY / "examples" / "quickstart.py"), "--output", str(output)],
        cwd=tmp_path,
        env=_offline_env(tmp_path),
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert done.returncode == 0, done.stderr
    scores = re.search(r"rank-1 (\d+\.\d)%, mAP (\d+\.\d)%", done.stdout)
    assert scores, done.stdout
    rank1, mean_ap = (float(v) for v in scores.groups())
    # 12 people: chance is about 8%; the untrained model scores about 9% / 17%
    assert rank1 > 20 and mean_ap > 30
    assert len(re.findall(r"^query ", done.stdout, flags=re.M)) == 6
    assert len(re.findall(r"^  [1-5]\. cam[1245]/", done.stdout, flags=re.M)) == 30
    assert str(output) in done.stdout
    picture = Image.open(output).convert("RGB")
    colours = _border_colours(picture)
    assert len(colours) == 5 and set(colours) <= {GREEN, RED}
    assert picture.height > 6 * 128
    assert [p.name for p in tmp_path.iterdir()] == ["ranking.png"]  # nothing else written


def test_demo_writes_one_named_picture_in_the_working_directory(tmp_path, monkeypatch, capsys):
    monkeypatch.chdir(tmp_path)
    assert cli.main(["demo", "--show", "2", "--topk", "3"]) == 0
    assert [p.name for p in tmp_path.iterdir()] == ["csdn_demo_ranking.png"]
    assert len(_border_colours(Image.open(tmp_path / "csdn_demo_ranking.png").convert("RGB"))) == 3
    before = (tmp_path / "csdn_demo_ranking.png").read_bytes()
    capsys.readouterr()
    assert cli.main(["demo"]) == 2  # an existing picture is kept ...
    assert "--overwrite" in capsys.readouterr().err
    assert (tmp_path / "csdn_demo_ranking.png").read_bytes() == before
    assert cli.main(["demo", "--show", "1", "--overwrite"]) == 0  # ... unless asked
    assert (tmp_path / "csdn_demo_ranking.png").read_bytes() != before
    assert cli.main(["demo", "--output", "ranking.jpg"]) == 2
    assert "must end in .png" in capsys.readouterr().err


def test_python_m_csdn_demo_is_the_demo_command(tmp_path):
    env = {**_offline_env(tmp_path), "PYTHONPATH": str(Path(cli.__file__).parent.parent.parent)}
    done = subprocess.run(
        [sys.executable, "-m", "csdn.demo", "--output", "out/picture.png", "--show", "1"],
        cwd=tmp_path,
        env=env,
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert done.returncode == 0, done.stderr
    assert (tmp_path / "out" / "picture.png").is_file() and "rank-1" in done.stdout


@pytest.fixture
def people(tmp_path) -> Path:
    """Held-out synthetic people in SYSU-MM01 layout: cam3 (infrared) queries and cam1 (visible) gallery."""
    root = tmp_path / "people"
    write_sysu(root, 2, 6, 2, seed=5, camera_prob=1.0)
    return root


def test_match_visualize_colours_by_folder_identity(capsys, tmp_path, people):
    picture = tmp_path / "out.png"
    code = cli.main(
        [
            "match",
            str(people / "cam3"),
            str(people / "cam1"),
            "--model",
            "synthetic-tiny",
            "--output",
            str(tmp_path / "ranked.csv"),
            "--topk",
            "3",
            "--visualize",
            str(picture),
            "--visualize-queries",
            "4",
            "--ids-from-folders",
            "--quiet",
        ]
    )
    out = capsys.readouterr().out
    assert code == 0 and f"wrote {picture}" in out
    sheet = Image.open(picture).convert("RGB")
    assert sheet.height == GAP + 4 * (128 + 8 + LABEL_H + GAP)  # four query rows
    colours = _border_colours(sheet)
    assert len(colours) == 3 and set(colours) <= {GREEN, RED}


def test_match_visualize_from_embeddings_files_without_identities(capsys, tmp_path, people, monkeypatch):
    monkeypatch.chdir(tmp_path)  # manifests hold the paths as given, relative to here
    for side, camera, modality in (("query", "cam3", "infrared"), ("gallery", "cam1", "visible")):
        assert (
            cli.main(
                [
                    "embed",
                    f"people/{camera}",
                    "--model",
                    "synthetic-tiny",
                    "--modality",
                    modality,
                    "--output",
                    f"{side}.safetensors",
                    "--quiet",
                ]
            )
            == 0
        )
    code = cli.main(
        [
            "match",
            "query.safetensors",
            "gallery.safetensors",
            "--output",
            "ranked.json",
            "--topk",
            "2",
            "--visualize",
            "grey.png",
            "--quiet",
        ]
    )
    assert code == 0
    assert set(_border_colours(Image.open(tmp_path / "grey.png").convert("RGB"))) == {GREY}

    (tmp_path / "gallery.safetensors.json").unlink()  # without its manifest the gallery rows have no images
    capsys.readouterr()
    code = cli.main(
        [
            "match",
            "query.safetensors",
            "gallery.safetensors",
            "--output",
            "ranked2.json",
            "--visualize",
            "again.png",
            "--quiet",
        ]
    )
    assert code == 2 and "--visualize draws the gallery images" in capsys.readouterr().err
    assert not (tmp_path / "again.png").exists()
    code = cli.main(
        ["match", "query.safetensors", "gallery.safetensors", "--output", "ranked3.json", "--visualize", "picture.jpg"]
    )
    assert code == 2 and "--visualize picture.jpg must end in .png" in capsys.readouterr().err


def _readme_block(heading: str) -> list[list[str]]:
    """The ``csdn`` commands of the first bash block under README's ``heading``, as argument lists."""
    text = (REPOSITORY / "README.md").read_text(encoding="utf-8")
    section = text[text.index(heading) :]
    block = section[
        section.index("```bash\n") + len("```bash\n") : section.index("```", section.index("```bash\n") + 7)
    ]
    joined = block.replace("\\\n", " ")
    return [line.split()[1:] for line in joined.splitlines() if line.startswith("csdn ")]


def test_the_readme_training_smoke_test_runs_and_its_experiment_file_repeats_it(tmp_path, capsys):
    commands = _readme_block("## Training, smoke test")
    assert [argv[0] for argv in commands] == ["synth", "train"]
    for argv in commands:
        assert cli.main([arg.replace("/tmp/", f"{tmp_path}/") for arg in argv]) == 0
    err = capsys.readouterr().err
    assert re.search(r"stage 3 \(image\) epoch 2/2 .* msel .* \| eval: rank-1 [\d.]+%  mAP [\d.]+%", err)
    assert "last eval (stage 3 epoch 2)" in err and (tmp_path / "run" / "epochs.csv").is_file()
    again = ["train", "--config", str(tmp_path / "run" / "experiment.toml"), "--output", str(tmp_path / "run2")]
    assert cli.main([*again, "--no-progress"]) == 0
    first, second = (Path(tmp_path, run, "model", "model.safetensors").read_bytes() for run in ("run", "run2"))
    assert first == second  # the same run, from its own experiment file
