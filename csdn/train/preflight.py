"""Checks ``fit`` makes before it writes anything: settings that would fail part-way, and resumes that
would not continue the same run."""

from __future__ import annotations

import warnings
from pathlib import Path
from typing import Any

import torch

from csdn.errors import setting_name
from csdn.train import ddp
from csdn.train.config import TrainConfig
from csdn.train.data import TrainImages
from csdn.train.sampler import check_ids_per_batch
from csdn.train.stages import autocast_factory


def _require_whole(name: str, value: Any, minimum: int, counted: str, note: str = "") -> None:
    if isinstance(value, bool) or not isinstance(value, int) or value < minimum:
        raise ValueError(f"{setting_name(name)} must be a whole number of {counted} >= {minimum}{note}, got {value!r}")


def check_before_writing(
    config: TrainConfig,
    train_set: TrainImages,
    device: torch.device,
    *,
    stop_after: int | None,
    eval_every: int,
    num_workers: int,
) -> None:
    """Every check that would otherwise fail part-way, made before anything is written.

    A run that stopped on one of these after its first checkpoint would block
    the corrected rerun (the folder then "already holds a training run").
    """
    if stop_after is not None:
        _require_whole("stop_after", stop_after, 1, "epochs", " (or None for no limit)")
    _require_whole("eval_every", eval_every, 1, "epochs")
    _require_whole("num_workers", num_workers, 0, "processes")
    check_ids_per_batch(train_set, config.ids_per_batch)
    autocast_factory(config.precision, device)


def check_resume(
    checkpoint: dict[str, Any], config: TrainConfig, train_set: TrainImages, world: ddp.World, path: Path
) -> None:
    """Refuse to resume a checkpoint made with another config or on other data; warn on another world size."""
    changed = TrainConfig.from_checkpoint(checkpoint["train_config"]).differences(config)
    if changed:
        raise ValueError(
            f"cannot resume {path}: the training config differs from the checkpoint's ({'; '.join(changed)}); "
            "resume with the same TrainConfig or start a new output directory"
        )
    if checkpoint["data"] != train_set.fingerprint():
        raise ValueError(
            f"cannot resume {path}: it was trained on {checkpoint['data']} but this training set is "
            f"{train_set.fingerprint()}"
        )
    if checkpoint["sampler"]["world_size"] != world.size:
        warnings.warn(
            f"resuming a run of {checkpoint['sampler']['world_size']} process(es) on {world.size}: "
            "batches will differ from an uninterrupted run",
            stacklevel=3,
        )
