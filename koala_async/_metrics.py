"""The SDK's health as metrics: one table of what is exported, read from ``stats()`` when
scraped, shared by :mod:`koala_async.otel` and :mod:`koala_async.prometheus`.

Nothing here runs on the calls' path: a scrape reads a client's :class:`Stats` (the
ledger's counters, as ``stats()`` returns them) and, with a spool, the age of its oldest
entry (one indexed SQLite read). Names mirror OpenTelemetry's SDK self-metrics
(``otel.sdk.processor.*``, ``otel.sdk.exporter.*``) under ``koala_async.``; Prometheus gets
the same names as OpenTelemetry's own Prometheus exporter writes them (dots to
underscores, the unit as a suffix, ``_total`` on counters).
"""

from __future__ import annotations

import logging
import sqlite3
import threading
import time
import weakref
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from typing import Literal

from ._client import KoalaClient
from ._spool import oldest
from ._stats import Stats
from ._sync import KoalaSyncClient

__all__ = ["METRICS", "Metric", "Reading", "Sources", "prometheus_name"]

logger = logging.getLogger("koala_async")

Client = KoalaClient | KoalaSyncClient
Points = list[tuple[dict[str, str], float]]

NAME = "otel.component.name"  # which client: the name given, else "default"
TYPE = "otel.component.type"  # "koala_async.KoalaClient" or "koala_async.KoalaSyncClient"
ERROR = "error.type"  # a drop reason; absent on delivered entries
STATE = "koala_async.circuit.state"
CIRCUIT_STATES = ("closed", "open", "dead")


@dataclass(frozen=True)
class Reading:
    """One client's health at one scrape."""

    stats: Stats
    spool_age: float | None  # seconds the oldest spooled entry waited; None without a spool


@dataclass(frozen=True)
class Metric:
    """One instrument: its OpenTelemetry name, kind, unit, and how to read its points."""

    name: str
    kind: Literal["counter", "updown", "gauge"]
    unit: str
    description: str
    read: Callable[[Reading], Points]


def _one(value: Callable[[Stats], float]) -> Callable[[Reading], Points]:
    return lambda reading: [({}, value(reading.stats))]


def _exported(reading: Reading) -> Points:
    stats = reading.stats
    return [({}, stats.delivered)] + [({ERROR: r}, n) for r, n in stats.dropped.items()]


def _circuit(reading: Reading) -> Points:
    return [({STATE: s}, float(reading.stats.circuit == s)) for s in CIRCUIT_STATES]


def _spool_age(reading: Reading) -> Points:
    return [] if reading.spool_age is None else [({}, reading.spool_age)]


METRICS: tuple[Metric, ...] = (
    Metric(
        "koala_async.processor.entry.accepted",
        "counter",
        "{entry}",
        "Entries calls accepted (valid input), including those later dropped.",
        _one(lambda s: s.accepted),
    ),
    Metric(
        "koala_async.exporter.entry.exported",
        "counter",
        "{entry}",
        "Entries finished: delivered (no error.type) or dropped (error.type is the reason).",
        _exported,
    ),
    Metric(
        "koala_async.processor.entry.queue.size",
        "updown",
        "{entry}",
        "Entries in memory, queued or in flight (bounded by the queue capacity).",
        lambda r: [({}, r.stats.pending - r.stats.spooled)],
    ),
    Metric(
        "koala_async.processor.entry.queue.capacity",
        "updown",
        "{entry}",
        "The most entries memory may hold (max_queue_size).",
        _one(lambda s: s.capacity),
    ),
    Metric(
        "koala_async.exporter.request.inflight",
        "updown",
        "{request}",
        "HTTP requests sent and not yet answered.",
        _one(lambda s: s.in_flight),
    ),
    Metric(
        "koala_async.exporter.request.sent",
        "counter",
        "{request}",
        "HTTP requests made, retries included.",
        _one(lambda s: s.requests),
    ),
    Metric(
        "koala_async.exporter.request.retried",
        "counter",
        "{request}",
        "HTTP requests that retried an earlier attempt.",
        _one(lambda s: s.retries),
    ),
    Metric(
        "koala_async.exporter.request.duration",
        "counter",
        "s",
        "Seconds HTTP requests took, summed (divide by requests sent for the mean).",
        _one(lambda s: s.request_seconds),
    ),
    Metric(
        "koala_async.exporter.request.limit",
        "gauge",
        "{request}",
        "Requests that may be in flight now (the adaptive limit).",
        _one(lambda s: s.concurrency),
    ),
    Metric(
        "koala_async.exporter.circuit.state",
        "gauge",
        "1",
        "1 for the endpoint's current state (closed: healthy, open: failing, dead: key "
        "refused or not Koala's), 0 for the others.",
        _circuit,
    ),
    Metric(
        "koala_async.spool.size",
        "updown",
        "{entry}",
        "Entries waiting on disk only, in the spool.",
        _one(lambda s: s.spooled),
    ),
    Metric(
        "koala_async.spool.age",
        "gauge",
        "s",
        "Seconds the oldest entry in the spool has waited (0 when empty; with a spool only).",
        _spool_age,
    ),
)


def prometheus_name(metric: Metric) -> str:
    """The metric's name as OpenTelemetry's Prometheus exporter writes it (``_total`` is
    added by prometheus_client to counters)."""
    name = metric.name.replace(".", "_")
    return f"{name}_seconds" if metric.unit == "s" else name


def _age(path: str, stats: Stats) -> float:
    if not stats.pending:
        return 0.0  # nothing accepted waits: no need to read the file
    try:
        created = oldest(path)
    except sqlite3.Error as exc:  # not created yet, or locked: say nothing rather than lie
        logger.debug("cannot read the spool %s for its age: %s", path, exc)
        return 0.0
    return 0.0 if created is None else max(0.0, time.time() - created)


class Sources:
    """The clients one exporter reads, each with its name; held weakly (a client that is
    gone stops being read)."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._clients: dict[str, tuple[str, weakref.ref[Client]]] = {}

    def add(self, client: Client, name: str | None) -> str:
        """Read ``client`` under ``name`` (default ``"default"``); returns the name.

        Raises:
            ValueError: Another client is read under that name.
        """
        if name is None:
            name = "default"
        if not isinstance(name, str) or not name:
            raise ValueError("name must be a non-empty string naming the client in metrics")
        with self._lock:
            held = self._clients.get(name)
            if held is not None and held[1]() is not None:
                raise ValueError(
                    f"a client is already exported as {name!r}: give each client its own name="
                )
            kind = f"koala_async.{type(client).__name__}"
            self._clients[name] = (kind, weakref.ref(client))
        return name

    def remove(self, name: str) -> None:
        with self._lock:
            self._clients.pop(name, None)

    def readings(self, age: bool = True) -> Iterator[tuple[dict[str, str], Reading]]:
        """Each live client's attributes and reading (with the spool's age if ``age``); one
        whose stats() fails is skipped, and logged."""
        with self._lock:
            clients = list(self._clients.items())
        for name, (kind, ref) in clients:
            client = ref()
            if client is None:
                self.remove(name)
                continue
            try:
                stats = client.stats()
                path = client.spool_path
                spool_age = None if path is None or not age else _age(path, stats)
            except Exception:
                logger.exception("could not read the stats of the koala_async client %r", name)
                continue
            yield {NAME: name, TYPE: kind}, Reading(stats, spool_age)
