"""The installed package is the tree: every package under csdn/ is listed in pyproject.toml, and
the zoo's data folder (top-level weights/) is mapped to csdn.weights."""

from __future__ import annotations

import sys
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parent.parent
pytestmark = pytest.mark.skipif(not (REPO / "pyproject.toml").is_file(), reason="needs the source tree")

if sys.version_info >= (3, 11):
    import tomllib
else:  # pragma: no cover
    tomllib = pytest.importorskip("tomli")


def _setuptools() -> dict:
    return tomllib.loads((REPO / "pyproject.toml").read_text(encoding="utf-8"))["tool"]["setuptools"]


def test_every_package_under_csdn_is_listed():
    on_disk = {".".join(init.parent.relative_to(REPO).parts) for init in (REPO / "csdn").rglob("__init__.py")}
    listed = set(_setuptools()["packages"])
    assert on_disk - listed == set(), "add these to [tool.setuptools] packages in pyproject.toml"
    assert listed - on_disk == {"csdn.weights"}


def test_weights_folder_is_the_installed_csdn_weights():
    assert _setuptools()["package-dir"] == {"csdn.weights": "weights"}
    assert (REPO / "weights" / "__init__.py").is_file() and (REPO / "weights" / "registry.json").is_file()
    assert not (REPO / "csdn" / "weights").exists()
