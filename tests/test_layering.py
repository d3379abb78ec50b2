"""The package's layering, read from the source with ``ast``: no import cycles, no module using
another module's private names, and every import pointing down the layers. The checker itself
is shown to catch each violation on small fabricated packages."""

from __future__ import annotations

from pathlib import Path

import pytest
from import_graph import ModuleInfo, cycles, package_edges, read_package, upward_imports

PACKAGE = Path(__file__).resolve().parent.parent / "csdn"

# from the ground floor up; a module belongs to the layer of its first two name parts
LAYERS = [
    {
        "csdn.errors",
        "csdn.config",
        "csdn.modality",
        "csdn.version",
        "csdn.weights",
        "csdn.system",
        "csdn.images",
    },  # the ground floor: process helpers and user input -> model input
    {"csdn.io"},
    {"csdn.runtime"},  # exported models without torch: ground-floor modules only
    {"csdn.model"},
    {"csdn.inference"},  # runs models it knows only by a Protocol (csdn.inference.contract): it imports no model
    {"csdn.hub", "csdn.convert"},  # csdn.convert: the contract's name for csdn.hub.official
    {"csdn.retrieval"},
    {"csdn.data"},
    {"csdn.evaluation"},
    {"csdn.export"},
    {"csdn.train"},
    {"csdn.cli"},
    # the lazy public API, the contract's csdn.losses, `python -m csdn` and `python -m csdn.demo`
    {"csdn", "csdn.losses", "csdn.__main__", "csdn.demo"},
]

# The upward imports allowed, each by name with its reason; each must be made inside a function, at call time.
CALLS_UP = {
    "csdn.model.network -> csdn.inference.embed": "CSDN.embed_image, a contract method, hands the call to the layer "
    "that runs models (csdn.inference.embed.embed_images)",
}


def _unit(name: str) -> str:
    return ".".join(name.split(".")[:2])


def _layer(name: str) -> int:
    unit = _unit(name)
    for rank, members in enumerate(LAYERS):
        if unit in members:
            return rank
    raise AssertionError(f"{name} belongs to no layer: add {unit} to LAYERS")


@pytest.fixture(scope="module")
def modules() -> dict[str, ModuleInfo]:
    return read_package(PACKAGE)


def test_every_module_has_a_layer(modules):
    for name in modules:
        _layer(name)


def test_no_import_cycles_between_modules_or_packages(modules):
    assert cycles({name: info.imports for name, info in modules.items()}) == []
    assert cycles(package_edges(modules, _unit)) == []


def test_no_module_uses_another_modules_private_names(modules):
    assert {name: info.private_uses for name, info in modules.items() if info.private_uses} == {}


def test_imports_only_point_down_the_layers(modules):
    found = upward_imports(modules, _layer)
    assert [edge for edge in found if edge not in CALLS_UP] == []
    assert sorted(CALLS_UP) == [edge for edge in found if edge in CALLS_UP]  # no allowance outlives its import


def test_the_allowed_upward_imports_happen_at_call_time_only(modules):
    import ast

    def targets(node: ast.AST) -> set[str]:
        if isinstance(node, ast.ImportFrom):
            return {node.module or ""}
        return {alias.name for alias in node.names} if isinstance(node, ast.Import) else set()

    for edge in CALLS_UP:
        source, target = edge.split(" -> ")
        tree = ast.parse(modules[source].path.read_text(encoding="utf-8"))
        everywhere = [node for node in ast.walk(tree) if target in targets(node)]
        in_functions = {
            id(inner)
            for node in ast.walk(tree)
            if isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef))
            for inner in ast.walk(node)
        }
        assert everywhere and all(id(node) in in_functions for node in everywhere), edge


def test_every_module_says_what_it_is_for(modules):
    import ast

    undocumented = [
        name
        for name, info in modules.items()
        if not ast.get_docstring(ast.parse(info.path.read_text(encoding="utf-8")))
    ]
    assert undocumented == []


# ---------------------------------------------------------------------------- the checker on fabricated trees
def _write(root: Path, files: dict[str, str]) -> Path:
    for relative, text in files.items():
        path = root / "pkg" / relative
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(text)
    return root / "pkg"


def test_the_checker_finds_a_cycle_through_an_import_inside_a_function(tmp_path):
    package = _write(
        tmp_path,
        {
            "__init__.py": "",
            "low.py": "def f():\n    from pkg.high import g\n    return g\n",
            "high.py": "from pkg.low import f\n",
            "side.py": "import pkg.low\n",
        },
    )
    found = read_package(package)
    assert cycles({name: info.imports for name, info in found.items()}) == [["pkg.high", "pkg.low"]]
    assert found["pkg.side"].imports == {"pkg.low"}


def test_the_checker_finds_private_reach_ins_but_allows_a_modules_own(tmp_path):
    package = _write(
        tmp_path,
        {
            "__init__.py": "",
            "a.py": "_SECRET = 1\n\nclass Thing:\n    def _helper(self):\n        return self._state\n",
            "b.py": "from pkg.a import _SECRET\n",
            "c.py": "import pkg.a as a\nvalue = a._SECRET\n",
            "d.py": "def use(thing):\n    return thing._helper()\n",
            "e.py": "from pkg.a import Thing\n",
        },
    )
    found = read_package(package)
    assert found["pkg.b"].private_uses == ["pkg.a._SECRET"]
    assert found["pkg.c"].private_uses == ["pkg.a._SECRET"]
    assert found["pkg.d"].private_uses == ["pkg.a:_helper"]
    assert found["pkg.a"].private_uses == [] and found["pkg.e"].private_uses == []


def test_the_checker_finds_an_upward_import_even_under_type_checking(tmp_path):
    package = _write(
        tmp_path,
        {
            "__init__.py": "",
            "base/__init__.py": "",
            "base/core.py": "from typing import TYPE_CHECKING\nif TYPE_CHECKING:\n    from pkg.top.app import App\n",
            "top/__init__.py": "",
            "top/app.py": "from pkg.base.core import *\n\nclass App:\n    pass\n",
        },
    )
    found = read_package(package)
    rank = {"pkg": 0, "pkg.base": 0, "pkg.top": 1}
    assert upward_imports(found, lambda name: rank[".".join(name.split(".")[:2])]) == ["pkg.base.core -> pkg.top.app"]
    assert cycles(package_edges(found, lambda name: ".".join(name.split(".")[:2]))) == [["pkg.base", "pkg.top"]]


def test_the_documented_layer_table_is_the_enforced_one():
    """docs/architecture.md's table lists LAYERS top to bottom, one row per layer."""
    import re
    from pathlib import Path

    text = (Path(__file__).resolve().parents[1] / "docs" / "architecture.md").read_text()
    rows = [line.split("|")[1] for line in text.splitlines() if line.startswith("| `csdn")]
    documented = [set(re.findall(r"`(csdn[\w.]*)`", first_cell)) for first_cell in rows]
    assert documented == list(reversed(LAYERS))
