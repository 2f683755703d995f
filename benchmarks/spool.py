"""What the durable spool costs: the hot path with and without it, write throughput, disk use.

    python benchmarks/spool.py [--quick] [--json out.json]

- hot: µs per ``track()`` call (3 properties, 10 events per person), timed around runs of
  100 calls, the loop yielding between runs as a request handler would; the endpoint is a
  closed port, so no sender competes for the CPU, while the spool's writer commits in its
  thread as it would in production (its share of the GIL is part of the cost). Best of 3.
- write: entries per second the spool commits: through the client (calls until every entry
  is committed), and the database alone (``SpoolFile.commit`` with 10,000-row commits).
- disk: bytes per entry, as pages in use and as the file's size (WAL checkpointed).
- e2e (issue 25's cost targets): events per second from the first call until
  ``benchmarks/sink.py`` (a process of its own) counted every event, and CPU µs per
  delivered event (the client's process, every thread), spool on vs off, each run in a fresh
  process, best of 3 (``--e2e-only`` runs just this). Targets: CPU <= 1.3x, throughput >= 0.8x.
"""

from __future__ import annotations

import argparse
import json
import logging
import os
import subprocess
import sys
import tempfile
import time
import urllib.request
from pathlib import Path
from typing import Any

import anyio
import anyio.lowlevel

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from koala_async import KoalaClient, RetryPolicy
from koala_async._spool import Fresh, SpoolFile

PROPS = {"plan": "pro", "seats": 12, "trial": False}
CHUNK = 100


def _down() -> str:
    import socket

    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return f"http://127.0.0.1:{probe.getsockname()[1]}"


def _client(n: int, spool: str | None) -> KoalaClient:
    """A client for ``n`` calls to an endpoint that is down: no sender competes for the CPU
    (the first refusal opens the circuit; the long backoff keeps probes rare)."""
    return KoalaClient(
        "pk_bench",
        base_url=_down(),
        max_queue_size=n + 1,
        shutdown_timeout=0,
        retry=RetryPolicy(backoff=60, max_backoff=60),
        spool=spool,
    )


async def _hot(n: int, spool: str | None) -> tuple[float, float]:
    """µs per track() call: wall time inside the calls, and the process's CPU time (every
    thread: the spool's writer included, its last commit too) over the whole run."""
    koala = _client(n, spool)
    spent = 0.0
    async with koala:
        cpu = time.process_time()
        for start in range(0, n, CHUNK):
            began = time.perf_counter()
            for i in range(start, start + CHUNK):
                await koala.track(
                    "Created Account", email=f"user{i // 10}@acme.com", properties=PROPS
                )
            spent += time.perf_counter() - began
            await anyio.lowlevel.checkpoint()
        if koala._engine._spool is not None:
            await koala._engine._spool.commit()
        cpu = time.process_time() - cpu
    return spent / n * 1e6, cpu / n * 1e6


async def _through_client(n: int, path: str) -> float:
    """Entries per second from the first call until every entry is committed."""
    koala = _client(n, path)
    async with koala:
        spool = koala._engine._spool
        assert spool is not None
        began = time.perf_counter()
        for i in range(n):
            await koala.track("Created Account", email=f"user{i // 10}@acme.com", properties=PROPS)
        await spool.commit()  # what is left since the last group commit
        elapsed = time.perf_counter() - began
    return n / elapsed


def _database_alone(n: int, path: str) -> tuple[float, float, float]:
    """Entries/s committing 10,000-row batches; bytes per entry in pages and in the file."""
    raw = (
        b'{"type":"track","event":"Created Account","properties":{"plan":"pro","seats":12,'
        b'"trial":false},"message_id":"3e6a2c18-3b02-40c4-b8d2-1842c193d3ba",'
        b'"sent_at":"2026-01-01T00:00:00.000Z"}'
    )
    file, _ = SpoolFile.open(path)
    now = time.time()
    rows = [
        Fresh(i, 1, f"user{i // 10}@acme.com", None, 0, raw, now, 0, None) for i in range(1, n + 1)
    ]
    began = time.perf_counter()
    for start in range(0, n, 10_000):
        file.commit(rows[start : start + 10_000], [], [], 1 << 40, 0.0)
    rate = n / (time.perf_counter() - began)
    used = file.used() / n
    file._db.execute("PRAGMA wal_checkpoint(TRUNCATE)")
    size = os.path.getsize(path) / n
    file.close()
    return rate, used, size


def _sink(port: int, path: str, data: bytes | None = None) -> dict[str, int]:
    request = urllib.request.Request(f"http://127.0.0.1:{port}{path}", data=data)
    with urllib.request.urlopen(request, timeout=30) as response:
        return dict(json.loads(response.read()))


async def _e2e(n: int, port: int, spool: str | None) -> dict[str, float]:
    """Events/s and CPU µs per delivered event, from the first call until the sink counted
    all (run.py's e2e workload: 10 events a person, yielding every 100 calls)."""
    koala = KoalaClient("pk_bench", base_url=f"http://127.0.0.1:{port}", spool=spool)
    people = [f"user{i // 10}@acme.com" for i in range(n)]
    async with koala:
        _sink(port, "/_reset", b"{}")
        cpu, wall = time.process_time(), time.perf_counter()
        for start in range(0, n, CHUNK):
            for i in range(start, min(start + CHUNK, n)):
                await koala.track("Created Account", email=people[i], properties=PROPS)
            await anyio.lowlevel.checkpoint()
        await koala.flush(timeout=300)
        while _sink(port, "/_count")["count"] < n:  # noqa: ASYNC110 - the sink is another process
            await anyio.sleep(0.005)
        wall, cpu = time.perf_counter() - wall, time.process_time() - cpu
    return {"eps": n / wall, "cpu_us": cpu / n * 1e6}


def _e2e_in_process(n: int, port: int, spool: bool) -> dict[str, float]:
    with tempfile.TemporaryDirectory() as tmp:
        command = [sys.executable, __file__, "--e2e-worker", str(n), str(port)]
        command += [f"{tmp}/e2e.db"] if spool else []
        done = subprocess.run(command, capture_output=True, text=True, check=True)
    return dict(json.loads(done.stdout.splitlines()[-1]))


def e2e(n: int, rounds: int) -> dict[str, float]:
    """Spool off vs on, alternating, each in a fresh process, against one sink process."""
    import socket

    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    command = [sys.executable, str(Path(__file__).with_name("sink.py")), "--port", str(port)]
    with subprocess.Popen(command, stdout=subprocess.PIPE, text=True) as process:
        assert process.stdout is not None
        process.stdout.readline()  # "sink listening …"
        try:
            runs: dict[bool, list[dict[str, float]]] = {False: [], True: []}
            for _ in range(rounds):
                for spool in (False, True):
                    runs[spool].append(_e2e_in_process(n, port, spool))
        finally:
            process.terminate()
    figures: dict[str, float] = {"e2e_events": n}
    for spool, name in ((False, "without"), (True, "with")):
        figures[f"e2e_eps_{name}_spool"] = round(max(r["eps"] for r in runs[spool]))
        figures[f"e2e_cpu_us_{name}_spool"] = round(min(r["cpu_us"] for r in runs[spool]), 2)
    eps = figures["e2e_eps_with_spool"] / figures["e2e_eps_without_spool"]
    cpu = figures["e2e_cpu_us_with_spool"] / figures["e2e_cpu_us_without_spool"]
    figures["e2e_eps_ratio"], figures["e2e_cpu_ratio"] = round(eps, 3), round(cpu, 3)
    return figures


def _print_e2e(figures: dict[str, Any]) -> None:
    eps, cpu = figures["e2e_eps_ratio"], figures["e2e_cpu_ratio"]
    print(
        f"e2e ({figures['e2e_events']:,} events): {figures['e2e_eps_without_spool']:,} "
        f"events/s without a spool, {figures['e2e_eps_with_spool']:,} with one: {eps}x "
        f"(target >= 0.8x: {'pass' if eps >= 0.8 else 'MISS'})"
    )
    print(
        f"CPU per delivered event: {figures['e2e_cpu_us_without_spool']} µs without a spool, "
        f"{figures['e2e_cpu_us_with_spool']} with one: {cpu}x "
        f"(target <= 1.3x: {'pass' if cpu <= 1.3 else 'MISS'})"
    )


def main() -> None:
    if sys.argv[1:2] == ["--e2e-worker"]:
        logging.getLogger("koala_async").setLevel(logging.CRITICAL)
        n, port = int(sys.argv[2]), int(sys.argv[3])
        spool = sys.argv[4] if len(sys.argv) > 4 else None
        print(json.dumps(anyio.run(_e2e, n, port, spool)))
        return
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="fewer calls (a smoke run)")
    parser.add_argument("--json", type=Path, help="also write the figures here")
    parser.add_argument("--e2e-only", action="store_true", help="only the e2e cost")
    args = parser.parse_args()
    logging.getLogger("koala_async").setLevel(logging.CRITICAL)  # the endpoint is down on purpose
    if args.e2e_only:
        figures = e2e(20_000 if args.quick else 100_000, 1 if args.quick else 3)
        _print_e2e(figures)
        if args.json:
            args.json.write_text(json.dumps(figures, indent=2) + "\n")
        return
    n = 2_000 if args.quick else 50_000
    with tempfile.TemporaryDirectory() as tmp:
        without: list[tuple[float, float]] = []
        with_spool: list[tuple[float, float]] = []
        for round_ in range(1 if args.quick else 3):
            without.append(anyio.run(_hot, n, None))
            with_spool.append(anyio.run(_hot, n, f"{tmp}/hot{round_}.db"))
        client_rate = anyio.run(_through_client, n, f"{tmp}/client.db")
        db_rate, used, size = _database_alone(n * 4, f"{tmp}/alone.db")
    figures: dict[str, Any] = {
        "calls": n,
        "hot_us_without_spool": round(min(w for w, _ in without), 3),
        "hot_us_with_spool": round(min(w for w, _ in with_spool), 3),
        "cpu_us_without_spool": round(min(c for _, c in without), 3),
        "cpu_us_with_spool": round(min(c for _, c in with_spool), 3),
        "write_entries_per_s_client": round(client_rate),
        "write_entries_per_s_database": round(db_rate),
        "bytes_per_entry_pages": round(used, 1),
        "bytes_per_entry_file": round(size, 1),
    }
    for name in ("hot", "cpu"):
        ratio = figures[f"{name}_ratio"] = round(
            figures[f"{name}_us_with_spool"] / figures[f"{name}_us_without_spool"], 3
        )
        print(f"{'hot path (wall)' if name == 'hot' else 'CPU, all threads'}: "
              f"{figures[f'{name}_us_without_spool']} µs/call without a spool, "
              f"{figures[f'{name}_us_with_spool']} with one: {ratio}x "
              f"(target ≤ 1.5x: {'pass' if ratio <= 1.5 else 'MISS'})")  # fmt: skip
    client, alone = figures["write_entries_per_s_client"], figures["write_entries_per_s_database"]
    print(f"spool writes: {client:,} entries/s through the client; {alone:,} the database alone")
    print(f"disk: {figures['bytes_per_entry_pages']} bytes/entry in pages, "
          f"{figures['bytes_per_entry_file']} in the file (a 179-byte entry)")  # fmt: skip
    figures.update(e2e(20_000 if args.quick else 100_000, 1 if args.quick else 3))
    _print_e2e(figures)
    if args.json:
        args.json.write_text(json.dumps(figures, indent=2) + "\n")


if __name__ == "__main__":
    main()
