"""The client's health as Prometheus metrics: ``pip install 'koala-async[prometheus]'``.

::

    from koala_async.prometheus import instrument

    koala = KoalaClient()
    instrument(koala)  # prometheus_client's default REGISTRY; or registry=..., name=...

A collector reads ``stats()`` at each scrape, so the calls do no work for it. The names are
those of :mod:`koala_async.otel` as OpenTelemetry's Prometheus exporter writes them
(``koala_async_exporter_entry_exported_total{error_type="queue_full"}``); every sample
carries ``otel_component_name`` (the client's ``name``) and ``otel_component_type``. For
prometheus_client's multiprocess mode (gunicorn's workers), see
:func:`mirror_to_multiprocess`.
"""

from __future__ import annotations

import logging
import threading
import weakref
from collections.abc import Iterable, Iterator
from typing import Any, Literal

from ._metrics import METRICS, Client, Metric, Sources, prometheus_name
from ._optional import require

require("prometheus_client", "prometheus")

from prometheus_client import REGISTRY, CollectorRegistry  # noqa: E402 - after the check
from prometheus_client.core import Metric as Family  # noqa: E402
from prometheus_client.registry import Collector  # noqa: E402

__all__ = [
    "Instrumentation",
    "KoalaCollector",
    "MultiprocessMirror",
    "instrument",
    "mirror_to_multiprocess",
]

logger = logging.getLogger("koala_async")

_TYPES = {"counter": "counter", "updown": "gauge", "gauge": "gauge"}


def _label(key: str) -> str:
    return key.replace(".", "_")


def _family(metric: Metric) -> Family:
    unit = "seconds" if metric.unit == "s" else ""
    return Family(prometheus_name(metric), metric.description, _TYPES[metric.kind], unit)


class KoalaCollector(Collector):
    """A prometheus_client collector reading one or more clients at each scrape.

    Register it once (``registry.register(KoalaCollector(koala))``); :meth:`add` more
    clients to it, each with its own ``name``.
    """

    def __init__(self, client: Client | None = None, *, name: str | None = None) -> None:
        self._sources = Sources()
        if client is not None:
            self.add(client, name=name)

    def add(self, client: Client, *, name: str | None = None) -> str:
        """Read ``client`` too, under ``name`` (default ``"default"``); returns the name.

        Raises:
            ValueError: Another client is read under that name.
        """
        return self._sources.add(client, name)

    def remove(self, name: str) -> None:
        """Stop reading the client of that name."""
        self._sources.remove(name)

    def describe(self) -> Iterable[Family]:
        """The families, without samples: what the registry checks names against."""
        return [_family(metric) for metric in METRICS]

    def collect(self) -> Iterator[Family]:
        readings = list(self._sources.readings())
        for metric in METRICS:
            family = _family(metric)
            sample = family.name + ("_total" if family.type == "counter" else "")
            for base, reading in readings:
                for extra, value in metric.read(reading):
                    labels = {_label(k): v for k, v in (base | extra).items()}
                    family.add_sample(sample, labels, value)
            yield family


class Instrumentation:
    """A client being exported; :meth:`close` stops it."""

    def __init__(self, collector: KoalaCollector, name: str) -> None:
        self._collector = collector
        self.name = name

    def close(self) -> None:
        """Stop reporting this client."""
        self._collector.remove(self.name)

    def __repr__(self) -> str:
        return f"<Instrumentation name={self.name!r}>"


_lock = threading.Lock()
_by_registry: weakref.WeakKeyDictionary[CollectorRegistry, KoalaCollector] = (
    weakref.WeakKeyDictionary()
)


def instrument(
    client: Client, *, name: str | None = None, registry: CollectorRegistry = REGISTRY
) -> Instrumentation:
    """Report ``client``'s health on ``registry`` (one :class:`KoalaCollector` per registry).

    Args:
        client: A :class:`~koala_async.KoalaClient` or :class:`~koala_async.KoalaSyncClient`,
            opened or not; it is held weakly.
        name: The ``otel_component_name`` label of its samples (default ``"default"``):
            give each client on one registry its own.
        registry: Where to report; default prometheus_client's ``REGISTRY``.

    Raises:
        ValueError: Another client is reported under ``name`` on that registry.
    """
    with _lock:
        collector = _by_registry.get(registry)
        if collector is None:
            collector = _by_registry[registry] = KoalaCollector()
            registry.register(collector)
    return Instrumentation(collector, collector.add(client, name=name))


class MultiprocessMirror:
    """Copies a client's health into prometheus_client's own metrics, every ``interval``
    seconds in a daemon thread: for multiprocess mode (``PROMETHEUS_MULTIPROC_DIR``, e.g.
    under gunicorn), whose ``MultiProcessCollector`` reads only those. Counters grow by what
    the client's grew since the last copy (so they sum across workers, dead ones included);
    gauges are ``livesum`` (``spool.age``: ``livemax``) over the live workers. See
    :func:`mirror_to_multiprocess`."""

    def __init__(self, client: Client, name: str | None, interval: float) -> None:
        from prometheus_client import Counter, Gauge

        self._sources = Sources()
        self._sources.add(client, name)
        self._interval = interval
        self._last: dict[tuple[str, tuple[str, ...]], float] = {}
        labels: dict[str, list[str]] = {}
        self._metrics: list[tuple[Metric, Any]] = []
        for metric in METRICS:
            keys = ["otel_component_name", "otel_component_type"]
            keys += {"koala_async.exporter.entry.exported": ["error_type"]}.get(metric.name, [])
            if metric.name == "koala_async.exporter.circuit.state":
                keys.append("koala_async_circuit_state")
            labels[metric.name] = keys
            name, help_ = prometheus_name(metric), metric.description
            if metric.kind == "counter":
                made: Any = Counter(name, help_, keys, registry=None)
            else:
                age = metric.name == "koala_async.spool.age"
                mode: Literal["livemax", "livesum"] = "livemax" if age else "livesum"
                made = Gauge(name, help_, keys, registry=None, multiprocess_mode=mode)
            self._metrics.append((metric, made))
        self._labels = labels
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, name="koala-async-metrics", daemon=True)
        self._thread.start()

    def copy(self) -> None:
        """Copy the client's health now."""
        readings = list(self._sources.readings())
        for metric, made in self._metrics:
            keys = self._labels[metric.name]
            for base, reading in readings:
                for extra, value in metric.read(reading):
                    given = {_label(k): v for k, v in (base | extra).items()}
                    values = [given.get(k, "") for k in keys]
                    if metric.kind != "counter":
                        made.labels(*values).set(value)
                        continue
                    key = (metric.name, tuple(values))
                    grown = value - self._last.get(key, 0.0)
                    self._last[key] = value
                    if grown > 0:
                        made.labels(*values).inc(grown)

    def _run(self) -> None:
        while True:
            try:
                self.copy()
            except Exception:
                logger.exception("could not copy the koala_async metrics")
            if self._stop.wait(self._interval):
                return

    def close(self) -> None:
        """Copy once more, then stop."""
        self._stop.set()
        self._thread.join()
        self.copy()


def mirror_to_multiprocess(
    client: Client, *, name: str | None = None, interval: float = 5.0
) -> MultiprocessMirror:
    """Report ``client`` through prometheus_client's multiprocess mode: call it in each
    worker process (after the fork: gunicorn's ``post_fork`` hook, or at import without
    ``--preload``), with ``PROMETHEUS_MULTIPROC_DIR`` set. Samples are at most ``interval``
    seconds old when scraped."""
    return MultiprocessMirror(client, name, interval)
