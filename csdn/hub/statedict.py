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


def nonfinite_tensor(state: Mapping[str, torch.Tensor]) -> str | None:
    """``"tensor 'name' holds N NaN or infinite value(s)"`` for the first float tensor that does, else None.

    Such weights give NaN, or silently wrong, embeddings: corrupted files and diverged training runs.
    """
    for name, tensor in state.items():
        if tensor.is_floating_point():
            bad = int((~torch.isfinite(tensor)).sum())
            if bad:
                return f"tensor {name!r} holds {bad} NaN or infinite value(s)"
    return None
