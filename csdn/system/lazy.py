"""Package attributes imported on first use (PEP 562), so a package's light parts load without its heavy ones.

``csdn.train``, ``csdn.export`` and ``csdn.retrieval`` hold modules that need torch beside
settings that do not (option choices, defaults); the CLI reads those settings to build its
parsers, which must work where torch is not installed.
"""

from __future__ import annotations

import importlib
from collections.abc import Callable, Collection, Mapping
from typing import Any


def lazy_attributes(
    package: str, namespace: dict[str, Any], table: Mapping[str, str], submodules: Collection[str] = ()
) -> Callable[[str], Any]:
    """A module ``__getattr__`` for ``package`` that imports ``table[name]`` (a module path) on first access
    of ``name``, or the submodule ``package.name`` for a name in ``submodules``, and keeps the value in the
    package's ``namespace`` (its ``globals()``)."""

    def __getattr__(name: str) -> Any:
        if name in submodules:
            value = importlib.import_module(f"{package}.{name}")
        elif name in table:
            value = getattr(importlib.import_module(table[name]), name)
        else:
            raise AttributeError(f"module {package!r} has no attribute {name!r}")
        namespace[name] = value
        return value

    return __getattr__
