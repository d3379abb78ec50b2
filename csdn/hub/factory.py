"""``create_model(architecture, pretrained=None)``: the zoo's two axes in one call, as timm's
``create_model("arch", pretrained=...)`` and open_clip's ``create_model_and_transforms`` have them.

``ARCHITECTURES`` is the one table from an architecture name to its model class; every preset in
``weights/architectures/`` needs a row here, and a registry entry's ``architecture`` names one of them.
"""

from __future__ import annotations

import os

from torch import nn

from csdn.config import CSDNConfig
from csdn.hub.api import load
from csdn.hub.registry import RegistryLike, open_registry
from csdn.model.network import CSDN

# architecture name -> model class (built from CSDNConfig.preset(name)); the only place that names one
ARCHITECTURES: dict[str, type[nn.Module]] = {
    "csdn_rn50": CSDN,
    "csdn_tiny": CSDN,
}


def model_class(architecture: str) -> type[nn.Module]:
    """The class of ``architecture``; ``ValueError`` naming the known ones if it has none."""
    if architecture not in ARCHITECTURES:
        raise ValueError(f"unknown architecture {architecture!r}; known: {', '.join(sorted(ARCHITECTURES))}")
    return ARCHITECTURES[architecture]


def create_model(
    architecture: str,
    pretrained: str | os.PathLike | None = None,
    *,
    registry: RegistryLike = None,
    **options,
) -> nn.Module:
    """A model of ``architecture``: random weights from its preset, or the ``pretrained`` weights.

    ``pretrained``: ``None`` (random initialisation; ``options`` override preset fields, e.g.
    ``num_classes=8``); a tag of the architecture in the registry (``"sysu"`` for
    ``"csdn_rn50.sysu"``) or a full registry name; or anything :func:`csdn.load` reads (a
    folder, a ``.safetensors`` file, ``"hf-hub:org/repo"``), then ``options`` go to ``load``.
    A registry entry of another architecture is refused.
    """
    cls = model_class(architecture)
    if pretrained is None:
        return cls(CSDNConfig.preset(architecture, **options))
    name = os.fspath(pretrained)
    opened = open_registry(registry)
    for candidate in (f"{architecture}.{name}", name):
        if candidate in opened:
            entry = opened.get(candidate)
            if entry.architecture not in (None, architecture):
                raise ValueError(
                    f"{name!r} holds weights of architecture {entry.architecture!r}, not {architecture!r}; "
                    f"use create_model({entry.architecture!r}, {entry.tag!r})"
                )
            return load(entry.name, registry=opened, **options)
    return load(name, registry=opened, **options)
