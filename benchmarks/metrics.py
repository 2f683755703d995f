"""What the metrics cost: calls per second with and without koala_async.otel and
koala_async.prometheus registered (the calls' path must not change), and what one scrape
costs.

One process, the variants taking turns round after round (so drift hits them alike), each
round a fresh KoalaClient sending to ``sink.py`` in its own process. The time inside the
track calls is read around each run of 100 calls, and the loop yields between runs, as
run.py's "hot" figure does. With ``--scrape-every S`` the instrumented variants' reader
also collects every S seconds in a thread meanwhile (a scrape's share of the GIL then
shows; Prometheus scrapes every 15-60 s).

    python benchmarks/metrics.py [--events N] [--rounds R] [--scrape-every S]
"""

from __future__ import annotations

import argparse
import asyncio
import json
import math
import platform
import statistics
import sys
import threading
import time
from collections.abc import Callable
from typing import Any

from opentelemetry.sdk.metrics import MeterProvider
from opentelemetry.sdk.metrics.export import InMemoryMetricReader
from prometheus_client import CollectorRegistry, generate_latest
from run import PROPS, running_sink

from koala_async import KoalaClient, KoalaSyncClient
from koala_async import otel as koala_otel
from koala_async import prometheus as koala_prometheus

VARIANTS = ["none", "otel", "prometheus"]


def scraper(variant: str, client: Any) -> Callable[[], object] | None:
    """Register the variant's instruments on ``client``; return what one scrape does."""
    if variant == "otel":
        reader = InMemoryMetricReader()
        koala_otel.instrument(client, meter_provider=MeterProvider(metric_readers=[reader]))
        return reader.get_metrics_data
    if variant == "prometheus":
        registry = CollectorRegistry()
        koala_prometheus.instrument(client, registry=registry)
        return lambda: generate_latest(registry)
    return None


def scraping(
    scrape: Callable[[], object] | None, every: float, stop: threading.Event
) -> threading.Thread:
    def run() -> None:
        while scrape is not None and every and not stop.wait(every):
            scrape()

    thread = threading.Thread(target=run, daemon=True)
    thread.start()
    return thread


async def calls_per_track(variant: str, port: int, n: int = 1000) -> float:
    """Python and C function calls per track call (sys.setprofile): a figure the machine's
    load does not move, so equal counts say the instruments add no work to the calls."""
    async with KoalaClient("pk_bench", base_url=f"http://127.0.0.1:{port}") as koala:
        scraper(variant, koala)
        await koala.track("Created Account", email="ada@acme.com", properties=PROPS)
        seen = [0]

        def count(frame: object, event: str, arg: object) -> None:
            if event in ("call", "c_call"):
                seen[0] += 1

        for lo in range(0, n, 100):
            sys.setprofile(count)
            for i in range(lo, lo + 100):
                await koala.track("Created Account", email=f"u{i}@acme.com", properties=PROPS)
            sys.setprofile(None)
            await asyncio.sleep(0)
        await koala.flush()
    return seen[0] / n


async def round_of(variant: str, n: int, port: int, every: float = 0.0) -> float:
    """Calls per second inside the calls, for one fresh client."""
    emails = [f"user{i % 1000}@acme.com" for i in range(n)]
    async with KoalaClient("pk_bench", base_url=f"http://127.0.0.1:{port}") as koala:
        stop = threading.Event()
        thread = scraping(scraper(variant, koala), every, stop)
        spent = 0.0
        for lo in range(0, n, 100):
            start = time.perf_counter()
            for i in range(lo, min(lo + 100, n)):
                await koala.track("Created Account", email=emails[i], properties=PROPS)
            spent += time.perf_counter() - start
            await asyncio.sleep(0)
        stop.set()
        thread.join()
        await koala.flush()
    return n / spent


def scrape_cost(variant: str, client: Any, times: int = 200) -> float:
    """Microseconds one scrape of ``client`` takes."""
    scrape = scraper(variant, client)
    assert scrape is not None
    scrape()
    start = time.perf_counter()
    for _ in range(times):
        scrape()
    return (time.perf_counter() - start) / times * 1e6


async def main(args: argparse.Namespace) -> dict[str, Any]:
    rates: dict[str, list[float]] = {v: [] for v in VARIANTS}
    with running_sink() as port:
        await round_of("none", args.events // 4, port)  # warm-up: imports, caches
        for _ in range(args.rounds):
            for variant in VARIANTS:
                rates[variant].append(await round_of(variant, args.events, port, args.scrape_every))
        counts: dict[str, float] = {v: math.inf for v in VARIANTS}
        for _ in range(3):  # the lowest of 3, taking turns: the first client pays for caches
            for v in VARIANTS:
                counts[v] = min(counts[v], await calls_per_track(v, port))
        url = f"http://127.0.0.1:{port}"
        async with KoalaClient("pk_bench", base_url=url) as koala:
            await koala.track("Created Account", email="ada@acme.com")
            await koala.flush()
            scrapes = {f"{v} async": scrape_cost(v, koala) for v in VARIANTS[1:]}
        sync = KoalaSyncClient("pk_bench", base_url=url)
        sync.track("Created Account", email="ada@acme.com")
        sync.flush()
        scrapes |= {f"{v} sync": scrape_cost(v, sync) for v in VARIANTS[1:]}
        sync.close()
    medians = {v: statistics.median(r) for v, r in rates.items()}
    return {
        "scrape_every_s": args.scrape_every,
        "calls_per_s": {v: round(m) for v, m in medians.items()},
        "ratio_to_none": {v: round(medians[v] / medians["none"], 3) for v in VARIANTS},
        "function_calls_per_track": counts,
        "scrape_us": {k: round(v) for k, v in scrapes.items()},
        "runs": {v: [round(r) for r in rs] for v, rs in rates.items()},
    }


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--events", type=int, default=50_000)
    parser.add_argument("--rounds", type=int, default=9)
    parser.add_argument("--scrape-every", type=float, default=0.0)
    result = asyncio.run(main(parser.parse_args()))
    result["machine"] = f"{platform.python_version()} {platform.machine()}"
    print(json.dumps(result, indent=1))
