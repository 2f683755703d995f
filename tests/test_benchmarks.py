"""The benchmark suite's pieces work: the sink counts what each SDK sends, the koala_async
worker delivers every event, the ceilings and the httpx layer probe run, and the table says
pass or MISS per target. Nothing here asserts on a timing."""

from __future__ import annotations

import gzip
import json
import runpy
import subprocess
import sys
import threading
import time
import urllib.request
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from wire_check import free_port

BENCHMARKS = Path(__file__).parent.parent / "benchmarks"
PID = "3e6a2c18-3b02-40c4-b8d2-1842c193d3ba"


@pytest.fixture
def sink() -> Iterator[int]:
    port = free_port()
    command = [sys.executable, str(BENCHMARKS / "sink.py"), "--port", str(port)]
    process = subprocess.Popen(command, stdout=subprocess.PIPE, text=True)
    assert process.stdout is not None
    assert "listening" in process.stdout.readline()
    yield port
    process.terminate()
    process.wait(timeout=10)
    process.stdout.close()


def _post(port: int, path: str, body: bytes, headers: dict[str, str] | None = None) -> Any:
    request = urllib.request.Request(f"http://127.0.0.1:{port}{path}", body, headers or {})
    with urllib.request.urlopen(request, timeout=30) as response:
        return json.loads(response.read())


def test_the_sink_counts_entries_in_each_sdks_bodies(sink: int) -> None:
    koala = {"profile_id": PID, "events": [{}, {}], "identifies": [{}], "page_views": [{}]}
    _post(sink, "/web/projects/k/batch", json.dumps(koala).encode())
    segment = gzip.compress(json.dumps({"batch": [{}, {}, {}]}).encode())
    _post(sink, "/v1/batch", segment, {"Content-Encoding": "gzip"})
    _post(sink, "/batch/", json.dumps([{}, {}]).encode())  # a bare list of events
    assert _post(sink, "/_count", b"") == {"count": 9, "requests": 3}
    assert _post(sink, "/_reset", b"{}") == {"count": 0, "requests": 0}


def test_a_stalled_sink_holds_answers_until_lifted(sink: int) -> None:
    _post(sink, "/_config", b'{"stall": true}')
    answers: list[Any] = []
    thread = threading.Thread(target=lambda: answers.append(_post(sink, "/x", b"[{}]")))
    thread.start()
    time.sleep(0.3)
    assert thread.is_alive(), "a stalled sink must not answer"
    assert _post(sink, "/_count", b"")["count"] == 1, "but it has counted the request"
    _post(sink, "/_config", b'{"stall": false}')
    thread.join(timeout=10)
    assert answers == [{"ok": True}]


def _worker(port: int, sdk: str, mode: str, scenario: str, events: int) -> dict[str, float]:
    command = [sys.executable, str(BENCHMARKS / "run.py"), "--worker", sdk, "--mode", mode]
    command += ["--scenario", scenario, "--events", str(events), "--port", str(port)]
    done = subprocess.run(command, capture_output=True, text=True, timeout=120, check=True)
    result: dict[str, float] = json.loads(done.stdout.splitlines()[-1])
    return result


@pytest.mark.parametrize("scenario", ["one", "many"])
def test_the_koala_worker_delivers_every_event(sink: int, scenario: str) -> None:
    result = _worker(sink, "koala_async", "run", scenario, 600)
    assert result["hot_us"] > 0
    assert result["eps"] > 0
    assert result["cpu_us"] > 0
    assert result["concurrency"] == 8
    assert _post(sink, "/_count", b"")["count"] == 600


def test_the_memory_mode_measures_while_the_sink_stalls(sink: int) -> None:
    result = _worker(sink, "koala_async", "memory", "one", 3_000)
    assert result["mem_bytes"] > 0
    # Unanswered, koala_async has sent at most one 30-event request per sender (8).
    assert 0 < _post(sink, "/_count", b"")["count"] <= 8 * 30


def test_the_ceilings_run(sink: int) -> None:
    assert _worker(sink, "httpx", "run", "one", 300)["eps"] > 0
    assert _post(sink, "/_count", b"")["count"] == 300
    assert _worker(sink, "msgspec", "run", "one", 1_000)["hot_us"] > 0


def test_the_httpx_layer_probe_runs_against_its_own_sink() -> None:
    command = [sys.executable, str(BENCHMARKS / "httpx_layers.py"), "--requests", "30"]
    done = subprocess.run(command, capture_output=True, text=True, timeout=120, check=True)
    result = json.loads(done.stdout.splitlines()[-1])
    assert {k for k in result if k != "sniffio"} == {
        f"{transport}: {layer}"
        for transport in ("httpx default transport", "koala_async Http11Transport")
        for layer in ("AsyncClient.post", "handle_async_request")
    }
    assert all(value > 0 for key, value in result.items() if key != "sniffio")


def test_the_table_says_pass_or_miss_for_each_target() -> None:
    table = runpy.run_path(str(BENCHMARKS / "run.py"))["table"]
    segment = {"hot_us": 30.0, "eps": 10_000.0, "cpu_us": 40.0}
    results = {
        "segment/one": segment,
        "segment/many": segment,
        "segment/latency": {"eps": 1_000.0},
        "koala_async/one": {"hot_us": 1.5, "eps": 30_000.0, "cpu_us": 10.0},  # 1/20, 3x, 0.25x
        "koala_async/many": {"eps": 9_000.0},  # 0.9x: a miss
        "koala_async/memory": {"mem_bytes": 215.0},
        "koala_async/memory-many": {"mem_bytes": 360.0},
        "koala_async/latency": {"eps": 12_000.0},
    }
    verdicts = {
        line.split(" | ")[0].lstrip("| "): line.split(" | ")[1]
        for line in table(results).splitlines()
        if line.endswith(" |") and (" pass " in line or " MISS " in line)
    }
    assert verdicts == {
        "hot path ≤ 1/15 of Segment": "pass",
        "e2e one ≥ 2.5x Segment": "pass",
        "e2e many ≥ 1x Segment": "MISS",
        "CPU/event one ≤ 0.4x Segment": "pass",
        "memory ≤ 250 B/event": "pass",
        "50 ms many ≥ 10x Segment (concurrency 256)": "pass",
    }
