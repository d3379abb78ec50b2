"""What a training run tells a researcher: schedules that scale with a shortened stage, one plain
line per epoch on stderr (with or without progress bars, redirected or not), epochs.csv, and a
closing line that says how to continue a stopped run."""

from __future__ import annotations

import csv
import math
import os
import subprocess
import sys
from pathlib import Path

import pytest
from _train_synthetic import write_identities

from csdn.train import TrainConfig, fit, learning_rate
from csdn.train.runlog import read_log
from csdn.train.schedule import stage_schedule

SMALL = dict(
    ids_per_batch=4,
    images_per_id=2,
    stage1_batch_size=8,
    stage2_batch_size=16,
    stage1_epochs=1,
    stage2_epochs=1,
    stage3_epochs=2,
    steps_per_epoch=1,
    stage3_lr=1e-3,
)


@pytest.fixture(scope="module")
def identities(tmp_path_factory) -> Path:
    return write_identities(tmp_path_factory.mktemp("ids"), range(6), per_modality=4)


# ---------------------------------------------------------------------------- schedules that scale
def test_a_shortened_stage3_scales_warmup_and_milestones_and_reaches_its_base_rate():
    config = TrainConfig(stage3_epochs=12)  # a tenth of the authors' 120
    schedule = stage_schedule(3, config)
    assert (schedule.warmup_epochs, schedule.milestones, schedule.scaled) == (1, (4, 7), True)
    rates = [learning_rate(3, epoch, config) for epoch in range(12)]
    assert rates[0] == pytest.approx(3e-6) and rates[1] == pytest.approx(3e-4)
    assert rates[3] == pytest.approx(3e-4) and rates[4] == pytest.approx(3e-5) and rates[7] == pytest.approx(3e-6)
    # the README's 60-epoch stage 3 now passes both milestones
    assert stage_schedule(3, TrainConfig(stage3_epochs=60)).milestones == (20, 35)


def test_shortened_stages_1_and_2_scale_their_warmup():
    config = TrainConfig(stage1_epochs=12, stage2_epochs=24)
    assert stage_schedule(1, config).warmup_epochs == 1 and stage_schedule(2, config).warmup_epochs == 2
    assert learning_rate(1, 0, config) == pytest.approx(1e-5)  # the warm-up's start
    # past the 1-epoch warm-up: on the 12-epoch cosine (counted from epoch 0, as the authors count it)
    assert learning_rate(1, 1, config) == pytest.approx(1e-6 + 0.5 * (3e-4 - 1e-6) * (1 + math.cos(math.pi / 12)))


def test_the_full_length_and_values_set_by_the_user_are_not_scaled():
    assert stage_schedule(3, TrainConfig()) == stage_schedule(3, TrainConfig(scale_schedule=False))
    assert not stage_schedule(3, TrainConfig()).scaled
    mine = TrainConfig(stage3_epochs=12, milestones=(8,), stage3_warmup_epochs=2)
    assert (stage_schedule(3, mine).warmup_epochs, stage_schedule(3, mine).milestones) == (2, (8,))
    authors = TrainConfig(stage3_epochs=4, scale_schedule=False)
    assert (stage_schedule(3, authors).warmup_epochs, stage_schedule(3, authors).milestones) == (10, (40, 70))
    assert max(learning_rate(3, e, authors) for e in range(4)) < 1e-4  # 4 epochs of a 10-epoch warm-up
    assert max(learning_rate(3, e, TrainConfig(stage3_epochs=4)) for e in range(4)) == pytest.approx(3e-4)


def test_checkpoints_from_before_scaling_resume_with_the_authors_values():
    saved = TrainConfig(stage3_epochs=12).to_dict()
    del saved["scale_schedule"]
    assert TrainConfig.from_checkpoint(saved).scale_schedule is False
    assert TrainConfig.from_dict({"stage3_epochs": 12}).scale_schedule is True


# ---------------------------------------------------------------------------- what a run prints and writes
def test_fit_prints_one_plain_line_per_stage_and_epoch_without_progress_bars(identities, tmp_path, capfd):
    fit(identities, TrainConfig(**SMALL), output_dir=tmp_path / "run", init="tiny", progress=False)
    err = capfd.readouterr().err
    assert "\r" not in err
    epoch_lines = [line for line in err.splitlines() if " epoch " in line and "img/s" in line]
    assert [line.split(" epoch ")[1].split()[0] for line in epoch_lines] == ["1/1", "1/1", "1/2", "2/2"]
    stage3 = epoch_lines[-1]
    for term in ("lr ", "loss ", "id ", "msel ", "triplet ", "i2t_visible ", "i2t_infrared "):
        assert term in stage3, term
    assert "stage 3: 2 of the authors' 120 epochs, so its schedule is scaled" in err
    assert "CSDN training finished" in err

    table = list(csv.DictReader((tmp_path / "run" / "epochs.csv").open(encoding="utf-8")))
    epochs = [r for r in read_log(tmp_path / "run" / "log.jsonl") if r["event"] == "epoch"]
    assert [(int(row["stage"]), int(row["epoch"])) for row in table] == [(1, 1), (2, 1), (3, 1), (3, 2)]
    assert float(table[-1]["loss"]) == pytest.approx(epochs[-1]["loss"])
    assert table[0]["msel"] == "" and table[-1]["msel"] != ""  # stage 1 has no MSEL column value
    stages = [r for r in read_log(tmp_path / "run" / "log.jsonl") if r["event"] == "stage"]
    assert stages[-1]["schedule_scaled"] and stages[-1]["milestones"] == [1, 1]


def test_evaluation_results_are_printed_in_percent_and_tabled(identities, tmp_path, capfd):
    config = TrainConfig(**{**SMALL, "stage1_epochs": 0, "stage2_epochs": 0, "stage3_epochs": 1})
    fit(
        identities,
        config,
        output_dir=tmp_path / "run",
        init="tiny",
        progress=False,
        evaluate=lambda model: {"rank1": 0.4567, "mAP": 0.25, "mINP": 0.125},
    )
    err = capfd.readouterr().err
    assert "| eval: rank-1 45.67%  mAP 25.00%  mINP 12.50%" in err
    assert "last eval (stage 3 epoch 1)" in err and "45.67%" in err.split("last eval")[1]
    row = next(csv.DictReader((tmp_path / "run" / "epochs.csv").open(encoding="utf-8")))
    assert float(row["eval_mAP"]) == pytest.approx(0.25)


def test_a_stopped_run_says_how_to_continue(identities, tmp_path, capfd):
    fit(identities, TrainConfig(**SMALL), output_dir=tmp_path / "run", init="tiny", progress=False, stop_after=1)
    err = capfd.readouterr().err
    assert "stopped after stage 1 epoch 1/1" in err and "--resume" in err


def test_the_cli_prints_epoch_lines_with_no_progress_and_stderr_in_a_file(identities, tmp_path):
    log = tmp_path / "nohup.out"
    options = ["--ids-per-batch", "4", "--images-per-id", "2", "--stage1-batch-size", "8"]
    options += ["--stage2-batch-size", "16", "--epochs-stage1", "1", "--epochs-stage2", "1", "--epochs-stage3", "1"]
    options += ["--steps-per-epoch", "1", "--no-scale-schedule"]
    command = [sys.executable, "-m", "csdn", "train", "--dataset", "folder", "--root", str(identities)]
    command += ["--output", str(tmp_path / "run"), "--init", "tiny", "--device", "cpu", "--no-progress", *options]
    with log.open("w") as stderr:
        done = subprocess.run(
            command, stderr=stderr, stdout=subprocess.DEVNULL, env={**os.environ, "OMP_NUM_THREADS": "1"}
        )
    text = log.read_text()
    assert done.returncode == 0, text
    assert "\r" not in text
    assert sum(1 for line in text.splitlines() if " epoch 1/1 " in line and "img/s" in line) == 3
    assert "stage 3: 1 epochs, warm-up 10, milestones [40, 70]" in text  # --no-scale-schedule: the authors' values
