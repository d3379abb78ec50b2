"""The ``csdn`` command: run in-process through ``csdn.cli.main`` and once as a real subprocess."""

from __future__ import annotations

import csv
import json
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image
from safetensors.torch import load_file

import csdn
from csdn import cli
from csdn.config import CSDNConfig
from csdn.hub.official import to_official_state_dict
from csdn.model.network import CSDN

# Unit-norm embeddings computed in different batches or processes agree to float32 rounding
# (measured differences: up to 8e-8 on AMD Zen 4), not bit for bit.
BATCH_TOLERANCE = 1e-6


def write_images(folder: Path, count: int, seed: int) -> list[Path]:
    """``count`` small PNG crops in two sub-folders (one grayscale, like an infrared frame)."""
    rng = np.random.default_rng(seed)
    paths = []
    for i in range(count):
        path = folder / f"cam{i % 2 + 1}" / f"{i:04d}.png"
        path.parent.mkdir(parents=True, exist_ok=True)
        pixels = rng.integers(0, 256, size=(48, 24, 3), dtype=np.uint8)
        image = Image.fromarray(pixels)
        (image.convert("L") if i == 0 else image).save(path)
        paths.append(path)
    return sorted(paths)


@pytest.fixture
def saved_model(tiny_model, tmp_path) -> Path:
    return tiny_model.save_pretrained(tmp_path / "model")


@pytest.fixture
def images(tmp_path) -> tuple[list[Path], list[Path]]:
    return write_images(tmp_path / "query", 3, seed=1), write_images(tmp_path / "gallery", 5, seed=2)


def run(capsys, *argv: str) -> tuple[int, str, str]:
    code = cli.main([str(a) for a in argv])
    captured = capsys.readouterr()
    return code, captured.out, captured.err


# ---------------------------------------------------------------------------- models / info
def test_models_lists_the_registry(capsys, tmp_path, monkeypatch):
    code, out, _ = run(capsys, "models")
    assert code == 0
    lines = out.splitlines()
    assert lines[0].split() == ["NAME", "DATASET", "WEIGHTS", "DESCRIPTION"]
    assert [line.split()[0] for line in lines[1:]] == csdn.list_models()
    assert "hf-hub:csdn-reid/csdn-rn50-sysu" in out and "SYSU-MM01" in out

    registry = tmp_path / "registry.json"
    registry.write_text(
        json.dumps({"models": {"demo": {"bundled": "demo", "dataset": "synthetic", "description": "d"}}})
    )
    monkeypatch.setenv("CSDN_REGISTRY", str(registry))
    code, out, _ = run(capsys, "models")
    assert out.splitlines()[1].split()[:3] == ["demo", "synthetic", "bundled"]


def test_info_shows_architecture_and_provenance(capsys, tiny_model, tmp_path):
    folder = csdn.save_pretrained(tiny_model, tmp_path / "m", extra_meta={"dataset": "SYSU-MM01"})
    code, out, _ = run(capsys, "info", folder)
    assert code == 0
    assert f"Parameters: {sum(p.numel() for p in tiny_model.parameters()):,}" in out
    assert "Input: 64x32" in out and "576-d" in out
    assert 'meta.dataset: "SYSU-MM01"' in out


def test_info_of_a_registered_model_does_not_download(capsys, fake_hub):
    code, out, _ = run(capsys, "info", "sysu")
    assert code == 0
    assert "repo_id: csdn-reid/csdn-rn50-sysu" in out
    assert "official_checkpoint: model_119.pth" in out
    assert "not in the local cache" in out
    assert not [path for path in fake_hub.paths_requested() if "/resolve/" in path]


# ---------------------------------------------------------------------------- convert
def test_convert_writes_a_loadable_model_and_protects_existing_output(capsys, tmp_path):
    torch.manual_seed(0)
    original = CSDN(CSDNConfig.tiny(vision_heads=4, text_heads=1)).eval()
    torch.save(to_official_state_dict(original), tmp_path / "model_119.pth")
    args = ("convert", tmp_path / "model_119.pth", tmp_path / "out", "--dataset", "sysu", "--image-size", "64", "32")
    code, out, _ = run(capsys, *args)
    assert code == 0 and "csdn.load(" in out
    converted = csdn.load(tmp_path / "out")
    assert converted.provenance["dataset"] == "sysu"
    probe = torch.randn(2, 3, 64, 32)
    assert torch.equal(converted.embed_image(probe, "ir"), original.embed_image(probe, "ir"))
    assert "sysu" in (tmp_path / "out" / "README.md").read_text()

    code, _, err = run(capsys, *args)
    assert code == 2 and "already exists; pass --overwrite" in err
    code, _, _ = run(capsys, *args, "--overwrite")
    assert code == 0


def test_convert_without_the_right_image_size_explains_it(capsys, tmp_path, tiny_model):
    torch.save(to_official_state_dict(tiny_model), tmp_path / "model_119.pth")
    code, _, err = run(capsys, "convert", tmp_path / "model_119.pth", tmp_path / "out")
    assert code == 2
    assert err.startswith("csdn: error: ") and "pass the --image-size it was trained with" in err
    assert "image_size" not in err  # the flag the user types, not the Python argument
    assert "Traceback" not in err


# ---------------------------------------------------------------------------- embed
def test_embed_a_folder_to_safetensors_with_manifest(capsys, tmp_path, saved_model, tiny_model, images):
    query, _ = images
    output = tmp_path / "emb" / "query.safetensors"
    code, out, _ = run(
        capsys,
        "embed",
        "--model",
        saved_model,
        "--modality",
        "ir",
        tmp_path / "query",
        "--output",
        output,
        "--batch-size",
        "2",
        "--quiet",
    )
    assert code == 0 and str(output) in out
    manifest = json.loads((tmp_path / "emb" / "query.safetensors.json").read_text())
    assert manifest["paths"] == [str(p) for p in query]
    assert (manifest["format"], manifest["modality"], manifest["flip"], manifest["count"]) == (
        "csdn-embeddings",
        "infrared",
        True,
        3,
    )
    stored = load_file(str(output))["embeddings"]
    assert manifest["dim"] == stored.shape[1] == 576
    # --batch-size 2 against the default batch: float results depend on batch composition
    # (kernel choice, blocking) on some CPUs, so compare with a tight tolerance.
    torch.testing.assert_close(
        stored, tiny_model.embed_image([str(p) for p in query], "infrared"), rtol=0, atol=BATCH_TOLERANCE
    )


def test_embed_files_to_npy_without_flip(capsys, tmp_path, saved_model, tiny_model, images):
    _, gallery = images
    chosen = [gallery[3], gallery[0]]  # files keep the order given
    code, _, _ = run(
        capsys,
        "embed",
        "--model",
        saved_model,
        "--modality",
        "visible",
        *chosen,
        "--output",
        tmp_path / "g.npy",
        "--no-flip",
        "--quiet",
    )
    assert code == 0
    stored = np.load(tmp_path / "g.npy")
    assert stored.shape == (2, 288)
    expected = tiny_model.embed_image([str(p) for p in chosen], "visible", flip=False)
    np.testing.assert_allclose(stored, expected.numpy(), rtol=0, atol=BATCH_TOLERANCE)
    assert json.loads((tmp_path / "g.npy.json").read_text())["paths"] == [str(p) for p in chosen]


@pytest.mark.parametrize(
    "modality, inputs, output, message",
    [
        ("ir", "query", "e.txt", "must end in .safetensors or .npy"),
        ("ultraviolet", "query", "e.npy", "unknown modality 'ultraviolet'"),
        ("ir", "no-such-folder", "e.npy", "no such image file or folder"),
    ],
)
def test_embed_errors_are_one_line(capsys, tmp_path, saved_model, images, modality, inputs, output, message):
    code, _, err = run(
        capsys,
        "embed",
        "--model",
        saved_model,
        "--modality",
        modality,
        tmp_path / inputs,
        "--output",
        tmp_path / output,
        "--quiet",
    )
    assert code == 2
    assert err.startswith("csdn: error: ") and message in err and "Traceback" not in err
    assert not (tmp_path / output).exists()


def test_unpublished_registry_model_explains_how_to_convert(capsys, tmp_path, images, fake_hub, hub_offline):
    code, _, err = run(
        capsys, "embed", "--model", "sysu", "--modality", "ir", tmp_path / "query", "--output", tmp_path / "e.npy"
    )
    assert code == 2
    assert "csdn convert model_119.pth out/ --dataset sysu" in err
    assert not (tmp_path / "e.npy").exists()


def test_debug_shows_the_traceback(tmp_path):
    with pytest.raises(ValueError, match="not a registered model"):
        cli.main(["--debug", "info", "no-such-model"])


def test_no_command_prints_help(capsys):
    assert cli.main([]) == 2
    assert "usage: csdn" in capsys.readouterr().err


def test_every_command_is_registered_and_takes_debug():
    commands = cli.build_parser()._subparsers._group_actions[0].choices
    assert set(commands) == {
        "models",
        "info",
        "convert",
        "embed",
        "match",
        "eval",
        "synth",
        "train",
        "demo",
        "publish",
        "export",
        "export-info",
    }
    for name, parser in commands.items():
        assert "--debug" in parser._option_string_actions, name


# ---------------------------------------------------------------------------- match
def _read_csv(path: Path) -> list[dict[str, str]]:
    with open(path, newline="") as handle:
        return list(csv.DictReader(handle))


def test_match_embeddings_files_to_csv_and_json(capsys, tmp_path, saved_model, tiny_model, images):
    query, gallery = images
    run(
        capsys,
        "embed",
        "--model",
        saved_model,
        "--modality",
        "ir",
        tmp_path / "query",
        "--output",
        tmp_path / "q.safetensors",
        "--quiet",
    )
    run(
        capsys,
        "embed",
        "--model",
        saved_model,
        "--modality",
        "rgb",
        tmp_path / "gallery",
        "--output",
        tmp_path / "g.npy",
        "--quiet",
    )
    code, out, _ = run(
        capsys,
        "match",
        tmp_path / "q.safetensors",
        tmp_path / "g.npy",
        "--topk",
        "3",
        "--output",
        tmp_path / "ranked.csv",
        "--quiet",
    )
    assert code == 0 and "top 3 of 5 gallery items for 3 queries" in out

    expected = csdn.match(
        tiny_model.embed_image([str(p) for p in query], "infrared"),
        tiny_model.embed_image([str(p) for p in gallery], "visible"),
        topk=3,
    )
    rows = _read_csv(tmp_path / "ranked.csv")
    assert len(rows) == 9
    for q, (indices, scores) in enumerate(expected):
        mine = rows[3 * q : 3 * q + 3]
        assert [r["query"] for r in mine] == [str(query[q])] * 3
        assert [int(r["rank"]) for r in mine] == [1, 2, 3]
        assert [r["gallery"] for r in mine] == [str(gallery[i]) for i in indices.tolist()]
        assert [float(r["score"]) for r in mine] == pytest.approx(scores.tolist(), abs=1e-6)

    code, _, _ = run(
        capsys,
        "match",
        tmp_path / "q.safetensors",
        tmp_path / "g.npy",
        "--topk",
        "50",
        "--output",
        tmp_path / "ranked.json",
        "--quiet",
    )
    ranked = json.loads((tmp_path / "ranked.json").read_text())
    assert ranked["topk"] == 50
    assert [r["query"] for r in ranked["results"]] == [str(p) for p in query]
    first = ranked["results"][0]["matches"]
    assert len(first) == 5  # the whole gallery, best first
    assert [m["rank"] for m in first] == [1, 2, 3, 4, 5]
    assert [m["gallery"] for m in first[:3]] == [r["gallery"] for r in rows[:3]]
    assert all(a["score"] >= b["score"] for a, b in zip(first, first[1:]))


def test_match_folders_embeds_on_the_fly(capsys, tmp_path, saved_model, images):
    run(
        capsys,
        "embed",
        "--model",
        saved_model,
        "--modality",
        "ir",
        tmp_path / "query",
        "--output",
        tmp_path / "q.npy",
        "--quiet",
    )
    run(
        capsys,
        "embed",
        "--model",
        saved_model,
        "--modality",
        "visible",
        tmp_path / "gallery",
        "--output",
        tmp_path / "g.npy",
        "--quiet",
    )
    run(
        capsys,
        "match",
        tmp_path / "q.npy",
        tmp_path / "g.npy",
        "--topk",
        "4",
        "--output",
        tmp_path / "files.csv",
        "--quiet",
    )
    code, _, _ = run(
        capsys,
        "match",
        tmp_path / "query",
        tmp_path / "gallery",
        "--model",
        saved_model,
        "--topk",
        "4",
        "--output",
        tmp_path / "folders.csv",
        "--quiet",
    )
    assert code == 0
    assert _read_csv(tmp_path / "folders.csv") == _read_csv(tmp_path / "files.csv")

    code, _, err = run(capsys, "match", tmp_path / "query", tmp_path / "g.npy", "--output", tmp_path / "x.csv")
    assert code == 2 and "pass --model" in err


def test_match_refuses_embeddings_of_different_sizes(capsys, tmp_path, saved_model, images):
    run(
        capsys,
        "embed",
        "--model",
        saved_model,
        "--modality",
        "ir",
        tmp_path / "query",
        "--output",
        tmp_path / "q.npy",
        "--quiet",
    )
    run(
        capsys,
        "embed",
        "--model",
        saved_model,
        "--modality",
        "rgb",
        tmp_path / "gallery",
        "--output",
        tmp_path / "g.npy",
        "--no-flip",
        "--quiet",
    )
    code, _, err = run(capsys, "match", tmp_path / "q.npy", tmp_path / "g.npy", "--output", tmp_path / "r.csv")
    assert code == 2 and "576-d but gallery embeddings 288-d" in err
    assert not (tmp_path / "r.csv").exists()


def test_match_reads_plain_arrays_without_manifest(capsys, tmp_path):
    rng = np.random.default_rng(0)
    np.save(tmp_path / "q.npy", rng.standard_normal((2, 8)).astype(np.float32))
    np.save(tmp_path / "g.npy", rng.standard_normal((4, 8)).astype(np.float32))
    code, _, _ = run(
        capsys, "match", tmp_path / "q.npy", tmp_path / "g.npy", "--topk", "2", "--output", tmp_path / "r.csv"
    )
    assert code == 0
    rows = _read_csv(tmp_path / "r.csv")
    assert {r["query"] for r in rows} == {"0", "1"} and {r["gallery"] for r in rows} <= {"0", "1", "2", "3"}


# ---------------------------------------------------------------------------- a real process
def test_python_m_csdn_in_a_subprocess(tmp_path, tiny_model, fake_hub, images):
    """HF_ENDPOINT set in the environment before the process imports huggingface_hub."""
    fake_hub.commit(
        "acme/csdn-tiny",
        {
            name: (tiny_model.save_pretrained(tmp_path / "m") / name).read_bytes()
            for name in ("model.safetensors", "config.json", "README.md")
        },
    )
    env = {**os.environ, "PYTHONPATH": str(Path(csdn.__file__).parent.parent)}
    done = subprocess.run(
        [
            sys.executable,
            "-m",
            "csdn",
            "embed",
            "--model",
            "hf-hub:acme/csdn-tiny",
            "--modality",
            "visible",
            str(tmp_path / "gallery"),
            "--output",
            str(tmp_path / "g.safetensors"),
            "--quiet",
        ],
        env=env,
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert done.returncode == 0, done.stderr
    _, gallery = images
    # another process may run with another thread count, hence other kernel blocking
    torch.testing.assert_close(
        load_file(str(tmp_path / "g.safetensors"))["embeddings"],
        tiny_model.embed_image([str(p) for p in gallery], "visible"),
        rtol=0,
        atol=BATCH_TOLERANCE,
    )
    assert "/acme/csdn-tiny/resolve/main/model.safetensors" in fake_hub.paths_requested("HEAD")

    failed = subprocess.run(
        [sys.executable, "-m", "csdn", "info", "hf-hub:acme/missing"],
        env=env,
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert failed.returncode == 2
    assert failed.stderr.startswith("csdn: error: ") and "does not exist on the Hub" in failed.stderr
    assert "Traceback" not in failed.stderr
