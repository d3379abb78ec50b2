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
import time
from pathlib import Path
from typing import Any


def _plain(value: Any) -> Any:
    if hasattr(value, "item"):
        value = value.item()
    if isinstance(value, float) and not math.isfinite(value):
        return str(value)  # JSON has no NaN/inf
    return value


class RunLog:
    """Append-only JSONL writer; a disabled log (other ranks) accepts and drops everything."""

    def __init__(self, path: str | Path, enabled: bool = True, *, append: bool = True):
        """``append=False`` starts a new log (a fresh run), replacing one left by an attempt without checkpoint."""
        self.path = Path(path)
        self._file = None
        if enabled:
            self.path.parent.mkdir(parents=True, exist_ok=True)
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


def read_log(path: str | Path) -> list[dict[str, Any]]:
    """All records of a run log, in order."""
    with open(path, encoding="utf-8") as handle:
        return [json.loads(line) for line in handle if line.strip()]


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
