"""Search directions (query modality -> gallery modality) and their many spellings."""

from __future__ import annotations

import re

from csdn.modality import normalize_modality

INFRARED_TO_VISIBLE = "infrared->visible"
VISIBLE_TO_INFRARED = "visible->infrared"
DIRECTIONS = (INFRARED_TO_VISIBLE, VISIBLE_TO_INFRARED)

_LETTERS = {"v": "visible", "i": "infrared", "t": "infrared", "n": "infrared"}
_SEPARATOR = re.compile(r"\s*(?:->|→|_to_|-to-|\sto\s|2)\s*", re.IGNORECASE)


def parse_direction(text: str) -> str:
    """Canonical ``"infrared->visible"`` or ``"visible->infrared"`` from any common spelling.

    Accepts ``query->gallery`` with any modality alias (``thermal->visible``,
    ``vis->nir``), the papers' short forms (``t2v``, ``v2i``, ``ir2rgb``) and
    ``X_to_Y``.
    """
    parts = _SEPARATOR.split(text.strip()) if isinstance(text, str) else []
    try:
        if len(parts) != 2:
            raise ValueError
        query, gallery = (_LETTERS.get(p.lower()) or normalize_modality(p) for p in parts)
    except ValueError:
        raise ValueError(
            f"cannot read the search direction {text!r}; write it as 'query->gallery', e.g. "
            "'infrared->visible', 'visible->thermal', 't2v' or 'v2i'"
        ) from None
    if query == gallery:
        raise ValueError(
            f"direction {text!r} searches {query} images among {gallery} images; VI-ReID crosses modalities"
        )
    return f"{query}->{gallery}"


def split_direction(direction: str) -> tuple[str, str]:
    """``(query modality, gallery modality)`` of a direction in any accepted spelling."""
    query, gallery = parse_direction(direction).split("->")
    return query, gallery
