"""The import graph of a Python package read with ``ast`` (nothing is imported or run), and the
three rules the package's layering test enforces on it: no cycles, no private reach-ins, and
imports only downwards through the layers.

Every import counts: at module level, inside functions, and under ``if TYPE_CHECKING:``.
"""

from __future__ import annotations

import ast
from dataclasses import dataclass, field
from pathlib import Path


@dataclass
class ModuleInfo:
    name: str  # dotted, e.g. "csdn.retrieval.matching"
    path: Path
    is_package: bool  # an __init__.py
    imports: set[str] = field(default_factory=set)  # internal modules it imports
    private_uses: list[str] = field(default_factory=list)  # "module._name" reached into from outside


def _module_name(root: Path, path: Path) -> str:
    parts = list(path.relative_to(root.parent).with_suffix("").parts)
    if parts[-1] == "__init__":
        parts.pop()
    return ".".join(parts)


def _resolve(info: ModuleInfo, node: ast.ImportFrom) -> str:
    if not node.level:
        return node.module or ""
    package = info.name if info.is_package else info.name.rpartition(".")[0]
    for _ in range(node.level - 1):
        package = package.rpartition(".")[0]
    return f"{package}.{node.module}" if node.module else package


def read_package(root: Path) -> dict[str, ModuleInfo]:
    """Every module below the package folder ``root`` with the internal modules it imports."""
    modules = {}
    for path in sorted(root.rglob("*.py")):
        name = _module_name(root, path)
        modules[name] = ModuleInfo(name, path, path.name == "__init__.py")
    top = root.name
    for info in modules.values():
        aliases: dict[str, str] = {}  # local name -> internal module it is bound to
        tree = ast.parse(info.path.read_text(encoding="utf-8"), filename=str(info.path))
        for node in ast.walk(tree):
            if isinstance(node, ast.Import):
                for alias in node.names:
                    if alias.name.split(".")[0] == top and alias.name in modules:
                        info.imports.add(alias.name)
                        aliases[alias.asname or alias.name] = alias.name
            elif isinstance(node, ast.ImportFrom):
                source = _resolve(info, node)
                if source.split(".")[0] != top:
                    continue
                for alias in node.names:
                    submodule = f"{source}.{alias.name}"
                    if submodule in modules:
                        info.imports.add(submodule)
                        aliases[alias.asname or alias.name] = submodule
                        if alias.name.startswith("_") and source != info.name.rpartition(".")[0]:
                            info.private_uses.append(submodule)
                    elif source in modules:
                        info.imports.add(source)
                        if alias.name.startswith("_") and not alias.name.startswith("__"):
                            info.private_uses.append(f"{source}.{alias.name}")
        for node in ast.walk(tree):
            if (
                isinstance(node, ast.Attribute)
                and isinstance(node.value, ast.Name)
                and node.value.id in aliases
                and _is_private(node.attr)
            ):
                info.private_uses.append(f"{aliases[node.value.id]}.{node.attr}")
        info.imports.discard(info.name)
    _private_members_used_elsewhere(modules)
    return modules


def _is_private(name: str) -> bool:
    return name.startswith("_") and not name.startswith("__")


def _private_members_used_elsewhere(modules: dict[str, ModuleInfo]) -> None:
    """``obj._name`` in one module where ``_name`` is a private method or attribute of a class
    defined only in other modules of the package (``self`` and ``cls`` are the class's own)."""
    trees = {name: ast.parse(info.path.read_text(encoding="utf-8")) for name, info in modules.items()}
    owners: dict[str, set[str]] = {}
    for name, tree in trees.items():
        for node in ast.walk(tree):
            if isinstance(node, ast.ClassDef):
                for member in ast.walk(node):
                    if isinstance(member, (ast.FunctionDef, ast.AsyncFunctionDef)) and _is_private(member.name):
                        owners.setdefault(member.name, set()).add(name)
                    elif (
                        isinstance(member, ast.Attribute)
                        and isinstance(member.value, ast.Name)
                        and member.value.id == "self"
                        and _is_private(member.attr)
                    ):
                        owners.setdefault(member.attr, set()).add(name)
    for name, tree in trees.items():
        for node in ast.walk(tree):
            if (
                isinstance(node, ast.Attribute)
                and _is_private(node.attr)
                and node.attr in owners
                and name not in owners[node.attr]
                and not (isinstance(node.value, ast.Name) and node.value.id in ("self", "cls"))
            ):
                modules[name].private_uses.append(f"{sorted(owners[node.attr])[0]}:{node.attr}")


def cycles(edges: dict[str, set[str]]) -> list[list[str]]:
    """Strongly connected groups of more than one node (Tarjan), each sorted."""
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    on_stack: set[str] = set()
    found: list[list[str]] = []

    def visit(node: str) -> None:
        index[node] = low[node] = len(index)
        stack.append(node)
        on_stack.add(node)
        for target in edges.get(node, ()):
            if target not in index:
                visit(target)
                low[node] = min(low[node], low[target])
            elif target in on_stack:
                low[node] = min(low[node], index[target])
        if low[node] == index[node]:
            group = []
            while True:
                member = stack.pop()
                on_stack.discard(member)
                group.append(member)
                if member == node:
                    break
            if len(group) > 1:
                found.append(sorted(group))

    for node in sorted(edges):
        if node not in index:
            visit(node)
    return found


def package_edges(modules: dict[str, ModuleInfo], unit) -> dict[str, set[str]]:
    """The module graph collapsed by ``unit(module name) -> group``, without self-edges."""
    edges: dict[str, set[str]] = {}
    for info in modules.values():
        source = unit(info.name)
        for target in info.imports:
            if unit(target) != source:
                edges.setdefault(source, set()).add(unit(target))
    return edges


def upward_imports(modules: dict[str, ModuleInfo], layer_of) -> list[str]:
    """``a -> b`` for each import from a module into a strictly higher layer (``layer_of`` -> rank)."""
    return sorted(
        f"{info.name} -> {target}"
        for info in modules.values()
        for target in info.imports
        if layer_of(target) > layer_of(info.name)
    )
