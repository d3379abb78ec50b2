"""Issue 19, round 2: epoch snapshots of a run, ``--model`` given a run folder or one of its checkpoints,
one device default (``auto``), ``publish`` refusing a non-standard test set, a representative demo, the
ranking picture's row labels, outputs that honour the umask, and load errors without torch's advice
to unpickle unsafely."""

from __future__ import annotations

import json
import os
import re
from pathlib import Path

import numpy as np
import pytest
import tomllib
import torch
from _train_synthetic import write_identities

import csdn
import csdn.system.device as device_module
from csdn import cli
from csdn.errors import CheckpointError, DeviceError
from csdn.retrieval.embeddings import load_embeddings
from csdn.system.device import resolve_device

pytestmark = pytest.mark.usefixtures("single_thread")

TINY = [
    "--init", "tiny", "--steps-per-epoch", "1", "--ids-per-batch", "2", "--images-per-id", "2",
    "--stage1-batch-size", "4", "--stage2-batch-size", "4", "--no-progress",
]  # fmt: skip
EPOCHS = ["--epochs-stage1", "2", "--epochs-stage2", "2", "--epochs-stage3", "2"]


def _one_line_error(capsys) -> str:
    err = capsys.readouterr().err
    assert err.startswith("csdn: error: ") and err.count("\n") == 1, err
    return err


@pytest.fixture(scope="module")
def people(tmp_path_factory) -> Path:
    return write_identities(tmp_path_factory.mktemp("people") / "ids", range(4), per_modality=3)


@pytest.fixture(scope="module")
def run(tmp_path_factory, people) -> Path:
    """A finished tiny run that kept a snapshot after every epoch, at most three of them."""
    out = tmp_path_factory.mktemp("runs") / "x"
    argv = ["train", "--dataset", "folder", "--root", str(people), "--output", str(out), *TINY, *EPOCHS]
    assert cli.main([*argv, "--save-every", "1", "--keep", "3"]) == 0
    return out


# ---------------------------------------------------------------------------- D: snapshots
def test_save_every_keeps_the_newest_snapshots_unique_across_stages_and_last_pt(run):
    names = sorted(p.name for p in (run / "checkpoints").iterdir())
    assert names == ["last.pt", "stage2_epoch_2.pt", "stage3_epoch_1.pt", "stage3_epoch_2.pt"]
    newest = torch.load(run / "checkpoints" / "stage3_epoch_2.pt", weights_only=True)
    last = torch.load(run / "checkpoints" / "last.pt", weights_only=True)
    assert (newest["stage"], newest["epoch"]) == (last["stage"], last["epoch"]) == (3, 2)
    older = torch.load(run / "checkpoints" / "stage2_epoch_2.pt", weights_only=True)
    assert (older["stage"], older["epoch"]) == (2, 2)


def test_the_snapshot_policy_is_recorded_in_the_experiment_file_and_the_log(run):
    tables = tomllib.loads((run / "experiment.toml").read_text())
    assert (tables["run"]["save_every"], tables["run"]["keep"]) == (1, 3)
    assert json.loads((run / "run.json").read_text())["experiment"]["run"]["keep"] == 3
    records = [json.loads(line) for line in (run / "log.jsonl").read_text().splitlines()]
    start = next(r for r in records if r["event"] == "start")
    assert start["snapshots"] == {"save_every": 1, "keep": 3}
    made = [r["snapshot"] for r in records if r["event"] == "checkpoint" and r["snapshot"]]
    assert made[0] == "stage1_epoch_1.pt" and made[-1] == "stage3_epoch_2.pt" and len(made) == 6


def test_save_every_and_keep_come_from_the_experiment_file(tmp_path, people):
    config = tmp_path / "exp.toml"
    config.write_text(f'[data]\ndataset = "folder"\nroot = "{people}"\n\n[run]\nsave_every = 2\nkeep = 1\n')
    out = tmp_path / "y"
    assert cli.main(["train", "--config", str(config), "--output", str(out), *TINY, *EPOCHS]) == 0
    assert sorted(p.name for p in (out / "checkpoints").iterdir()) == ["last.pt", "stage3_epoch_2.pt"]


@pytest.mark.parametrize(
    "extra, says",
    [(["--keep", "2"], "--keep bounds the snapshots --save-every"), (["--save-every", "-1"], "--save-every must be")],
)
def test_bad_snapshot_settings_are_one_line_errors_before_any_work(tmp_path, people, capsys, extra, says):
    out = tmp_path / "z"
    argv = ["train", "--dataset", "folder", "--root", str(people), "--output", str(out), *TINY, *extra]
    assert cli.main(argv) == 2
    assert says in _one_line_error(capsys)
    assert not out.exists()


# ---------------------------------------------------------------------------- D: --model from a run
def _eval(model: str, people: Path, tmp_path: Path, name: str) -> dict:
    out = tmp_path / f"{name}.json"
    argv = ["eval", "--dataset", "folder", "--root", str(people), "--model", model, "--quiet", "--json", str(out)]
    assert cli.main(argv) == 0
    return json.loads(out.read_text())["searches"]


def test_eval_takes_the_run_folder_its_model_folder_and_its_checkpoints(run, people, tmp_path):
    reference = _eval(str(run / "model"), people, tmp_path, "model")
    assert _eval(str(run), people, tmp_path, "run") == reference
    assert _eval(str(run / "checkpoints" / "last.pt"), people, tmp_path, "last") == reference  # the same weights
    older = _eval(str(run / "checkpoints" / "stage3_epoch_1.pt"), people, tmp_path, "older")
    assert older != reference  # one epoch earlier: other weights, other scores


def test_embed_and_match_take_a_checkpoint_and_a_run_folder(run, people, tmp_path, capsys):
    embedded = {}
    for name, model in (("ckpt", run / "checkpoints" / "last.pt"), ("model", run / "model")):
        out = tmp_path / f"{name}.npy"
        argv = ["embed", str(people / "infrared"), "--model", str(model), "--modality", "ir", "--output", str(out)]
        assert cli.main([*argv, "--quiet"]) == 0
        embedded[name] = load_embeddings(out).vectors
    assert torch.equal(embedded["ckpt"], embedded["model"])
    ranking = tmp_path / "r.csv"
    argv = ["match", str(people / "infrared"), str(people / "visible"), "--model", str(run), "--output", str(ranking)]
    assert cli.main([*argv, "--quiet"]) == 0 and ranking.is_file()


def test_an_unfinished_run_points_at_resume_and_its_last_checkpoint(tmp_path, people, capsys):
    out = tmp_path / "half"
    argv = ["train", "--dataset", "folder", "--root", str(people), "--output", str(out), *TINY, "--stop-after", "1"]
    assert cli.main(argv) == 0
    capsys.readouterr()
    assert cli.main(["eval", "--dataset", "folder", "--root", str(people), "--model", str(out), "--quiet"]) == 2
    line = _one_line_error(capsys)
    assert "has not finished" in line and "--resume" in line and str(out / "checkpoints" / "last.pt") in line


def test_a_foreign_pt_still_gets_the_convert_advice(tmp_path, capsys):
    foreign = tmp_path / "model_119.pt"
    torch.save({"module.w": torch.zeros(2)}, foreign)
    argv = ["eval", "--dataset", "folder", "--root", str(tmp_path), "--model", str(foreign), "--quiet"]
    assert cli.main(argv) == 2
    assert "csdn convert" in _one_line_error(capsys)


def test_csdn_load_given_a_run_folder_points_at_its_model(run):
    with pytest.raises(FileNotFoundError, match=re.escape(f"load its model, {run / 'model'}")):
        csdn.load(run, device="cpu")
    with pytest.raises(ValueError, match="csdn.train.load_model"):
        csdn.load(run / "checkpoints" / "last.pt", device="cpu")


def test_load_model_reads_a_checkpoint_with_weights_only(run, monkeypatch):
    from csdn.train import load_model

    calls = []
    real = torch.load
    monkeypatch.setattr(torch, "load", lambda *a, **k: calls.append(k.get("weights_only")) or real(*a, **k))
    model = load_model(run / "checkpoints" / "last.pt", device="cpu")
    assert calls == [True] and not model.training
    assert model.provenance["dataset"] == "folder"


# ---------------------------------------------------------------------------- H: one device default
def test_auto_is_cuda_when_available_else_cpu(monkeypatch):
    from csdn.system.device import device_note

    monkeypatch.setattr(torch.cuda, "is_available", lambda: False)
    assert resolve_device("auto") == resolve_device(None) == torch.device("cpu")
    assert "torch finds no CUDA GPU" in device_note("auto", torch.device("cpu"))
    monkeypatch.setattr(torch.cuda, "is_available", lambda: True)
    assert device_module.auto_device() == torch.device("cuda")


@pytest.mark.skipif(torch.cuda.is_available(), reason="checks the default on a machine without CUDA")
def test_on_this_cpu_machine_auto_is_the_cpu():
    assert resolve_device("auto") == torch.device("cpu")


def test_csdn_load_defaults_to_auto(monkeypatch):
    monkeypatch.setattr(device_module, "auto_device", lambda: torch.device("meta"))  # a device auto can pick
    model = csdn.load("synthetic-tiny", progress=False)
    assert next(model.parameters()).device.type == "meta"


@pytest.mark.parametrize("command", ["eval", "embed", "train"])
def test_every_command_says_its_auto_device_once(command, tmp_path, people, capsys, monkeypatch):
    monkeypatch.setattr(torch.cuda, "is_available", lambda: False)
    argv = {
        "eval": ["eval", "--dataset", "folder", "--root", str(people), "--model", "synthetic-tiny", "--quiet"],
        "embed": ["embed", str(people / "visible"), "--model", "synthetic-tiny", "--modality", "rgb", "--quiet",
                  "--output", str(tmp_path / "e.npy")],
        "train": ["train", "--dataset", "folder", "--root", str(people), "--output", str(tmp_path / "t"), *TINY,
                  "--stop-after", "1"],
    }[command]  # fmt: skip
    assert cli.main(argv) == 0
    err = capsys.readouterr().err
    assert err.count("csdn: device cpu (--device auto: torch finds no CUDA GPU)") == 1, err


@pytest.mark.skipif(torch.cuda.is_available(), reason="needs a machine without CUDA")
@pytest.mark.parametrize("command", ["eval", "embed", "train"])
def test_explicit_cuda_without_cuda_is_a_one_line_error(command, tmp_path, people, capsys):
    argv = {
        "eval": ["eval", "--dataset", "folder", "--root", str(people), "--model", "synthetic-tiny"],
        "embed": ["embed", str(people), "--model", "synthetic-tiny", "--modality", "rgb", "--output",
                  str(tmp_path / "e.npy")],
        "train": ["train", "--dataset", "folder", "--root", str(people), "--output", str(tmp_path / "t"), *TINY],
    }[command]  # fmt: skip
    assert cli.main([*argv, "--device", "cuda"]) == 2
    assert "--device cpu" in _one_line_error(capsys)
    with pytest.raises(DeviceError):
        resolve_device("cuda")


# ---------------------------------------------------------------------------- G: publish checks the test set
def test_publish_refuses_a_test_set_of_nonstandard_size_unless_allowed(tiny_model, tiny_sysu, tmp_path, capsys):
    tiny_model.save_pretrained(tmp_path / "m")
    argv = ["publish", str(tmp_path / "m"), "acme/csdn-sysu", "--dataset", "sysu", "--root", str(tiny_sysu)]
    argv += ["--dry-run", "--output", str(tmp_path / "release"), "--quiet"]
    assert cli.main(argv) == 2
    line = _one_line_error(capsys)
    assert "not the standard sysu test set" in line and "(published: 3803 queries and 301 gallery images)" in line
    assert "--allow-nonstandard" in line and not (tmp_path / "release").exists()
    assert cli.main([*argv, "--allow-nonstandard"]) == 0
    card = (tmp_path / "release" / "README.md").read_text()
    assert "non-standard test set" in card and "3803 queries" in card


def test_a_result_of_the_published_sizes_is_standard():
    from csdn.evaluation.results import EvaluationResult, SearchResult, TrialResult

    def result(queries: int, gallery: int) -> EvaluationResult:
        trial = TrialResult(0, np.ones(3), 1.0, 1.0, queries, gallery)
        return EvaluationResult(
            "SYSU-MM01", {"mode": "indoor", "shots": 1}, [SearchResult("infrared->visible", [trial])]
        )

    assert result(3803, 112).nonstandard() == []
    assert result(3803, 301).nonstandard() != []


# ---------------------------------------------------------------------------- J: smaller points
def test_the_demo_shows_a_representative_sample_and_says_how_it_was_chosen(tmp_path, capsys):
    assert cli.main(["demo", "--output", str(tmp_path / "d.png")]) == 0
    out = capsys.readouterr().out
    assert "evenly spaced by the rank of their true match" in out
    blocks = re.findall(r"\nquery .*\n  1\. .*  (correct|wrong)\n", out)
    total = re.search(r"as are (\d+) of all (\d+)", out)
    assert len(blocks) == 6 and total
    sample = blocks.count("correct") / len(blocks)
    assert abs(sample - int(total[1]) / int(total[2])) <= 1 / len(blocks)


def test_representative_picks_follow_the_rank_distribution():
    from csdn.cli.demo import representative

    ranks = [1] * 45 + [2] * 30 + [7] * 20 + [0] * 5  # 0: no true match in the gallery
    shown = representative(ranks, 10)
    assert len(set(shown)) == 10 and shown == sorted(shown)
    assert sum(ranks[q] == 1 for q in shown) in (4, 5)  # 45% of the queries, to within one of ten
    assert sum(ranks[q] == 0 for q in shown) in (0, 1)


def test_ranking_rows_name_the_file_camera_and_where_the_true_match_ranked():
    from csdn.retrieval.visualize import query_details, true_match_ranks

    scores = np.array([[0.9, 0.8, 0.1, 0.5], [0.9, 0.8, 0.7, 0.6]])
    assert true_match_ranks(scores, [3, 9], [1, 2, 3, 4]) == [4, 0]
    assert query_details(7, 3, 4, shown=2) == ["id 7 cam 3", "true: rank 4"]
    assert query_details(7, 3, 1, shown=2) == ["id 7 cam 3"]
    assert query_details(None, None, 0, shown=2) == ["true: none"]


def test_the_picture_writes_the_extra_caption_lines(tmp_path):
    from csdn.retrieval.visualize import BORDER, LINE_H, draw_ranking

    rng = np.random.default_rng(0)
    images = [rng.integers(0, 256, (40, 20, 3), dtype=np.uint8) for _ in range(3)]
    paths = []
    for i, image in enumerate(images):
        from PIL import Image

        paths.append(str(tmp_path / f"ir_{i}.png"))
        Image.fromarray(image).save(paths[-1])
    common = dict(query_ids=[1], gallery_ids=[1, 2, 3], topk=1, cell=(64, 64))
    plain = draw_ranking(paths[:1], paths, [[1]], **common)
    labelled = draw_ranking(paths[:1], paths, [[1]], query_cameras=[3], true_ranks=[2], **common)
    band = slice(64 + 2 * BORDER + 2 + 2 * LINE_H, 64 + 2 * BORDER + 2 + 3 * LINE_H)  # the third caption line
    third = [np.asarray(p.convert("L"))[12:][band, : 64 + 2 * BORDER + 12] for p in (plain, labelled)]
    assert (third[0] < 128).sum() == 0 < (third[1] < 128).sum()


@pytest.mark.parametrize("umask, mode", [(0o022, 0o644), (0o077, 0o600)])
def test_every_output_honours_the_umask(tmp_path, people, umask, mode):
    outputs = [tmp_path / "e.safetensors", tmp_path / "e.npy"]
    previous = os.umask(umask)
    try:
        for out in outputs:
            argv = ["embed", str(people / "visible"), "--model", "synthetic-tiny", "--modality", "rgb", "--quiet"]
            assert cli.main([*argv, "--output", str(out)]) == 0
    finally:
        os.umask(previous)
    written = [*outputs, *(p.with_name(p.name + ".json") for p in outputs)]
    assert {p.stat().st_mode & 0o777 for p in written} == {mode}


def _pickled_object(path: Path) -> Path:
    import argparse

    torch.save({"args": argparse.Namespace(lr=0.1)}, path)  # weights-only loading refuses the Namespace
    return path


def test_load_errors_never_pass_on_the_advice_to_unpickle_unsafely(tmp_path, capsys):
    from csdn.hub.official import read_official
    from csdn.train.checkpoint import load_checkpoint

    bad = _pickled_object(tmp_path / "last.pt")
    for read in (load_checkpoint, read_official):
        with pytest.raises(CheckpointError) as caught:
            read(bad)
        assert "weights_only" not in str(caught.value) and "objects besides tensors" in str(caught.value)
    assert cli.main(["eval", "--dataset", "folder", "--root", str(tmp_path), "--model", str(bad), "--quiet"]) == 2
    line = _one_line_error(capsys)
    assert "weights_only" not in line and "argparse.Namespace" in line
