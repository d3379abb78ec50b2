"""A protocol's results in the literature's layout: one row per setting (search direction, SYSU-MM01
search mode, single/multi-shot), Rank-1/10/20, mAP and mINP in percent as mean ± std over trials;
as Markdown (what ``csdn`` prints), CSV and JSON.

Papers report these figures, not our full ``rank5``/per-trial listing, so a table built here can
be set beside theirs. Per-trial results saved as JSON read back with :func:`result_from_dict`,
and :func:`merge_trials` joins results of one trial each (RegDB: one model per split) into one.
"""

from __future__ import annotations

import csv
import io
import json
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np

from csdn.evaluation.results import EvaluationResult, SearchResult, TrialResult

__all__ = ["TABLE_SCORES", "ProtocolTable", "TableRow", "merge_trials", "result_from_dict"]

TABLE_SCORES = {"rank1": "Rank-1", "rank10": "Rank-10", "rank20": "Rank-20", "mAP": "mAP", "mINP": "mINP"}
_MODES = {"all": "All-Search", "indoor": "Indoor-Search"}
_SHOTS = {1: "Single-shot", 10: "Multi-shot"}


def _direction_label(dataset: str, direction: str) -> str:
    """``"visible->infrared"`` as papers write it: RegDB's infrared camera is a thermal one."""
    infrared = "Thermal" if dataset == "RegDB" else "Infrared"
    query, gallery = ("Visible" if side == "visible" else infrared for side in direction.split("->"))
    return f"{query} to {gallery}"


@dataclass
class TableRow:
    """One line of the table: what was searched (``settings``) and its scores over trials."""

    label: str
    settings: dict[str, Any]
    search: SearchResult

    @property
    def trials(self) -> list[int]:
        return [trial.trial for trial in self.search.trials]


@dataclass
class ProtocolTable:
    """The literature's table of one protocol (see the module's docstring); ``str()`` is its Markdown."""

    dataset: str
    rows: list[TableRow]

    @classmethod
    def from_results(
        cls,
        dataset: str,
        results: Sequence[tuple[dict[str, Any], EvaluationResult]],
        name_directions: bool | None = None,
    ) -> ProtocolTable:
        """Rows of ``(settings, result)`` pairs, a row per search direction of each. Rows name their
        direction when ``name_directions`` (default: when some result holds more than one); a table
        of one direction names it in its heading."""
        several = any(len(r.searches) > 1 for _, r in results) if name_directions is None else name_directions
        rows = []
        for settings, result in results:
            for search in result.searches:
                parts = [_direction_label(dataset, search.direction)] if several else []
                if "mode" in settings:
                    parts.append(_MODES.get(settings["mode"], str(settings["mode"])))
                if "shots" in settings:
                    parts.append(_SHOTS.get(settings["shots"], f"{settings['shots']}-shot"))
                label = ", ".join(parts) or _direction_label(dataset, search.direction)
                rows.append(TableRow(label, {**settings, "direction": search.direction}, search))
        return cls(dataset, rows)

    def _cells(self, row: TableRow) -> list[str]:
        spread = len(row.search.trials) > 1
        return [
            f"{100 * row.search.mean[name]:.2f}" + (f" ± {100 * row.search.std[name]:.2f}" if spread else "")
            for name in TABLE_SCORES
        ]

    def to_markdown(self) -> str:
        trials = sorted({t for row in self.rows for t in row.trials})
        spread = "mean ± std over " if any(len(row.trials) > 1 for row in self.rows) else ""
        directions = {row.settings["direction"] for row in self.rows}
        title = self.dataset + (f", {_direction_label(self.dataset, *directions)}" if len(directions) == 1 else "")
        lines = [
            f"{title}: {spread}{len(trials)} trial(s) ({', '.join(map(str, trials))}), in %",
            "",
            "| Setting | " + " | ".join(TABLE_SCORES.values()) + " |",
            "|---" * (len(TABLE_SCORES) + 1) + "|",
        ]
        lines += [f"| {row.label} | " + " | ".join(self._cells(row)) + " |" for row in self.rows]
        return "\n".join(lines) + "\n"

    def to_csv(self) -> str:
        """One row per setting: its label, trials, and each score's mean and std in percent."""
        buffer = io.StringIO()
        writer = csv.writer(buffer, lineterminator="\n")
        writer.writerow(["setting", "trials", *(f"{name}{part}" for name in TABLE_SCORES for part in ("", "_std"))])
        for row in self.rows:
            scores = [(row.search.mean[name], row.search.std[name]) for name in TABLE_SCORES]
            writer.writerow(
                [row.label, " ".join(map(str, row.trials)), *(f"{100 * v:.2f}" for pair in scores for v in pair)]
            )
        return buffer.getvalue()

    def to_dict(self) -> dict[str, Any]:
        return {
            "dataset": self.dataset,
            "rows": [{"label": r.label, "settings": r.settings, **r.search.to_dict()} for r in self.rows],
        }

    def to_json(self, indent: int | None = 2) -> str:
        return json.dumps(self.to_dict(), indent=indent)

    def __str__(self) -> str:
        return self.to_markdown()


def result_from_dict(data: dict[str, Any]) -> EvaluationResult:
    """The :class:`EvaluationResult` that ``EvaluationResult.to_dict()`` (``csdn eval --json``) wrote."""
    searches = [
        SearchResult(
            search["direction"],
            [
                TrialResult(
                    int(t["trial"]),
                    np.asarray(t["cmc"], dtype=np.float64),
                    float(t["mAP"]),
                    float(t["mINP"]),
                    int(t["num_query"]),
                    int(t["num_gallery"]),
                )
                for t in search["trials"]
            ],
        )
        for search in data["searches"]
    ]
    return EvaluationResult(data["dataset"], dict(data["settings"]), searches)


def merge_trials(results: Sequence[EvaluationResult]) -> EvaluationResult:
    """One result holding every trial of ``results`` (same dataset and directions), per direction."""
    if not results:
        raise ValueError("no results to merge")
    directions = results[0].directions
    for result in results[1:]:
        if result.dataset != results[0].dataset or result.directions != directions:
            raise ValueError(
                f"cannot merge a {result.dataset} result of {', '.join(result.directions)} with a "
                f"{results[0].dataset} result of {', '.join(directions)}"
            )
    searches = [SearchResult(d, [t for r in results for t in r[d].trials]) for d in directions]
    trials = [t.trial for t in searches[0].trials]
    return EvaluationResult(results[0].dataset, {**results[0].settings, "trials": trials}, searches)
