"""Import time of koala_async beside Segment's and PostHog's clients (issue 29, item 3).

    python benchmarks/import_time.py [--runs 15] [--from-source] [--json out.json]

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


def run(statement: str, importtime: bool, env: dict[str, str]) -> tuple[float, list[str]]:
    """One fresh interpreter: (milliseconds, heavy modules loaded). With ``importtime`` the
    milliseconds are the sum of the top-level cumulative times ``-X importtime`` printed."""
    code = CHILD.format(statement=statement, heavy=HEAVY)
    command = [sys.executable, *(["-X", "importtime"] if importtime else []), "-c", code]
    done = subprocess.run(command, capture_output=True, text=True, env=env, cwd=ROOT, check=True)
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


def first_open(env: dict[str, str]) -> list[float]:
    """asyncio + koala_async imported, then a first open and close: [import, open, total] ms."""
    command = [sys.executable, "-c", FIRST_OPEN]
    done = subprocess.run(command, capture_output=True, text=True, env=env, cwd=ROOT, check=True)
    return [float(ms) for ms in done.stdout.split()]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--runs", type=int, default=15)
    parser.add_argument("--from-source", action="store_true", help="no bytecode cache")
    parser.add_argument("--json", type=Path)
    args = parser.parse_args()
    wall: dict[str, list[float]] = {name: [] for name in TARGETS}
    tool: dict[str, list[float]] = {name: [] for name in TARGETS}
    loaded: list[str] = []
    opens: list[list[float]] = []
    with tempfile.TemporaryDirectory() as cache:
        if args.from_source:
            env = {**os.environ, "PYTHONPATH": str(ROOT)}
        else:
            env = {k: v for k, v in os.environ.items() if k != "PYTHONDONTWRITEBYTECODE"}
            env.update(PYTHONPATH=str(ROOT), PYTHONPYCACHEPREFIX=cache)
            for statement in TARGETS.values():
                run(statement, importtime=False, env=env)  # writes the bytecode
        for _ in range(args.runs):
            for name, statement in TARGETS.items():
                ms, heavy = run(statement, importtime=False, env=env)
                wall[name].append(ms)
                if name == "koala_async":
                    loaded = heavy
                tool[name].append(run(statement, importtime=True, env=env)[0])
            opens.append(first_open(env))
    medians = {
        name: {
            "wall_ms": round(statistics.median(wall[name]), 1),
            "importtime_ms": round(statistics.median(tool[name]), 1),
        }
        for name in TARGETS
    }
    koala, segment = medians["koala_async"], medians["segment"]
    result: dict[str, Any] = {
        "date": datetime.datetime.now(datetime.timezone.utc).strftime("%Y-%m-%d %H:%M UTC"),
        "machine": f"{os.cpu_count()} cores, Python {platform.python_version()} "
        f"{platform.machine()}",
        "command": f"python benchmarks/import_time.py --runs {args.runs}"
        + (" --from-source" if args.from_source else ""),
        "medians": medians,
        "ratio_to_segment": {
            "wall": round(koala["wall_ms"] / segment["wall_ms"], 2),
            "importtime": round(koala["importtime_ms"] / segment["importtime_ms"], 2),
        },
        "koala_async_loads": loaded,
        "first_open_ms": dict(
            zip(
                ("asyncio + koala_async import", "first open + close", "total"),
                (round(statistics.median(ms), 1) for ms in zip(*opens, strict=True)),
                strict=True,
            )
        ),
    }
    print(f"{result['date']}, {result['machine']}, {result['command']}")
    print("| import | wall ms (median) | -X importtime ms (median) |")
    print("|---|---|---|")
    for name, figures in medians.items():
        print(f"| {TARGETS[name]} | {figures['wall_ms']} | {figures['importtime_ms']} |")
    ratio = result["ratio_to_segment"]
    verdict = "pass" if max(ratio.values()) <= 0.5 else "MISS"
    print(
        f"koala_async / Segment: wall {ratio['wall']}, importtime {ratio['importtime']} "
        f"(target <= 0.5): {verdict}"
    )
    print(f"heavy modules import koala_async loads: {', '.join(loaded) or 'none'}")
    print(
        "| first use, bare interpreter (wall ms, median) | " + " | ".join(result["first_open_ms"])
    )
    print("|---|---|---|---|")
    print("| koala_async | " + " | ".join(str(v) for v in result["first_open_ms"].values()) + " |")
    if args.json:
        args.json.write_text(json.dumps(result, indent=1))


if __name__ == "__main__":
    main()
