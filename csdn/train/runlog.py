"""The run's JSON-lines log: one object per line (steps, epochs, evaluations, summary), and the
per-epoch CSV table derived from it.

Only rank 0 writes. Lines are flushed as they are written, so the log can be
followed while training runs and survives a crash up to the last line.
"""

from __future__ import annotations

import csv
import io
import json
import math
import os
import time
import warnings
from pathlib import Path
from typing import Any

from csdn.errors import RunLogError


def _plain(value: Any) -> Any:
    if hasattr(value, "item"):
        value = value.item()
    if isinstance(value, float) and not math.isfinite(value):
        return str(value)  # JSON has no NaN/inf
    return value


class RunLog:
    """Append-only JSONL writer; a disabled log (other ranks) accepts and drops everything."""

    def __init__(self, path: str | Path, enabled: bool = True, *, append: bool = True):
        """``append=False`` starts a new log (a fresh run), replacing one left by an attempt without checkpoint.

        Appending first cuts a torn last line off (a crash mid-write; :func:`read_log` has said so when the
        resume read the log), so the new records never continue it.
        """
        self.path = Path(path)
        self._file = None
        if enabled:
            self.path.parent.mkdir(parents=True, exist_ok=True)
            if append:
                _cut_torn_tail(self.path)
            self._file = open(self.path, "a" if append else "w", encoding="utf-8")

    def write(self, event: str, **fields: Any) -> None:
        if self._file is None:
            return
        record = {"event": event, "time": round(time.time(), 3), **{k: _plain(v) for k, v in fields.items()}}
        self._file.write(json.dumps(record) + "\n")
        self._file.flush()

    def close(self) -> None:
        if self._file is not None:
            self._file.close()
            self._file = None


def _record(line: bytes) -> dict[str, Any] | None:
    """The record a line holds, or None when it is not a JSON object (torn, zero-filled, garbage)."""
    try:
        record = json.loads(line)
    except ValueError:  # also UnicodeDecodeError
        return None
    return record if isinstance(record, dict) else None


def _lines(path: Path) -> list[tuple[int, bytes]]:
    """``(byte offset, line)`` of every non-blank line."""
    found, offset = [], 0
    for line in path.read_bytes().splitlines(keepends=True):
        if line.strip():
            found.append((offset, line))
        offset += len(line)
    return found


def read_log(path: str | Path) -> list[dict[str, Any]]:
    """All records of a run log, in order.

    A last line that is not a whole record (the process died while writing it) is left out with a
    warning naming the file; a damaged line before it is a :class:`csdn.errors.RunLogError` naming
    the file and the line, since records after it would be read without knowing what was lost.
    """
    path = Path(path)
    lines = _lines(path)
    records = []
    for number, (_, line) in enumerate(lines, 1):
        record = _record(line)
        if record is not None:
            records.append(record)
        elif number == len(lines):
            warnings.warn(
                f"{path}: its last line is not a whole record (cut off mid-write, e.g. by a crash); it is left out",
                RuntimeWarning,
                stacklevel=2,
            )
        else:
            raise RunLogError(
                f"{path}, line {number} of {len(lines)}: not a JSON record ({_preview(line)}); the run log is "
                "damaged: delete that line, or the whole file to start a new log (the checkpoints hold the "
                "training state, the log only records it)"
            )
    return records


def _preview(line: bytes) -> str:
    text = line.strip().decode("utf-8", errors="replace")
    return repr(text if len(text) <= 40 else text[:40] + "...")


def _cut_torn_tail(path: Path) -> None:
    """End the file with its last whole record: a torn last line is cut off, a missing final newline added."""
    if not path.is_file():
        return
    lines = _lines(path)
    if lines and _record(lines[-1][1]) is None:
        os.truncate(path, lines[-1][0])
    elif lines and not lines[-1][1].endswith(b"\n"):
        with open(path, "ab") as handle:
            handle.write(b"\n")


EPOCH_TABLE_FIRST = ("stage", "epoch", "lr", "seconds", "images_per_second")  # every other field is a loss term


def epoch_rows(records: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """One row per trained epoch (1-based ``epoch``): its means, and the metrics of evaluations
    run after it, prefixed by their event (``eval_mAP``, ``validation_rank1``)."""
    rows: dict[tuple[Any, Any], dict[str, Any]] = {}
    for record in records:
        key = (record.get("stage"), record.get("epoch", -1))
        fields = {k: v for k, v in record.items() if k not in ("event", "time", "stage", "epoch")}
        if record["event"] == "epoch":
            rows[key] = {"stage": key[0], "epoch": key[1] + 1, **fields}
        elif record["event"] in ("eval", "validation") and key in rows:
            rows[key].update({f"{record['event']}_{name}": value for name, value in fields.items()})
    return list(rows.values())


def epoch_table(records: list[dict[str, Any]]) -> str:
    """CSV text of :func:`epoch_rows`; columns in order of first appearance, blank where a stage lacks one."""
    rows = epoch_rows(records)
    columns = list(EPOCH_TABLE_FIRST)
    for row in rows:
        columns += [name for name in row if name not in columns]
    buffer = io.StringIO()
    writer = csv.DictWriter(buffer, fieldnames=columns, restval="", lineterminator="\n")
    writer.writeheader()
    writer.writerows(rows)
    return buffer.getvalue()
