"""The torch device a user names, checked against this torch build and this machine before any work
starts, so that ``--device cuda`` on a CPU-only build says what to use instead; ``"auto"``, the one
default of training, evaluation, embedding, matching and ``csdn.load`` (CUDA when available, else
the CPU); and whether this CPU computes bfloat16 natively."""

from __future__ import annotations

import torch

from csdn.errors import DeviceError

AUTO = "auto"  # the default everywhere: CUDA when torch finds a GPU, else the CPU


def auto_device() -> torch.device:
    """What ``"auto"`` means on this machine: ``cuda`` when torch finds a usable GPU, else ``cpu``."""
    return torch.device("cuda" if torch.cuda.is_available() else "cpu")


def resolve_device(device: str | torch.device | None = AUTO) -> torch.device:
    """``torch.device(device)``, refused with :class:`DeviceError` when it cannot be used here.

    ``"auto"`` (or None) is :func:`auto_device`. Raises ``ValueError`` for a string that names
    no device at all ("gpu", "cuda:x").
    """
    if device is None or device == AUTO:
        return auto_device()
    try:
        resolved = torch.device(device)
    except (RuntimeError, TypeError) as err:
        raise ValueError(f"invalid device {device!r}: {err}") from None
    name = str(device)
    if resolved.type == "cuda":
        if torch.version.cuda is None and torch.version.hip is None:
            raise DeviceError(
                f"device {name!r}: this torch build has no CUDA; use --device cpu "
                "(device='cpu' in Python) or install a CUDA build of torch"
            )
        if not torch.cuda.is_available():
            raise DeviceError(
                f"device {name!r}: torch finds no usable CUDA GPU (no driver, or CUDA_VISIBLE_DEVICES "
                "hides them all); use --device cpu (device='cpu' in Python)"
            )
        count = torch.cuda.device_count()
        if resolved.index is not None and resolved.index >= count:
            raise DeviceError(f"device {name!r}: this machine has {count} CUDA device(s), cuda:0 to cuda:{count - 1}")
    elif resolved.type == "mps" and not torch.backends.mps.is_available():
        raise DeviceError(
            f"device {name!r}: this torch build or machine has no Apple GPU (MPS); use --device cpu "
            "(device='cpu' in Python)"
        )
    return resolved


def device_note(requested: str | torch.device | None, resolved: torch.device) -> str:
    """The line a command prints once about its device, saying why when ``auto`` chose it."""
    if requested is None or requested == AUTO:
        reason = "a CUDA GPU is available" if resolved.type == "cuda" else "torch finds no CUDA GPU"
        return f"device {resolved} (--device auto: {reason})"
    return f"device {resolved}"


def cpu_has_bf16() -> bool:
    """Whether this CPU has bfloat16 units (AVX512-BF16 or AMX) that oneDNN uses; else bf16 is emulated, slowly."""
    probe = getattr(torch.ops.mkldnn, "_is_mkldnn_bf16_supported", None)
    try:
        return bool(probe and probe())
    except RuntimeError:
        return False
