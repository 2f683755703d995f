"""The command line is a user of the public API (issue 26 item 7): its modules import
``koala_async``, ``koala_async.testing`` and public modules only, never a private one."""

from __future__ import annotations

import ast
from pathlib import Path

import koala_async.cli

CLI = Path(koala_async.cli.__file__).parent
NOT_YET = {"_spool.py"}  # owned by the spool's engineer


def _private_imports(path: Path) -> list[str]:
    found = []
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.ImportFrom) and (
            node.level >= 2 or (node.module or "").startswith("koala_async")
        ):
            module = node.module or ""
            if any(part.startswith("_") for part in module.split(".")):
                found.append(f"{path.name}: from {'.' * node.level}{module}")
    return found


def test_the_cli_imports_no_private_module() -> None:
    found = [
        problem
        for path in sorted(CLI.glob("*.py"))
        if path.name not in NOT_YET
        for problem in _private_imports(path)
    ]
    assert found == []
