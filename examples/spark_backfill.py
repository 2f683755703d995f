"""Backfill from Spark: an orders table sent to Koala as track calls, partition by partition.

A person's orders arrive together and in order, each order's message_id comes from its
``order_id`` (so a task Spark retries, or the whole job run again, duplicates nothing at
Koala), and every partition task sends with one blocking client. Run it where the executors
can import ``koala_async`` (installed there, or shipped with ``--py-files``)::

    KOALA_PUBLIC_API_KEY=pk_live_... spark-submit examples/spark_backfill.py s3://acme/orders/

``python examples/spark_backfill.py orders.parquet`` runs it in local mode, sending to
``koala-async collector`` (``KOALA_BASE_URL``, default ``http://127.0.0.1:8787``).
"""

from __future__ import annotations

import os
import sys
from collections.abc import Iterator
from typing import Any

from pyspark.sql import DataFrame, Row, SparkSession
from pyspark.sql import functions as F

from koala_async.spark import Report, send_dataframe, send_partition

# Read on the driver and shipped with each task (the executors' environment may differ).
KOALA: dict[str, Any] = {
    "public_api_key": os.environ.get("KOALA_PUBLIC_API_KEY", "pk_example"),
    "base_url": os.environ.get("KOALA_BASE_URL", "http://127.0.0.1:8787"),
    "user_agent": "acme-backfill/1.0",
}
PARTITIONS = 8  # partition tasks, each one client: at most this many connections to Koala


def calls(orders: DataFrame) -> DataFrame:
    """Orders as the columns of track calls. ``sent_at`` goes as ISO text with its offset: a
    timestamp column would reach Python as a naive datetime in the executor's local time,
    which the client takes for UTC."""
    return orders.select(
        "order_id",
        "email",
        "placed_at",
        "total",
        F.lit("Order Placed").alias("event"),
        F.date_format("placed_at", "yyyy-MM-dd'T'HH:mm:ss.SSSXXX").alias("sent_at"),
    )


def backfill(orders: DataFrame) -> Report:
    """Send every order, each person's in order of ``placed_at``; one report for the job."""
    return send_dataframe(
        calls(orders),
        "track",
        person="email",
        key=["order_id"],
        order="placed_at",
        payload=["total"],
        partitions=PARTITIONS,
        **KOALA,
    )


def backfill_each_partition(orders: DataFrame) -> None:
    """The same with ``foreachPartition``, for a pipeline of your own (no report)."""

    def send(rows: Iterator[Row]) -> None:  # runs on an executor, once per partition
        send_partition(rows, "track", key=["order_id"], payload=["total"], **KOALA)

    (
        calls(orders)
        .repartition(PARTITIONS, "email")
        .sortWithinPartitions("email", "placed_at")
        .foreachPartition(send)
    )


if __name__ == "__main__":
    spark = SparkSession.builder.appName("koala-backfill").getOrCreate()
    print(backfill(spark.read.parquet(sys.argv[1])))
    spark.stop()
