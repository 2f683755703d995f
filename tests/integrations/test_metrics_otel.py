"""koala_async.otel: the client's health read by the real OpenTelemetry SDK's
InMemoryMetricReader, from a client delivering to a collector on a port."""

from __future__ import annotations

import re
from pathlib import Path
from typing import Any

import anyio
import pytest
from opentelemetry.sdk.metrics import MeterProvider
from opentelemetry.sdk.metrics.export import InMemoryMetricReader

from koala_async import KoalaClient, RetryPolicy
from koala_async._spool import oldest
from koala_async.otel import instrument
from koala_async.testing import FakeCollector, Reply

pytestmark = pytest.mark.anyio

Points = dict[str, dict[frozenset[tuple[str, Any]], float]]


def collect(reader: InMemoryMetricReader) -> Points:
    """Every metric's points, keyed by their attributes."""
    data = reader.get_metrics_data()
    assert data is not None
    return {
        metric.name: {
            frozenset(dict(point.attributes or {}).items()): point.value  # type: ignore[union-attr]
            for point in metric.data.data_points
        }
        for resource in data.resource_metrics
        for scope in resource.scope_metrics
        for metric in scope.metrics
    }


_KEYS = {"error_type": "error.type", "state": "koala_async.circuit.state"}


def of(points: Points, metric: str, name: str = "default", **extra: str) -> float:
    """The point of client ``name`` with exactly the ``extra`` attributes."""
    attributes = {
        "otel.component.name": name,
        "otel.component.type": "koala_async.KoalaClient",
        **{_KEYS[key]: value for key, value in extra.items()},
    }
    return points[metric][frozenset(attributes.items())]


def reader_and_provider() -> tuple[InMemoryMetricReader, MeterProvider]:
    reader = InMemoryMetricReader()
    return reader, MeterProvider(metric_readers=[reader])


async def test_reports_what_stats_says() -> None:
    fake = FakeCollector()
    fake.fail_next(1, 400)  # the first batch is rejected
    reader, provider = reader_and_provider()
    async with (
        fake.serve() as url,
        KoalaClient("pk_test", base_url=url, max_queue_size=500) as koala,
    ):
        instrument(koala, meter_provider=provider)
        for i in range(3):
            await koala.track("Signed Up", email=f"u{i}@acme.com")
            await koala.flush()  # one request each: the first one is the rejected one
        await koala.track("", email="bad@acme.com")  # invalid: dropped at the call
        stats, points = koala.stats(), collect(reader)

    assert of(points, "koala_async.processor.entry.accepted") == stats.accepted == 4
    exported = "koala_async.exporter.entry.exported"
    assert of(points, exported) == stats.delivered == 2
    assert of(points, exported, error_type="rejected") == 1
    assert of(points, exported, error_type="invalid") == 1
    assert of(points, exported, error_type="queue_full") == 0
    assert of(points, "koala_async.exporter.request.sent") == stats.requests == 3
    assert of(points, "koala_async.exporter.request.retried") == stats.retries == 0
    assert of(points, "koala_async.exporter.request.duration") == stats.request_seconds > 0
    assert of(points, "koala_async.exporter.request.inflight") == 0
    assert of(points, "koala_async.processor.entry.queue.size") == 0
    assert of(points, "koala_async.processor.entry.queue.capacity") == 500
    assert of(points, "koala_async.exporter.request.limit") == stats.concurrency
    circuit = "koala_async.exporter.circuit.state"
    assert of(points, circuit, state="closed") == 1
    assert of(points, circuit, state="open") == 0
    assert of(points, "koala_async.spool.size") == 0
    assert "koala_async.spool.age" not in points  # no spool, no age


async def test_queue_and_circuit_while_the_endpoint_is_down() -> None:
    fake = FakeCollector(responder=lambda request: Reply(503))
    reader, provider = reader_and_provider()
    retry = RetryPolicy(max_attempts=100, backoff=0.01, max_backoff=0.05)
    async with fake.serve() as url:
        koala = KoalaClient("pk_test", base_url=url, retry=retry, shutdown_timeout=0.2)
        async with koala:
            instrument(koala, meter_provider=provider)
            for i in range(5):
                await koala.track("Signed Up", email=f"u{i}@acme.com")
            with anyio.fail_after(10):
                while koala.stats().circuit != "open":  # noqa: ASYNC110 - a state, not an event
                    await anyio.sleep(0.01)
            points = collect(reader)
            assert of(points, "koala_async.processor.entry.queue.size") == 5
            circuit = "koala_async.exporter.circuit.state"
            assert of(points, circuit, state="open") == 1
            assert of(points, circuit, state="closed") == 0
            assert of(points, "koala_async.exporter.request.retried") > 0
    points = collect(reader)  # read after the close too: the drops at the deadline
    exported = "koala_async.exporter.entry.exported"
    assert of(points, exported, error_type="shutdown_timeout") == 5


async def test_spool_size_and_age(tmp_path: Path) -> None:
    fake = FakeCollector(responder=lambda request: Reply(503))
    reader, provider = reader_and_provider()
    spool = tmp_path / "spool.db"
    retry = RetryPolicy(max_attempts=2, backoff=0.01, max_backoff=0.02)
    async with fake.serve() as url:
        koala = KoalaClient(
            "pk_test",
            base_url=url,
            retry=retry,
            spool=spool,
            spool_commit_interval=0.01,
            shutdown_timeout=0.2,
        )
        async with koala:
            instrument(koala, meter_provider=provider)
            await koala.track("Signed Up", email="ada@acme.com")
            with anyio.fail_after(10):  # committed to disk
                while oldest(str(spool)) is None:  # noqa: ASYNC110 - another thread writes it
                    await anyio.sleep(0.01)
            await anyio.sleep(0.05)
            points = collect(reader)
            # It moves between memory and disk (parked after its retries, read back).
            in_memory = of(points, "koala_async.processor.entry.queue.size")
            assert in_memory + of(points, "koala_async.spool.size") == 1
            assert of(points, "koala_async.spool.age") >= 0.05
    # What waits in the spool is not dropped: the next client sends it.
    assert (
        of(collect(reader), "koala_async.exporter.entry.exported", error_type="shutdown_timeout")
        == 0
    )


async def test_several_clients_each_by_its_name() -> None:
    fake = FakeCollector()
    reader, provider = reader_and_provider()
    async with (
        fake.serve() as url,
        KoalaClient("pk_test", base_url=url) as web,
        KoalaClient("pk_test", base_url=url, max_queue_size=7) as jobs,
    ):
        instrument(web, meter_provider=provider, name="web")
        handle = instrument(jobs, meter_provider=provider, name="jobs")
        with pytest.raises(ValueError, match="give each client its own name"):
            instrument(jobs, meter_provider=provider, name="web")
        await web.track("Signed Up", email="ada@acme.com")
        await web.flush()
        points = collect(reader)
        accepted = "koala_async.processor.entry.accepted"
        assert of(points, accepted, "web") == 1
        assert of(points, accepted, "jobs") == 0
        assert of(points, "koala_async.processor.entry.queue.capacity", "jobs") == 7

        handle.close()  # stops reporting "jobs" only
        names = {
            dict(attributes)["otel.component.name"]
            for attributes in collect(reader)["koala_async.processor.entry.accepted"]
        }
        assert names == {"web"}


def test_the_docs_example_runs(monkeypatch: pytest.MonkeyPatch) -> None:
    """The metrics page's sample, on the global MeterProvider (a proxy until one is set)."""
    monkeypatch.setenv("KOALA_PUBLIC_API_KEY", "pk_test")
    readme = (Path(__file__).parents[2] / "docs" / "how-to" / "metrics.md").read_text()
    blocks = re.findall(r"```python\n(.*?)```", readme, re.S)
    (sample,) = (b for b in blocks if "from koala_async.otel import instrument" in b)
    namespace: dict[str, object] = {"koala": KoalaClient("pk_test")}
    exec(sample, namespace)
    assert repr(namespace["handle"]) == "<Instrumentation name='default'>"
