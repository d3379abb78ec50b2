"""glibc allocator settings for processes the package owns (the ``csdn`` command).

By default glibc serves every allocation above a moving threshold (128 KiB at first, at most
32 MiB) with its own ``mmap``, unmaps it when freed, and gives freed memory at the top of the
heap back to the system once more than twice that threshold is free. A training step or an
embedding batch frees and re-allocates the same activations every iteration, so each iteration
touches fresh pages and pays a page fault per 4 KiB: on the 2-core virtual machines measured,
4.8 million faults and a third of a full-size stage-3 step. Serving every allocation from the
heap (no ``mmap``, whatever its size: most activations of a full-size step exceed the largest
mmap threshold glibc accepts) and keeping up to 2 GiB of freed heap lets the next iteration
reuse pages already mapped.

This changes how a process holds memory (a full-size step's peak RSS rose 14%), so it is applied
only by the ``csdn`` command itself (never by ``import csdn``), only on glibc, and not when
``CSDN_MALLOC=default`` is set or the user already chose a setting through glibc's own
``MALLOC_*`` variables or ``GLIBC_TUNABLES``.
"""

from __future__ import annotations

import ctypes
import ctypes.util
import os
import platform
from collections.abc import Mapping

# mallopt parameter numbers from glibc's <malloc.h>
_M_TRIM_THRESHOLD = -1
_M_MMAP_MAX = -4

TRIM_THRESHOLD = 2**31 - 1  # keep up to 2 GiB of freed heap for reuse (mallopt takes an int)
OPT_OUT = "CSDN_MALLOC"


def keep_freed_memory(environ: Mapping[str, str] | None = None) -> bool:
    """Apply the settings above to this process; returns whether they were applied.

    Skipped (False) off glibc, with ``CSDN_MALLOC=default``, or when the user set glibc's own
    allocator variables: their choice stands.
    """
    environ = os.environ if environ is None else environ
    if environ.get(OPT_OUT, "").strip().lower() == "default":
        return False
    if "GLIBC_TUNABLES" in environ or any(name.startswith("MALLOC_") for name in environ):
        return False
    if platform.system() != "Linux" or platform.libc_ver()[0] != "glibc":
        return False
    try:
        libc = ctypes.CDLL(ctypes.util.find_library("c") or "libc.so.6")
        mallopt = libc.mallopt
    except (OSError, AttributeError):
        return False
    mallopt.argtypes, mallopt.restype = [ctypes.c_int, ctypes.c_int], ctypes.c_int
    # mallopt returns 1 on success; a set trim threshold also stops glibc adjusting it. With no
    # mmap, glibc still maps what the heap cannot grow to hold, so no request fails for it.
    applied = mallopt(_M_MMAP_MAX, 0) == 1
    return mallopt(_M_TRIM_THRESHOLD, TRIM_THRESHOLD) == 1 and applied
