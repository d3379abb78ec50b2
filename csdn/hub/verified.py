"""The hub's side of loading a verified file: the checks are the saved-model format's
(:mod:`csdn.io.pretrained`); which class a config builds is the architecture table's."""

from __future__ import annotations

import torch

from csdn.hub.architectures import build_model
from csdn.io.pretrained import WeightsFile, verified_config
from csdn.io.pretrained import load_verified as load_verified_with
from csdn.model.network import CSDN

__all__ = ["WeightsFile", "verified_config", "load_verified"]


def load_verified(weights: WeightsFile, device: torch.device) -> CSDN:
    """Verify ``weights`` completely, then build the model its config's architecture names and load it."""
    return load_verified_with(weights, build_model, device)
