"""koala_async.dask on a real distributed.LocalCluster with worker processes (issue 28 item 6):
one worker killed mid-run, every row still delivered; a re-run adds no unique id."""

from __future__ import annotations

import os
import signal
from typing import Any

import anyio
import anyio.to_thread
import pytest

from koala_async.testing import FakeCollector, Reply

dd = pytest.importorskip("dask.dataframe")
distributed = pytest.importorskip("distributed")
pd = pytest.importorskip("pandas")

pytestmark = pytest.mark.anyio

ROWS, PEOPLE = 3_000, 300


@pytest.fixture
def anyio_backend() -> str:
    return "asyncio"  # the workers send from their own processes; the test's loop only serves


def _frame() -> Any:
    rows = pd.DataFrame(
        {
            "order_id": range(ROWS),
            "email": [f"p{i % PEOPLE}@acme.com" for i in range(ROWS)],
            "event": "Order Placed",
            "ts": range(ROWS),
        }
    )
    return dd.from_pandas(rows, npartitions=8)


async def test_a_dataframe_arrives_whole_and_in_order_though_a_worker_dies() -> None:
    from koala_async.dask import send_dataframe

    fake = FakeCollector(responder=lambda received: Reply(delay=0.02))
    async with fake.serve() as base_url:
        with (
            distributed.LocalCluster(
                n_workers=2, threads_per_worker=1, processes=True, dashboard_address=None
            ) as cluster,
            distributed.Client(cluster) as client,
        ):
            options: dict[str, Any] = {"public_api_key": "pk_test", "base_url": base_url}

            def run(progress: bool = False) -> Any:
                return send_dataframe(
                    _frame(),
                    "track",
                    person="email",
                    key=["order_id"],
                    order="ts",
                    payload=["ts"],
                    progress=progress,
                    **options,
                )

            pids = list(client.run(os.getpid).values())
            killed_at: list[int] = []
            async with anyio.create_task_group() as tasks:

                async def kill_one() -> None:
                    while len(fake.message_ids()) < 300:  # noqa: ASYNC110 - workers send
                        await anyio.sleep(0.01)
                    os.kill(pids[0], signal.SIGKILL)
                    killed_at.append(len(fake.message_ids()))

                tasks.start_soon(kill_one)
                report = await anyio.to_thread.run_sync(run)
                tasks.cancel_scope.cancel()
            first = len(fake.message_ids())
            fake.responder = None
            again = await anyio.to_thread.run_sync(run, True)  # with the progress bar
    assert len(fake.message_ids()) == first == ROWS, "unique ids == rows, after a worker died"
    assert report.rows == again.rows == ROWS
    assert report.partitions == 8
    assert again.delivered == ROWS, "the re-run sends every row again; Koala drops the repeats"
    assert fake.violations == []
    assert killed_at[0] < ROWS, "a worker died mid-run"
    firsts: dict[str, list[int]] = {}
    seen: set[str | None] = set()
    for entry in fake.events:  # a person's entries arrive in order (repeats aside)
        if entry.message_id not in seen:
            seen.add(entry.message_id)
            firsts.setdefault(entry.email or "", []).append(entry.properties["ts"])
    assert len(firsts) == PEOPLE
    assert all(ts == sorted(ts) for ts in firsts.values())
