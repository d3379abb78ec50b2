"""State-dict checks shared by checkpoint conversion and weight loading: one wording for mismatches,
one test for corrupted (non-finite) values."""

from __future__ import annotations

from collections.abc import Mapping, Sequence

import torch


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


# No trained weight or statistic comes near this magnitude; one flipped exponent bit in a stored
# float32 (0.18 -> 6.3e37) jumps far past it, and such a weight turns every embedding into NaN.
ABSURD_WEIGHT = 1e8


def nonfinite_tensor(state: Mapping[str, torch.Tensor]) -> str | None:
    """``"tensor 'name' holds N NaN or infinite value(s)"`` for the first float tensor that does (or, failing
    that, holds values beyond :data:`ABSURD_WEIGHT` in magnitude), else None.

    Such weights give NaN, or silently wrong, embeddings: corrupted files and diverged training runs.
    """
    for name, tensor in state.items():
        if tensor.is_floating_point():
            bad = int((~torch.isfinite(tensor)).sum())
            if bad:
                return f"tensor {name!r} holds {bad} NaN or infinite value(s)"
            huge = int((tensor.abs() > ABSURD_WEIGHT).sum())
            if huge:
                largest = float(tensor.abs().max())
                return f"tensor {name!r} holds {huge} absurdly large value(s) (up to {largest:.3g}; no trained weight exceeds {ABSURD_WEIGHT:.0e})"
    return None
