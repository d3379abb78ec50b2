"""``create_model(architecture, pretrained=None)``: the zoo's two axes in one call, as timm's
``create_model("arch", pretrained=...)`` and open_clip's ``create_model_and_transforms`` have them.

The architecture -> class table is :mod:`csdn.hub.architectures`' (re-exported here).
"""

from __future__ import annotations

import os

from csdn.config import CSDNConfig
from csdn.hub.architectures import ARCHITECTURES, model_class
from csdn.hub.loading import load
from csdn.hub.registry import RegistryLike, open_registry
from csdn.model.network import CSDN

__all__ = ["ARCHITECTURES", "create_model", "model_class"]


def create_model(
    architecture: str,
    pretrained: str | os.PathLike | None = None,
    *,
    registry: RegistryLike = None,
    **options,
) -> CSDN:
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
