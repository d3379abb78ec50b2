"""A run directory kept consistent across crashes: checkpoint order, the best model, the log, temporaries.

Layout: ``checkpoints/last.pt`` (where to resume), ``checkpoints/best.pt`` and the
loadable model ``best/`` (the best evaluation so far), ``log.jsonl``, and with a
:class:`SnapshotPolicy` the snapshots ``checkpoints/stage<S>_epoch_<N>.pt`` (stage S after
N of its epochs: unique across the three stages), the oldest removed beyond ``keep``.

A snapshot is written before ``last.pt`` and old ones removed after it, so a crash
never leaves fewer snapshots than the policy promises. The best model is written
before ``last.pt``, so ``last.pt`` never names a best that is not on disk; ``best/`` is derived from ``best.pt`` and rebuilt from it
when a crash left the two apart. On resume the log is cut back to the
checkpoint, so steps of an epoch that was interrupted are not listed twice.
"""

from __future__ import annotations

import json
import re
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from csdn.config import PROVENANCE_KEY
from csdn.errors import SettingError, setting_name
from csdn.system.fileio import atomic_write_text
from csdn.train.checkpoint import BEST, LAST, load_checkpoint, save_checkpoint
from csdn.train.runlog import read_log

BEST_MODEL = "best"
CHECKPOINT_EVENT = "checkpoint"  # log record written right after last.pt
# what csdn.system.fileio.atomic_write leaves behind when a process dies mid-write
_TEMPORARY = re.compile(r"^\..+\.[0-9a-f]{8}\.tmp$")
_SNAPSHOT = re.compile(r"^stage([1-3])_epoch_([0-9]+)\.pt$")

SaveModel = Callable[[dict[str, Any], Path], None]  # (checkpoint state, directory) -> writes a loadable model


def checkpoint_dir(output: Path) -> Path:
    return output / "checkpoints"


def remove_orphan_temporaries(output: Path) -> list[Path]:
    """Delete half-written files of a killed process (``.NAME.<8 hex>.tmp``); return what was removed."""
    removed = []
    for folder in (output, checkpoint_dir(output), output / BEST_MODEL, output / "model"):
        if folder.is_dir():
            for path in folder.iterdir():
                if path.is_file() and _TEMPORARY.match(path.name):
                    path.unlink(missing_ok=True)
                    removed.append(path)
    return removed


@dataclass(frozen=True)
class SnapshotPolicy:
    """Keep ``checkpoints/stage<S>_epoch_<N>.pt`` after every ``every``-th epoch of each stage (0: none),
    at most ``keep`` of them (None: all), the oldest removed first; ``last.pt`` is always kept."""

    every: int = 0
    keep: int | None = None

    def __post_init__(self) -> None:
        if isinstance(self.every, bool) or not isinstance(self.every, int) or self.every < 0:
            raise SettingError(
                f"{setting_name('save_every')} must be 0 (no snapshots) or a number of epochs, got {self.every!r}"
            )
        if self.keep is not None:
            if isinstance(self.keep, bool) or not isinstance(self.keep, int) or self.keep < 1:
                raise SettingError(f"{setting_name('keep')} must be at least 1 snapshot, got {self.keep!r}")
            if self.every == 0:
                raise SettingError(
                    f"{setting_name('keep')} bounds the snapshots {setting_name('save_every')} N keeps; give both"
                )

    def due(self, done: int) -> bool:
        """Whether the checkpoint after ``done`` epochs of a stage is also kept as a snapshot."""
        return self.every > 0 and done % self.every == 0


NO_SNAPSHOTS = SnapshotPolicy()


def snapshot_name(stage: int, done: int) -> str:
    return f"stage{stage}_epoch_{done}.pt"


def snapshots(output: Path) -> list[Path]:
    """The run's snapshots, oldest (stage, epoch) first."""
    directory = checkpoint_dir(output)
    found = [(m, p) for p in directory.glob("stage*_epoch_*.pt") if (m := _SNAPSHOT.match(p.name)) and p.is_file()]
    return [p for m, p in sorted(found, key=lambda mp: (int(mp[0].group(1)), int(mp[0].group(2))))]


def save_epoch(
    output: Path,
    state: dict[str, Any],
    new_best: bool,
    save_model: SaveModel,
    policy: SnapshotPolicy | None = None,
) -> Path | None:
    """Write the epoch's checkpoint; a new best goes first (``best.pt``, then ``best/``), then a due
    snapshot, ``last.pt`` last, and snapshots beyond ``policy.keep`` are removed; returns the snapshot."""
    directory, policy = checkpoint_dir(output), policy or NO_SNAPSHOTS
    if new_best:
        save_checkpoint(state, directory / BEST)
        save_model(state, output / BEST_MODEL)
    snapshot = directory / snapshot_name(state["stage"], state["epoch"]) if policy.due(state["epoch"]) else None
    if snapshot is not None:
        save_checkpoint(state, snapshot)
    save_checkpoint(state, directory / LAST)
    if policy.keep is not None:
        kept = snapshots(output)
        for old in kept[: max(0, len(kept) - policy.keep)]:
            old.unlink(missing_ok=True)
    return snapshot


def _best_position(best: dict[str, Any] | None) -> tuple[int, int] | None:
    return None if best is None else (int(best["stage"]), int(best["epoch"]))


def _saved_model_best(directory: Path) -> dict[str, Any] | None:
    try:
        meta = json.loads((directory / "config.json").read_text(encoding="utf-8")).get(PROVENANCE_KEY, {})
    except (OSError, ValueError):
        return None
    return meta.get("training", {}).get("best")


def reconcile_best(output: Path, resumed_best: dict[str, Any] | None, save_model: SaveModel) -> dict[str, Any] | None:
    """The best record to continue with, after making ``best/`` agree with ``best.pt``.

    ``best.pt`` is the record of truth: it is written first, so after a crash it
    may be newer than the ``best`` that ``last.pt`` remembers, never older.
    """
    path = checkpoint_dir(output) / BEST
    if not path.is_file():
        return resumed_best
    state = load_checkpoint(path)
    best = state["best"]
    if _best_position(_saved_model_best(output / BEST_MODEL)) != _best_position(best):
        save_model(state, output / BEST_MODEL)
    return best


def truncate_log(path: Path, stage: int, epoch: int) -> int:
    """Cut ``log.jsonl`` back to the checkpoint at (``stage``, ``epoch`` done); return the records dropped.

    Everything after that checkpoint's record - steps of the interrupted epoch,
    an evaluation or summary that followed - is what the resumed run redoes.
    """
    if not path.is_file():
        return 0
    records = read_log(path)
    cut = None
    for index, record in enumerate(records):
        if record.get("event") == CHECKPOINT_EVENT and (record["stage"], record["epoch"]) == (stage, epoch):
            cut = index + 1
    if cut is None or cut == len(records):
        return 0
    atomic_write_text(path, "".join(json.dumps(record) + "\n" for record in records[:cut]))
    return len(records) - cut
