"""The metrics table and the clients it reads: pure, no sockets, no event loop."""

from __future__ import annotations

import gc
import subprocess
import sys

import pytest

from koala_async import KoalaClient, KoalaSyncClient, Stats
from koala_async._metrics import METRICS, Reading, Sources, prometheus_name
from koala_async._stats import DROP_REASONS

STATS = Stats(
    accepted=20,
    delivered=11,
    dropped={**dict.fromkeys(DROP_REASONS, 0), "queue_full": 2, "invalid": 1},
    pending=6,
    requests=9,
    retries=3,
    last_error=None,
    circuit="open",
    concurrency=4,
    spooled=2,
    capacity=100,
    in_flight=1,
    request_seconds=1.5,
)


def read(name: str, spool_age: float | None = None) -> dict[frozenset[tuple[str, str]], float]:
    (metric,) = (m for m in METRICS if m.name == name)
    return {frozenset(k.items()): v for k, v in metric.read(Reading(STATS, spool_age))}


def test_each_metric_reads_its_counter() -> None:
    assert read("koala_async.processor.entry.accepted") == {frozenset(): 20}
    exported = read("koala_async.exporter.entry.exported")
    assert exported[frozenset()] == 11
    assert exported[frozenset({("error.type", "queue_full")})] == 2
    assert exported[frozenset({("error.type", "invalid")})] == 1
    assert len(exported) == 1 + len(DROP_REASONS)  # every reason, most at 0: rates need them
    assert read("koala_async.processor.entry.queue.size") == {frozenset(): 4}  # memory only
    assert read("koala_async.processor.entry.queue.capacity") == {frozenset(): 100}
    assert read("koala_async.exporter.request.inflight") == {frozenset(): 1}
    assert read("koala_async.exporter.request.sent") == {frozenset(): 9}
    assert read("koala_async.exporter.request.retried") == {frozenset(): 3}
    assert read("koala_async.exporter.request.duration") == {frozenset(): 1.5}
    assert read("koala_async.exporter.request.limit") == {frozenset(): 4}
    state = "koala_async.circuit.state"
    assert read("koala_async.exporter.circuit.state") == {
        frozenset({(state, "closed")}): 0,
        frozenset({(state, "open")}): 1,
        frozenset({(state, "dead")}): 0,
    }
    assert read("koala_async.spool.size") == {frozenset(): 2}
    assert read("koala_async.spool.age") == {}  # no spool: no point
    assert read("koala_async.spool.age", 12.5) == {frozenset(): 12.5}


def test_names_follow_otel_and_its_prometheus_translation() -> None:
    names = [m.name for m in METRICS]
    assert len(set(names)) == len(names)
    assert all(n.startswith("koala_async.") for n in names)
    by_name = {m.name: m for m in METRICS}
    duration = by_name["koala_async.exporter.request.duration"]
    assert prometheus_name(duration) == "koala_async_exporter_request_duration_seconds"
    assert prometheus_name(by_name["koala_async.spool.size"]) == "koala_async_spool_size"


def test_sources_name_clients_and_forget_the_dead() -> None:
    sources = Sources()
    web, jobs = KoalaClient("pk_test"), KoalaSyncClient("pk_test")
    assert sources.add(web, None) == "default"
    with pytest.raises(ValueError, match="its own name"):
        sources.add(jobs, None)
    with pytest.raises(ValueError, match="non-empty string"):
        sources.add(jobs, "")
    sources.add(jobs, "jobs")
    read = {attrs["otel.component.name"]: attrs for attrs, _ in sources.readings()}
    assert read["jobs"]["otel.component.type"] == "koala_async.KoalaSyncClient"
    assert read["default"]["otel.component.type"] == "koala_async.KoalaClient"

    sources.remove("default")
    assert [a["otel.component.name"] for a, _ in sources.readings()] == ["jobs"]
    jobs.close()


class _Gone:
    """Stands for a client nothing else holds (the tests' fixture keeps real ones)."""

    _spool_options = None

    def stats(self) -> Stats:
        return STATS


def test_sources_hold_clients_weakly() -> None:
    sources = Sources()
    sources.add(_Gone(), "gone")  # type: ignore[arg-type]
    gc.collect()
    assert list(sources.readings()) == []
    sources.add(_Gone(), "gone")  # type: ignore[arg-type]  # the name is free again


@pytest.mark.parametrize(
    ("module", "extra"), [("opentelemetry", "otel"), ("prometheus_client", "prometheus")]
)
def test_a_missing_package_names_the_extra(module: str, extra: str) -> None:
    code = f"import sys; sys.modules[{module!r}] = None; import koala_async.{extra}"
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True)
    assert f"pip install 'koala-async[{extra}]'" in done.stderr
