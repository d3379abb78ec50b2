"""A run directory kept consistent across crashes: checkpoint order, the best model, the log, temporaries.

Layout: ``checkpoints/last.pt`` (where to resume), ``checkpoints/best.pt`` and the
loadable model ``best/`` (the best evaluation so far), ``log.jsonl``.

The best model is written before ``last.pt``, so ``last.pt`` never names a best
that is not on disk; ``best/`` is derived from ``best.pt`` and rebuilt from it
when a crash left the two apart. On resume the log is cut back to the
checkpoint, so steps of an epoch that was interrupted are not listed twice.
"""

from __future__ import annotations

import json
import re
from collections.abc import Callable
from pathlib import Path
from typing import Any

from csdn.system.fileio import atomic_write_text
from csdn.train.checkpoint import BEST, LAST, load_checkpoint, save_checkpoint
from csdn.train.runlog import read_log

BEST_MODEL = "best"
CHECKPOINT_EVENT = "checkpoint"  # log record written right after last.pt
# what csdn.system.fileio.atomic_write leaves behind when a process dies mid-write
_TEMPORARY = re.compile(r"^\..+\.[0-9a-f]{8}\.tmp$")

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


def save_epoch(output: Path, state: dict[str, Any], new_best: bool, save_model: SaveModel) -> None:
    """Write the epoch's checkpoint; a new best goes first (``best.pt``, then ``best/``), ``last.pt`` last."""
    directory = checkpoint_dir(output)
    if new_best:
        save_checkpoint(state, directory / BEST)
        save_model(state, output / BEST_MODEL)
    save_checkpoint(state, directory / LAST)


def _best_position(best: dict[str, Any] | None) -> tuple[int, int] | None:
    return None if best is None else (int(best["stage"]), int(best["epoch"]))


def _saved_model_best(directory: Path) -> dict[str, Any] | None:
    try:
        meta = json.loads((directory / "config.json").read_text(encoding="utf-8")).get("meta", {})
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
