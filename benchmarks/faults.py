"""Issue 23's fault scenarios: a busy site against a loopback collector that injects faults.

The collector (koala_async.testing's FakeCollector) runs in **its own process**, so its work
never shares a GIL or an event loop with the client measured. It answers each request 0-300
ms late at random and, by scenario, with random 502/503s, random 429s (``Retry-After: 1``),
or as a token bucket of N requests/s that answers 429 beyond it. The client runs on its
defaults. A producer calls ``track()`` at a fixed rate over many people for a while, then
closes the client. Reported: entries lost (ids a call returned that never arrived), drops by
reason, the close's duration against ``shutdown_timeout``, how far the producer fell behind
its schedule, its slowest call, the limiter's range, and the server's attempts per second.

    python benchmarks/faults.py [--seconds 20] [--rate 2000] [--people 1000] [SCENARIO ...]

Scenarios: ``5xx`` (10% 502/503), ``503`` (2% 503), ``429`` (0.5% 429), ``bucket`` (a token
bucket of ``--bucket`` requests/s, 100 by default), ``overload`` (a server that answers one
request at a time, 5 ms each: latency grows with what is in flight, 200 requests/s at
most). ``tests/test_faults.py`` runs short ones.
"""

from __future__ import annotations

import argparse
import json
import math
import random
import socket
import subprocess
import sys
import time
from collections import Counter
from typing import Any

import anyio

SCENARIOS = ("5xx", "503", "429", "bucket", "overload")


class Faults:
    """How the collector answers, by scenario: seeded, so runs compare."""

    def __init__(self, scenario: str, bucket: float, seed: int = 0) -> None:
        self.scenario = scenario
        self.random = random.Random(seed)
        self.rate = bucket
        self.tokens = max(1.0, bucket / 10)  # a tenth of a second's burst
        self.last = time.monotonic()
        self.seconds: dict[int, list[int]] = {}  # second -> [attempts, accepted, 429s]
        self.answering: list[float] = []  # when each request still unanswered will be

    def reply(self, received: Any) -> Any:
        from koala_async.testing import Reply

        now = time.monotonic()
        counts = self.seconds.setdefault(int(now), [0, 0, 0])
        counts[0] += 1
        delay = self.random.uniform(0, 0.3)
        if self.scenario == "overload":  # one request at a time: 5 ms each, queued
            self.answering = [end for end in self.answering if end > now]
            delay = 0.005 * (len(self.answering) + 1)
            self.answering.append(now + delay)
        draw = self.random.random()
        status, retry_after = 200, None
        if self.scenario == "5xx" and draw < 0.1:
            status = 502 if draw < 0.05 else 503
        elif self.scenario == "503" and draw < 0.02:
            status = 503
        elif self.scenario == "429" and draw < 0.005:
            status, retry_after = 429, 1.0
        elif self.scenario == "bucket":
            self.tokens = min(max(1.0, self.rate / 10), self.tokens + (now - self.last) * self.rate)
            self.last = now
            if self.tokens < 1:
                status, retry_after = 429, 1.0
            else:
                self.tokens -= 1
        counts[1] += 200 <= status < 300
        counts[2] += status == 429
        return Reply(status=status, retry_after=retry_after, delay=delay)


async def serve(port: int, scenario: str, bucket: float) -> None:
    """Serve until stdin gives a line; then print what arrived, as JSON."""
    from koala_async.testing import FakeCollector

    faults = Faults(scenario, bucket)
    fake = FakeCollector()
    fake.responder = faults.reply
    async with fake.serve(host="127.0.0.1", port=port):
        print("listening", flush=True)
        await anyio.to_thread.run_sync(sys.stdin.readline)
    print(json.dumps({"ids": list(fake.message_ids()), "seconds": faults.seconds}), flush=True)


async def produce(
    port: int, rate: float, seconds: float, people: int, shutdown_timeout: float
) -> dict[str, Any]:
    """Call track() ``rate`` times a second for ``seconds`` over ``people``, then close."""
    from koala_async import KoalaClient

    ids: list[str | None] = []
    lag = slowest = 0.0
    limits: list[int] = []
    koala = KoalaClient(
        "pk_test", base_url=f"http://127.0.0.1:{port}", shutdown_timeout=shutdown_timeout
    )
    async with koala:
        start = time.monotonic()
        ticks = int(seconds * 100)
        for tick in range(ticks):
            due = start + tick / 100
            wait = due - time.monotonic()
            if wait > 0:
                await anyio.sleep(wait)
            lag = max(lag, time.monotonic() - due)
            for n in range(int(rate * (tick + 1) / 100) - int(rate * tick / 100)):
                i = len(ids)
                called = time.perf_counter()
                ids.append(await koala.track("Viewed", email=f"p{i % people}@acme.com"))
                slowest = max(slowest, time.perf_counter() - called)
                del n
            if tick % 10 == 0:
                limits.append(koala.stats().concurrency)
        produced = time.monotonic() - start
        closing = time.monotonic()
    closed = time.monotonic() - closing
    stats = koala.stats()
    return {
        "ids": ids,
        "lag_s": lag,
        "slowest_call_ms": slowest * 1000,
        "produce_s": produced,
        "close_s": closed,
        "delivered": stats.delivered,
        "dropped": {k: v for k, v in stats.dropped.items() if v},
        "requests": stats.requests,
        "limit_min": min(limits),
        "limit_median": sorted(limits)[len(limits) // 2],
        "limit_max": max(limits),
        "limit_late_median": sorted(late := limits[len(limits) // 2 :])[len(late) // 2],
    }


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port: int = sock.getsockname()[1]
        return port


def run(
    scenario: str,
    seconds: float,
    rate: float,
    people: int,
    bucket: float = 100,
    shutdown_timeout: float = 10,
    backend: str = "asyncio",
) -> dict[str, Any]:
    """One scenario, end to end: the collector in a child process, the producer here."""
    port = free_port()
    command = [sys.executable, __file__, "--serve", str(port), "--bucket", str(bucket), scenario]
    with subprocess.Popen(
        command, stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True
    ) as server:
        assert server.stdin is not None
        assert server.stdout is not None
        assert "listening" in server.stdout.readline()
        produced = anyio.run(
            produce, port, rate, seconds, people, shutdown_timeout, backend=backend
        )
        server.stdin.write("\n")
        server.stdin.flush()
        arrived = json.loads(server.stdout.readline())
    got = set(arrived["ids"])
    returned = [i for i in produced.pop("ids") if i is not None]
    by_second: dict[str, list[int]] = arrived["seconds"]
    counted = [by_second[key] for key in sorted(by_second, key=int)]
    totals = [sum(column) for column in zip(*counted, strict=True)] if counted else [0, 0, 0]
    per_second = counted[1:-1]  # whole seconds only
    attempts = [a for a, _, _ in per_second] or [0]
    accepted = [ok for _, ok, _ in per_second] or [0]
    settled = [a for a, _, _ in per_second[3:]] or [0]  # after 3 s of finding the rate
    return {
        "scenario": scenario,
        "calls": len(returned),
        "lost": sum(1 for i in returned if i not in got),
        "duplicates": sum(n - 1 for n in Counter(arrived["ids"]).values() if n > 1),
        **produced,
        "attempts": totals[0],
        "accepted": totals[1],
        "429s": totals[2],
        "attempts_per_s_max": max(attempts),
        "attempts_per_s_max_settled": max(settled),
        "attempts_per_s_mean": sum(attempts) / len(attempts),
        "accepted_per_s_mean": sum(accepted) / len(accepted),
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("scenarios", nargs="*", default=list(SCENARIOS))
    parser.add_argument("--seconds", type=float, default=20)
    parser.add_argument("--rate", type=float, default=2000)
    parser.add_argument("--people", type=int, default=1000)
    parser.add_argument("--bucket", type=float, default=100)
    parser.add_argument("--serve", type=int, help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.serve:
        anyio.run(serve, args.serve, args.scenarios[0], args.bucket)
        return
    for scenario in args.scenarios:
        result = run(scenario, args.seconds, args.rate, args.people, args.bucket)
        print(
            json.dumps({k: round(v, 3) if isinstance(v, float) else v for k, v in result.items()})
        )
        if not math.isfinite(result["lag_s"]):
            sys.exit(1)


if __name__ == "__main__":
    main()
