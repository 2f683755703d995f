"""koala_async.spark on a real Spark in local mode (issue 28 item 6): a DataFrame arrives whole
and each person's rows in order; the foreachPartition recipe run again adds no unique id.

Needs Java (Debian's ``default-jre-headless``; ``.ci/run`` installs it) and pyspark; skipped,
saying which is missing, otherwise. One SparkSession (``local[2]``) serves the module.
"""

from __future__ import annotations

import os
import shutil
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import anyio
import anyio.to_thread
import pytest

from koala_async.testing import FakeCollector

if shutil.which("java") is None and not os.environ.get("JAVA_HOME"):
    pytest.skip(
        "Spark needs Java: apt-get install -y default-jre-headless", allow_module_level=True
    )
pyspark_sql = pytest.importorskip("pyspark.sql", reason="pip install pyspark")

pytestmark = pytest.mark.anyio

ROWS, PEOPLE = 2_000, 50
ROOT = Path(__file__).parents[2]


@pytest.fixture
def anyio_backend() -> str:
    return "asyncio"  # Spark's Python workers send; the test's loop only serves


@pytest.fixture(scope="module")
def spark() -> Iterator[Any]:
    with pytest.MonkeyPatch.context() as env:
        # Spark's Python workers: this interpreter, importing koala_async from this checkout.
        env.setenv("PYSPARK_PYTHON", sys.executable)
        env.setenv("PYSPARK_DRIVER_PYTHON", sys.executable)
        env.setenv("SPARK_LOCAL_IP", "127.0.0.1")  # loopback only, whatever the hostname says
        path = os.environ.get("PYTHONPATH")
        env.setenv("PYTHONPATH", f"{ROOT}{os.pathsep}{path}" if path else str(ROOT))
        session = (
            pyspark_sql.SparkSession.builder.master("local[2]")
            .appName("koala-async-test")
            .config("spark.driver.host", "127.0.0.1")
            .config("spark.driver.bindAddress", "127.0.0.1")
            .config("spark.ui.enabled", "false")
            .config("spark.ui.showConsoleProgress", "false")
            .config("spark.sql.shuffle.partitions", "4")
            .getOrCreate()
        )
        session.sparkContext.setLogLevel("ERROR")
        try:
            yield session
        finally:
            session.stop()


def _frame(spark: Any) -> Any:
    functions = pytest.importorskip("pyspark.sql.functions")
    # ts is a permutation of the row numbers: each person's rows come out of order, so only
    # the sort within partitions puts them in order.
    rows = [(i, f"p{i % PEOPLE}@acme.com", "Order Placed", (i * 7919) % ROWS) for i in range(ROWS)]
    frame = spark.createDataFrame(rows, "order_id long, email string, event string, ts long")
    # A map column named like the call's argument fills it; payload columns join it.
    return frame.withColumn("properties", functions.create_map(functions.lit("plan"), "event"))


async def test_a_dataframe_arrives_whole_and_in_order_and_a_rerun_adds_nothing(
    spark: Any,
) -> None:
    from koala_async.spark import send_dataframe, send_partition

    fake = FakeCollector()
    async with fake.serve() as base_url:
        options: dict[str, Any] = {"public_api_key": "pk_test", "base_url": base_url}

        def run() -> Any:
            return send_dataframe(
                _frame(spark),
                "track",
                person="email",
                key=["order_id"],
                order="ts",
                payload=["ts"],
                partitions=4,
                **options,
            )

        def recipe() -> None:  # the docs' foreachPartition recipe, run again over the same rows
            (
                _frame(spark)
                .repartition(3, "email")
                .sortWithinPartitions("email", "ts")
                .foreachPartition(
                    lambda rows: send_partition(
                        rows, "track", key=["order_id"], payload=["ts"], **options
                    )
                )
            )

        report = await anyio.to_thread.run_sync(run)
        first = len(fake.message_ids())
        await anyio.to_thread.run_sync(recipe)
    assert first == len(fake.message_ids()) == ROWS, "unique ids == rows; the re-run adds none"
    assert len(fake.events) == 2 * ROWS, "the re-run sent every row again; Koala drops repeats"
    assert report.rows == report.delivered == ROWS
    assert (report.dropped, report.pending, report.partitions) == (0, 0, 4)
    assert fake.violations == []
    for entries in (fake.events[:ROWS], fake.events[ROWS:]):  # each run, in order by person
        people: dict[str, list[int]] = {}
        for entry in entries:
            assert entry.properties["plan"] == "Order Placed"
            people.setdefault(entry.email or "", []).append(entry.properties["ts"])
        assert len(people) == PEOPLE
        assert all(ts == sorted(ts) for ts in people.values())


def test_a_column_the_frame_lacks_is_named_before_any_job(spark: Any) -> None:
    from koala_async.spark import send_dataframe

    with pytest.raises(ValueError, match="no column 'ts'"):
        send_dataframe(
            spark.createDataFrame([(1, "ada@acme.com")], "order_id long, email string"),
            "track",
            person="email",
            key=["order_id"],
            order="ts",
            public_api_key="pk_test",
        )


def test_an_empty_partition_opens_no_client(monkeypatch: pytest.MonkeyPatch) -> None:
    import koala_async.spark

    def no_client(*args: object, **kwargs: object) -> dict[str, int]:
        raise AssertionError("a client was opened")

    monkeypatch.setattr(koala_async.spark, "send_rows", no_client)
    empty = {"rows": 0, "delivered": 0, "dropped": 0, "pending": 0}
    assert koala_async.spark.send_partition(iter([]), "track", key=["order_id"]) == empty
