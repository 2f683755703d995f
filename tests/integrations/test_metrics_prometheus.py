"""koala_async.prometheus: scraped from a real prometheus_client HTTP server and parsed with
prometheus_client's own parser, from a sync client delivering to a collector process."""

from __future__ import annotations

import urllib.request
from collections.abc import Iterator
from pathlib import Path

import pytest
from prometheus_client import CollectorRegistry, start_http_server
from prometheus_client.parser import text_string_to_metric_families
from sync_support import collector, message_ids
from wire_check import free_port

from koala_async import KoalaClient, KoalaSyncClient
from koala_async.prometheus import KoalaCollector, instrument

Samples = dict[tuple[str, frozenset[tuple[str, str]]], float]


@pytest.fixture
def registry() -> Iterator[tuple[CollectorRegistry, str]]:
    """A registry served on a random 127.0.0.1 port; yields it and its /metrics URL."""
    registry = CollectorRegistry()
    server, thread = start_http_server(0, addr="127.0.0.1", registry=registry)
    try:
        yield registry, f"http://127.0.0.1:{server.server_address[1]}/metrics"
    finally:
        server.shutdown()
        server.server_close()
        thread.join()


def scrape(url: str) -> Samples:
    with urllib.request.urlopen(url, timeout=10) as response:
        text = response.read().decode()
    return {
        (sample.name, frozenset(sample.labels.items())): sample.value
        for family in text_string_to_metric_families(text)
        for sample in family.samples
    }


def sample(samples: Samples, name: str, client: str = "default", **labels: str) -> float:
    kind = "koala_async.KoalaSyncClient"
    labels = {"otel_component_name": client, "otel_component_type": kind, **labels}
    return samples[(name, frozenset(labels.items()))]


def test_a_scrape_reads_the_client(tmp_path: Path, registry: tuple[CollectorRegistry, str]) -> None:
    with collector(tmp_path) as (url, log):
        koala = KoalaSyncClient("pk_test", base_url=url, max_queue_size=300)
        instrument(koala, registry=registry[0])
        ids = [koala.track("Signed Up", email=f"u{i}@acme.com") for i in range(5)]
        koala.track("", email="bad@acme.com")  # invalid: dropped at the call
        koala.flush()
        stats, samples = koala.stats(), scrape(registry[1])
        koala.close()
        assert set(message_ids(log)) == set(ids)

    assert sample(samples, "koala_async_processor_entry_accepted_total") == 6 == stats.accepted
    exported = "koala_async_exporter_entry_exported_total"
    assert sample(samples, exported) == 5 == stats.delivered
    assert sample(samples, exported, error_type="invalid") == 1
    assert sample(samples, exported, error_type="retries_exhausted") == 0
    assert sample(samples, "koala_async_exporter_request_sent_total") == stats.requests > 0
    duration = "koala_async_exporter_request_duration_seconds_total"
    assert sample(samples, duration) == stats.request_seconds > 0
    assert sample(samples, "koala_async_processor_entry_queue_size") == 0
    assert sample(samples, "koala_async_processor_entry_queue_capacity") == 300
    assert sample(samples, "koala_async_exporter_request_inflight") == 0
    circuit = "koala_async_exporter_circuit_state"
    assert sample(samples, circuit, koala_async_circuit_state="closed") == 1
    assert sample(samples, circuit, koala_async_circuit_state="dead") == 0


def test_several_clients_on_one_registry(registry: tuple[CollectorRegistry, str]) -> None:
    nowhere = f"http://127.0.0.1:{free_port()}"  # nothing is delivered: it stays pending
    web = KoalaSyncClient("pk_test", base_url=nowhere, shutdown_timeout=0.1)
    jobs = KoalaSyncClient("pk_test", enabled=False, max_queue_size=9)
    instrument(web, registry=registry[0], name="web")
    instrument(jobs, registry=registry[0], name="jobs")
    with pytest.raises(ValueError, match="give each client its own name"):
        instrument(KoalaSyncClient("pk_test"), registry=registry[0], name="web")
    web.track("Signed Up", email="ada@acme.com")
    samples = scrape(registry[1])
    accepted = "koala_async_processor_entry_accepted_total"
    assert sample(samples, accepted, "web") == 1
    assert sample(samples, accepted, "jobs") == 0
    assert sample(samples, "koala_async_processor_entry_queue_capacity", "jobs") == 9
    web.close()
    jobs.close()


def test_a_collector_of_its_own() -> None:
    """KoalaCollector registered by hand; the registry checks its names like any other."""
    registry = CollectorRegistry()
    koala = KoalaClient("pk_test")
    registry.register(KoalaCollector(koala, name="api"))
    assert (
        registry.get_sample_value(
            "koala_async_processor_entry_queue_capacity",
            {"otel_component_name": "api", "otel_component_type": "koala_async.KoalaClient"},
        )
        == 100_000
    )
    with pytest.raises(ValueError, match="Duplicated timeseries"):
        registry.register(KoalaCollector(koala, name="other"))
