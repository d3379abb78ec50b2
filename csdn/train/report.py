"""What a researcher reads of a run: one plain line per epoch on stderr, and the same as ``epochs.csv``.

The line is printed whatever ``progress`` says (``--no-progress`` drops only the bars),
and bars are drawn only on a terminal, so a log under ``nohup`` holds no carriage
returns. Metrics are shown in percent, the way papers report them. The CSV is
rebuilt from ``log.jsonl`` (the record of truth, cut back on resume), one row per
epoch with that epoch's evaluation, if any.
"""

from __future__ import annotations

import csv
import io
import sys
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

from tqdm.auto import tqdm

from csdn.system.fileio import atomic_write_text

EPOCH_CSV = "epochs.csv"
METRIC_LABELS = {"rank1": "rank-1", "mAP": "mAP", "mINP": "mINP"}
_FIXED = ("stage", "epoch", "lr", "seconds", "images_per_second")
_NOT_LOSSES = {"event", "time", *_FIXED}


def bars_enabled(progress: bool) -> bool:
    """Progress bars only when asked for and stderr is a terminal (no ``\\r`` in redirected logs)."""
    return progress and sys.stderr.isatty()


def say(line: str) -> None:
    """One line on stderr, above any progress bar."""
    tqdm.write(line, file=sys.stderr)


def epoch_line(stage_name: str, record: Mapping[str, Any], epochs: int, metrics: Mapping[str, float] | None) -> str:
    """``stage 3 (image) epoch 4/120 lr 3.00e-04 loss 1.2345 id 0.9 ... 812.3 img/s rank-1 45.50% ...``."""
    losses = {k: v for k, v in record.items() if k not in _NOT_LOSSES}
    parts = [
        f"stage {record['stage']} ({stage_name}) epoch {record['epoch'] + 1}/{epochs}",
        f"lr {record['lr']:.2e}",
        *(f"{name} {value:.4f}" for name, value in losses.items()),
        f"{record['images_per_second']:.1f} img/s",
    ]
    measured = metrics or {}
    parts += [f"{label} {100 * measured[key]:.2f}%" for key, label in METRIC_LABELS.items() if key in measured]
    return "  ".join(parts)


def epoch_rows(records: Sequence[Mapping[str, Any]]) -> list[dict[str, Any]]:
    """One row per epoch record, with the evaluation that followed it (metrics in percent)."""
    rows: list[dict[str, Any]] = []
    for record in records:
        if record.get("event") == "epoch":
            rows.append({k: v for k, v in record.items() if k not in ("event", "time")})
        elif (
            record.get("event") == "eval"
            and rows
            and (rows[-1]["stage"], rows[-1]["epoch"])
            == (
                record["stage"],
                record["epoch"],
            )
        ):
            rows[-1].update({key: round(100 * float(record[key]), 4) for key in METRIC_LABELS if key in record})
    for row in rows:
        row["epoch"] += 1  # counted from 1, as the lines say
    return rows


def write_epoch_csv(path: Path, records: Sequence[Mapping[str, Any]]) -> None:
    rows = epoch_rows(records)
    columns = list(_FIXED)
    for row in rows:
        columns += [key for key in row if key not in columns]
    buffer = io.StringIO()
    writer = csv.DictWriter(buffer, fieldnames=columns, lineterminator="\n")
    writer.writeheader()
    writer.writerows(rows)
    atomic_write_text(path, buffer.getvalue())


def summary_table(metrics: Mapping[str, float]) -> str:
    """The last evaluation as the literature's table row (percent)."""
    keys = [key for key in METRIC_LABELS if key in metrics]
    header = " | ".join(f"{METRIC_LABELS[k]:>7}" for k in keys)
    values = " | ".join(f"{100 * metrics[k]:6.2f}%" for k in keys)
    return f"{header}\n{values}"
