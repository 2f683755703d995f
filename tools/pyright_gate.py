"""Run pyright --strict over the package (pyproject's [tool.pyright]) and fail on the rules
the architecture promises to keep at zero: no class reaches into another's private members,
and no variable is read where it may be unbound. The other strict findings (mostly unknown
types from untyped dependencies) are counted and printed, not gated: mypy --strict gates
typing.
"""

from __future__ import annotations

import collections
import json
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
GATED = ("reportPrivateUsage", "reportPossiblyUnbound", "reportPossiblyUnboundVariable")


def main() -> int:
    # -p: this project's pyproject.toml, never a pyrightconfig.json found in a parent folder.
    command = [sys.executable, "-m", "pyright", "--outputjson", "-p", str(ROOT)]
    run = subprocess.run(command, capture_output=True, text=True, check=False)
    try:
        report = json.loads(run.stdout)
    except json.JSONDecodeError:
        print(run.stdout, run.stderr, sep="\n")
        return 2
    found = report["generalDiagnostics"]
    rules = collections.Counter(item.get("rule", "?") for item in found)
    files = report["summary"]["filesAnalyzed"]
    print(f"pyright --strict: {sum(rules.values())} findings in {files} files")
    for rule, count in rules.most_common():
        print(f"  {count:4} {rule}{'  (gated)' if rule in GATED else ''}")
    failed = [item for item in found if item.get("rule") in GATED]
    for item in failed:
        line = item["range"]["start"]["line"] + 1
        print(f"{item['file']}:{line}: {item['rule']}: {item['message']}")
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
