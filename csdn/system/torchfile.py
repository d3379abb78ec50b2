"""Reading a PyTorch ``.pt``/``.pth`` file safely: tensors and plain data only (``weights_only``), and a
failure described in our words. Torch's own message for a file holding other objects advises
re-running with ``weights_only=False``, which executes whatever the file contains; that advice is
never passed on."""

from __future__ import annotations

import os
import pickle
from pathlib import Path
from typing import Any

import torch

from csdn.errors import CheckpointError

_TORCH_DETAIL = "WeightsUnpickler error:"  # torch's message puts the actual refusal after this


def load_error_reason(error: BaseException) -> str:
    """Why ``torch.load(..., weights_only=True)`` refused a file, without torch's unsafe advice."""
    text = str(error)
    if isinstance(error, pickle.UnpicklingError) or "weights_only" in text:
        detail = text.split(_TORCH_DETAIL, 1)[1].strip().split("\n")[0] if _TORCH_DETAIL in text else ""
        detail = detail.split(". ")[0].strip().rstrip(".")  # torch's allow-listing advice follows
        return "it holds Python objects other than tensors and plain data, which are not unpickled for safety" + (
            f" ({detail})" if detail else ""
        )
    first = text.strip().split("\n")[0].split(". ")[0].rstrip(".")
    reason = f"{type(error).__name__}: {first}" if first else type(error).__name__
    return f"{reason}; if it was copied or downloaded, it may be truncated or damaged: copy it again"


def load_torch_file(path: str | os.PathLike, what: str = "PyTorch checkpoint") -> Any:
    """``torch.load(path, map_location="cpu", weights_only=True)``; any failure as one :class:`CheckpointError`."""
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"no such file: {path}")
    try:
        return torch.load(path, map_location="cpu", weights_only=True)
    except Exception as err:  # pickle, zip and torch errors all mean "not readable here"
        raise CheckpointError(f"cannot read {path}, it is not a readable {what}: {load_error_reason(err)}") from None
