"""The import graph of the `bacalhau` package, read from the source (nothing is imported)."""

from __future__ import annotations

import ast
from pathlib import Path

PACKAGE = Path(__file__).resolve().parent.parent / "bacalhau"


def module_name(path: Path) -> str:
    parts = path.relative_to(PACKAGE.parent).with_suffix("").parts
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


def _type_checking(node: ast.If) -> bool:
    test = node.test
    return (isinstance(test, ast.Name) and test.id == "TYPE_CHECKING") or (
        isinstance(test, ast.Attribute) and test.attr == "TYPE_CHECKING"
    )


def imports_of(path: Path) -> dict[str, bool]:
    """{imported bacalhau module: whether it is imported at module level}; imports under
    `if TYPE_CHECKING:` are left out (they never run)."""
    tree = ast.parse(path.read_text(), str(path))
    me = module_name(path)
    is_pkg = path.name == "__init__.py"
    found: dict[str, bool] = {}

    def visit(node: ast.AST, top: bool) -> None:
        for child in ast.iter_child_nodes(node):
            if isinstance(child, ast.If) and _type_checking(child):
                for sub in child.orelse:
                    visit(sub, top)
                continue
            if isinstance(child, ast.Import):
                for alias in child.names:
                    if alias.name.startswith("bacalhau"):
                        found[alias.name] = found.get(alias.name, False) or top
            elif isinstance(child, ast.ImportFrom):
                base = child.module or ""
                if child.level:
                    anchor = me.split(".") if is_pkg else me.split(".")[:-1]
                    anchor = anchor[: len(anchor) - (child.level - 1)]
                    base = ".".join([*anchor, *([base] if base else [])])
                if base.startswith("bacalhau"):
                    if base != "bacalhau":  # the root package itself is empty
                        found[base] = found.get(base, False) or top
                    for alias in child.names:  # `from bacalhau.x import module`
                        sub = f"{base}.{alias.name}"
                        if _is_module(sub):
                            found[sub] = found.get(sub, False) or top
            else:
                inner = isinstance(child, ast.FunctionDef | ast.AsyncFunctionDef | ast.Lambda)
                visit(child, top and not inner)

    visit(tree, True)
    found.pop(me, None)
    return found


def _is_module(name: str) -> bool:
    path = PACKAGE.parent / name.replace(".", "/")
    return path.with_suffix(".py").exists() or (path / "__init__.py").exists()


def graph() -> dict[str, dict[str, bool]]:
    """Every module of bacalhau (generated stubs left out) and what it imports."""
    return {
        module_name(p): imports_of(p)
        for p in sorted(PACKAGE.rglob("*.py"))
        if "_pb" not in p.relative_to(PACKAGE).parts
    }


def area(module: str) -> str:
    """The top-level part of bacalhau a module belongs to: `bacalhau.compute.node` ->
    `compute`, `bacalhau.models` -> `models`."""
    parts = module.split(".")
    return parts[1] if len(parts) > 1 else ""
