"""koala_async.spark.send_dataframe's throughput on Spark in local mode, at 1 and 2 cores.

    python benchmarks/spark_backfill.py [--rows 60000] [--cores 1 2] [--partitions 8]

A frame of ``--rows`` track rows (10 per person, made by Spark from ``range``, so no Python
rows cross to the JVM) sent in ``--partitions`` partition tasks by ``local[N]`` to
``sink.py`` (its own process, answers at once). Reported: rows/s from the call to its
return, best of ``--repeat`` runs, and the sink's count is checked. Each session is started
before the clock and warmed by one full-size run: the JVM's first jobs run much slower
(measured: whichever of local[1] and local[2] came first was the slower, by up to 2x).
Needs Java and pyspark.
"""

from __future__ import annotations

import argparse
import importlib
import os
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

from run import sink, wait_for_sink

from koala_async.spark import send_dataframe

HERE = Path(__file__).parent


def frame(spark: Any, rows: int) -> Any:
    return spark.range(rows).selectExpr(
        "id AS order_id",
        "concat('user', CAST(id DIV 10 AS STRING), '@acme.com') AS email",
        "'Order Placed' AS event",
        "id AS ts",
        "'pro' AS plan",
    )


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rows", type=int, default=60_000)
    parser.add_argument("--cores", type=int, nargs="+", default=[1, 2])
    parser.add_argument("--partitions", type=int, default=8)
    parser.add_argument("--repeat", type=int, default=3)
    parser.add_argument("--port", type=int, default=18733)
    args = parser.parse_args()
    # Spark's Python workers: this interpreter, importing koala_async from this checkout.
    os.environ.update(PYSPARK_PYTHON=sys.executable, SPARK_LOCAL_IP="127.0.0.1")
    os.environ["PYTHONPATH"] = os.pathsep.join(
        [str(HERE.parent), *filter(None, [os.environ.get("PYTHONPATH")])]
    )
    sql: Any = importlib.import_module("pyspark.sql")
    sink_process = subprocess.Popen(
        [sys.executable, str(HERE / "sink.py"), "--port", str(args.port)]
    )
    url = f"http://127.0.0.1:{args.port}"
    options: dict[str, Any] = {"public_api_key": "pk_bench", "base_url": url}
    try:
        time.sleep(1.0)
        for cores in args.cores:
            spark = (
                sql.SparkSession.builder.master(f"local[{cores}]")
                .config("spark.ui.enabled", "false")
                .config("spark.ui.showConsoleProgress", "false")
                .getOrCreate()
            )
            spark.sparkContext.setLogLevel("ERROR")
            try:
                send = {"person": "email", "key": ["order_id"], "partitions": args.partitions}
                send_dataframe(frame(spark, args.rows), "track", **send, **options)  # warm-up
                rates: list[float] = []
                for _ in range(args.repeat):
                    sink(args.port, "/_reset", {})
                    started = time.perf_counter()
                    report = send_dataframe(
                        frame(spark, args.rows), "track", order="ts", payload=["plan"],
                        **send, **options,
                    )  # fmt: skip
                    rates.append(args.rows / (time.perf_counter() - started))
                    wait_for_sink(args.port, args.rows, timeout=10)
                    assert report.delivered == args.rows, report
            finally:
                spark.stop()
            runs = ", ".join(f"{rate:,.0f}" for rate in rates)
            print(
                f"local[{cores}]: {max(rates):,.0f} rows/s, best of {args.repeat} ({runs}); "
                f"{args.rows:,} rows, {args.partitions} partitions",
                flush=True,
            )
    finally:
        sink_process.terminate()
        sink_process.wait()


if __name__ == "__main__":
    main()
