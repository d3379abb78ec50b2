"""A user's ``--model`` that names what a training run made: the run folder, its ``model/`` folder, or one
of its ``checkpoints/*.pt``; anything else (a registry name, a Hub id, a saved model) goes to
:func:`csdn.load`.

One place for ``csdn eval``, ``embed`` and ``match``: a run folder means its finished model; a run
that has not finished names its latest checkpoint; a checkpoint of ours is read with weights-only
loading, and a foreign ``.pt`` keeps :func:`csdn.load`'s advice to convert the authors' checkpoint.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

import torch

from csdn.errors import CheckpointError
from csdn.hub import loading as hub  # hub.load looked up at call time (tests stand in for it)
from csdn.io.pretrained import WEIGHTS_NAME
from csdn.io.statedict import nonfinite_tensor
from csdn.model.network import CSDN
from csdn.system.device import AUTO, resolve_device
from csdn.system.torchfile import has_torch_file_suffix, load_torch_file
from csdn.train.checkpoint import CHECKPOINT_FORMAT, LAST, checkpoint_model
from csdn.train.experiment import EXPERIMENT_FILE, RUN_RECORD
from csdn.train.rundir import checkpoint_dir

FINAL_MODEL = "model"  # the run folder's finished model (csdn.train.fit writes it)
_RUN_MARKERS = ("checkpoints", EXPERIMENT_FILE, RUN_RECORD, "train_config.json")


def is_run_folder(path: Path) -> bool:
    """A folder ``csdn train`` wrote: no model of its own at the top, a run's files inside."""
    return path.is_dir() and not (path / WEIGHTS_NAME).is_file() and any((path / m).exists() for m in _RUN_MARKERS)


def run_model_folder(run: Path) -> Path:
    """The finished model of the run folder ``run``; an error naming what to do when there is none yet."""
    model = run / FINAL_MODEL
    if (model / WEIGHTS_NAME).is_file():
        return model
    last = checkpoint_dir(run) / LAST
    if last.is_file():
        raise FileNotFoundError(
            f"{run} is a training run that has not finished (no {model}/ yet): continue it with "
            f"csdn train --resume --output {run}, or use its latest checkpoint: --model {last}"
        )
    raise FileNotFoundError(f"{run} is a training run folder with neither a finished model ({model}/) nor a checkpoint")


def is_training_checkpoint(state: Any) -> bool:
    """Whether a loaded ``.pt`` is one of :func:`csdn.train.checkpoint.save_checkpoint`'s."""
    return (
        isinstance(state, dict)
        and state.get("format") == CHECKPOINT_FORMAT
        and isinstance(state.get("model"), dict)
        and isinstance(state.get("model_config"), dict)
    )


def model_from_checkpoint(path: Path, state: dict[str, Any], device: torch.device) -> CSDN:
    """The model of a training checkpoint (its architecture's class, its provenance), in eval mode on ``device``
    (NaN/inf refused)."""
    problem = nonfinite_tensor(state["model"])
    if problem:
        raise CheckpointError(f"{path}: {problem} (a diverged training run, or a damaged file); it was not loaded")
    try:
        model = checkpoint_model(state)
        model.load_state_dict(state["model"])
    except (RuntimeError, TypeError, ValueError) as err:
        raise CheckpointError(f"{path}: its model weights do not fit its model config ({err})") from None
    return model.to(device).eval()


def load_model(name_or_path: str | os.PathLike, *, device: str | torch.device = AUTO, progress: bool = True) -> CSDN:
    """The model ``name_or_path`` names: a run folder's ``model/``, a training checkpoint's weights, or :func:`csdn.load`'s."""
    resolved = resolve_device(device)  # before reading anything large
    path = Path(os.fspath(name_or_path)).expanduser()
    if is_run_folder(path):
        return hub.load(run_model_folder(path), device=resolved, progress=progress)
    if path.is_file() and has_torch_file_suffix(path):
        state = load_torch_file(path, "PyTorch checkpoint")
        if is_training_checkpoint(state):
            return model_from_checkpoint(path, state, resolved)
    return hub.load(name_or_path, device=resolved, progress=progress)  # a foreign .pt gets its convert advice there
