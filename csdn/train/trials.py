"""RegDB's protocol end to end: a model per split, each scored on its own split, and the average.

RegDB's ten trials are ten different identity splits, so a paper's RegDB figure is ten trainings,
each evaluated on its own test half (the other splits' test halves hold its training identities),
averaged. :func:`run_trials` runs that loop in one run folder::

    OUTPUT/trial_<n>/            one ordinary run per trial (checkpoints, logs, model/)
    OUTPUT/trial_<n>/evaluation.json   its scores on trial n, written once the trial is done
    OUTPUT/trials.csv, trials.md       the averaged table, rewritten from the trials' scores

A trial with scores is skipped on a rerun, and a trial that was interrupted continues from its
last checkpoint, so the same command resumes the whole loop.
"""

from __future__ import annotations

import json
import os
import re
import sys
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

from csdn.data.catalog import reader_for
from csdn.evaluation.protocol import evaluate
from csdn.evaluation.tables import ProtocolTable, merge_trials, result_from_dict
from csdn.system.fileio import atomic_write_text

__all__ = ["RESULT_FILE", "SUMMARY_FILES", "parse_trials", "run_trials", "trial_folder"]

RESULT_FILE = "evaluation.json"
SUMMARY_FILES = ("trials.csv", "trials.md")
_PART = re.compile(r"^\s*(\d+)\s*(?:-\s*(\d+)\s*)?$")

# (trial, its run folder, whether that folder holds an earlier attempt to continue) -> trains it
TrainTrial = Callable[[int, Path, bool], Any]


def parse_trials(text: str) -> list[int]:
    """``"1-10"``, ``"1,3,5-7"`` -> the trial numbers, in order, each once."""
    trials: list[int] = []
    for part in str(text).split(","):
        found = _PART.match(part)
        if found is None:
            raise ValueError(f"--trials {text!r}: cannot read {part.strip()!r}; write trials as 1-10 or 1,3,5-7")
        first, last = int(found[1]), int(found[2] or found[1])
        if last < first:
            raise ValueError(f"--trials {text!r}: the range {part.strip()} runs backwards; write it as {last}-{first}")
        trials += [t for t in range(first, last + 1) if t not in trials]
    return trials


def trial_folder(output: str | os.PathLike, trial: int) -> Path:
    return Path(output) / f"trial_{trial}"


def run_trials(
    dataset: str,
    root: str | os.PathLike,
    trials: Sequence[int],
    output: str | os.PathLike,
    train: TrainTrial,
    *,
    device: str = "cpu",
    progress: bool = True,
    echo: Callable[[str], None] = lambda line: print(line, file=sys.stderr),
) -> ProtocolTable | None:
    """Train (``train``) and score every trial in its own folder under ``output``, then write the
    averaged table; returns it, or None when a trial stopped before its schedule ended (``--stop-after``:
    the same call continues it). Under ``torchrun`` every process trains and only rank 0 scores and
    writes (the others return None)."""
    reader = reader_for(dataset)
    if reader is None or not reader.trial_bound:
        raise ValueError(
            f"--trials trains one model per identity split, which is RegDB's protocol; {dataset} has one "
            "training set: train once, and csdn eval scores its trials (10 by default)"
        )
    if not trials:
        raise ValueError("--trials names no trial")
    for trial in trials:  # every trial's lists read before the first training: a missing one is found now
        split = reader(root, trial=trial)
        split.search(split.directions[0], trial)  # the test lists
        _ = split.train  # the training lists
    main_process = os.environ.get("RANK", "0") == "0"  # torchrun's rank
    results = []
    for trial in trials:
        folder = trial_folder(output, trial)
        scores = folder / RESULT_FILE
        if scores.is_file():
            echo(f"csdn: trial {trial} was finished earlier; its scores are read from {scores}")
            results.append(result_from_dict(json.loads(scores.read_text(encoding="utf-8"))))
            continue
        model_dir = folder / "model"
        if not (model_dir / "config.json").is_file():
            echo(f"csdn: trial {trial}: training in {folder}")
            train(trial, folder, folder.exists())
            if not (model_dir / "config.json").is_file():
                echo(f"csdn: trial {trial} stopped before its schedule ended; the same command continues it")
                return None
        if not main_process:
            continue
        from csdn.hub.loading import load

        result = evaluate(
            load(model_dir, device=device, progress=False), dataset, root, trials=[trial], progress=progress
        )
        atomic_write_text(scores, result.to_json() + "\n")
        echo(f"csdn: trial {trial}: scores written to {scores}")
        results.append(result)
    if not main_process:
        return None
    table = ProtocolTable.from_results(results[0].dataset, [({}, merge_trials(results))])
    for name, text in zip(SUMMARY_FILES, (table.to_csv(), table.to_markdown())):
        atomic_write_text(Path(output) / name, text)
    return table
