"""glibc allocator settings for processes the package owns (the ``csdn`` command).

By default glibc serves every allocation above a moving threshold (128 KiB at first, at most
32 MiB) with its own ``mmap`` and gives freed memory at the top of the heap back to the system
once more than twice that threshold is free. A training step or an embedding batch frees and
re-allocates the same tens of MiB of activations every iteration, so each iteration touches
fresh pages and pays a page fault per 4 KiB: on the 2-core virtual machines measured, about a
quarter of a stage-3 step. Raising the mmap threshold to its maximum and keeping freed memory
in the process lets the next iteration reuse pages already mapped.

This changes how a process holds memory, so it is applied only by the ``csdn`` command itself
(never by ``import csdn``), only on glibc, and not when ``CSDN_MALLOC=default`` is set or the
user already chose a setting through glibc's own ``MALLOC_*_`` variables.
"""

from __future__ import annotations

import ctypes
import ctypes.util
import os
import platform
from collections.abc import Mapping

# mallopt parameter numbers from glibc's <malloc.h>
_M_TRIM_THRESHOLD = -1
_M_MMAP_THRESHOLD = -3

MMAP_THRESHOLD = 32 * 1024 * 1024  # glibc's largest accepted value on 64-bit systems
TRIM_THRESHOLD = 1024 * 1024 * 1024  # keep up to 1 GiB of freed heap for reuse
OPT_OUT = "CSDN_MALLOC"
_GLIBC_VARIABLES = ("MALLOC_MMAP_THRESHOLD_", "MALLOC_TRIM_THRESHOLD_", "GLIBC_TUNABLES")


def keep_freed_memory(environ: Mapping[str, str] | None = None) -> bool:
    """Apply the settings above to this process; returns whether they were applied.

    Skipped (False) off glibc, with ``CSDN_MALLOC=default``, or when the user set glibc's own
    allocator variables: their choice stands.
    """
    environ = os.environ if environ is None else environ
    if environ.get(OPT_OUT, "").strip().lower() == "default":
        return False
    if any(name in environ for name in _GLIBC_VARIABLES):
        return False
    if platform.system() != "Linux" or platform.libc_ver()[0] != "glibc":
        return False
    try:
        libc = ctypes.CDLL(ctypes.util.find_library("c") or "libc.so.6")
        mallopt = libc.mallopt
    except (OSError, AttributeError):
        return False
    mallopt.argtypes, mallopt.restype = [ctypes.c_int, ctypes.c_int], ctypes.c_int
    # mallopt returns 1 on success; setting the mmap threshold also stops glibc adjusting it
    applied = mallopt(_M_MMAP_THRESHOLD, MMAP_THRESHOLD) == 1
    return mallopt(_M_TRIM_THRESHOLD, TRIM_THRESHOLD) == 1 and applied
