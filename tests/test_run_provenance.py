"""A model csdn train made knows its dataset and RegDB trial: its card says so, csdn eval scores that
trial by default, and a trial whose test identities it was trained on is refused unless --allow-overlap."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch
from vireid_trees import make_regdb

import csdn
from csdn import cli

pytestmark = pytest.mark.usefixtures("single_thread")

TINY_RUN = [
    "--init", "tiny", "--epochs-stage1", "1", "--epochs-stage2", "1", "--epochs-stage3", "1",
    "--steps-per-epoch", "1", "--ids-per-batch", "2", "--images-per-id", "2",
    "--stage1-batch-size", "4", "--stage2-batch-size", "4", "--no-progress",
]  # fmt: skip


def _identities(root: Path, split: str, trial: int) -> set[str]:
    lines = (root / "idx" / f"{split}_visible_{trial}.txt").read_text().split("\n")
    return {Path(line.split()[0]).parent.name for line in lines if line.strip()}


@pytest.fixture(scope="module")
def regdb_run(tmp_path_factory) -> tuple[Path, Path]:
    base = tmp_path_factory.mktemp("regdb")
    root = make_regdb(base / "RegDB", trials=3, ids=8, images=3)
    out = base / "run"
    assert (
        cli.main(["train", "--dataset", "regdb", "--root", str(root), "--trial", "2", "--output", str(out), *TINY_RUN])
        == 0
    )
    return root, out


def test_the_saved_model_and_its_card_name_dataset_trial_and_origin(regdb_run):
    _, out = regdb_run
    meta = json.loads((out / "model" / "config.json").read_text())["meta"]
    assert (meta["dataset"], meta["trial"], meta["weights"]) == ("regdb", 2, "self-trained")
    card = (out / "model" / "README.md").read_text()
    assert "Trained on: **RegDB** (trial 2)" in card
    assert "unspecified" not in card
    assert "Self-trained" in card


def test_eval_defaults_to_the_models_own_trial(regdb_run, capsys):
    root, out = regdb_run
    result = csdn.evaluate(csdn.load(out / "model"), "regdb", root, progress=False)
    assert result.settings["trials"] == [2]
    assert cli.main(["eval", "--dataset", "regdb", "--root", str(root), "--model", str(out / "model"), "--quiet"]) == 0


def test_a_trial_overlapping_the_training_identities_is_refused_naming_the_overlap(regdb_run, capsys):
    root, out = regdb_run
    leaked = [t for t in (1, 3) if _identities(root, "train", 2) & _identities(root, "test", t)]
    assert leaked, "the synthetic tree should share identities between trials"
    trial = leaked[0]
    shared = sorted(_identities(root, "train", 2) & _identities(root, "test", trial), key=int)
    argv = ["eval", "--dataset", "regdb", "--root", str(root), "--model", str(out / "model"), "--quiet"]
    assert cli.main([*argv, "--trials", str(trial)]) == 2
    err = capsys.readouterr().err
    assert err.startswith("csdn: error: ") and err.count("\n") == 1
    assert f"{len(shared)} of trial {trial}'s" in err and ", ".join(shared) in err and "--allow-overlap" in err
    assert cli.main([*argv, "--trials", str(trial), "--allow-overlap"]) == 0


def test_a_converted_models_card_says_converted(tiny_model):
    from csdn.io.card import render_model_card

    tiny_model.provenance.update(weights="converted", dataset="sysu")
    card = render_model_card(tiny_model.config, 1, provenance=tiny_model.provenance)
    assert "converted from the authors' release" in card and "Self-trained" not in card


# ---------------------------------------------------------------------------- experiment file
def test_a_run_folder_records_how_it_was_made_and_repeats_from_its_experiment_file(regdb_run, tmp_path):
    import tomllib
    from safetensors.torch import load_file

    root, out = regdb_run
    experiment = tomllib.loads((out / "experiment.toml").read_text())
    assert experiment["data"] == {"dataset": "regdb", "root": str(root.resolve()), "trial": 2}
    assert experiment["model"]["init"] == "tiny" and experiment["train"]["stage3_epochs"] == 1
    record = json.loads((out / "run.json").read_text())
    assert record["csdn_version"] == csdn.__version__ and "--trial" in record["command"]
    again = tmp_path / "again"
    assert cli.main(["train", "--config", str(out / "experiment.toml"), "--output", str(again), "--no-progress"]) == 0
    first, second = load_file(out / "model" / "model.safetensors"), load_file(again / "model" / "model.safetensors")
    assert first.keys() == second.keys()
    assert all(torch.equal(first[k], second[k]) for k in first)  # the same computation, repeated
    assert tomllib.loads((again / "experiment.toml").read_text())["train"] == experiment["train"]


def test_options_override_the_experiment_file_and_unknown_fields_are_named(tmp_path, capsys):
    from csdn.cli.app import build_parser
    from csdn.cli.train import config_from_args, resolve_settings
    from csdn.train.experiment import experiment_text

    path = tmp_path / "x.toml"
    path.write_text(
        experiment_text({"data": {"dataset": "sysu", "root": "/d"}, "run": {"output": "o"}, "train": {"seed": 3}})
    )
    args = build_parser().parse_args(["train", "--config", str(path), "--output", "elsewhere", "--seed", "5"])
    settings = resolve_settings(args)
    assert (settings["dataset"], settings["root"], settings["output"]) == ("sysu", "/d", "elsewhere")
    assert config_from_args(args, settings["train"]).seed == 5
    path.write_text('[data]\ndataset = "sysu"\nroots = "/d"\n')
    assert cli.main(["train", "--config", str(path)]) == 2
    assert "[data] has unknown field(s) roots" in capsys.readouterr().err


@pytest.mark.parametrize("name", ["sysu", "regdb", "llcm"])
def test_the_shipped_experiment_files_hold_the_authors_settings(name):
    from csdn.train import TrainConfig
    from csdn.train.experiment import read_experiment

    tables = read_experiment(Path(__file__).parents[1] / "examples" / f"{name}.toml")
    assert tables["data"]["dataset"] == name and tables["model"]["init"] == "RN50"
    assert TrainConfig.from_dict(tables["train"]) == TrainConfig()  # the paper's defaults, spelled out


# ---------------------------------------------------------------------------- offline start
def test_an_init_that_cannot_be_had_names_every_way_to_initialise(tmp_path, capsys, hub_offline, monkeypatch):
    from _train_synthetic import write_identities

    monkeypatch.setenv("HF_HOME", str(tmp_path / "empty-cache"))
    monkeypatch.setenv("HUGGINGFACE_HUB_CACHE", str(tmp_path / "empty-cache" / "hub"))
    root = write_identities(tmp_path / "data", range(4), per_modality=4)
    argv = [
        "train",
        "--dataset",
        "folder",
        "--root",
        str(root),
        "--output",
        str(tmp_path / "run"),
        "--no-progress",
        "--ids-per-batch",
        "2",
    ]
    for init in ("RN50", str(tmp_path / "missing.pt")):
        assert cli.main([*argv, "--init", init]) == 2
        err = capsys.readouterr().err
        assert err.count("\n") == 1, err
        for way in ("--init /path/to/RN50.pt", "open_clip or timm", "HF_HUB_OFFLINE=1", "--init tiny"):
            assert way in err


# ---------------------------------------------------------------------------- logs
def test_epoch_lines_under_no_progress_with_metrics_in_percent_a_csv_and_the_stop_note(regdb_run, tmp_path, capsys):
    import csv

    root, _ = regdb_run
    out = tmp_path / "run"
    argv = ["train", "--dataset", "regdb", "--root", str(root), "--trial", "2", "--output", str(out), *TINY_RUN]
    argv[argv.index("--epochs-stage3") + 1] = "2"
    capsys.readouterr()
    assert cli.main([*argv, "--eval-every", "1", "--stop-after", "3"]) == 0  # stages 1, 2 and one stage-3 epoch
    err = capsys.readouterr().err
    assert "\r" not in err  # stderr is no terminal here: no bars
    lines = [line for line in err.splitlines() if line.startswith("stage ") and " epoch " in line.split("  ")[0]]
    assert [line.split("  ")[0] for line in lines] == [
        "stage 1 (prompts) epoch 1/1",
        "stage 2 (fusion) epoch 1/1",
        "stage 3 (image) epoch 1/2",
    ]
    assert "lr " in lines[2] and "img/s" in lines[2] and "loss " in lines[2]
    assert "rank-1 " in lines[2] and "mAP " in lines[2] and "mINP " in lines[2] and lines[2].endswith("%")
    assert "stopped after stage 3 epoch 1/2" in err and "--resume" in err
    assert "stage 3: 2 of the authors' 120 epochs, so its schedule is scaled" in err  # the scaling, stated
    rows = list(csv.DictReader((out / "epochs.csv").open()))
    assert [(r["stage"], r["epoch"]) for r in rows] == [("1", "1"), ("2", "1"), ("3", "1")]
    log = [json.loads(x) for x in (out / "log.jsonl").read_text().splitlines()]
    evaluated = next(r for r in log if r["event"] == "eval")
    assert float(rows[2]["eval_rank1"]) == pytest.approx(evaluated["rank1"], abs=1e-6)
    assert f"rank-1 {100 * evaluated['rank1']:.2f}%" in lines[2]
