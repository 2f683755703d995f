"""``koala-async import`` beside a plain loop over KoalaClient, on the same file (issue 28).

    python benchmarks/importer.py [--lines 200000] [--runs 2]

Writes two JSONL files of track lines, 10 per person: **sorted** (a person's lines
together) and **interleaved** (every person's first line, then every second line...). For
each, in turns (plain, import, plain, import...), it runs in a fresh process:

- **plain**: the loop a user would write: ``json.loads`` each line and
  ``await koala.track(**line)`` on a ``KoalaClient`` with its defaults (random message ids);
- **import**: ``python -m koala_async import FILE`` (deterministic ids, dead letters,
  checkpoints, progress).

Both send to ``sink.py`` in a process of its own (answers at once). Reported per run: lines/s
from the process's start to its exit (interpreter start-up included for both) and its CPU
time (user + system) per line; the sink's count is checked to equal the file's lines. The
figures are each side's median over ``--runs``; the targets are the import at >= 0.8x the
plain loop's lines/s and <= 1.3x its CPU per line.
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from run import sink, wait_for_sink

HERE = Path(__file__).parent
PLAIN = """
import asyncio, json, sys
from koala_async import KoalaClient

async def main(path, url):
    async with KoalaClient("pk_bench", base_url=url) as koala:
        calls = {name: getattr(koala, name) for name in ("track", "identify", "page")}
        with open(path, "rb") as file:
            for line in file:
                fields = json.loads(line)
                await calls[fields.pop("kind")](**fields)

asyncio.run(main(sys.argv[1], sys.argv[2]))
"""


def write(path: Path, lines: int, sorted_by_person: bool) -> None:
    people = lines // 10
    with path.open("w") as file:
        for i in range(lines):
            person = i // 10 if sorted_by_person else i % people
            line = {
                "kind": "track",
                "event": "Created Account",
                "email": f"user{person}@acme.com",
                "properties": {"plan": "pro", "seats": 12, "trial": False, "n": i},
                "sent_at": "2026-01-01T00:00:00.000Z",
            }
            file.write(json.dumps(line) + "\n")


def measure(command: list[str], lines: int, port: int, cwd: Path) -> dict[str, float]:
    sink(port, "/_reset", {})
    env = {**os.environ, "KOALA_PUBLIC_API_KEY": "pk_bench"}
    env["KOALA_BASE_URL"] = f"http://127.0.0.1:{port}"
    started = time.perf_counter()
    process = subprocess.Popen(
        command, env=env, cwd=cwd, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE
    )
    _, status, usage = os.wait4(process.pid, 0)
    took = time.perf_counter() - started
    process.returncode = os.waitstatus_to_exitcode(status)
    assert process.stderr is not None
    err = process.stderr.read().decode()
    if process.returncode:
        raise RuntimeError(f"{command[:4]} exited {process.returncode}: {err[-2000:]}")
    wait_for_sink(port, lines, timeout=10)
    cpu = usage.ru_utime + usage.ru_stime
    return {"lines_s": lines / took, "cpu_us": cpu / lines * 1e6}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--lines", type=int, default=200_000)
    parser.add_argument("--runs", type=int, default=2)
    parser.add_argument("--port", type=int, default=18731)
    args = parser.parse_args()
    sink_process = subprocess.Popen(
        [sys.executable, str(HERE / "sink.py"), "--port", str(args.port)]
    )
    try:
        time.sleep(1.0)
        with tempfile.TemporaryDirectory() as tmp:
            work = Path(tmp)
            (work / "plain.py").write_text(PLAIN)
            for name, ordered in (("sorted", True), ("interleaved", False)):
                path = work / f"{name}.jsonl"
                write(path, args.lines, ordered)
                url = f"http://127.0.0.1:{args.port}"
                sides = {
                    "plain": [sys.executable, str(work / "plain.py"), str(path), url],
                    "import": [sys.executable, "-m", "koala_async", "import", str(path)],
                }
                runs: dict[str, list[dict[str, float]]] = {side: [] for side in sides}
                for _ in range(args.runs):
                    for side, command in sides.items():
                        runs[side].append(measure(command, args.lines, args.port, work))
                        for leftover in work.glob("*.checkpoint"):
                            leftover.unlink()
                median = {
                    side: {k: statistics.median(r[k] for r in rs) for k in rs[0]}
                    for side, rs in runs.items()
                }
                plain, imported = median["plain"], median["import"]
                speed = imported["lines_s"] / plain["lines_s"]
                cpu = imported["cpu_us"] / plain["cpu_us"]
                print(
                    f"{name:<12} plain {plain['lines_s']:>9,.0f} lines/s {plain['cpu_us']:5.1f} "
                    f"CPU us/line | import {imported['lines_s']:>9,.0f} lines/s "
                    f"{imported['cpu_us']:5.1f} CPU us/line | speed {speed:.2f}x "
                    f"({'pass' if speed >= 0.8 else 'MISS'} >= 0.8), CPU {cpu:.2f}x "
                    f"({'pass' if cpu <= 1.3 else 'MISS'} <= 1.3)",
                    flush=True,
                )
                print("   runs:", json.dumps(runs), flush=True)
    finally:
        sink_process.terminate()
        sink_process.wait()


if __name__ == "__main__":
    main()
