"""koala_async against Segment's and PostHog's clients: one workload, one sink, one run.

    nox -s bench                  # or: python benchmarks/run.py [--quick] [--json out.json]

Every figure comes from a fresh subprocess (so no state or memory leaks from one SDK to the
next), talking to ``benchmarks/sink.py`` in a process of its own. The workload is
``track("Created Account", 3 properties)``; scenario "one" sends every event for one person,
"many" 10 events per person. Figures:

- hot: time spent inside the track calls (the cost a request handler pays), in µs per call;
- e2e: events per second from the first call until the sink has counted every event;
- cpu: client CPU time per delivered event, in µs;
- mem: bytes of (tracemalloc) memory per queued event, 100k events queued while the sink stalls;
- 50ms: events per second, scenario "many", when the sink answers every request 50 ms late.

Ceilings, measured the same way: bare httpx posting pre-encoded 30-event Koala bodies, and
msgspec encoding the entries alone.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import json
import os
import platform
import socket
import subprocess
import sys
import time
import tracemalloc
import urllib.request
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

PROPS = {"plan": "pro", "seats": 12, "trial": False}
PID = "3e6a2c18-3b02-40c4-b8d2-1842c193d3ba"
# The ceilings' request: the workload's entry, 30 times, for one person, pre-encoded.
ENTRY = (
    b'{"type":"track","event":"Created Account","properties":{"plan":"pro","seats":12,'
    b'"trial":false},"message_id":"3e6a2c18-3b02-40c4-b8d2-1842c193d3ba",'
    b'"sent_at":"2026-01-01T00:00:00.000Z"}'
)
BODY = b'{"profile_id":"' + PID.encode() + b'","events":[' + b",".join([ENTRY] * 30) + b"]}"
HEADERS = {"Content-Type": "application/json", "User-Agent": "bench"}
KOALA_LATENCY_CONCURRENCY = 256
SDKS = ["koala_async", "segment", "posthog", "posthog_async"]
CHUNK = 100  # calls timed together: a timer read per call would add its own cost to each


# The sink, seen from a worker


def sink(port: int, path: str, config: dict[str, Any] | None = None) -> dict[str, int]:
    data = json.dumps(config).encode() if config is not None else None
    request = urllib.request.Request(f"http://127.0.0.1:{port}{path}", data=data)
    with urllib.request.urlopen(request, timeout=30) as response:
        return dict(json.loads(response.read()))


def wait_for_sink(port: int, n: int, timeout: float = 300) -> None:
    deadline = time.monotonic() + timeout
    while sink(port, "/_count")["count"] < n:
        if time.monotonic() > deadline:
            raise TimeoutError(f"the sink counted {sink(port, '/_count')} of {n}")
        time.sleep(0.005)


def who(i: int, scenario: str) -> str:
    # An e-mail in "many", so koala_async (which needs one, or a UUID) and the peers (any
    # string) get the same strings at the same cost.
    return "one-user" if scenario == "one" else f"user{i // 10}@acme.com"


# Workers: each measures one SDK in one mode and prints a JSON line


def run_sync(
    n: int, port: int, call: Callable[[int], object], flush: Callable[[], object]
) -> dict[str, float]:
    sink(port, "/_reset", {})
    hot = 0.0
    cpu, wall = time.process_time(), time.perf_counter()
    for chunk in range(0, n, CHUNK):
        started = time.perf_counter()
        for i in range(chunk, min(chunk + CHUNK, n)):
            call(i)
        hot += time.perf_counter() - started
    flush()
    wait_for_sink(port, n)
    wall, cpu = time.perf_counter() - wall, time.process_time() - cpu
    return {"hot_us": hot / n * 1e6, "eps": n / wall, "cpu_us": cpu / n * 1e6}


def memory_sync(n: int, port: int, call: Callable[[int], object]) -> dict[str, float]:
    sink(port, "/_config", {"stall": True})
    call(0)  # warm up lazily built state outside the measurement
    time.sleep(0.2)
    tracemalloc.start()
    before = tracemalloc.get_traced_memory()[0]
    for i in range(1, n + 1):
        call(i)
    after = tracemalloc.get_traced_memory()[0]
    return {"mem_bytes": (after - before) / n}


def segment_client(port: int, **options: Any) -> Any:
    from segment.analytics import Client

    return Client("bench-key", host=f"http://127.0.0.1:{port}", max_queue_size=10**6, **options)


def posthog_client(port: int) -> Any:
    from posthog import Posthog

    return Posthog("phc_bench", host=f"http://127.0.0.1:{port}", max_queue_size=10**6)


def worker_sync(sdk: str, mode: str, scenario: str, n: int, port: int) -> dict[str, float]:
    if sdk == "segment":
        client = segment_client(port)

        def call(i: int) -> object:
            return client.track(user_id=who(i, scenario), event="Created Account", properties=PROPS)
    else:
        client = posthog_client(port)

        def call(i: int) -> object:
            return client.capture("Created Account", distinct_id=who(i, scenario), properties=PROPS)

    if mode == "memory":
        return memory_sync(n, port, call)
    result = run_sync(n, port, call, client.flush)
    client.shutdown()
    return result


async def worker_async(sdk: str, mode: str, scenario: str, n: int, port: int) -> dict[str, float]:
    if sdk == "koala_async":
        from koala_async import KoalaClient

        concurrency = KOALA_LATENCY_CONCURRENCY if mode == "latency" else 8
        client: Any = KoalaClient(
            "bench-key",
            base_url=f"http://127.0.0.1:{port}",
            max_queue_size=10**6,
            max_concurrent_requests=concurrency,
            shutdown_timeout=0,
        )
        await client.__aenter__()

        async def call(i: int) -> object:
            if scenario == "one":
                return await client.track("Created Account", profile_id=PID, properties=PROPS)
            return await client.track("Created Account", email=who(i, scenario), properties=PROPS)

        async def flush() -> None:
            await client.flush(timeout=300)
    else:
        from posthog import AsyncPosthog

        client = AsyncPosthog("phc_bench", host=f"http://127.0.0.1:{port}", max_queue_size=10**6)
        await client.__aenter__()

        async def call(i: int) -> object:
            return client.capture("Created Account", distinct_id=who(i, scenario), properties=PROPS)

        async def flush() -> None:
            await client.flush(timeout_seconds=300)

    if mode == "memory":
        sink(port, "/_config", {"stall": True})
        await call(0)
        await asyncio.sleep(0.2)
        tracemalloc.start()
        before = tracemalloc.get_traced_memory()[0]
        for i in range(1, n + 1):
            await call(i)
            if i % 100 == 0:
                await asyncio.sleep(0)  # let the senders take what they would take
        return {"mem_bytes": (tracemalloc.get_traced_memory()[0] - before) / n}

    sink(port, "/_reset", {})
    hot = 0.0
    cpu, wall = time.process_time(), time.perf_counter()
    for chunk in range(0, n, CHUNK):
        started = time.perf_counter()
        for i in range(chunk, min(chunk + CHUNK, n)):
            await call(i)
        hot += time.perf_counter() - started
        await asyncio.sleep(0)  # a request handler returns to the loop now and then
    await flush()
    await asyncio.to_thread(wait_for_sink, port, n)
    wall, cpu = time.perf_counter() - wall, time.process_time() - cpu
    result = {"hot_us": hot / n * 1e6, "eps": n / wall, "cpu_us": cpu / n * 1e6}
    if sdk == "koala_async":
        result["concurrency"] = client._concurrency
        await client.aclose(timeout=0)
    else:
        await client.__aexit__(None, None, None)
    return result


def ceiling_httpx(n: int, port: int) -> dict[str, float]:
    import httpx

    url = f"http://127.0.0.1:{port}/web/projects/bench-key/batch"

    async def post_all() -> None:
        async with httpx.AsyncClient() as http:
            for _ in range(n // 30):
                await http.post(url, content=BODY, headers=HEADERS)

    sink(port, "/_reset", {})
    cpu, wall = time.process_time(), time.perf_counter()
    asyncio.run(post_all())
    wall, cpu = time.perf_counter() - wall, time.process_time() - cpu
    sent = n // 30 * 30
    return {
        "eps": sent / wall,
        "cpu_us": cpu / sent * 1e6,
        "cpu_per_request_us": cpu / (n // 30) * 1e6,
    }


def ceiling_msgspec(n: int) -> dict[str, float]:
    from koala_async._wire import Track, encode

    started = time.perf_counter()
    for _ in range(n):
        encode(
            Track(
                event="Created Account",
                properties=PROPS,
                message_id=PID,
                sent_at="2026-01-01T00:00:00.000Z",
            )
        )
    return {"hot_us": (time.perf_counter() - started) / n * 1e6}


def worker(args: argparse.Namespace) -> None:
    sdk, mode, scenario, n, port = args.worker, args.mode, args.scenario, args.events, args.port
    if sdk == "httpx":
        result = ceiling_httpx(n, port)
    elif sdk == "msgspec":
        result = ceiling_msgspec(n)
    elif sdk in ("segment", "posthog"):
        result = worker_sync(sdk, mode, scenario, n, port)
    else:
        result = asyncio.run(worker_async(sdk, mode, scenario, n, port))
    print(json.dumps(result), flush=True)
    os._exit(0)  # do not wait for peers' threads stuck on a stalled sink


# The conductor


def free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return int(probe.getsockname()[1])


@contextlib.contextmanager
def running_sink() -> Iterator[int]:
    """Run ``sink.py`` in a process of its own while the block runs; yield its port."""
    port = free_port()
    command = [sys.executable, str(Path(__file__).with_name("sink.py")), "--port", str(port)]
    with subprocess.Popen(command, stdout=subprocess.PIPE, text=True) as process:
        assert process.stdout is not None
        process.stdout.readline()  # "sink listening …"
        try:
            yield port
        finally:
            process.terminate()


def measure(sdk: str, mode: str, scenario: str, n: int, port: int) -> dict[str, float]:
    command = [sys.executable, __file__, "--worker", sdk, "--mode", mode, "--scenario", scenario]
    command += ["--events", str(n), "--port", str(port)]
    done = subprocess.run(command, capture_output=True, text=True, timeout=900, check=False)
    lines = [line for line in done.stdout.splitlines() if line.startswith("{")]
    if done.returncode != 0 or not lines:
        print(f"  {sdk} {mode} {scenario} failed:\n{done.stderr[-1500:]}", file=sys.stderr)
        return {}
    print(f"  {sdk:<14} {mode:<8} {scenario:<5} {lines[-1]}", file=sys.stderr, flush=True)
    return dict(json.loads(lines[-1]))


def conduct(args: argparse.Namespace) -> dict[str, Any]:
    n = 10_000 if args.quick else 50_000
    n_memory = 100_000
    n_latency = 10_000  # even with --quick: at 4,000 the last round trips dominate (9.98x)
    results: dict[str, Any] = {"events": n, "latency_events": n_latency}
    with running_sink() as port:
        for scenario in ("one", "many"):
            for sdk in SDKS:
                results[f"{sdk}/{scenario}"] = measure(sdk, "run", scenario, n, port)
        for sdk in SDKS:
            results[f"{sdk}/memory"] = measure(sdk, "memory", "one", n_memory, port)
            sink(port, "/_config", {"stall": False})
        results["koala_async/memory-many"] = measure(
            "koala_async", "memory", "many", n_memory, port
        )
        sink(port, "/_config", {"stall": False})
        sink(port, "/_config", {"delay": 0.05})
        for sdk in SDKS:
            results[f"{sdk}/latency"] = measure(sdk, "latency", "many", n_latency, port)
        sink(port, "/_config", {"delay": 0.0})
        results["httpx/ceiling"] = measure("httpx", "run", "one", n, port)
        results["msgspec/ceiling"] = measure("msgspec", "run", "one", 200_000, port)
    results["machine"] = (
        f"{platform.machine()}, {os.cpu_count()} cores, Python {platform.python_version()}"
    )
    return results


def table(results: dict[str, Any]) -> str:
    def get(key: str, field: str) -> float:
        return float(results.get(key, {}).get(field, float("nan")))

    rows = [
        "| | hot µs/call (one) | e2e events/s one | e2e events/s many | CPU µs/event one "
        "| mem B/event | events/s with 50 ms |",
        "|---|---|---|---|---|---|---|",
    ]
    for sdk in SDKS:
        rows.append(
            f"| {sdk} | {get(f'{sdk}/one', 'hot_us'):.2f} | {get(f'{sdk}/one', 'eps'):,.0f} | "
            f"{get(f'{sdk}/many', 'eps'):,.0f} | {get(f'{sdk}/one', 'cpu_us'):.1f} | "
            f"{get(f'{sdk}/memory', 'mem_bytes'):,.0f} | {get(f'{sdk}/latency', 'eps'):,.0f} |"
        )
    rows.append(
        f"| ceiling: bare httpx, 30-event bodies | | {get('httpx/ceiling', 'eps'):,.0f} | | "
        f"{get('httpx/ceiling', 'cpu_us'):.1f} | | |"
    )
    rows.append(
        f"| ceiling: msgspec encoding alone | {get('msgspec/ceiling', 'hot_us'):.2f} | | | | | |"
    )
    rows.append("")
    rows.append("| ratio to Segment | koala_async | posthog | posthog_async |")
    rows.append("|---|---|---|---|")
    for label, key, field in [
        ("hot path (lower is better)", "one", "hot_us"),
        ("e2e events/s, one", "one", "eps"),
        ("e2e events/s, many", "many", "eps"),
        ("CPU per event, one (lower is better)", "one", "cpu_us"),
        ("events/s with 50 ms answers, many", "latency", "eps"),
    ]:
        base = get(f"segment/{key}", field)
        cells = [f"{get(f'{sdk}/{key}', field) / base:.2f}" for sdk in SDKS if sdk != "segment"]
        rows.append(f"| {label} | " + " | ".join(cells) + " |")

    def figures(sdk: str) -> dict[str, float]:
        wanted = [
            ("hot", "one", "hot_us"),
            ("one", "one", "eps"),
            ("many", "many", "eps"),
            ("cpu", "one", "cpu_us"),
            ("lat", "latency", "eps"),
        ]
        return {name: get(f"{sdk}/{run}", field) for name, run, field in wanted}

    seg, ko = figures("segment"), figures("koala_async")
    checks = [
        (
            "hot path ≤ 1/15 of Segment",
            ko["hot"] <= seg["hot"] / 15,
            f"1/{seg['hot'] / ko['hot']:.1f}",
        ),
        ("e2e one ≥ 2.5x Segment", ko["one"] >= 2.5 * seg["one"], f"{ko['one'] / seg['one']:.2f}x"),
        ("e2e many ≥ 1x Segment", ko["many"] >= seg["many"], f"{ko['many'] / seg['many']:.2f}x"),
        (
            "CPU/event one ≤ 0.4x Segment",
            ko["cpu"] <= 0.4 * seg["cpu"],
            f"{ko['cpu'] / seg['cpu']:.2f}x",
        ),
        (
            "memory ≤ 250 B/event",
            get("koala_async/memory", "mem_bytes") <= 250,
            f"{get('koala_async/memory', 'mem_bytes'):.0f} B "
            f"(many: {get('koala_async/memory-many', 'mem_bytes'):.0f} B)",
        ),
        (
            f"50 ms many ≥ 10x Segment (concurrency {KOALA_LATENCY_CONCURRENCY})",
            ko["lat"] >= 10 * seg["lat"],
            f"{ko['lat'] / seg['lat']:.1f}x",
        ),
    ]
    rows += ["", "| target | result | measured |", "|---|---|---|"]
    rows += [f"| {name} | {'pass' if ok else 'MISS'} | {value} |" for name, ok, value in checks]
    return "\n".join(rows)


def main() -> None:
    parser = argparse.ArgumentParser(description="Benchmark koala_async against its peers.")
    parser.add_argument("--quick", action="store_true", help="fewer events, a rougher picture")
    parser.add_argument("--json", type=Path, help="also write the raw figures here")
    parser.add_argument("--worker", help=argparse.SUPPRESS)
    parser.add_argument("--mode", default="run", help=argparse.SUPPRESS)
    parser.add_argument("--scenario", default="one", help=argparse.SUPPRESS)
    parser.add_argument("--events", type=int, default=10_000, help=argparse.SUPPRESS)
    parser.add_argument("--port", type=int, help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.worker:
        worker(args)
        return
    print("measuring (each line: one fresh subprocess)…", file=sys.stderr)
    results = conduct(args)
    print(f"\n{results['machine']}; {results['events']:,} events per run\n")
    print(table(results))
    if args.json:
        args.json.write_text(json.dumps(results, indent=2))


if __name__ == "__main__":
    main()
