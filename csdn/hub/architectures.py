"""The one table from an architecture name to its model class, and the only module that names one.

Every preset in ``weights/architectures/`` needs a row here, and a registry entry's (and a saved
config's) ``architecture`` names one of them. What differs between backbones beyond their sizes
(how BatchNorms fold for the fast path, how CLIP's or the authors' tensor names map) is asked
of the class, so a new backbone is one module with its class, one preset file and one row here
(or one :func:`register_architecture` call from outside the package).
"""

from __future__ import annotations

from csdn.config import CSDNConfig, architecture_names
from csdn.model.network import CSDN

# architecture name -> model class (built from CSDNConfig.preset(name) or a saved config naming it). Every
# class is CSDN or a subclass: the heads, the text side and the training recipe are CSDN's, a backbone is
# its stems and trunk (CSDN.build_tower) and its tensor layout (CSDN.layout).
ARCHITECTURES: dict[str, type[CSDN]] = {
    "csdn_rn50": CSDN,
    "csdn_tiny": CSDN,
}


def model_class(architecture: str) -> type[CSDN]:
    """The class of ``architecture``; ``ValueError`` naming the known ones if it has none."""
    if architecture not in ARCHITECTURES:
        raise ValueError(f"unknown architecture {architecture!r}; known: {', '.join(sorted(ARCHITECTURES))}")
    return ARCHITECTURES[architecture]


def build_model(config: CSDNConfig) -> CSDN:
    """The model ``config`` describes, with random weights, as the class of its architecture."""
    return model_class(config.architecture)(config)


def register_architecture(architecture: str, cls: type[CSDN]) -> None:
    """Add a row to the table, for a backbone defined outside the package (its preset must exist)."""
    if architecture not in architecture_names():
        raise ValueError(
            f"architecture {architecture!r} has no preset file; add weights/architectures/{architecture}.json first"
        )
    ARCHITECTURES[architecture] = cls
