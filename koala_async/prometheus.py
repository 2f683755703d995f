"""The client's health as Prometheus metrics: ``pip install 'koala-async[prometheus]'``.

::

    from koala_async.prometheus import instrument

    koala = KoalaClient()
    instrument(koala)  # prometheus_client's default REGISTRY; or registry=..., name=...

A collector reads ``stats()`` at each scrape, so the calls do no work for it. The names are
those of :mod:`koala_async.otel` as OpenTelemetry's Prometheus exporter writes them
(``koala_async_exporter_entry_exported_total{error_type="queue_full"}``); every sample
carries ``otel_component_name`` (the client's ``name``) and ``otel_component_type``. For
gunicorn's worker processes, see :func:`start_multiprocess_export`.
"""

from __future__ import annotations

import threading
import weakref
from collections.abc import Iterable, Iterator

from ._metrics import METRICS, Client, Metric, Sources, prometheus_name
from ._optional import require

require("prometheus_client", "prometheus")

from prometheus_client import REGISTRY, CollectorRegistry  # noqa: E402 - after the check
from prometheus_client.core import Metric as Family  # noqa: E402
from prometheus_client.registry import Collector  # noqa: E402

__all__ = ["Instrumentation", "KoalaCollector", "instrument"]

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
