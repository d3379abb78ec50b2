"""Resuming is bit-identical from every point of a run, and a run directory survives crashes:
stale best models, orphan temporaries, repeated log lines, runs blocked by their own bad config."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch
from _train_synthetic import write_identities

import csdn
import csdn.train.trainer as trainer_module
from csdn import cli
from csdn.train import TrainConfig, fit
from csdn.train.checkpoint import load_checkpoint
from csdn.train.runlog import read_log

# 8 identities x 4 images: feature samples of (32 // 8 + 1) * 8 = 40 pairs -> 2 stage-1 and
# 2 stage-2 steps per epoch; stage 3 takes 2 steps. Two epochs per stage.
CONFIG = TrainConfig(
    ids_per_batch=4,
    images_per_id=2,
    stage1_batch_size=16,
    stage2_batch_size=32,
    stage1_epochs=2,
    stage2_epochs=2,
    stage3_epochs=2,
    steps_per_epoch=2,
    warmup_epochs=1,
    stage1_lr=1e-2,
    stage2_lr=1e-2,
    stage3_lr=1e-3,
    stage3_warmup_epochs=1,
    milestones=(),
)
# stop_after=k stops after k epochs: inside a stage (1, 3, 5) or at a stage boundary (2, 4)
STOPS = {1: "mid stage 1", 2: "stage 1 -> 2", 3: "mid stage 2", 4: "stage 2 -> 3", 5: "mid stage 3"}


pytestmark = pytest.mark.usefixtures("single_thread")


@pytest.fixture(scope="module")
def root(tmp_path_factory) -> Path:
    return write_identities(tmp_path_factory.mktemp("resume"), range(8), per_modality=4)


def _metric(model) -> dict[str, float]:
    """A deterministic function of the weights, standing in for an evaluation."""
    return {"mAP": float(model.gem_head.classifier.weight.norm())}


def _fit(root: Path, output: Path, config: TrainConfig | None = CONFIG, **options):
    return fit(root, config, output_dir=output, init="tiny", progress=False, **options)


@pytest.fixture(scope="module")
def uninterrupted(root, tmp_path_factory) -> dict:
    output = tmp_path_factory.mktemp("uninterrupted")
    model = _fit(root, output, validate=_metric)
    return {"state": model.state_dict(), "output": output}


def _assert_same_weights(model, expected: dict[str, torch.Tensor]) -> None:
    state = model.state_dict()
    assert state.keys() == expected.keys()
    mismatched = [name for name in state if not torch.equal(state[name], expected[name])]
    assert not mismatched, mismatched


def _steps(output: Path) -> list[tuple[int, int, int]]:
    return [(r["stage"], r["epoch"], r["step"]) for r in read_log(output / "log.jsonl") if r["event"] == "step"]


@pytest.mark.parametrize("stop", sorted(STOPS), ids=[STOPS[k] for k in sorted(STOPS)])
def test_resume_from_every_boundary_and_mid_stage_point_is_bit_identical(root, uninterrupted, tmp_path, stop):
    _fit(root, tmp_path, stop_after=stop, validate=_metric)
    position = load_checkpoint(tmp_path / "checkpoints" / "last.pt")
    assert (position["stage"] - 1) * 2 + position["epoch"] == stop
    assert not (tmp_path / "model").exists()
    resumed = _fit(root, tmp_path, None, resume=True, validate=_metric)
    _assert_same_weights(resumed, uninterrupted["state"])
    assert _steps(tmp_path) == _steps(uninterrupted["output"])  # each step logged once, in order


def test_resume_mid_stage_3_with_a_persistent_worker_is_bit_identical(root, uninterrupted, tmp_path):
    """One worker process serving stage 3's epochs from the pixel cache, stopped and resumed inside the
    stage, ends on the weights of the uninterrupted in-process run, as does a whole run served by one."""
    _assert_same_weights(_fit(root, tmp_path / "whole", num_workers=1), uninterrupted["state"])
    _fit(root, tmp_path, stop_after=5, validate=_metric, num_workers=1)
    resumed = _fit(root, tmp_path, None, resume=True, validate=_metric, num_workers=1)
    _assert_same_weights(resumed, uninterrupted["state"])


def test_resume_of_the_clean_recipe_inside_stage_2_is_bit_identical(root, tmp_path):
    clean = TrainConfig.from_dict({**CONFIG.to_dict(), "recipe": "clean"})
    expected = _fit(root, tmp_path / "full", clean).state_dict()
    _fit(root, tmp_path / "split", clean, stop_after=3)
    _assert_same_weights(_fit(root, tmp_path / "split", None, resume=True), expected)


def test_a_kill_mid_epoch_drops_its_log_lines_on_resume(root, uninterrupted, tmp_path, monkeypatch):
    calls = {"n": 0}
    real_step = trainer_module.fusion_step

    def killed(*args, **kwargs):
        calls["n"] += 1
        if calls["n"] == 4:  # stage 2, epoch 1, second step: one step of that epoch already logged
            raise KeyboardInterrupt
        return real_step(*args, **kwargs)

    monkeypatch.setattr(trainer_module, "fusion_step", killed)
    with pytest.raises(KeyboardInterrupt):
        _fit(root, tmp_path, validate=_metric)
    monkeypatch.undo()
    assert (2, 1, 0) in _steps(tmp_path)
    resumed = _fit(root, tmp_path, None, resume=True, validate=_metric)
    _assert_same_weights(resumed, uninterrupted["state"])
    assert _steps(tmp_path) == _steps(uninterrupted["output"])
    starts = [r for r in read_log(tmp_path / "log.jsonl") if r["event"] == "start"]
    assert starts[-1]["resumed_from"] == {"stage": 2, "epoch": 1} and starts[-1]["records_dropped"] == 1


def test_a_crash_between_best_pt_and_last_pt_leaves_no_stale_best(root, uninterrupted, tmp_path, monkeypatch):
    def crash(state, directory):  # best.pt is on disk; best/ and last.pt are not yet
        raise KeyboardInterrupt

    monkeypatch.setattr(trainer_module, "save_model_from_state", crash)
    with pytest.raises(KeyboardInterrupt):
        _fit(root, tmp_path, validate=_metric)
    monkeypatch.undo()
    best_pt, last_pt = (load_checkpoint(tmp_path / "checkpoints" / name) for name in ("best.pt", "last.pt"))
    assert (best_pt["stage"], best_pt["epoch"]) == (3, 1) and (last_pt["stage"], last_pt["epoch"]) == (2, 2)
    assert not (tmp_path / "best").exists()

    resumed = _fit(root, tmp_path, None, resume=True, validate=_metric)
    _assert_same_weights(resumed, uninterrupted["state"])
    summary = json.loads((tmp_path / "summary.json").read_text())
    best_pt = load_checkpoint(tmp_path / "checkpoints" / "best.pt")
    best_model = csdn.load(tmp_path / "best")
    assert summary["best"] == best_pt["best"] == best_model.provenance["training"]["best"]
    assert summary["best"] == json.loads((uninterrupted["output"] / "summary.json").read_text())["best"]
    _assert_same_weights(best_model, best_pt["model"])


def test_a_checkpoint_with_its_provenance_inside_the_model_config_still_resumes_and_loads(
    root, uninterrupted, tmp_path
):
    """Checkpoints written while the config held the provenance: ``model_config`` flat (format 1), ``meta``
    among its fields. Resuming one keeps its record, and ``--model`` reads it."""
    from csdn.config import split_provenance
    from csdn.train import load_model
    from csdn.train.checkpoint import save_checkpoint

    _fit(root, tmp_path, stop_after=5, validate=_metric)
    last = tmp_path / "checkpoints" / "last.pt"
    state = load_checkpoint(last)
    config, _ = split_provenance(state["model_config"])
    flat = {k: list(v) if isinstance(v, tuple) else v for k, v in vars(config).items()}
    del flat["architecture"]
    recorded = {"weights": "self-trained", "dataset": "folder", "note": "written by 0.1"}
    save_checkpoint({**state, "model_config": {"format_version": 1, **flat, "meta": recorded}}, last)

    checkpoint_model = load_model(last, device="cpu")
    assert checkpoint_model.provenance == recorded
    _assert_same_weights(checkpoint_model, state["model"])
    resumed = _fit(root, tmp_path, None, resume=True, validate=_metric)
    _assert_same_weights(resumed, uninterrupted["state"])
    assert resumed.provenance["note"] == "written by 0.1"  # the record came through the resume
    assert csdn.load(tmp_path / "model").provenance["note"] == "written by 0.1"
    again = load_checkpoint(last)["model_config"]  # and is written back as config.json holds it
    assert again["format_version"] == 2 and again["meta"]["note"] == "written by 0.1"


def test_evaluate_is_logged_but_never_picks_the_model(root, tmp_path):
    model = _fit(root, tmp_path, evaluate=_metric)
    records = read_log(tmp_path / "log.jsonl")
    assert [(r["stage"], r["epoch"]) for r in records if r["event"] == "eval"] == [(3, 0), (3, 1)]
    assert not [r for r in records if r["event"] == "validation"]
    assert not (tmp_path / "best").exists() and not (tmp_path / "checkpoints" / "best.pt").exists()
    assert json.loads((tmp_path / "summary.json").read_text())["best"] is None
    _assert_same_weights(csdn.load(tmp_path / "model"), model.state_dict())


def test_orphan_temporaries_of_a_killed_write_are_removed_at_the_next_start(root, tmp_path):
    _fit(root, tmp_path, stop_after=1)
    orphans = [tmp_path / "checkpoints" / ".last.pt.0badc0de.tmp", tmp_path / ".summary.json.12345678.tmp"]
    kept = tmp_path / "checkpoints" / "notes.tmp"  # not a name csdn writes: left alone
    for path in (*orphans, kept):
        path.write_bytes(b"partial")
    _fit(root, tmp_path, None, resume=True, stop_after=1)
    assert not any(path.exists() for path in orphans) and kept.exists()


def test_a_run_refused_by_its_own_config_leaves_nothing_that_blocks_the_fixed_rerun(root, tmp_path):
    too_many = TrainConfig.from_dict({**CONFIG.to_dict(), "ids_per_batch": 9})  # 8 identities
    with pytest.raises(ValueError, match="lower ids_per_batch"):
        _fit(root, tmp_path, too_many)
    with pytest.raises(ValueError, match="precision='fp16' needs a CUDA device"):
        _fit(root, tmp_path, TrainConfig.from_dict({**CONFIG.to_dict(), "precision": "fp16"}), device="cpu")
    assert not (tmp_path / "checkpoints").exists() and not (tmp_path / "log.jsonl").exists()
    _fit(root, tmp_path, stop_after=1)  # no resume=True needed
    assert (tmp_path / "checkpoints" / "last.pt").is_file()


@pytest.mark.parametrize("value", [-1, 0, 1.5, True])
def test_nonsense_stop_after_is_an_error(root, tmp_path, value):
    with pytest.raises(ValueError, match="stop_after must be a whole number of epochs >= 1"):
        _fit(root, tmp_path, stop_after=value)
    assert not (tmp_path / "checkpoints").exists()


def test_cli_rejects_a_negative_stop_after(root, tmp_path, capsys):
    code = cli.main(
        [
            "train",
            "--dataset",
            "folder",
            "--root",
            str(root),
            "--output",
            str(tmp_path / "run"),
            "--init",
            "tiny",
            "--no-progress",
            "--stop-after",
            "-1",
        ]
    )
    assert code == 2
    assert "--stop-after must be a whole number of epochs >= 1" in capsys.readouterr().err
