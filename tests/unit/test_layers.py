"""ARCHITECTURE.md's rule for the pure layers, kept true: the decision modules and the
HTTP/1.1 reader import no module that does I/O, runs an event loop or reads the clock's
side effects (sockets, asyncio/anyio, httpx, sqlite3). Imports only for type checking
do not count."""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

PACKAGE = Path(__file__).parents[2] / "koala_async"
PURE = ["_queue", "_ledger", "_attempts", "_limiter", "_circuit", "_retry", "_stats", "_h1"]
PURE_HELPERS = {"_calls", "_validate", "_wire", "_exceptions", "_admission", "_options"}
IO = {"asyncio", "anyio", "trio", "httpx", "socket", "ssl", "sqlite3", "sniffio", "subprocess"}


def imports(module: str) -> set[str]:
    tree = ast.parse((PACKAGE / f"{module}.py").read_text())
    found: set[str] = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.If) and "TYPE_CHECKING" in ast.unparse(node.test):
            node.body = []  # what only the type checker reads
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            found.update(alias.name.split(".")[0] for alias in node.names)
        elif isinstance(node, ast.ImportFrom):
            if node.level:  # from . import x / from ._x import y
                found.update(f".{node.module}" if node.module else f".{a.name}" for a in node.names)
            elif node.module:
                found.add(node.module.split(".")[0])
    return found


@pytest.mark.parametrize("module", PURE)
def test_a_pure_module_imports_nothing_that_does_io(module: str) -> None:
    found = imports(module)
    assert found & IO == set()
    own = {name.lstrip(".") for name in found if name.startswith(".")}
    assert own <= set(PURE) | PURE_HELPERS, f"{module} imports {own - set(PURE) - PURE_HELPERS}"


@pytest.mark.parametrize("module", sorted(PURE_HELPERS))
def test_the_pure_helpers_do_no_io_either(module: str) -> None:
    assert imports(module) & IO == set()
