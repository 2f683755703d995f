"""The client's health as OpenTelemetry metrics: ``pip install 'koala-async[otel]'``.

::

    from koala_async.otel import instrument

    koala = KoalaClient()
    instrument(koala)  # the global MeterProvider; or meter_provider=..., name=...

Observable instruments read ``stats()`` when the MeterProvider collects, so the calls do
no work for them. The names mirror OpenTelemetry's SDK self-metrics under
``koala_async.`` (docs/how-to/metrics.md has the table); every point carries
``otel.component.name`` (the client's ``name``) and ``otel.component.type``.
"""

from __future__ import annotations

import threading
import weakref
from collections.abc import Callable, Iterable
from typing import TYPE_CHECKING

from ._metrics import METRICS, Client, Metric, Sources
from ._optional import require
from ._version import __version__

require("opentelemetry.metrics", "otel")

from opentelemetry import metrics  # noqa: E402 - after the check that names the extra

if TYPE_CHECKING:
    from opentelemetry.metrics import CallbackOptions, MeterProvider, Observation

__all__ = ["Instrumentation", "instrument"]

_lock = threading.Lock()
_by_provider: weakref.WeakKeyDictionary[MeterProvider, Sources] = weakref.WeakKeyDictionary()


class Instrumentation:
    """A client being exported; :meth:`close` stops it (its instruments stay, without its
    points)."""

    def __init__(self, sources: Sources, name: str) -> None:
        self._sources = sources
        self.name = name

    def close(self) -> None:
        """Stop reporting this client."""
        self._sources.remove(self.name)

    def __repr__(self) -> str:
        return f"<Instrumentation name={self.name!r}>"


def instrument(
    client: Client, *, name: str | None = None, meter_provider: MeterProvider | None = None
) -> Instrumentation:
    """Report ``client``'s health through ``meter_provider`` (default: the global one).

    Args:
        client: A :class:`~koala_async.KoalaClient` or :class:`~koala_async.KoalaSyncClient`,
            opened or not; it is held weakly.
        name: The ``otel.component.name`` of its points (default ``"default"``): give each
            client reported through one provider its own.
        meter_provider: Where to report; default ``opentelemetry.metrics.get_meter_provider()``.

    Raises:
        ValueError: Another client is reported under ``name`` through that provider.
    """
    provider = metrics.get_meter_provider() if meter_provider is None else meter_provider
    with _lock:
        sources = _by_provider.get(provider)
        if sources is None:
            sources = _by_provider[provider] = Sources()
            _register(provider, sources)
    return Instrumentation(sources, sources.add(client, name))


def _register(provider: MeterProvider, sources: Sources) -> None:
    """Create every instrument once per provider, each reading every client it holds."""
    meter = provider.get_meter("koala_async", __version__)
    create = {
        "counter": meter.create_observable_counter,
        "updown": meter.create_observable_up_down_counter,
        "gauge": meter.create_observable_gauge,
    }
    for metric in METRICS:
        create[metric.kind](
            metric.name,
            callbacks=[_callback(metric, sources)],
            unit=metric.unit,
            description=metric.description,
        )


def _callback(
    metric: Metric, sources: Sources
) -> Callable[[CallbackOptions], Iterable[Observation]]:
    age = metric.name == "koala_async.spool.age"  # the one that reads the spool file

    def observe(options: CallbackOptions) -> Iterable[Observation]:
        return [
            metrics.Observation(value, {**base, **extra})
            for base, reading in sources.readings(age)
            for extra, value in metric.read(reading)
        ]

    return observe
