"""Celery: a real worker (prefork pool of two processes, two threads, or two greenlets) on a
Redis broker started by the test runs tasks that track; a warm shutdown (SIGTERM) delivers
every event."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
import uuid
from pathlib import Path
from typing import Any

import pytest
from sync_support import ROOT, collector, message_ids, redis_server, stop

pytest.importorskip("celery")
pytest.importorskip("redis")

from celery import Celery  # type: ignore[import-untyped]

TASKS = 200


def wait_for(log: Path, text: str, count: int, process: subprocess.Popen[Any]) -> None:
    deadline = time.monotonic() + 60
    while log.read_text(errors="replace").count(text) < count:
        assert process.poll() is None, log.read_text(errors="replace")
        assert time.monotonic() < deadline, log.read_text(errors="replace")
        time.sleep(0.1)


@pytest.mark.parametrize("pool", ["prefork", "threads", "gevent"])
def test_a_warm_shutdown_delivers_every_tracked_event(tmp_path: Path, pool: str) -> None:
    if pool == "gevent":
        pytest.importorskip("gevent")
    log = tmp_path / "worker.log"
    with redis_server() as broker, collector(tmp_path) as (base_url, received):
        env = {
            **os.environ,
            "BROKER_URL": broker,
            "KOALA_BASE_URL": base_url,
            "KOALA_PUBLIC_API_KEY": "pk_celery_test",
            "KOALA_FLUSH_INTERVAL": "3600",  # nothing leaves before the shutdown
        }
        command = [sys.executable, "-m", "celery", "-A", "examples.celery_app", "worker"]
        command += ["--pool", pool, "--concurrency", "2", "--loglevel", "info"]
        command += ["--without-heartbeat", "--without-mingle", "--without-gossip"]
        with log.open("wb") as stream:
            worker = subprocess.Popen(command, cwd=ROOT, env=env, stdout=stream, stderr=stream)
        try:
            wait_for(log, "ready.", 1, worker)
            sender = Celery(broker=broker)
            ids = [str(uuid.uuid4()) for _ in range(TASKS)]
            for i, message_id in enumerate(ids):
                sender.send_task(
                    "examples.celery_app.charge",
                    args=[f"payer{i % 20}@acme.com", i],
                    kwargs={"message_id": message_id},
                )
            wait_for(log, "succeeded in", TASKS, worker)
            assert message_ids(received) == {}, "an hour's flush interval: nothing sent yet"
            worker.send_signal(signal.SIGTERM)  # warm shutdown
            returncode = worker.wait(timeout=30)
            sender.close()
        finally:
            stop(worker)
        arrived = message_ids(received)
    output = log.read_text(errors="replace")
    assert returncode == 0, output
    assert arrived == dict.fromkeys(ids, 1), output
