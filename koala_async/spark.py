"""Backfill from Spark: send a Spark DataFrame's rows to Koala, one client per partition task.

::

    from koala_async.spark import send_dataframe

    events = spark.read.parquet("s3://acme/events/")   # email, event, ts, order_id, ...
    report = send_dataframe(events, "track", person="email", key=["order_id"], order="ts",
                            public_api_key="pk_live_...")
    print(report)   # rows, delivered, dropped, pending, partitions

or, where no report is wanted, the partition building block in your own ``foreachPartition``::

    from koala_async.spark import send_partition

    (events.repartition("email").sortWithinPartitions("email", "ts")
        .foreachPartition(lambda rows: send_partition(rows, "track", key=["order_id"],
                                                      public_api_key="pk_live_...")))

The promises are :mod:`koala_async.dask`'s: the frame is repartitioned by ``person`` (every
row of a person in one partition) and sorted within partitions by ``person`` and ``order``,
so one client sends a person's entries in order; each row's ``message_id`` is
:func:`koala_async.backfill.row_id` of its ``key`` columns (the same id Dask's recipe and a
script of yours give the same key), so a task Spark re-runs, or a whole job run again, sends
repeats that Koala drops; each partition task sends with one
:class:`~koala_async.KoalaSyncClient`, ``on_full="block"``, and ends with a flush that waits
as long as retries take.

Imports nothing from Spark (the frame's own methods do the work), but the executors must be
able to import ``koala_async``: install it where the job runs (or ship it with
``--py-files``). Spark shows progress itself: its web UI, or the console bar
(``spark.ui.showConsoleProgress``).
"""

from __future__ import annotations

import functools
from collections.abc import Iterable, Mapping, Sequence
from typing import Any

from .backfill import CALLS
from .dask import Report, send_rows

__all__ = ["Report", "send_dataframe", "send_partition"]


def send_partition(
    rows: Iterable[Any],
    kind: str,
    key: Sequence[str],
    payload: Sequence[str] = (),
    **options: Any,
) -> dict[str, int]:
    """Send one partition's rows (Spark ``Row``\\ s, or mappings) with one client; return the
    counts (``rows``, ``delivered``, ``dropped``, ``pending``).

    For ``foreachPartition`` or ``mapPartitions``: the rows are read once, as they are sent
    (a partition is never held in memory), and an empty partition opens no client. Map and
    struct columns become dicts, so a ``properties`` column of either fills the call's
    ``properties``. ``key``, ``payload`` and ``options`` are as in
    :func:`koala_async.dask.send_rows`.
    """
    if kind not in CALLS:
        raise ValueError(f"kind must be one of {', '.join(CALLS)}, got {kind!r}")
    return send_rows(map(_mapping, rows), kind, key, payload, **options)


def _mapping(row: Any) -> Mapping[str, Any]:
    """A Spark Row as a dict (nested rows and maps too); a mapping as it is."""
    as_dict = getattr(row, "asDict", None)
    return as_dict(recursive=True) if as_dict is not None else row  # type: ignore[no-any-return]


def _task(
    kind: str,
    key: Sequence[str],
    payload: Sequence[str],
    options: Mapping[str, Any],
    rows: Iterable[Any],
) -> list[dict[str, int]]:
    return [send_partition(rows, kind, key, payload, **options)]


def send_dataframe(
    frame: Any,
    kind: str,
    *,
    person: str,
    key: Sequence[str],
    order: str | None = None,
    payload: Sequence[str] = (),
    partitions: int | None = None,
    **options: Any,
) -> Report:
    """Send every row of a Spark DataFrame as a ``kind`` call (``"track"``, ``"identify"``...).

    Arguments as :func:`koala_async.dask.send_dataframe`'s: columns named like the call's
    arguments fill them; ``person`` says whose the row is, ``key`` tells rows apart (the
    message_id comes from it), ``order`` orders a person's rows, ``payload`` names columns
    that go into ``properties`` (or ``traits``). ``partitions`` is how many partition tasks
    send (default: ``spark.sql.shuffle.partitions``); each opens one client, so it bounds
    the connections to Koala. ``options`` go to each task's
    :class:`~koala_async.KoalaSyncClient`. Returns the tasks' counts summed.
    """
    if kind not in CALLS:
        raise ValueError(f"kind must be one of {', '.join(CALLS)}, got {kind!r}")
    named = [person, *key, *([order] if order else []), *payload]
    missing = [name for name in named if name not in frame.columns]
    if missing:
        raise ValueError(f"the frame has no column {', '.join(map(repr, missing))}")
    by = [person] if order is None else [person, order]
    shuffled = frame.repartition(partitions, person) if partitions else frame.repartition(person)
    task = functools.partial(_task, kind, list(key), list(payload), dict(options))
    counts: list[dict[str, int]] = (
        shuffled.sortWithinPartitions(*by).rdd.mapPartitions(task).collect()
    )
    return Report.of(counts)
