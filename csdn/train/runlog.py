"""The run's JSON-lines log: one object per line (steps, epochs, evaluations, summary).

Only rank 0 writes. Lines are flushed as they are written, so the log can be
followed while training runs and survives a crash up to the last line.
"""

from __future__ import annotations

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
