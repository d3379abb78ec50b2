"""Two-process data-parallel training on CPU (gloo) through ``torchrun -m csdn train``: it completes,
only rank 0 writes, and a run stopped part-way and resumed ends with the same weights."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest
import torch
from _train_synthetic import write_identities
from safetensors.torch import load_file

from csdn.train.checkpoint import load_checkpoint
from csdn.train.runlog import read_log

OPTIONS = [
    "--dataset",
    "folder",
    "--init",
    "tiny",
    "--device",
    "cpu",
    "--no-progress",
    "--ids-per-batch",
    "4",
    "--images-per-id",
    "2",
    "--stage1-batch-size",
    "8",
    "--stage2-batch-size",
    "16",
    "--epochs-stage1",
    "1",
    "--epochs-stage2",
    "1",
    "--epochs-stage3",
    "2",
    "--steps-per-epoch",
    "2",
    "--stage3-warmup-epochs",
    "0",
    "--stage3-lr",
    "1e-3",
]


def _torchrun(root: Path, output: Path, *extra: str) -> subprocess.CompletedProcess:
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    command = [
        sys.executable,
        "-m",
        "torch.distributed.run",
        "--standalone",
        "--nproc_per_node=2",
        "-m",
        "csdn",
        "train",
        *OPTIONS,
        "--root",
        str(root),
        "--output",
        str(output),
        *extra,
    ]
    result = subprocess.run(command, env=env, capture_output=True, text=True, timeout=300)
    assert result.returncode == 0, result.stdout[-3000:] + result.stderr[-3000:]
    return result


@pytest.fixture(scope="module")
def root(tmp_path_factory) -> Path:
    return write_identities(tmp_path_factory.mktemp("ddp"), range(8), per_modality=4)


def test_two_process_gloo_run_completes_and_resumes_identically(root, tmp_path):
    full = tmp_path / "full"
    _torchrun(root, full)
    records = read_log(full / "log.jsonl")
    assert [r["world_size"] for r in records if r["event"] == "start"] == [2]
    steps = [(r["stage"], r["epoch"], r["step"]) for r in records if r["event"] == "step"]
    assert len(steps) == len(set(steps)), "every step is logged once, by rank 0 only"
    # stage 1: 32 images per modality / (8 per rank x 2 ranks) = 2 steps; stage 3: --steps-per-epoch 2
    assert sum(1 for s in steps if s[0] == 1) == 2 and sum(1 for s in steps if s[0] == 3) == 4
    assert load_checkpoint(full / "checkpoints" / "last.pt")["sampler"]["world_size"] == 2

    split = tmp_path / "split"
    _torchrun(root, split, "--stop-after", "3")  # stage 1, stage 2, first stage-3 epoch
    position = load_checkpoint(split / "checkpoints" / "last.pt")
    assert (position["stage"], position["epoch"]) == (3, 1)
    assert not (split / "model").exists()
    _torchrun(root, split, "--resume")
    expected = load_file(str(full / "model" / "model.safetensors"))
    resumed = load_file(str(split / "model" / "model.safetensors"))
    assert expected.keys() == resumed.keys()
    assert all(torch.equal(expected[name], resumed[name]) for name in expected)


def test_cli_reports_bad_input_without_a_traceback(tmp_path):
    result = subprocess.run(
        [
            sys.executable,
            "-m",
            "csdn",
            "train",
            "--dataset",
            "folder",
            "--root",
            str(tmp_path),
            "--output",
            str(tmp_path / "out"),
            "--init",
            "tiny",
        ],
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert result.returncode == 2
    assert "visible/<pid>" in result.stderr and "Traceback" not in result.stderr
