"""koala_async against Segment's and PostHog's clients: one workload, one sink, one run.

    nox -s bench                  # or: python benchmarks/run.py [--quick] [--json out.json]

Every figure comes from a fresh subprocess (so no state or memory leaks from one SDK to the
next), talking to ``benchmarks/sink.py`` in a process of its own. The workload is
``track("Created Account", 3 properties)``; scenario "one" sends every event for one person,
"many" 10 events per person. Figures:

- hot: time spent inside the track calls (the cost a request handler pays), in µs per call;
  every call's arguments are made before the clock starts, and the timed loop calls the SDK
  as a user would, with no wrapper of the harness's own around each call;
- e2e: events per second from the first call until the sink has counted every event;
- cpu: client CPU time per delivered event, in µs;
- mem: bytes of (tracemalloc) memory per queued event, 100k events queued while the sink stalls;
- 50ms: events per second, scenario "many", when the sink answers every request 50 ms late.

Floors, measured in the same run and the same way (issue 29's "at most Nx the floor"): the
same entries encoded with msgspec (a fresh message_id and sent_at each) and posted as raw
keep-alive asyncio requests, callbacks only (no queue, task, timer or retry): e2e in the
SDK's per-person batches (30 for one person, 10 each for many), and the web scenario's
visitors one request each at the same schedule. Ceilings: bare httpx posting pre-encoded
30-event Koala bodies, and msgspec encoding the entries alone.
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
import threading
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
PAGE_PROPS = {"url": "https://acme.com/pricing", "referrer": "https://www.google.com/"}
TICK = 0.01  # web: a burst of new visitors every 10 ms
DEADLINE = 10.0  # seconds a close may take: koala_async's default shutdown_timeout
WEB_RATES = (1_000, 5_000)  # entries/s in the web scenario
ERRORS = {"delay": 0.005, "errors": 0.3}  # web under errors: 30% 500s, 5 ms answers
ERRORS_RATE = 1_000
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
    # An e-mail in "many" (10 events each) and "distinct" (one each), so koala_async (which
    # needs one, or a UUID) and the peers (any string) get the same strings at the same cost.
    if scenario == "one":
        return "one-user"
    return f"user{i // 10}@acme.com" if scenario == "many" else f"user{i}@acme.com"


def people(scenario: str, n: int) -> list[str]:
    """Calls 0 to n's people, made before any clock starts: building the strings is the
    harness's work, not the SDK's (in the timed loop it added ~0.5 µs to every SDK's call)."""
    return [who(i, scenario) for i in range(n + 1)]


Calls = Callable[[int, int], object]
"""Makes calls ``lo`` to ``hi - 1`` of a scenario (a coroutine for the async SDKs)."""


# Workers: each measures one SDK in one mode and prints a JSON line


def run_sync(n: int, port: int, calls: Calls, flush: Callable[[], object]) -> dict[str, float]:
    sink(port, "/_reset", {})
    hot = 0.0
    cpu, wall = time.process_time(), time.perf_counter()
    for chunk in range(0, n, CHUNK):
        started = time.perf_counter()
        calls(chunk, min(chunk + CHUNK, n))
        hot += time.perf_counter() - started
    flush()
    wait_for_sink(port, n)
    wall, cpu = time.perf_counter() - wall, time.process_time() - cpu
    return {"hot_us": hot / n * 1e6, "eps": n / wall, "cpu_us": cpu / n * 1e6}


def memory_sync(n: int, port: int, calls: Calls) -> dict[str, float]:
    sink(port, "/_config", {"stall": True})
    calls(0, 1)  # warm up lazily built state outside the measurement
    time.sleep(0.2)
    tracemalloc.start()
    before = tracemalloc.get_traced_memory()[0]
    calls(1, n + 1)
    after = tracemalloc.get_traced_memory()[0]
    return {"mem_bytes": (after - before) / n}


def segment_client(port: int, **options: Any) -> Any:
    from segment.analytics import Client

    return Client("bench-key", host=f"http://127.0.0.1:{port}", max_queue_size=10**6, **options)


def posthog_client(port: int) -> Any:
    from posthog import Posthog

    return Posthog("phc_bench", host=f"http://127.0.0.1:{port}", max_queue_size=10**6)


def worker_sync(sdk: str, mode: str, scenario: str, n: int, port: int) -> dict[str, float]:
    client = segment_client(port) if sdk == "segment" else posthog_client(port)
    calls = peer_calls(sdk, client, people(scenario, n))
    if mode == "memory":
        return memory_sync(n, port, calls)
    result = run_sync(n, port, calls, client.flush)
    client.shutdown()
    return result


def peer_calls(sdk: str, client: Any, ids: list[str]) -> Calls:
    """A peer's calls (PostHog's capture is synchronous in its async client too)."""
    if sdk == "segment":

        def track(lo: int, hi: int) -> None:
            for i in range(lo, hi):
                client.track(user_id=ids[i], event="Created Account", properties=PROPS)

        return track

    def capture(lo: int, hi: int) -> None:
        for i in range(lo, hi):
            client.capture("Created Account", distinct_id=ids[i], properties=PROPS)

    return capture


def koala_client(port: int) -> Any:
    """koala_async with its defaults: only the key and where the sink is."""
    from koala_async import KoalaClient

    return KoalaClient("bench-key", base_url=f"http://127.0.0.1:{port}")


async def worker_async(sdk: str, mode: str, scenario: str, n: int, port: int) -> dict[str, float]:
    ids = people(scenario, n)
    if sdk == "koala_async":
        client: Any = koala_client(port)
        await client.__aenter__()

        async def calls(lo: int, hi: int) -> None:
            if scenario == "one":  # a UUID: koala_async's profile_id
                for _ in range(lo, hi):
                    await client.track("Created Account", profile_id=PID, properties=PROPS)
            else:
                for i in range(lo, hi):
                    await client.track("Created Account", email=ids[i], properties=PROPS)

        async def flush() -> None:
            await client.flush(timeout=300)
    else:
        from posthog import AsyncPosthog

        client = AsyncPosthog("phc_bench", host=f"http://127.0.0.1:{port}", max_queue_size=10**6)
        await client.__aenter__()
        capture = peer_calls(sdk, client, ids)

        async def calls(lo: int, hi: int) -> None:
            capture(lo, hi)

        async def flush() -> None:
            await client.flush(timeout_seconds=300)

    if mode == "memory":
        sink(port, "/_config", {"stall": True})
        await calls(0, 1)
        await asyncio.sleep(0.2)
        tracemalloc.start()
        before = tracemalloc.get_traced_memory()[0]
        for chunk in range(1, n + 1, CHUNK):
            await calls(chunk, min(chunk + CHUNK, n + 1))
            await asyncio.sleep(0)  # let the senders take what they would take
        return {"mem_bytes": (tracemalloc.get_traced_memory()[0] - before) / n}

    sink(port, "/_reset", {})
    hot = 0.0
    cpu, wall = time.process_time(), time.perf_counter()
    for chunk in range(0, n, CHUNK):
        started = time.perf_counter()
        await calls(chunk, min(chunk + CHUNK, n))
        hot += time.perf_counter() - started
        await asyncio.sleep(0)  # a request handler returns to the loop now and then
    await flush()
    await asyncio.to_thread(wait_for_sink, port, n)
    wall, cpu = time.perf_counter() - wall, time.process_time() - cpu
    result = {"hot_us": hot / n * 1e6, "eps": n / wall, "cpu_us": cpu / n * 1e6}
    if sdk == "koala_async":
        result["concurrency"] = client.stats().concurrency  # what the limiter reached
        await client.aclose()
    else:
        await client.__aexit__(None, None, None)
    return result


# web: every 10 ms a burst of new visitors, 2 entries each; loop: a bare loop of track calls


def visitor(i: int) -> str:
    """A new visitor's id: a UUID (koala_async's profile_id; any string for the peers)."""
    return f"{i:08x}-0000-4000-8000-000000000000"


def ticks(rate: float, seconds: float) -> Iterator[tuple[float, range]]:
    """The web schedule: (when, which visitors) every TICK seconds, from 0 to ``seconds``."""
    per_tick = max(1, round(rate * TICK / 2))
    for tick in range(round(seconds / TICK)):
        yield tick * TICK, range(tick * per_tick, (tick + 1) * per_tick)


def vm_kb(field: str) -> int:
    """A line of /proc/self/status in kB (VmRSS, VmHWM); 0 where there is no /proc."""
    with contextlib.suppress(OSError):
        for line in Path("/proc/self/status").read_text().splitlines():
            if line.startswith(field + ":"):
                return int(line.split()[1])
    return 0


def close_sync(client: Any, deadline: float) -> tuple[float, bool]:
    """Shut a peer down, waiting at most ``deadline`` seconds: (seconds taken, in time)."""
    started = time.perf_counter()
    thread = threading.Thread(target=client.shutdown, daemon=True)
    thread.start()
    thread.join(deadline)
    return time.perf_counter() - started, not thread.is_alive()


def web_sync(sdk: str, rate: float, seconds: float, port: int) -> dict[str, float]:
    client = segment_client(port) if sdk == "segment" else posthog_client(port)
    if sdk == "segment":

        def visit(v: str) -> None:
            client.page(user_id=v, name="Pricing", properties=PAGE_PROPS)
            client.track(user_id=v, event="Signed Up", properties=PROPS)
    else:

        def visit(v: str) -> None:
            client.capture("$pageview", distinct_id=v, properties=PAGE_PROPS)
            client.capture("Signed Up", distinct_id=v, properties=PROPS)

    plan = list(ticks(rate, seconds))
    ids = [visitor(i) for i in range(plan[-1][1].stop)]
    sink(port, "/_reset", {})
    cpu, wall = time.process_time(), time.perf_counter()
    for when, visitors in plan:
        late = wall + when - time.perf_counter()
        if late > 0:
            time.sleep(late)
        for i in visitors:
            visit(ids[i])
    produced_s = time.perf_counter() - wall
    close_s, closed = close_sync(client, DEADLINE)
    wall, cpu = time.perf_counter() - wall, time.process_time() - cpu
    return web_result(2 * len(ids), sink(port, "/_count")["count"], produced_s, wall, cpu) | {
        "close_s": close_s,
        "closed": float(closed),
    }


def web_result(
    produced: int, delivered: int, produced_s: float, wall: float, cpu: float
) -> dict[str, float]:
    return {
        "produced": produced,
        "delivered": delivered,
        "dropped": produced - delivered,
        "produced_eps": produced / produced_s,
        "delivered_eps": delivered / wall,
        "cpu_us": cpu / max(delivered, 1) * 1e6,
    }


# The floors: the cheapest delivery of the same entries, measured in the same run, so that
# "CPU per delivered entry at most Nx the floor" (issue 29) compares like with like.


class _Floor(asyncio.Protocol):
    """One floor connection: a raw keep-alive HTTP/1.1 client, callbacks only."""

    def __init__(self, pool: FloorPool) -> None:
        self.transport: asyncio.Transport | None = None
        self.buffer = b""
        self.pool = pool

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.transport = transport  # type: ignore[assignment]
        self.pool.ready(self)

    def data_received(self, data: bytes) -> None:
        self.buffer += data
        head = self.buffer.find(b"\r\n\r\n")
        if head < 0:
            return
        length = self.buffer.find(b"Content-Length: ")
        size = int(self.buffer[length + 16 : self.buffer.find(b"\r", length)])
        if len(self.buffer) >= head + 4 + size:
            self.buffer = b""
            self.pool.ready(self)


class FloorPool:
    """Posts requests over raw keep-alive asyncio connections (up to ``most``), one request
    in flight on each: no queue of the SDK's, no task, no timer, no retry, no parsing beyond
    the answer's length. Entries are encoded with msgspec and koala_async's own id and
    timestamp functions (the cheapest known; a fresh message_id and sent_at per entry, as
    any SDK must make)."""

    HEAD = (
        b"POST /web/projects/bench-key/batch HTTP/1.1\r\nHost: 127.0.0.1\r\n"
        b"Content-Type: application/json\r\nContent-Length: %d\r\n\r\n%s"
    )

    def __init__(self, port: int, most: int = 1_000) -> None:
        import msgspec

        from koala_async._wire import new_message_id, now_iso

        self.encode = msgspec.json.Encoder().encode
        self.message_id, self.now = new_message_id, now_iso
        self.port, self.most = port, most
        self.idle: list[_Floor] = []
        self.waiting: list[bytes] = []
        self.opened = 0  # connections made or being made
        self.done = asyncio.Event()
        self.loop = asyncio.get_running_loop()
        self.connecting: set[asyncio.Task[Any]] = set()

    def entry(self, **fields: Any) -> dict[str, Any]:
        return {"message_id": self.message_id(), "sent_at": self.now(), **fields}

    def post(self, body: dict[str, Any]) -> None:
        content = self.encode(body)
        request = self.HEAD % (len(content), content)
        if self.idle:
            conn = self.idle.pop()
            assert conn.transport is not None
            conn.transport.write(request)
            return
        self.waiting.append(request)
        if self.opened < self.most:
            self.opened += 1
            task = self.loop.create_task(
                self.loop.create_connection(lambda: _Floor(self), "127.0.0.1", self.port)
            )
            self.connecting.add(task)
            task.add_done_callback(self.connecting.discard)

    def ready(self, conn: _Floor) -> None:
        """``conn`` is connected or answered: send the next request waiting, or go idle."""
        assert conn.transport is not None
        if self.waiting:
            conn.transport.write(self.waiting.pop())
        else:
            self.idle.append(conn)
            self.done.set()

    async def drained(self) -> None:
        """Every request posted is answered."""
        while self.waiting or len(self.idle) < self.opened:
            self.done.clear()
            await self.done.wait()


async def floor_e2e(scenario: str, n: int, port: int) -> dict[str, float]:
    """The e2e floor: the same events as koala_async's run, encoded in per-person batches
    (30 for one person, 10 each for many) and posted over 8 connections."""
    ids, per = people(scenario, n), 30 if scenario == "one" else 10
    sink(port, "/_reset", {})
    pool = FloorPool(port, most=8)  # (its imports before the clock, as a client's open)
    cpu, wall = time.process_time(), time.perf_counter()
    for lo in range(0, n, per):
        events = [
            pool.entry(type="track", event="Created Account", properties=PROPS)
            for _ in range(lo, min(lo + per, n))
        ]
        pool.post(
            {"profile_id": PID, "events": events}
            if per == 30
            else {"email": ids[lo], "events": events}
        )
    await pool.drained()
    await asyncio.to_thread(wait_for_sink, port, n)
    wall, cpu = time.perf_counter() - wall, time.process_time() - cpu
    return {"hot_us": float("nan"), "eps": n / wall, "cpu_us": cpu / n * 1e6}


async def web_async(sdk: str, rate: float, seconds: float, port: int) -> dict[str, float]:
    plan = list(ticks(rate, seconds))
    ids = [visitor(i) for i in range(plan[-1][1].stop)]
    peak = 0
    sink(port, "/_reset", {})
    if sdk == "floor":
        client = pool = FloorPool(port)

        async def visit(v: str) -> None:
            pool.post(
                {
                    "profile_id": v,
                    "page_views": [pool.entry(name="Pricing", properties=PAGE_PROPS)],
                    "events": [pool.entry(event="Signed Up", properties=PROPS)],
                }
            )
    elif sdk == "koala_async":
        client: Any = koala_client(port)
        await client.__aenter__()

        async def visit(v: str) -> None:
            await client.page(profile_id=v, name="Pricing", properties=PAGE_PROPS)
            await client.track("Signed Up", profile_id=v, properties=PROPS)
    else:
        from posthog import AsyncPosthog

        client = AsyncPosthog("phc_bench", host=f"http://127.0.0.1:{port}", max_queue_size=10**6)
        await client.__aenter__()

        async def visit(v: str) -> None:
            client.capture("$pageview", distinct_id=v, properties=PAGE_PROPS)
            client.capture("Signed Up", distinct_id=v, properties=PROPS)

    cpu, wall = time.process_time(), time.perf_counter()
    for when, visitors in plan:
        late = wall + when - time.perf_counter()
        if late > 0:
            await asyncio.sleep(late)
        for i in visitors:
            await visit(ids[i])
        if sdk == "koala_async":
            peak = max(peak, client.stats().concurrency)
    produced_s = time.perf_counter() - wall
    closing = time.perf_counter()
    if sdk == "floor":
        behind, closed = 0, True
        await pool.drained()
    elif sdk == "koala_async":
        behind = client.stats().pending
        await client.aclose()  # its own deadline: shutdown_timeout (default 10 s)
        stats = client.stats()
        closed = stats.pending == 0 and not stats.dropped["shutdown_timeout"]
    else:
        behind = 0
        closed = True
        try:
            await asyncio.wait_for(client.__aexit__(None, None, None), DEADLINE)
        except asyncio.TimeoutError:
            closed = False
    close_s = time.perf_counter() - closing
    wall, cpu = time.perf_counter() - wall, time.process_time() - cpu
    count = sink(port, "/_count")["count"]
    result = web_result(2 * len(ids), count, produced_s, wall, cpu)
    result |= {"close_s": close_s, "closed": float(closed and close_s <= DEADLINE + 0.5)}
    if sdk == "koala_async":
        result |= {
            "delivered": stats.delivered,
            "dropped": stats.dropped_total,
            "behind": behind,
            "concurrency": peak,
            "requests": stats.requests,
        }
    return result


def loop_sync(sdk: str, n: int, port: int) -> dict[str, float]:
    client = segment_client(port) if sdk == "segment" else posthog_client(port)
    calls = peer_calls(sdk, client, people("many", n))
    sink(port, "/_reset", {})
    rss = vm_kb("VmRSS")
    cpu, wall = time.process_time(), time.perf_counter()
    calls(0, n)
    loop_s = time.perf_counter() - wall
    close_s, closed = close_sync(client, DEADLINE)
    wall, cpu = time.perf_counter() - wall, time.process_time() - cpu
    delivered = sink(port, "/_count")["count"]
    return loop_result(n, delivered, loop_s, wall, cpu, vm_kb("VmHWM") - rss) | {
        "close_s": close_s,
        "closed": float(closed),
    }


def loop_result(
    n: int, delivered: int, loop_s: float, wall: float, cpu: float, grown_kb: int
) -> dict[str, float]:
    return {
        "produced": n,
        "delivered": delivered,
        "dropped": n - delivered,
        "loop_eps": n / loop_s,
        "eps": delivered / wall,
        "cpu_us": cpu / max(delivered, 1) * 1e6,
        "peak_mb": grown_kb / 1024,
    }


async def loop_async(sdk: str, n: int, port: int) -> dict[str, float]:
    ids = people("many", n)
    sink(port, "/_reset", {})
    rss = vm_kb("VmRSS")
    if sdk != "koala_async":
        from posthog import AsyncPosthog

        peer = AsyncPosthog("phc_bench", host=f"http://127.0.0.1:{port}", max_queue_size=10**6)
        await peer.__aenter__()
        calls = peer_calls(sdk, peer, ids)
        cpu, wall = time.process_time(), time.perf_counter()
        calls(0, n)
        loop_s = time.perf_counter() - wall
        closed = True
        try:
            await asyncio.wait_for(peer.__aexit__(None, None, None), DEADLINE)
        except asyncio.TimeoutError:
            closed = False
        wall, cpu = time.perf_counter() - wall, time.process_time() - cpu
        delivered = sink(port, "/_count")["count"]
        grown = vm_kb("VmHWM") - rss
        return loop_result(n, delivered, loop_s, wall, cpu, grown) | {
            "close_s": wall - loop_s,
            "closed": float(closed),
        }
    koala = koala_client(port)
    await koala.__aenter__()
    pending = 0
    cpu, wall = time.process_time(), time.perf_counter()
    for i in range(n):
        await koala.track("Created Account", email=ids[i], properties=PROPS)
        if not i & 1023:
            pending = max(pending, koala.stats().pending)
    loop_s = time.perf_counter() - wall
    closing = time.perf_counter()
    await koala.aclose()
    close_s = time.perf_counter() - closing
    wall, cpu = time.perf_counter() - wall, time.process_time() - cpu
    stats = koala.stats()
    result = loop_result(n, stats.delivered, loop_s, wall, cpu, vm_kb("VmHWM") - rss)
    result |= {
        "dropped": stats.dropped_total,
        "peak_pending": pending,
        "max_queue_size": koala._config.max_queue_size,
        "concurrency": stats.concurrency,
        "close_s": close_s,
        "closed": float(stats.pending == 0 and not stats.dropped["shutdown_timeout"]),
    }
    return result


# cold: each figure from a bare interpreter (python -c), not from this module, whose own
# imports (asyncio, urllib, so ssl) would already be loaded

COLD_OPEN = """
import time
started = time.perf_counter()
import koala_async
imported = time.perf_counter() - started
import asyncio, json
started = time.perf_counter()
if {preload}:  # what the first open imports: anyio's asyncio backend
    import anyio._backends._asyncio
backend = time.perf_counter() - started

async def main():
    times = []
    for _ in range(21):
        started = time.perf_counter()
        client = koala_async.KoalaClient("bench-key", base_url="http://127.0.0.1:{port}")
        await client.__aenter__()
        await client.aclose()
        times.append(time.perf_counter() - started)
    return times

times = asyncio.run(main())
rest = sorted(times[1:])
print(json.dumps({{"import_ms": imported * 1e3, "backend_ms": backend * 1e3,
                  "first_open_ms": times[0] * 1e3, "open_ms": rest[len(rest) // 2] * 1e3}}))
"""

COLD_FIVE = {
    "koala_async": """
import koala_async, asyncio

async def main():
    async with koala_async.KoalaClient("bench-key", base_url="{url}") as koala:
        for _ in range(5):
            await koala.track("Created Account", email="ada@acme.com", properties=PROPS)
        await koala.flush()

asyncio.run(main())
""",
    "segment": """
from segment.analytics import Client
client = Client("bench-key", host="{url}")
for _ in range(5):
    client.track(user_id="ada@acme.com", event="Created Account", properties=PROPS)
client.flush()
client.shutdown()
""",
    "posthog": """
from posthog import Posthog
client = Posthog("phc_bench", host="{url}")
for _ in range(5):
    client.capture("Created Account", distinct_id="ada@acme.com", properties=PROPS)
client.flush()
client.shutdown()
""",
    "posthog_async": """
from posthog import AsyncPosthog
import asyncio

async def main():
    async with AsyncPosthog("phc_bench", host="{url}") as client:
        for _ in range(5):
            client.capture("Created Account", distinct_id="ada@acme.com", properties=PROPS)
        await client.flush()

asyncio.run(main())
""",
}


def cold(sdk: str, port: int) -> dict[str, float]:
    """import + 5 tracks + flush + close, in a bare interpreter; for koala_async also the
    import alone and opening a client (construction, ``__aenter__``, ``aclose()``)."""
    url = f"http://127.0.0.1:{port}"
    body = COLD_FIVE[sdk].format(url=url)
    code = (
        f"import time, json\nstarted = time.perf_counter()\nPROPS = {PROPS!r}\n{body}\n"
        "print(json.dumps({'five_ms': (time.perf_counter() - started) * 1e3}))"
    )
    sink(port, "/_reset", {})
    result = bare_python(code)
    result["delivered"] = sink(port, "/_count")["count"]
    if sdk == "koala_async":
        result |= bare_python(COLD_OPEN.format(port=port, preload=False))
        # The same with anyio's asyncio backend imported first, as any anyio-based app
        # (Starlette, FastAPI) has: what opening costs once that import is paid.
        loaded = bare_python(COLD_OPEN.format(port=port, preload=True))
        result["anyio_backend_import_ms"] = loaded["backend_ms"]
        result["first_open_backend_loaded_ms"] = loaded["first_open_ms"]
        del result["backend_ms"]
    return result


def bare_python(code: str) -> dict[str, float]:
    done = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, timeout=120, check=True
    )
    return dict(json.loads(done.stdout.splitlines()[-1]))


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
    result: dict[str, float]
    if sdk == "httpx":
        result = ceiling_httpx(n, port)
    elif sdk == "msgspec":
        result = ceiling_msgspec(n)
    elif mode == "cold":
        result = cold(sdk, port)
    elif mode == "web":
        if sdk in ("segment", "posthog"):
            result = web_sync(sdk, args.rate, args.seconds, port)
        else:
            result = asyncio.run(web_async(sdk, args.rate, args.seconds, port))
    elif mode == "loop":
        if sdk in ("segment", "posthog"):
            result = loop_sync(sdk, n, port)
        else:
            result = asyncio.run(loop_async(sdk, n, port))
    elif sdk in ("segment", "posthog"):
        result = worker_sync(sdk, mode, scenario, n, port)
    elif sdk == "floor":
        result = asyncio.run(floor_e2e(scenario, n, port))
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


def measure(
    sdk: str, mode: str, scenario: str, n: int, port: int, rate: float = 0, seconds: float = 0
) -> dict[str, float]:
    command = [sys.executable, __file__, "--worker", sdk, "--mode", mode, "--scenario", scenario]
    command += ["--events", str(n), "--port", str(port)]
    command += ["--rate", str(rate), "--seconds", str(seconds)]
    done = subprocess.run(command, capture_output=True, text=True, timeout=900, check=False)
    lines = [line for line in done.stdout.splitlines() if line.startswith("{")]
    if done.returncode != 0 or not lines:
        print(f"  {sdk} {mode} {scenario} failed:\n{done.stderr[-1500:]}", file=sys.stderr)
        return {}
    print(f"  {sdk:<14} {mode:<6} {scenario:<8} {lines[-1]}", file=sys.stderr, flush=True)
    return dict(json.loads(lines[-1]))


def median_run(runs: list[dict[str, float]], key: str) -> dict[str, float]:
    """The run whose ``key`` is the median of those that gave one (all its figures, so they
    stay one run's): a single run of Segment's client varied by up to a tenth from the next,
    which alone could decide the 1/15 target either way."""
    done = sorted((run for run in runs if key in run), key=lambda run: run[key])
    return done[len(done) // 2] if done else {}


def sizes(quick: bool, overrides: list[str] | None = None) -> dict[str, float]:
    """Events per run (and web seconds), with ``key=value`` overrides (``--size loop=60000``)."""
    if quick:
        size = {"run": 10_000, "memory": 30_000, "latency": 10_000, "web_s": 5, "loop": 60_000}
        size["rounds"] = 1
    else:
        size = {"run": 20_000, "memory": 90_000, "latency": 10_000, "web_s": 20, "loop": 300_000}
        size["rounds"] = 3
    size["loop_peers"] = size["loop"]  # the peers' loop: the same unless overridden
    for override in overrides or ():
        key, _, value = override.partition("=")
        if key not in size:
            raise SystemExit(f"--size takes one of {', '.join(size)}, got {key!r}")
        size[key] = float(value)
    return size


def conduct(args: argparse.Namespace) -> dict[str, Any]:
    size = sizes(args.quick, args.size)
    n, n_memory, n_latency = int(size["run"]), int(size["memory"]), int(size["latency"])

    def n_loop(sdk: str) -> int:
        return int(size["loop"] if sdk == "koala_async" else size["loop_peers"])

    results: dict[str, Any] = {"sizes": size}
    results["date"] = time.strftime("%Y-%m-%d %H:%M UTC", time.gmtime())
    rounds = int(size["rounds"])

    def median_of_rounds(mode: str, scenario: str, events: int, key: str) -> None:
        """``rounds`` runs of every SDK, taking turns (so a machine that slows down slows
        them all), each SDK's median run kept."""
        runs: dict[str, list[dict[str, float]]] = {sdk: [] for sdk in SDKS}
        for _ in range(rounds):
            for sdk in SDKS:
                runs[sdk].append(measure(sdk, mode, scenario, events, port))
        name = scenario if mode == "run" else mode if scenario == "many" else f"{mode}-{scenario}"
        for sdk in SDKS:
            results[f"{sdk}/{name}"] = median_run(runs[sdk], key)

    with running_sink() as port:
        for scenario in ("one", "many"):
            median_of_rounds("run", scenario, n, "hot_us")
            floors = [measure("floor", "run", scenario, n, port) for _ in range(rounds)]
            results[f"floor/{scenario}"] = median_run(floors, "cpu_us")
        for sdk in SDKS:  # a stalled sink; koala_async's default queue holds 100k
            for scenario, key in (("one", "memory"), ("distinct", "memory-distinct")):
                results[f"{sdk}/{key}"] = measure(sdk, "memory", scenario, n_memory, port)
                sink(port, "/_config", {"stall": False})
        results["koala_async/memory-many"] = measure(
            "koala_async", "memory", "many", n_memory, port
        )
        sink(port, "/_config", {"stall": False})
        for sdk in SDKS:
            results[f"{sdk}/cold"] = measure(sdk, "cold", "-", 0, port)
        for sdk in SDKS:
            results[f"{sdk}/loop"] = measure(sdk, "loop", "many", n_loop(sdk), port)
        sink(port, "/_config", {"delay": 0.05})
        median_of_rounds("latency", "many", n_latency, "eps")
        median_of_rounds("latency", "one", n_latency, "eps")  # one person: issue 29's lanes
        for rate in WEB_RATES:
            for sdk in [*SDKS, "floor"]:
                results[f"{sdk}/web{rate}"] = measure(
                    sdk, "web", "visitors", 0, port, rate=rate, seconds=size["web_s"]
                )
        for sdk in SDKS:
            results[f"{sdk}/loop50"] = measure(sdk, "loop", "many", n_loop(sdk), port)
        sink(port, "/_config", ERRORS)
        for sdk in SDKS:
            results[f"{sdk}/weberr"] = measure(
                sdk, "web", "visitors", 0, port, rate=ERRORS_RATE, seconds=size["web_s"]
            )
        sink(port, "/_config", {"delay": 0.0, "errors": 0.0})
        results["httpx/ceiling"] = measure("httpx", "run", "one", n, port)
        results["msgspec/ceiling"] = measure("msgspec", "run", "one", 200_000, port)
    results["machine"] = (
        f"{platform.machine()}, {os.cpu_count()} cores, Python {platform.python_version()}"
    )
    return results


def table(results: dict[str, Any]) -> str:
    def get(key: str, field: str) -> float:
        return float(results.get(key, {}).get(field, float("nan")))

    def ratio(sdk: str, key: str, field: str) -> float:
        return get(f"{sdk}/{key}", field) / get(f"segment/{key}", field)

    rows = [
        "| | hot µs/call one | hot µs/call many | e2e events/s one | e2e events/s many "
        "| CPU µs/event one | CPU µs/event many | events/s with 50 ms | mem B/event one "
        "| mem B/person distinct |",
        "|---|---|---|---|---|---|---|---|---|---|",
    ]
    for sdk in SDKS:
        reached = get(f"{sdk}/latency", "concurrency")
        rows.append(
            f"| {sdk} | {get(f'{sdk}/one', 'hot_us'):.2f} | {get(f'{sdk}/many', 'hot_us'):.2f} | "
            f"{get(f'{sdk}/one', 'eps'):,.0f} | {get(f'{sdk}/many', 'eps'):,.0f} | "
            f"{get(f'{sdk}/one', 'cpu_us'):.1f} | {get(f'{sdk}/many', 'cpu_us'):.1f} | "
            f"{get(f'{sdk}/latency', 'eps'):,.0f}"
            + (f" (limit {reached:.0f})" if reached == reached else "")
            + f" | {get(f'{sdk}/memory', 'mem_bytes'):,.0f} | "
            f"{get(f'{sdk}/memory-distinct', 'mem_bytes'):,.0f} |"
        )
    rows.append(
        "| floor: raw asyncio requests of msgspec-encoded entries | | | "
        f"{get('floor/one', 'eps'):,.0f} | {get('floor/many', 'eps'):,.0f} | "
        f"{get('floor/one', 'cpu_us'):.1f} | {get('floor/many', 'cpu_us'):.1f} | | | |"
    )
    rows.append(
        f"| ceiling: bare httpx, 30-event bodies | | | {get('httpx/ceiling', 'eps'):,.0f} | | "
        f"{get('httpx/ceiling', 'cpu_us'):.1f} | | | | |"
    )
    rows.append(
        f"| ceiling: msgspec encoding alone | {get('msgspec/ceiling', 'hot_us'):.2f} "
        "| | | | | | | | |"
    )

    rows += [
        "",
        "| web (50 ms answers) | entries/s asked | delivered / produced | dropped "
        "| entries/s produced | delivered/s (to closed) | close s | in deadline "
        "| CPU µs/delivered entry | limit reached |",
        "|---|---|---|---|---|---|---|---|---|---|",
    ]
    for rate, run in [(rate, f"web{rate}") for rate in WEB_RATES] + [(ERRORS_RATE, "weberr")]:
        if run == "weberr":
            rows.append(f"| **30% 500s, 5 ms answers** |{' |' * 9}")
        for sdk in SDKS + ["floor"] * (run != "weberr"):
            key = f"{sdk}/{run}"
            reached = get(key, "concurrency")
            rows.append(
                f"| {sdk} | {rate:,} | {get(key, 'delivered'):,.0f} / {get(key, 'produced'):,.0f} "
                f"| {get(key, 'dropped'):,.0f} | {get(key, 'produced_eps'):,.0f} "
                f"| {get(key, 'delivered_eps'):,.0f} | {get(key, 'close_s'):.2f} "
                f"| {'yes' if get(key, 'closed') == 1 else 'NO'} | {get(key, 'cpu_us'):.1f} "
                f"| {f'{reached:.0f}' if reached == reached else ''} |"
            )

    rows += [
        "",
        "| loop (10 events/person) | answers | delivered / produced | dropped | loop events/s "
        "| events/s (to closed) | close s | peak RSS growth MB | peak pending |",
        "|---|---|---|---|---|---|---|---|---|",
    ]
    for key, answers in (("loop", "at once"), ("loop50", "50 ms late")):
        for sdk in SDKS:
            k = f"{sdk}/{key}"
            pending = get(k, "peak_pending")
            rows.append(
                f"| {sdk} | {answers} | {get(k, 'delivered'):,.0f} / {get(k, 'produced'):,.0f} "
                f"| {get(k, 'dropped'):,.0f} | {get(k, 'loop_eps'):,.0f} | {get(k, 'eps'):,.0f} "
                f"| {get(k, 'close_s'):.2f} | {get(k, 'peak_mb'):.1f} "
                f"| {f'{pending:,.0f}' if pending == pending else ''} |"
            )

    rows += [
        "",
        "| cold (bare interpreter) | import ms | open+close ms, first "
        "| anyio backend import ms (paid by the open until 2026-12-02) "
        "| first, backend already imported "
        "| open+close ms, median of 20 more | import + 5 tracks + flush + close ms |",
        "|---|---|---|---|---|---|---|",
    ]
    for sdk in SDKS:
        k = f"{sdk}/cold"
        figures = [
            get(k, f)
            for f in (
                "import_ms",
                "first_open_ms",
                "anyio_backend_import_ms",
                "first_open_backend_loaded_ms",
                "open_ms",
                "five_ms",
            )
        ]
        rows.append(
            f"| {sdk} | " + " | ".join("" if c != c else f"{c:.1f}" for c in figures) + " |"
        )

    rows += [
        "",
        "| ratio to Segment | koala_async | posthog | posthog_async |",
        "|---|---|---|---|",
    ]
    ratios = [
        ("hot path, one (lower is better)", "one", "hot_us"),
        ("hot path, many (lower is better)", "many", "hot_us"),
        ("e2e events/s, one", "one", "eps"),
        ("e2e events/s, many", "many", "eps"),
        ("CPU per event, one (lower is better)", "one", "cpu_us"),
        ("events/s with 50 ms answers, many", "latency", "eps"),
        ("events/s with 50 ms answers, one person", "latency-one", "eps"),
        ("memory per distinct person (lower is better)", "memory-distinct", "mem_bytes"),
    ]
    for rate in WEB_RATES:
        ratios.append((f"web {rate:,}/s: CPU per delivered entry (lower)", f"web{rate}", "cpu_us"))
        ratios.append((f"web {rate:,}/s: delivered/s", f"web{rate}", "delivered_eps"))
    ratios += [
        ("loop: events/s to closed, answers at once", "loop", "eps"),
        ("loop: events/s to closed, 50 ms answers", "loop50", "eps"),
        ("import + 5 tracks + flush + close (lower)", "cold", "five_ms"),
    ]
    for label, key, field in ratios:
        cells = [f"{ratio(sdk, key, field):.2f}" for sdk in SDKS if sdk != "segment"]
        rows.append(f"| {label} | " + " | ".join(cells) + " |")

    rows += ["", "| target | result | measured |", "|---|---|---|"]
    rows += [
        f"| {name} | {'pass' if ok else 'MISS'} | {value} |" for name, ok, value in checks(get)
    ]
    return "\n".join(rows)


def checks(get: Callable[[str, str], float]) -> list[tuple[str, bool, str]]:
    """Every target: (name, met, what was measured). A missing figure (NaN) is a MISS."""
    ko, seg = "koala_async", "segment"

    def hot(scenario: str) -> tuple[str, bool, str]:
        mine, theirs = get(f"{ko}/{scenario}", "hot_us"), get(f"{seg}/{scenario}", "hot_us")
        return (
            f"hot path ≤ 1/20 of Segment ({scenario})",
            mine <= theirs / 20,
            f"1/{theirs / mine:.1f} ({mine:.2f} vs {theirs:.2f} µs)",
        )

    def floor(key: str, times: float, what: str) -> tuple[str, bool, str]:
        mine, least = get(f"{ko}/{key}", "cpu_us"), get(f"floor/{key}", "cpu_us")
        return (
            f"{what} ≤ {times:g}x the floor",
            mine <= times * least,
            f"{mine / least:.2f}x ({mine:.1f} vs {least:.1f} µs)",
        )

    def web(rate: int, run: str = "", what: str = "") -> tuple[str, bool, str]:
        k = f"{ko}/{run or f'web{rate}'}"
        produced, delivered = get(k, "produced"), get(k, "delivered")
        return (
            f"web {rate:,} entries/s{what}: sustained, 0 dropped, closed in deadline",
            get(k, "produced_eps") >= 0.98 * rate
            and get(k, "dropped") == 0
            and delivered == produced
            and get(k, "closed") == 1,
            f"{get(k, 'produced_eps'):,.0f}/s, {delivered:,.0f} of {produced:,.0f} delivered, "
            f"{get(k, 'dropped'):,.0f} dropped, closed in {get(k, 'close_s'):.2f} s",
        )

    def web_cpu(rate: int) -> tuple[str, bool, str]:
        mine, theirs = get(f"{ko}/web{rate}", "cpu_us"), get(f"{seg}/web{rate}", "cpu_us")
        return (
            f"web {rate:,}/s: CPU per delivered entry ≤ 1.5x Segment",
            mine <= 1.5 * theirs,
            f"{mine / theirs:.2f}x ({mine:.1f} vs {theirs:.1f} µs)",
        )

    def loop(key: str, answers: str) -> tuple[str, bool, str]:
        k = f"{ko}/{key}"
        return (
            f"loop, answers {answers}: 0 dropped",
            get(k, "dropped") == 0 and get(k, "delivered") == get(k, "produced"),
            f"{get(k, 'dropped'):,.0f} dropped of {get(k, 'produced'):,.0f}",
        )

    def bounded(key: str, answers: str) -> tuple[str, bool, str]:
        # The queue never holds more than max_queue_size, and the process grows by no more
        # than max_queue_size entries at 1 kB each (≈4x their measured size: room for the
        # allocator and the requests in flight), whatever the number of events.
        k = f"{ko}/{key}"
        cap, peak = get(k, "max_queue_size"), get(k, "peak_mb")
        return (
            f"loop, answers {answers}: memory bounded by max_queue_size",
            get(k, "peak_pending") <= cap and peak * 2**20 <= cap * 1_000,
            f"peak {get(k, 'peak_pending'):,.0f} pending of {cap:,.0f}, RSS +{peak:.0f} MB "
            f"(bound {cap * 1_000 / 2**20:.0f} MB)",
        )

    ratio = {
        f: get(f"{ko}/{run}", f) / get(f"{seg}/{run}", f)
        for run, f in [("one", "eps"), ("one", "cpu_us")]
    }
    many = get(f"{ko}/many", "eps") / get(f"{seg}/many", "eps")
    latency = get(f"{ko}/latency", "eps") / get(f"{seg}/latency", "eps")
    one_person = get(f"{ko}/latency-one", "eps")
    open_ms, distinct = (
        get(f"{ko}/cold", "first_open_ms"),
        get(f"{ko}/memory-distinct", "mem_bytes"),
    )
    memory = get(f"{ko}/memory", "mem_bytes")
    return [
        hot("one"),
        hot("many"),
        ("e2e one ≥ 2.5x Segment", ratio["eps"] >= 2.5, f"{ratio['eps']:.2f}x"),
        ("e2e many ≥ 1x Segment", many >= 1, f"{many:.2f}x"),
        ("CPU/event one ≤ 0.4x Segment", ratio["cpu_us"] <= 0.4, f"{ratio['cpu_us']:.2f}x"),
        floor("one", 2.5, "e2e CPU/event one"),
        floor("many", 2.5, "e2e CPU/event many"),
        (
            "memory ≤ 250 B/event",
            memory <= 250,
            f"{memory:.0f} B (many: {get(f'{ko}/memory-many', 'mem_bytes'):.0f} B)",
        ),
        ("memory per distinct person ≤ 600 B", distinct <= 600, f"{distinct:.0f} B"),
        (
            "50 ms many ≥ 10x Segment (defaults)",
            latency >= 10,
            f"{latency:.1f}x (limit reached {get(f'{ko}/latency', 'concurrency'):.0f})",
        ),
        (
            "50 ms one person ≥ 5,000 events/s (defaults)",
            one_person >= 5_000,
            f"{one_person:,.0f} events/s ({one_person / get(f'{seg}/latency-one', 'eps'):.1f}x "
            "Segment)",
        ),
        *(web(rate) for rate in WEB_RATES),
        web(ERRORS_RATE, "weberr", ", 30% 500s"),
        *(web_cpu(rate) for rate in WEB_RATES),
        floor("web1000", 3, "web 1,000/s: CPU per delivered entry"),
        loop("loop", "at once"),
        loop("loop50", "50 ms late"),
        bounded("loop", "at once"),
        bounded("loop50", "50 ms late"),
        (
            "open a client for http:// ≤ 2 ms (first, after import)",
            open_ms <= 2,
            f"{open_ms:.2f} ms (median of 20 more: {get(f'{ko}/cold', 'open_ms'):.2f} ms)",
        ),
    ]


def main() -> None:
    parser = argparse.ArgumentParser(description="Benchmark koala_async against its peers.")
    parser.add_argument("--quick", action="store_true", help="fewer events, a rougher picture")
    parser.add_argument("--json", type=Path, help="also write the raw figures here")
    parser.add_argument(
        "--size",
        action="append",
        metavar="KEY=N",
        help="run, memory, latency, web_s, loop or loop_peers",
    )
    parser.add_argument("--worker", help=argparse.SUPPRESS)
    parser.add_argument("--mode", default="run", help=argparse.SUPPRESS)
    parser.add_argument("--scenario", default="one", help=argparse.SUPPRESS)
    parser.add_argument("--events", type=int, default=10_000, help=argparse.SUPPRESS)
    parser.add_argument("--port", type=int, help=argparse.SUPPRESS)
    parser.add_argument("--rate", type=float, default=1_000, help=argparse.SUPPRESS)
    parser.add_argument("--seconds", type=float, default=5, help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.worker:
        worker(args)
        return
    print("measuring (each line: one fresh subprocess)…", file=sys.stderr)
    results = conduct(args)
    size = results["sizes"]
    print(
        f"\n{results['machine']}; {size['run']:,.0f} events per run (50 ms: "
        f"{size['latency']:,.0f}; each SDK's median of {size['rounds']:.0f} runs of "
        f"both; memory: {size['memory']:,.0f}; loop: {size['loop']:,.0f}, "
        f"peers {size['loop_peers']:,.0f}; "
        f"web: {size['web_s']:.0f} s per rate)\n"
    )
    print(table(results))
    if args.json:
        args.json.write_text(json.dumps(results, indent=2))


if __name__ == "__main__":
    main()
