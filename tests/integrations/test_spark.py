"""koala_async.spark on a real Spark in local mode (issue 28 item 6), through the recipe the
docs show (examples/spark_backfill.py): a DataFrame arrives whole and each person's rows in
order; the foreachPartition recipe run again adds no unique id; Python workers killed
mid-partition have their tasks re-run by Spark, and still no row arrives twice as a new id.

Needs Java (Debian's ``default-jre-headless``; ``.ci/run`` installs it) and pyspark; skipped,
saying which is missing, otherwise. One SparkSession serves the module: ``local[2,4]``, two
cores, a failed task tried up to 4 times.
"""

from __future__ import annotations

import importlib.util
import os
import shutil
import signal
import sys
from collections.abc import Iterator
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

import anyio
import anyio.to_thread
import pytest

from koala_async.backfill import row_id
from koala_async.testing import FakeCollector, Received, Reply

if shutil.which("java") is None and not os.environ.get("JAVA_HOME"):
    pytest.skip(
        "Spark needs Java: apt-get install -y default-jre-headless", allow_module_level=True
    )
pyspark_sql = pytest.importorskip("pyspark.sql", reason="pip install pyspark")

pytestmark = pytest.mark.anyio

ROWS, PEOPLE = 2_000, 50
EPOCH = 1_700_000_000
ROOT = Path(__file__).parents[2]
EXAMPLE = ROOT / "examples" / "spark_backfill.py"


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
        env.setenv("TZ", "America/New_York")  # the workers' local time is not UTC either
        path = os.environ.get("PYTHONPATH")
        env.setenv("PYTHONPATH", f"{ROOT}{os.pathsep}{path}" if path else str(ROOT))
        session = (
            pyspark_sql.SparkSession.builder.master("local[2,4]")  # 2 cores, a task tried 4 times
            .appName("koala-async-test")
            .config("spark.driver.host", "127.0.0.1")
            .config("spark.driver.bindAddress", "127.0.0.1")
            .config("spark.ui.enabled", "false")
            .config("spark.ui.showConsoleProgress", "false")
            .config("spark.sql.shuffle.partitions", "4")
            # Not UTC (nor are the workers'), so sent_at must carry its offset to arrive right.
            .config("spark.sql.session.timeZone", "Asia/Kolkata")
            .getOrCreate()
        )
        session.sparkContext.setLogLevel("ERROR")
        try:
            yield session
        finally:
            session.stop()


def _example() -> Any:
    """examples/spark_backfill.py, the recipe the docs show, as a module."""
    spec = importlib.util.spec_from_file_location("spark_backfill", EXAMPLE)
    assert spec is not None
    assert spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def _orders(spark: Any) -> Any:
    # Each person's orders come out of time order (the seconds are a permutation of the row
    # numbers), so only the sort within partitions puts them in order.
    return spark.range(ROWS).selectExpr(
        "id AS order_id",
        f"concat('p', id % {PEOPLE}, '@acme.com') AS email",
        f"timestamp_seconds({EPOCH} + id * 7919 % {ROWS}) AS placed_at",
        "id / 100 AS total",
    )


def _sent_at(order_id: int) -> str:
    moment = datetime.fromtimestamp(EPOCH + order_id * 7919 % ROWS, timezone.utc)
    return moment.replace(tzinfo=None).isoformat(timespec="milliseconds") + "Z"


async def test_the_recipe_sends_every_row_in_order_and_a_rerun_adds_nothing(
    spark: Any, monkeypatch: pytest.MonkeyPatch
) -> None:
    example = _example()
    fake = FakeCollector()
    async with fake.serve() as base_url:
        monkeypatch.setitem(example.KOALA, "base_url", base_url)
        monkeypatch.setitem(example.KOALA, "public_api_key", "pk_test")
        report = await anyio.to_thread.run_sync(example.backfill, _orders(spark))
        first = len(fake.message_ids())
        # The foreachPartition recipe over the same rows: the same ids, so Koala drops them.
        await anyio.to_thread.run_sync(example.backfill_each_partition, _orders(spark))
    assert first == len(fake.message_ids()) == ROWS, "unique ids == rows; the re-run adds none"
    assert len(fake.events) == 2 * ROWS, "the re-run sent every row again; Koala drops repeats"
    assert report.rows == report.delivered == ROWS
    assert (report.dropped, report.pending, report.partitions) == (0, 0, example.PARTITIONS)
    assert fake.violations == []
    expected = {row_id(order_id): _sent_at(order_id) for order_id in range(ROWS)}
    for entries in (fake.events[:ROWS], fake.events[ROWS:]):  # each run, in order by person
        people: dict[str, list[str]] = {}
        for entry in entries:
            assert entry.data["sent_at"] == expected[entry.message_id or ""]  # its offset kept
            assert entry.event == "Order Placed"
            assert isinstance(entry.properties["total"], float)
            people.setdefault(entry.email or "", []).append(entry.data["sent_at"])
        assert len(people) == PEOPLE
        assert all(times == sorted(times) for times in people.values())


def _python_workers() -> list[int]:
    """The Python workers Spark forked to run tasks: children of pyspark's daemon."""
    commands: dict[int, tuple[bytes, int]] = {}
    for proc in Path("/proc").iterdir():
        if not proc.name.isdigit():
            continue
        try:
            command = (proc / "cmdline").read_bytes()
            parent = int((proc / "stat").read_text().rsplit(")", 1)[1].split()[1])
        except (OSError, ValueError):
            continue
        commands[int(proc.name)] = (command, parent)
    daemons = {pid for pid, (command, _) in commands.items() if b"pyspark.daemon" in command}
    return [pid for pid in daemons if commands[pid][1] in daemons]


@pytest.mark.skipif(not Path("/proc/self/stat").exists(), reason="finds Spark's workers in /proc")
async def test_a_task_killed_mid_partition_is_rerun_and_nothing_is_duplicated(spark: Any) -> None:
    from koala_async.spark import send_dataframe

    killed: list[int] = []

    def kill_the_workers(received: Received) -> Reply | None:
        # At the third request its sender waits for this answer: the workers running tasks
        # die mid-partition, and Spark runs their tasks again from the start.
        if len(fake.requests) == 2 and not killed:
            killed.extend(_python_workers())
            for pid in killed:
                os.kill(pid, signal.SIGKILL)
        return None

    fake = FakeCollector(responder=kill_the_workers)
    async with fake.serve() as base_url:
        frame = _orders(spark).selectExpr("*", "'Order Placed' AS event")

        def run() -> Any:
            return send_dataframe(
                frame, "track", person="email", key=["order_id"], order="placed_at",
                partitions=4, public_api_key="pk_test", base_url=base_url,
            )  # fmt: skip

        report = await anyio.to_thread.run_sync(run)
    assert killed, "Spark's Python workers were found and killed"
    assert len(fake.message_ids()) == report.rows == ROWS, "unique ids == rows"
    assert len(fake.events) > ROWS, "a killed task ran again, resending what had arrived"
    assert fake.violations == []


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
    import koala_async.dask
    import koala_async.spark

    def no_client(*args: object, **kwargs: object) -> None:
        raise AssertionError("a client was opened")

    # send_rows (which send_partition calls) opens the client: no rows, no client.
    monkeypatch.setattr(koala_async.dask, "KoalaSyncClient", no_client)
    empty = {"rows": 0, "delivered": 0, "dropped": 0, "pending": 0}
    assert koala_async.spark.send_partition(iter([]), "track", key=["order_id"]) == empty
