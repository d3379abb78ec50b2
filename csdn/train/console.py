"""What a training run prints: one plain line per stage and per epoch, a closing summary.

Lines go to stderr through ``tqdm.write`` (so they never tear a live progress bar) and hold no
carriage returns, so a run under ``nohup`` or with stderr redirected to a file logs one
readable line per epoch. They are printed whether or not progress bars are shown.
"""

from __future__ import annotations

import sys
from collections.abc import Mapping

from tqdm.auto import tqdm

from csdn.train.runlog import EPOCH_TABLE_FIRST

PERCENT_METRICS = ("rank1", "mAP", "mINP")  # evaluation results, reported as fractions, printed in percent
_LABELS = {"rank1": "rank-1"}


def emit(line: str) -> None:
    tqdm.write(line, file=sys.stderr)


def bars_wanted(progress: bool) -> bool:
    """Progress bars only on a terminal: redirected to a file they would fill it with carriage returns."""
    return progress and sys.stderr.isatty()


def metrics_text(metrics: Mapping[str, float]) -> str:
    """``rank-1 45.20%  mAP 40.11%  mINP 25.00%`` (fractions shown in percent), other values as they are."""
    parts = []
    for name, value in metrics.items():
        label = _LABELS.get(name, name)
        parts.append(f"{label} {100 * value:.2f}%" if name in PERCENT_METRICS else f"{label} {value:.4g}")
    return "  ".join(parts)


def epoch_line(
    stage: int,
    stage_name: str,
    epoch: int,
    epochs: int,
    record: Mapping[str, float],
    metrics: Mapping[str, Mapping[str, float]],
) -> str:
    """One epoch: stage, epoch (1-based), lr, every loss term, images/s, time, and evaluations if run."""
    losses = "  ".join(f"{name} {value:.4f}" for name, value in record.items() if name not in EPOCH_TABLE_FIRST)
    text = (
        f"stage {stage} ({stage_name}) epoch {epoch + 1}/{epochs}  lr {record['lr']:.2e}  {losses}  "
        f"{record['images_per_second']:.1f} img/s  {record['seconds']:.0f} s"
    )
    for event, values in metrics.items():
        text += f"  | {event}: {metrics_text(values)}"
    return text


def summary_table(metrics: Mapping[str, float], title: str) -> str:
    """The standard metrics of the last evaluation, as a small table."""
    names = [name for name in PERCENT_METRICS if name in metrics]
    if not names:
        return ""
    header = "  ".join(f"{_LABELS.get(name, name):>8}" for name in names)
    values = "  ".join(f"{100 * metrics[name]:>7.2f}%" for name in names)
    return f"{title}\n  {header}\n  {values}"
