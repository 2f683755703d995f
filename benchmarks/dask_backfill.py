"""koala_async.dask.send_dataframe's throughput at 1, 2 and 4 worker processes (issue 28).

    python benchmarks/dask_backfill.py [--rows 60000] [--workers 1 2 4]

A pandas frame of ``--rows`` track rows (10 per person) in 8 partitions, sent by a
``distributed.LocalCluster`` of N single-threaded worker processes to ``sink.py`` (its own
process, answers at once). Reported: rows/s from the call to its return (the cluster is
started before the clock, and warmed by one small run), and the sink's count is checked.
"""

from __future__ import annotations

import argparse
import importlib
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

from run import sink, wait_for_sink

from koala_async.dask import send_dataframe

# Untyped libraries, as Any.
dd: Any = importlib.import_module("dask.dataframe")
distributed: Any = importlib.import_module("distributed")
pd: Any = importlib.import_module("pandas")

HERE = Path(__file__).parent


def frame(rows: int) -> Any:
    data = pd.DataFrame(
        {
            "order_id": range(rows),
            "email": [f"user{i // 10}@acme.com" for i in range(rows)],
            "event": "Order Placed",
            "ts": range(rows),
            "plan": "pro",
        }
    )
    return dd.from_pandas(data, npartitions=8)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rows", type=int, default=60_000)
    parser.add_argument("--workers", type=int, nargs="+", default=[1, 2, 4])
    parser.add_argument("--port", type=int, default=18732)
    args = parser.parse_args()
    sink_process = subprocess.Popen(
        [sys.executable, str(HERE / "sink.py"), "--port", str(args.port)]
    )
    url = f"http://127.0.0.1:{args.port}"
    try:
        time.sleep(1.0)
        for workers in args.workers:
            with (
                distributed.LocalCluster(
                    n_workers=workers, threads_per_worker=1, processes=True, dashboard_address=None
                ) as cluster,
                distributed.Client(cluster),
            ):
                options: dict[str, Any] = {"public_api_key": "pk_bench", "base_url": url}
                send_dataframe(frame(800), "track", person="email", key=["order_id"], **options)
                sink(args.port, "/_reset", {})
                data = frame(args.rows)
                started = time.perf_counter()
                report = send_dataframe(
                    data, "track", person="email", key=["order_id"], order="ts",
                    payload=["plan"], **options,
                )  # fmt: skip
                took = time.perf_counter() - started
                wait_for_sink(args.port, args.rows, timeout=10)
                print(
                    f"{workers} worker(s): {args.rows / took:,.0f} rows/s "
                    f"({args.rows:,} rows in {took:.2f} s; delivered {report.delivered:,})",
                    flush=True,
                )
    finally:
        sink_process.terminate()
        sink_process.wait()


if __name__ == "__main__":
    main()
