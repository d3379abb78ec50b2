"""Training checkpoints: everything needed to continue a run bit-for-bit, written atomically.

A checkpoint is taken at the end of every epoch and records the position
(stage, epochs done in it), the model, optimiser and gradient-scaler states,
and the sampler, scheduler and random-number positions. Those last three are
pure functions of (seed, stage, epoch, rank) in this trainer - every epoch
seeds its own generators - so the epoch number *is* their complete state, and
a resumed run replays exactly the draws an uninterrupted one makes. The file is
written to a temporary name in the same folder and renamed into place, so a
crash never leaves a half-written checkpoint. The model's config is recorded as ``config.json``
holds it (``model_config``: the architecture's sections, the provenance record ``meta`` beside them).
"""

from __future__ import annotations

from collections.abc import Mapping
from pathlib import Path
from typing import Any

import torch

from csdn.config import join_provenance, split_provenance
from csdn.hub.architectures import build_model
from csdn.model.network import CSDN
from csdn.system.fileio import atomic_write_stream
from csdn.system.torchfile import load_torch_file

CHECKPOINT_FORMAT = 1
LAST, BEST = "last.pt", "best.pt"


def save_checkpoint(state: dict[str, Any], path: str | Path) -> Path:
    """Write ``state`` to ``path`` atomically (temporary file in the same folder, then ``os.replace``).

    A write that fails (a full disk above all) raises an error naming ``path`` and why, rather than
    torch's ``unexpected pos``, and leaves the checkpoint already at ``path`` as it was.
    """
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    return atomic_write_stream(path, lambda handle: torch.save({"format": CHECKPOINT_FORMAT, **state}, handle))


def load_checkpoint(path: str | Path) -> dict[str, Any]:
    """Read a checkpoint written by :func:`save_checkpoint` (tensors and plain data only)."""
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"no training checkpoint at {path}")
    state = load_torch_file(path, "csdn training checkpoint")
    if not isinstance(state, dict) or state.get("format") != CHECKPOINT_FORMAT:
        raise ValueError(
            f"{path} is not a csdn training checkpoint of format {CHECKPOINT_FORMAT} "
            f"(found format {state.get('format') if isinstance(state, dict) else None!r})"
        )
    return state


def model_record(model: CSDN) -> dict[str, Any]:
    """A checkpoint's ``model_config``: ``model``'s config document, its provenance beside the sections."""
    return join_provenance(model.config, model.provenance)


def checkpoint_model(state: Mapping[str, Any]) -> CSDN:
    """The model a checkpoint's ``model_config`` describes, as its architecture's class (random weights), with
    the recorded provenance; checkpoints from before ``model.provenance`` hold it there the same way."""
    config, provenance = split_provenance(state["model_config"])
    model = build_model(config)
    model.provenance = provenance
    return model
