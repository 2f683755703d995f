"""Backfill from Dask: send a Dask DataFrame's rows to Koala, one client per partition task.

::

    import dask.dataframe as dd
    from koala_async.dask import send_dataframe

    events = dd.read_parquet("s3://acme/events/")   # email, event, ts, order_id, ...
    report = send_dataframe(events, "track", person="email", key=["order_id"], order="ts",
                            public_api_key="pk_live_...")
    print(report)   # rows, delivered, dropped, pending, partitions

How it keeps its promises:

- **A person's entries together and in order**: the frame is shuffled on ``person`` (every
  row of a person lands in one partition) and each partition sorted by ``person`` and
  ``order``, so one client sends a person's entries in order.
- **Re-running a task is harmless**: each row's ``message_id`` is
  :func:`koala_async.backfill.row_id` of its ``key`` columns, so a task re-run after a worker
  dies, or a whole job run again, sends repeats that Koala drops.
- **No drops under load**: one :class:`~koala_async.KoalaSyncClient` per partition task,
  ``on_full="block"``: the task waits for room rather than dropping. The task ends with a
  flush that waits as long as retries take, then closes the client.
- **One report**: each task returns its :class:`~koala_async.FlushResult`-like counts; they
  are summed into a :class:`Report`.

Needs ``dask[dataframe]`` (and ``distributed`` for a cluster).
"""

from __future__ import annotations

import itertools
import math
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any

from ._optional import require
from ._sync import KoalaSyncClient
from .backfill import CALLS, row_id

__all__ = ["Report", "send_dataframe", "send_rows"]

_COUNTS = ("rows", "delivered", "dropped", "pending")


@dataclass(frozen=True)
class Report:
    """What a backfill did, summed over its partitions.

    Attributes:
        rows: Rows read.
        delivered: Entries Koala took (a re-run task's repeats count again: Koala drops them).
        dropped: Entries given up (refused by Koala, or invalid).
        pending: Entries still undelivered when a task's client closed (0 normally).
        partitions: Partition tasks that ran.
    """

    rows: int
    delivered: int
    dropped: int
    pending: int
    partitions: int

    @classmethod
    def of(cls, counts: Sequence[Mapping[str, int]]) -> Report:
        """The partitions' counts (what :func:`send_rows` returns), summed."""
        return cls(
            **{name: int(sum(c[name] for c in counts)) for name in _COUNTS}, partitions=len(counts)
        )


def send_rows(
    rows: Iterable[Mapping[str, Any]],
    kind: str,
    key: Sequence[str],
    payload: Sequence[str] = (),
    **options: Any,
) -> dict[str, int]:
    """Send ``rows`` (mappings named like the call's arguments) with one client; return the
    counts. The building block of a partition task (Dask, or Spark's ``foreachPartition``:
    see :mod:`koala_async.spark`); ``rows`` may be an iterator, read once, as it is sent, and
    no rows open no client.
    ``payload`` names the fields that go into the call's ``properties`` (or ``traits``).

    ``options`` go to :class:`~koala_async.KoalaSyncClient` (``public_api_key``,
    ``base_url``...); ``on_full`` is always ``"block"``.
    """
    call_kind = CALLS[kind]
    parameters = [p for p in call_kind.parameters if p != "message_id"]
    rows = iter(rows)
    first = next(rows, None)
    if first is None:
        return dict.fromkeys(_COUNTS, 0)
    rows = itertools.chain((first,), rows)
    read = 0
    with KoalaSyncClient(**{**options, "on_full": "block", "strict": False}) as koala:
        call: Callable[..., object] = getattr(koala, kind)
        for row in rows:
            read += 1
            kwargs = {p: row[p] for p in parameters if p in row and not _missing(row[p])}
            if payload:
                values = {name: row[name] for name in payload if not _missing(row[name])}
                kwargs[call_kind.payload] = {**kwargs.get(call_kind.payload, {}), **values}
            call(**kwargs, message_id=row_id(*(row[k] for k in key)))
        koala.flush(timeout=math.inf)
        stats = koala.stats()
    return {
        "rows": read,
        "delivered": stats.delivered,
        "dropped": stats.dropped_total,
        "pending": stats.pending,
    }


def _missing(value: object) -> bool:
    """None and NaN (a DataFrame's empty cell) are not passed to the call."""
    return value is None or (isinstance(value, float) and math.isnan(value))


def _partition(
    frame: Any, kind: str, key: Sequence[str], payload: Sequence[str], options: Mapping[str, Any]
) -> Any:
    pd = require("pandas", "dask")
    counts = send_rows(frame.to_dict("records"), kind, key, payload, **options)
    return pd.DataFrame([counts])


def send_dataframe(
    frame: Any,
    kind: str,
    *,
    person: str,
    key: Sequence[str],
    order: str | None = None,
    payload: Sequence[str] = (),
    progress: bool = False,
    **options: Any,
) -> Report:
    """Send every row of a Dask DataFrame as a ``kind`` call (``"track"``, ``"identify"``...).

    Columns named like the call's arguments fill them (``event``, ``email``,
    ``properties``...). ``person`` is the column that says whose the row is (``email``,
    ``profile_id``, ``domain``...); ``key`` the columns whose values tell rows apart (the
    message_id comes from them); ``order`` the column that orders a person's rows;
    ``payload`` the columns that go into ``properties`` (or ``traits``), by name (Dask
    stores a column of dicts as text, so pass their keys as columns).
    ``progress`` shows Dask's progress bar (a distributed client's, if one is running).
    ``options`` go to each task's :class:`~koala_async.KoalaSyncClient`.
    """
    dask = require("dask", "dask")
    if kind not in CALLS:
        raise ValueError(f"kind must be one of {', '.join(CALLS)}, got {kind!r}")
    by = [person] if order is None else [person, order]
    shuffled = frame.shuffle(on=person).map_partitions(lambda part: part.sort_values(by))
    meta = {name: "int64" for name in _COUNTS}
    counts = shuffled.map_partitions(
        _partition, kind, list(key), list(payload), dict(options), meta=meta
    )
    if not progress:
        (result,) = dask.compute(counts)
    else:
        distributed = require("distributed", "dask")
        try:
            future = distributed.default_client().compute(counts)
        except ValueError:  # no distributed client: the local scheduler's bar
            with require("dask.diagnostics", "dask").ProgressBar():
                (result,) = dask.compute(counts)
        else:
            distributed.progress(future)
            result = future.result()
    return Report.of(result.to_dict("records"))
