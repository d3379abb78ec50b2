"""Shared fixtures: small random-weight models built through the same code as the full model."""

from __future__ import annotations

import pytest
import torch

from csdn import CSDNConfig
from csdn.model import CSDN


@pytest.fixture
def tiny_model() -> CSDN:
    """A fresh tiny CSDN (64x32 input, 8 identities) in eval mode, with non-trivial BatchNorm statistics."""
    torch.manual_seed(0)
    model = CSDN(CSDNConfig.tiny())
    with torch.no_grad():
        for module in model.modules():
            if isinstance(module, (torch.nn.BatchNorm1d, torch.nn.BatchNorm2d)):
                module.running_mean.normal_(0.0, 0.1)
                module.running_var.uniform_(0.5, 2.0)
                module.weight.uniform_(0.5, 1.5)
    return model.eval()


@pytest.fixture(scope="session")
def rn50_model() -> CSDN:
    """The full-size CSDN-RN50 (random weights), built once per session."""
    torch.manual_seed(0)
    return CSDN(CSDNConfig.rn50()).eval()
