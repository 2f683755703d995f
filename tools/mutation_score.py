"""Print mutmut's outcome per module of the pure core: killed / all, and what survived.

Run after ``mutmut run`` (``nox -s mutation`` does both). A timeout counts as killed (the
mutant hung the tests, which noticed); "no tests" counts as survived: no unit test reaches it.
"""

from __future__ import annotations

import subprocess
import sys
from collections import Counter, defaultdict


def main() -> int:
    listing = subprocess.run(
        ["mutmut", "results", "--all", "true"], capture_output=True, text=True, check=True
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
        if outcome not in ("killed", "timeout"):
            survivors[module].append(f"{name} ({outcome})")
    total_killed = total = 0
    print(f"{'module':32} {'killed':>7} {'all':>5} {'score':>7}")
    for module in sorted(outcomes):
        counts = outcomes[module]
        killed = counts["killed"] + counts["timeout"]
        every = sum(counts.values())
        total_killed += killed
        total += every
        print(f"{module:32} {killed:7} {every:5} {killed / every:7.1%}")
    if total:
        print(f"{'all':32} {total_killed:7} {total:5} {total_killed / total:7.1%}")
    if "-v" in sys.argv:
        for module, names in sorted(survivors.items()):
            print(f"\n{module}:")
            print("\n".join(f"  {name}" for name in names))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
