"""One file that describes a whole training run, and the record a run folder keeps of how it was made.

An experiment file is TOML (read with the standard library's ``tomllib``, Python >= 3.11;
on 3.10 with ``tomli`` when it is installed): TOML has no implicit typing surprises
(YAML reads ``no`` as false and ``1e-4`` as a string) and needs no extra dependency.
Tables:

- ``[data]``: ``dataset``, ``root``, ``trial`` (RegDB);
- ``[model]``: ``init`` (``RN50``, a local CLIP file, ``tiny``, a saved model);
- ``[train]``: :class:`~csdn.train.config.TrainConfig` fields (hyper-parameters, ``precision``);
- ``[run]``: ``output``, ``device`` (``auto``: CUDA when available), ``save_every`` and ``keep``
  (epoch snapshots, see :class:`csdn.train.rundir.SnapshotPolicy`).

Options given on the command line override the file. A run folder holds the
resolved file as ``experiment.toml`` (every field, paper defaults included), so
``csdn train --config runs/x/experiment.toml --output runs/y`` repeats the run, and
``run.json``: package version, git revision, torch, the command line, the init file's hash.
"""

from __future__ import annotations

import json
import math
import os
import platform
import subprocess
import sys
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

from csdn.errors import SettingError
from csdn.system.fileio import atomic_write_text, sha256_file
from csdn.train.config import TrainConfig
from csdn.version import __version__

EXPERIMENT_FILE = "experiment.toml"
RUN_RECORD = "run.json"
# table -> the fields it may hold (``train`` takes TrainConfig's)
TABLES: dict[str, tuple[str, ...]] = {
    "data": ("dataset", "root", "trial"),
    "model": ("init",),
    "run": ("output", "device", "save_every", "keep"),
}


def _toml_reader() -> Any:
    if sys.version_info >= (3, 11):
        import tomllib

        return tomllib
    try:  # Python 3.10
        import tomli  # type: ignore[import-not-found]
    except ModuleNotFoundError:
        raise SettingError(
            "reading a TOML experiment file on Python 3.10 needs the tomli package (pip install tomli); "
            "Python 3.11+ reads it without one"
        ) from None
    return tomli


def read_experiment(path: str | os.PathLike) -> dict[str, dict[str, Any]]:
    """The tables of an experiment file, each checked for unknown fields (``train`` by TrainConfig)."""
    path = Path(path)
    tomllib = _toml_reader()
    try:
        tables = tomllib.loads(path.read_text(encoding="utf-8"))
    except (tomllib.TOMLDecodeError, UnicodeDecodeError) as err:
        raise SettingError(f"--config {path} is not a TOML experiment file ({err})") from None
    known = (*TABLES, "train")
    unknown = sorted(set(tables) - set(known))
    if unknown:
        raise SettingError(
            f"--config {path}: unknown table(s) [{'], ['.join(unknown)}]; it takes [{'], ['.join(known)}]"
        )
    for name, fields in TABLES.items():
        extra = sorted(set(tables.get(name, {})) - set(fields))
        if extra:
            raise SettingError(
                f"--config {path}: [{name}] has unknown field(s) {', '.join(extra)}; it takes {', '.join(fields)}"
            )
    return {name: dict(tables.get(name, {})) for name in known}


def _toml_value(value: Any) -> str:
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, int):
        return str(value)
    if isinstance(value, float):
        if not math.isfinite(value):
            raise ValueError(f"{value} has no TOML spelling in an experiment file")
        return repr(value)
    if isinstance(value, str):
        return json.dumps(value)  # a JSON string is a valid TOML basic string
    if isinstance(value, Sequence):
        return "[" + ", ".join(_toml_value(v) for v in value) + "]"
    raise TypeError(f"cannot write a {type(value).__name__} to an experiment file")


def experiment_text(tables: Mapping[str, Mapping[str, Any]]) -> str:
    """TOML for the tables (fields that are None are left out: TOML has no null)."""
    lines = ["# csdn train experiment: csdn train --config THIS_FILE (options override it)"]
    for name in (*TABLES, "train"):
        values = {k: v for k, v in tables.get(name, {}).items() if v is not None}
        lines += ["", f"[{name}]", *(f"{key} = {_toml_value(value)}" for key, value in values.items())]
    return "\n".join(lines) + "\n"


def resolved_experiment(
    dataset: str,
    root: str,
    trial: int | None,
    init: str,
    output: str,
    device: str,
    config: TrainConfig,
    snapshots: Mapping[str, int | None] | None = None,
) -> dict[str, dict[str, Any]]:
    """Every setting of a run, as the tables of its ``experiment.toml`` (``snapshots``: save_every, keep)."""
    init_value = str(Path(init).resolve()) if Path(init).exists() else init
    return {
        "data": {"dataset": dataset, "root": str(Path(root).resolve()), "trial": trial},
        "model": {"init": init_value},
        "run": {"output": str(Path(output).resolve()), "device": device, **dict(snapshots or {})},
        "train": config.to_dict(),
    }


def _git_revision() -> str | None:
    here = Path(__file__).resolve().parent
    try:
        done = subprocess.run(
            ["git", "-C", str(here), "rev-parse", "HEAD"], capture_output=True, text=True, timeout=5, check=False
        )
    except (OSError, subprocess.SubprocessError):
        return None
    return done.stdout.strip() or None if done.returncode == 0 else None


def run_record(init: str, device: str, argv: Sequence[str]) -> dict[str, Any]:
    """How the run was made: versions, revision, command line, and the init file's SHA-256 when it is a file."""
    import torch

    init_path = Path(init)
    return {
        "csdn_version": __version__,
        "git_revision": _git_revision(),
        "torch": torch.__version__,
        "python": platform.python_version(),
        "device": device,
        "command": ["csdn", *argv],
        "init": init,
        "init_sha256": sha256_file(init_path) if init_path.is_file() else None,
    }


def write_run_files(output: Path, tables: Mapping[str, Mapping[str, Any]], record: Mapping[str, Any]) -> None:
    """``experiment.toml`` and ``run.json`` in the run folder (written when the run starts)."""
    output.mkdir(parents=True, exist_ok=True)
    atomic_write_text(output / EXPERIMENT_FILE, experiment_text(tables))
    atomic_write_text(output / RUN_RECORD, json.dumps({**record, "experiment": tables}, indent=2) + "\n")
