"""Canonical modality names and their accepted aliases."""

from __future__ import annotations

MODALITIES = ("visible", "infrared")

_ALIASES = {
    "visible": "visible",
    "rgb": "visible",
    "vis": "visible",
    "infrared": "infrared",
    "ir": "infrared",
    "thermal": "infrared",
    "nir": "infrared",
}


def normalize_modality(name: str) -> str:
    """Map a user-facing modality name to ``"visible"`` or ``"infrared"``.

    Raises ``ValueError`` listing the accepted names, so a typo never silently
    routes images through the wrong stem.
    """
    key = name.strip().lower() if isinstance(name, str) else None
    if key not in _ALIASES:
        choices = ", ".join(repr(a) for a in _ALIASES)
        raise ValueError(f"unknown modality {name!r}; choose one of {choices}")
    return _ALIASES[key]
