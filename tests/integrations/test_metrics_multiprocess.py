"""koala_async.prometheus.mirror_to_multiprocess under gunicorn with two workers: the
/metrics that prometheus_client's MultiProcessCollector serves sums both workers' clients."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time
import urllib.request
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

from prometheus_client.parser import text_string_to_metric_families
from sync_support import ROOT, _gunicorn_flags, collector, message_ids, stop, wait_until_listening
from wire_check import free_port

REQUESTS = 24


def get(url: str) -> bytes:
    with urllib.request.urlopen(url, timeout=30) as response:
        return bytes(response.read())


def totals(text: str) -> dict[tuple[str, str], float]:
    """Each sample's value summed over the labels, keyed by name and the one label that
    matters here (error_type or the circuit's state)."""
    found: dict[tuple[str, str], float] = {}
    for family in text_string_to_metric_families(text):
        for sample in family.samples:
            labels = sample.labels
            which = labels.get("error_type", labels.get("koala_async_circuit_state", ""))
            key = (sample.name, which)
            found[key] = found.get(key, 0.0) + sample.value
    return found


def test_gunicorn_workers_add_up(tmp_path: Path) -> None:
    directory = tmp_path / "prometheus"
    directory.mkdir()
    port = free_port()
    with collector(tmp_path) as (url, log):
        env = {
            **os.environ,
            "KOALA_BASE_URL": url,
            "KOALA_PUBLIC_API_KEY": "pk_gunicorn_test",
            "PROMETHEUS_MULTIPROC_DIR": str(directory),
            "PYTHONPATH": os.pathsep.join([str(ROOT / "tests"), os.environ.get("PYTHONPATH", "")]),
        }
        command = [sys.executable, "-m", "gunicorn", "-w", "2", "-b", f"127.0.0.1:{port}"]
        command += [*_gunicorn_flags(), "multiprocess_app:app"]
        with (tmp_path / "gunicorn.log").open("wb") as stderr:
            server = subprocess.Popen(
                command, cwd=ROOT, env=env, stdout=subprocess.DEVNULL, stderr=stderr
            )
        try:
            wait_until_listening(port, server)
            base = f"http://127.0.0.1:{port}"
            with ThreadPoolExecutor(4) as pool:
                answers = [json.loads(a) for a in pool.map(get, [f"{base}/"] * REQUESTS)]
            assert len({a["pid"] for a in answers}) == 2  # both workers served
            deadline = time.monotonic() + 30
            while True:  # each worker copies every 0.05 s
                found = totals(get(f"{base}/metrics").decode())
                accepted = found.get(("koala_async_processor_entry_accepted_total", ""), 0)
                if accepted == REQUESTS or time.monotonic() > deadline:
                    break
                time.sleep(0.05)
        finally:
            stop(server)
        assert set(message_ids(log)) == {a["message_id"] for a in answers}

    assert accepted == REQUESTS
    exported = "koala_async_exporter_entry_exported_total"
    assert found[(exported, "")] == REQUESTS  # delivered, by both workers together
    assert sum(v for (name, reason), v in found.items() if name == exported and reason) == 0
    assert found[("koala_async_exporter_circuit_state", "closed")] == 2  # one per worker
    assert found[("koala_async_processor_entry_queue_size", "")] == 0
