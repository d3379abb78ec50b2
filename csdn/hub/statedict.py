"""One wording for state-dict mismatches, shared by checkpoint conversion and weight loading."""

from __future__ import annotations

from typing import Sequence


def mismatch_report(
    missing: Sequence[str], unexpected: Sequence[str], mismatched: Sequence[str], noun: str = "keys"
) -> list[str]:
    """Lines naming every missing, unexpected and mismatched entry (empty when all match)."""
    lines = []
    if missing:
        lines.append(f"missing {noun} ({len(missing)}): {', '.join(missing)}")
    if unexpected:
        lines.append(f"unexpected {noun} ({len(unexpected)}): {', '.join(unexpected)}")
    if mismatched:
        lines.append(f"mismatched {noun}: {'; '.join(mismatched)}")
    return lines
