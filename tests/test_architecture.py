"""The rules of docs/architecture.md, checked against the code: what each package may import,
no import cycles, and who may send each peer message kind."""

from __future__ import annotations

import asyncio
import re
from pathlib import Path

from bacalhau.node.node import Node, NodeConfig
from tests._imports import area, graph
from tests.conftest import ROOT

DOC = ROOT / "docs" / "architecture.md"
DAEMON = {"bacalhau.cli.daemon", "bacalhau.cli._serve", "bacalhau.cli._devstack"}


def table(heading: str) -> list[list[str]]:
    """The rows of the first table under `heading` in docs/architecture.md, cells stripped
    of backticks."""
    text = DOC.read_text().split(f"## {heading}\n", 1)[1]
    rows = [line for line in text.splitlines() if line.startswith("|")]
    return [[c.strip().strip("`") for c in row.strip("|").split("|")] for row in rows[2:]]


def package(module: str) -> str:
    return "daemon" if module in DAEMON else area(module)


def test_every_import_is_one_the_architecture_allows() -> None:
    allowed = {row[0]: {p.strip() for p in row[1].split(",") if p.strip()} for row in table(
        "What each package may import")}  # fmt: skip
    wrong = []
    for module, deps in graph().items():
        mine = package(module)
        if module == "bacalhau":
            assert not deps, "bacalhau/__init__.py stays empty"
            continue
        assert mine in allowed, f"{module}: package {mine!r} is not in docs/architecture.md"
        for dep in deps:
            theirs = package(dep)
            if theirs != mine and theirs not in allowed[mine]:
                wrong.append(f"{module} imports {dep} ({mine} may not import {theirs})")
    assert not wrong, "\n".join(wrong)


def test_no_import_cycles() -> None:
    g = graph()
    # Between modules, as they load: only imports run at import time count.
    at_load = {m: {d for d, top in deps.items() if top and d in g} for m, deps in g.items()}
    assert not _cycles(at_load), _cycles(at_load)
    # Between packages, every import counts (also those inside functions).
    packages: dict[str, set[str]] = {}
    for module, deps in g.items():
        mine = package(module)
        packages.setdefault(mine, set()).update(package(d) for d in deps if package(d) != mine)
    assert not _cycles(packages), _cycles(packages)


def _cycles(edges: dict[str, set[str]]) -> list[list[str]]:
    """Strongly connected components with more than one member (Tarjan)."""
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    on_stack: set[str] = set()
    found: list[list[str]] = []

    def visit(v: str) -> None:
        index[v] = low[v] = len(index)
        stack.append(v)
        on_stack.add(v)
        for w in edges.get(v, ()):
            if w not in index:
                visit(w)
                low[v] = min(low[v], low[w])
            elif w in on_stack:
                low[v] = min(low[v], index[w])
        if low[v] == index[v]:
            component = []
            while True:
                w = stack.pop()
                on_stack.discard(w)
                component.append(w)
                if w == v:
                    break
            if len(component) > 1:
                found.append(sorted(component))

    for v in sorted(edges):
        if v not in index:
            visit(v)
    return found


def test_the_import_checker_sees_what_it_must() -> None:
    """The graph is read right: relative, lazy and `from package import module` imports."""
    g = graph()
    assert g["bacalhau.node.node"]["bacalhau.api"] is True
    assert "bacalhau.node" in g["bacalhau.cli._serve"]  # imported inside a function
    assert g["bacalhau.cli._serve"]["bacalhau.node"] is False
    assert "bacalhau.spec" in g["bacalhau.service.jobs"]  # `from bacalhau import spec`
    assert _cycles({"a": {"b"}, "b": {"c"}, "c": {"a"}, "d": {"a"}}) == [["a", "b", "c"]]


def test_each_peer_message_kind_has_the_rule_the_architecture_names(tmp_path: Path) -> None:
    documented = {
        row[0]: (row[1], row[2], row[3] == "yes") for row in table("Who may send each peer message")
    }

    async def routes() -> dict[str, tuple[str, str, bool]]:
        node = Node(NodeConfig(data_dir=tmp_path, port=0, engines=["noop"]))
        await node.start()
        try:
            out = {}
            for r in node.network.dispatcher.routes():
                owner = re.sub(r"^bacalhau\.(\w+)\..*$", r"\1", r.handler.__module__)
                out[r.kind] = (owner, r.may_send.name, not r.relayable)
            return out
        finally:
            await node.stop()

    assert asyncio.run(routes()) == documented
