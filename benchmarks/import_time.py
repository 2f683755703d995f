"""Import time of koala_async beside Segment's and PostHog's clients (issue 29, item 3).

    python benchmarks/import_time.py [--runs 15] [--from-source] [--baseline DIR] [--json out.json]

``--baseline DIR`` adds another checkout's koala_async (say ``git archive main | tar -x -C
DIR``) to the same turns, so a change is compared within one run.

Each import runs in a fresh interpreter (``python -c``), ``--runs`` times, the SDKs taking
turns (koala, segment, posthog, koala, ...) so that a busy machine slows them alike. Two
figures per run:

- **wall**: ``time.perf_counter()`` around the import statement in the child, without
  ``-X importtime`` (what a user's process pays);
- **importtime**: under ``python -X importtime``, the sum of the cumulative times of the
  top-level imports the statement made (what the issue quoted; the tool adds its own
  overhead, so it reads a little higher).

Bytecode is cached for every SDK, as an installed package has it: the children run without
``PYTHONDONTWRITEBYTECODE`` and with ``PYTHONPYCACHEPREFIX`` in a temporary directory (the
worktree gets no ``__pycache__``), after one untimed warm-up import each. (With
``PYTHONDONTWRITEBYTECODE=1``, as in this project's dev shells, koala_async run from a
checkout is compiled from source at every import: ~40 ms more than an installed copy;
``--from-source`` measures that case: the environment as given, no warm-up.)

Reported: each SDK's median of both, koala_async's ratio to Segment's (target: at most 0.5,
both ways), and the heavy modules ``import koala_async`` left out (it must not load httpx,
asyncio, anyio, sqlite3 or backoff).

What the import no longer loads, the first use does; so also, in the same rounds, the
first use in a bare interpreter (wall, median): ``asyncio`` imported, then koala_async,
then a ``KoalaClient`` for an ``http://`` URL made, opened and closed with nothing queued
(no request is made): the import, the first open+close, and the whole from before the
imports.
"""

from __future__ import annotations

import argparse
import datetime
import json
import os
import platform
import statistics
import subprocess
import sys
import tempfile
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parent.parent
TARGETS = {
    "koala_async": "import koala_async",
    "segment": "import segment.analytics",
    "posthog": "import posthog",
}
HEAVY = ("httpx", "asyncio", "anyio", "sqlite3", "backoff", "ssl", "concurrent.futures")
FIRST_OPEN = """\
import time
started = time.perf_counter()
import asyncio
import koala_async
imported = time.perf_counter()

async def main():
    client = koala_async.KoalaClient("pk_bench", base_url="http://127.0.0.1:9")
    await client.__aenter__()
    await client.aclose()

asyncio.run(main())
done = time.perf_counter()
print((imported - started) * 1000, (done - imported) * 1000, (done - started) * 1000)
"""
CHILD = """\
import sys, time
sys.stderr.write("@@start\\n"); sys.stderr.flush()
started = time.perf_counter()
{statement}
took = time.perf_counter() - started
sys.stderr.write("@@end\\n"); sys.stderr.flush()
print(took * 1000)
print(",".join(name for name in {heavy!r} if name in sys.modules))
"""


def run(
    statement: str, importtime: bool, env: dict[str, str], root: Path
) -> tuple[float, list[str]]:
    """One fresh interpreter, in ``root`` (whose koala_async it imports): (milliseconds,
    heavy modules loaded). With ``importtime`` the milliseconds are the sum of the
    top-level cumulative times ``-X importtime`` printed."""
    code = CHILD.format(statement=statement, heavy=HEAVY)
    command = [sys.executable, *(["-X", "importtime"] if importtime else []), "-c", code]
    env = {**env, "PYTHONPATH": str(root)}
    done = subprocess.run(command, capture_output=True, text=True, env=env, cwd=root, check=True)
    wall, loaded = done.stdout.splitlines()
    if not importtime:
        return float(wall), [name for name in loaded.split(",") if name]
    lines = done.stderr.split("@@start\n", 1)[1].split("@@end\n", 1)[0].splitlines()
    total = 0
    for line in lines:
        # "import time: <self us> | <cumulative us> | <name, indented by depth>"
        _, cumulative, name = line.split("|")
        if not name[1:].startswith(" "):  # depth 0: what the statement itself imported
            total += int(cumulative)
    return total / 1000, []


def first_open(env: dict[str, str], root: Path) -> list[float]:
    """asyncio + koala_async imported, then a first open and close: [import, open, total] ms."""
    command = [sys.executable, "-c", FIRST_OPEN]
    env = {**env, "PYTHONPATH": str(root)}
    done = subprocess.run(command, capture_output=True, text=True, env=env, cwd=root, check=True)
    return [float(ms) for ms in done.stdout.split()]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--runs", type=int, default=15)
    parser.add_argument("--from-source", action="store_true", help="no bytecode cache")
    parser.add_argument(
        "--baseline", type=Path, help="another checkout's koala_async, measured in the same turns"
    )
    parser.add_argument("--json", type=Path)
    args = parser.parse_args()
    # label: (statement, checkout whose koala_async is on the path)
    targets = {name: (statement, ROOT) for name, statement in TARGETS.items()}
    if args.baseline:
        targets["koala_async (baseline)"] = (TARGETS["koala_async"], args.baseline.resolve())
    roots = {
        "koala_async": ROOT,
        **({"baseline": args.baseline.resolve()} if args.baseline else {}),
    }
    wall: dict[str, list[float]] = {name: [] for name in targets}
    tool: dict[str, list[float]] = {name: [] for name in targets}
    loaded: dict[str, list[str]] = {}
    opens: dict[str, list[list[float]]] = {name: [] for name in roots}
    with tempfile.TemporaryDirectory() as cache:
        if args.from_source:
            env = dict(os.environ)
        else:
            env = {k: v for k, v in os.environ.items() if k != "PYTHONDONTWRITEBYTECODE"}
            env["PYTHONPYCACHEPREFIX"] = cache
            for statement, root in targets.values():
                run(statement, importtime=False, env=env, root=root)  # writes the bytecode
        for _ in range(args.runs):
            for name, (statement, root) in targets.items():
                ms, heavy = run(statement, importtime=False, env=env, root=root)
                wall[name].append(ms)
                loaded[name] = heavy
                tool[name].append(run(statement, importtime=True, env=env, root=root)[0])
            for name, root in roots.items():
                opens[name].append(first_open(env, root))
    medians = {
        name: {
            "wall_ms": round(statistics.median(wall[name]), 1),
            "importtime_ms": round(statistics.median(tool[name]), 1),
        }
        for name in targets
    }
    segment = medians["segment"]
    ratios = {
        name: {
            "wall": round(medians[name]["wall_ms"] / segment["wall_ms"], 2),
            "importtime": round(medians[name]["importtime_ms"] / segment["importtime_ms"], 2),
        }
        for name in targets
        if name.startswith("koala_async")
    }
    phases = ("asyncio + koala_async import", "first open + close", "total")
    result: dict[str, Any] = {
        "date": datetime.datetime.now(datetime.timezone.utc).strftime("%Y-%m-%d %H:%M UTC"),
        "machine": f"{os.cpu_count()} cores, Python {platform.python_version()} "
        f"{platform.machine()}",
        "command": f"python benchmarks/import_time.py --runs {args.runs}"
        + (" --from-source" if args.from_source else "")
        + (f" --baseline {args.baseline}" if args.baseline else ""),
        "medians": medians,
        "ratio_to_segment": ratios["koala_async"],
        "ratios_to_segment": ratios,
        "koala_async_loads": loaded["koala_async"],
        "loads": {name: loaded[name] for name in ratios},
        "first_open_ms": {
            name: {
                phase: round(statistics.median(ms), 1)
                for phase, ms in zip(phases, zip(*runs, strict=True), strict=True)
            }
            for name, runs in opens.items()
        },
    }
    print(f"{result['date']}, {result['machine']}, {result['command']}")
    print(
        "| import | wall ms (median) | -X importtime ms (median) | / Segment (wall, importtime) |"
    )
    print("|---|---|---|---|")
    for name, figures in medians.items():
        ratio = ratios.get(name)
        shown = f"{ratio['wall']}, {ratio['importtime']}" if ratio else ""
        print(f"| {name} | {figures['wall_ms']} | {figures['importtime_ms']} | {shown} |")
    ratio = ratios["koala_async"]
    verdict = "pass" if max(ratio.values()) <= 0.5 else "MISS"
    print(f"target: koala_async at most 0.5x Segment's, both ways: {verdict}")
    for name in ratios:
        print(f"heavy modules {name} loads: {', '.join(loaded[name]) or 'none'}")
    print("| first use, bare interpreter (wall ms, median) | " + " | ".join(phases) + " |")
    print("|---|---|---|---|")
    for name, figures in result["first_open_ms"].items():
        print(f"| {name} | " + " | ".join(str(v) for v in figures.values()) + " |")
    if args.json:
        args.json.write_text(json.dumps(result, indent=1))


if __name__ == "__main__":
    main()
