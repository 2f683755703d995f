"""KoalaSyncClient against Segment's and PostHog's sync clients: one workload, one sink, one run.

Reuses ``run.py``'s harness (the sink in its own process, a fresh subprocess per figure,
``run_sync``'s timer around each run of 100 calls), so the figures line up with its table.
Here every client is driven the way a WSGI or Celery app drives it: plain calls from one
thread, nothing yielding in between, the client's own thread delivering meanwhile (and
taking its share of the GIL, as Segment's consumer thread does).

    python benchmarks/sync.py [--quick]
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import subprocess
import sys
from typing import Any

from run import PROPS, peer_calls, people, posthog_client, run_sync, running_sink, segment_client

SDKS = ["koala_sync", "segment", "posthog"]


def worker(sdk: str, scenario: str, n: int, port: int) -> dict[str, float]:
    client: Any
    ids = people(scenario, n + 1)
    if sdk == "koala_sync":
        from koala_async import KoalaSyncClient

        client = KoalaSyncClient("pk_bench", base_url=f"http://127.0.0.1:{port}")
        emails = ["one-user@acme.com"] * len(ids) if scenario == "one" else ids

        def track(lo: int, hi: int) -> None:
            for i in range(lo, hi):
                client.track("Created Account", email=emails[i], properties=PROPS)

        # Start the delivery thread outside the measurement (peers start theirs early), and
        # wait until it delivers: since 2026-12-05 the first call imports the delivery
        # modules (httpx, anyio: ~100 ms), which the peers did at import, before their clock.
        track(n, n + 1)
        client.flush()
        run = run_sync(n, port, track, client.flush)
        client.close()
        return run
    client = segment_client(port) if sdk == "segment" else posthog_client(port)
    run = run_sync(n, port, peer_calls(sdk, client, ids), client.flush)
    client.shutdown()
    return run


def measure(sdk: str, scenario: str, n: int, port: int) -> dict[str, float]:
    command = [sys.executable, __file__, "--worker", sdk, "--scenario", scenario]
    command += ["--events", str(n), "--port", str(port)]
    done = subprocess.run(command, capture_output=True, text=True, timeout=600, check=False)
    lines = [line for line in done.stdout.splitlines() if line.startswith("{")]
    if done.returncode != 0 or not lines:
        print(f"  {sdk} {scenario} failed:\n{done.stderr[-1500:]}", file=sys.stderr)
        return {}
    print(f"  {sdk:<11} {scenario:<5} {lines[-1]}", file=sys.stderr, flush=True)
    return dict(json.loads(lines[-1]))


def main() -> None:
    parser = argparse.ArgumentParser(description="The sync hot path against Segment and PostHog.")
    parser.add_argument("--quick", action="store_true", help="10,000 events per run, not 50,000")
    parser.add_argument("--worker", help=argparse.SUPPRESS)
    parser.add_argument("--scenario", default="one", help=argparse.SUPPRESS)
    parser.add_argument("--events", type=int, default=10_000, help=argparse.SUPPRESS)
    parser.add_argument("--port", type=int, help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.worker:
        print(json.dumps(worker(args.worker, args.scenario, args.events, args.port)), flush=True)
        os._exit(0)  # do not wait for peers' threads
    n = 10_000 if args.quick else 50_000
    results: dict[str, dict[str, float]] = {}
    with running_sink() as port:
        for scenario in ("one", "many"):
            for sdk in SDKS:
                results[f"{sdk}/{scenario}"] = measure(sdk, scenario, n, port)
    print(f"\n{platform.machine()}, {os.cpu_count()} cores, Python {platform.python_version()}")
    print(f"{n:,} events per run\n")
    print("| | hot µs/call one | hot µs/call many | e2e events/s one | CPU µs/event one |")
    print("|---|---|---|---|---|")
    for sdk in SDKS:
        one, many = results[f"{sdk}/one"], results[f"{sdk}/many"]
        print(
            f"| {sdk} | {one.get('hot_us', 0):.2f} | {many.get('hot_us', 0):.2f} "
            f"| {one.get('eps', 0):,.0f} | {one.get('cpu_us', 0):.1f} |"
        )
    base = results["segment/one"].get("hot_us", 0)
    ours = results["koala_sync/one"].get("hot_us", 0)
    if base and ours:
        verdict = "pass" if ours <= base / 8 else "MISS"
        print(f"\nhot path ≤ 1/8 of Segment: {verdict} (1/{base / ours:.1f})")


if __name__ == "__main__":
    main()
