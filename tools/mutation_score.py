"""Print mutmut's outcome per module of the pure core: killed / all, and what survived.

Run after ``mutmut run`` (``nox -s mutation`` does both). A timeout counts as killed (the
mutant hung the tests, which noticed); "no tests" counts as survived: no unit test reaches it.
A mutant not checked yet (a run limited to some modules, ``mutmut run "koala_async._ledger*"``)
is left out of its module's score and counted apart.
"""

from __future__ import annotations

import subprocess
import sys
from collections import Counter, defaultdict


def main() -> int:
    listing = subprocess.run(
        [sys.executable, "-m", "mutmut", "results", "--all", "true"],
        capture_output=True,
        text=True,
        check=True,
    ).stdout
    outcomes: dict[str, Counter[str]] = defaultdict(Counter)
    survivors: dict[str, list[str]] = defaultdict(list)
    for line in listing.splitlines():
        name, _, outcome = line.strip().rpartition(": ")
        if not name:
            continue
        module = name.split(".x", 1)[0].split(".x\u01c1", 1)[0].rsplit("__mutmut_", 1)[0]
        module = ".".join(part for part in module.split(".")[:2])
        outcomes[module][outcome] += 1
        if outcome not in ("killed", "timeout", "not checked"):
            survivors[module].append(f"{name} ({outcome})")
    total_killed = total = 0
    print(f"{'module':32} {'killed':>7} {'all':>5} {'score':>7} {'unchecked':>9}")
    for module in sorted(outcomes):
        counts = outcomes[module]
        killed = counts["killed"] + counts["timeout"]
        unchecked = counts["not checked"]
        every = sum(counts.values()) - unchecked
        total_killed += killed
        total += every
        score = f"{killed / every:7.1%}" if every else f"{'-':>7}"
        print(f"{module:32} {killed:7} {every:5} {score} {unchecked or '':>9}")
    if total:
        print(f"{'all':32} {total_killed:7} {total:5} {total_killed / total:7.1%}")
    if "-v" in sys.argv:
        for module, names in sorted(survivors.items()):
            print(f"\n{module}:")
            print("\n".join(f"  {name}" for name in names))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
