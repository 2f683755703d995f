"""gevent: under monkey.patch_all() the client delivers from a real OS thread, and never
blocks the hub, also when it was made before the patch (gunicorn ``--preload -k gevent``)."""

from __future__ import annotations

import signal
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest
from sync_support import ROOT, collector, gunicorn, message_ids, post_signups

pytest.importorskip("gevent")

SCRIPT = """
    import sys
    from koala_async import KoalaSyncClient

    koala = KoalaSyncClient("pk_test", base_url=sys.argv[1], flush_interval=3600)  # before

    from gevent import monkey

    monkey.patch_all()
    import gevent

    def calls(g):
        for i in range(100):
            print(koala.track("Ran", email=f"g{g}-{i % 3}@acme.com"), flush=True)
            gevent.sleep(0)

    gevent.joinall([gevent.spawn(calls, g) for g in range(20)])
    assert koala.flush(timeout=10).pending == 0  # a greenlet waits on the real thread
    for i in range(100):
        print(koala.track("Later", email="late@acme.com"), flush=True)
"""


def test_a_script_under_patch_all_delivers_everything(tmp_path: Path) -> None:
    with collector(tmp_path) as (base_url, log):
        done = subprocess.run(
            [sys.executable, "-c", textwrap.dedent(SCRIPT), base_url],
            cwd=ROOT,
            capture_output=True,
            text=True,
            timeout=60,
            check=False,
        )
    assert done.returncode == 0, done.stderr
    ids = done.stdout.split()
    assert len(ids) == 2100
    assert message_ids(log) == dict.fromkeys(ids, 1)


def test_gunicorn_preload_gevent_workers_keep_serving_and_deliver(tmp_path: Path) -> None:
    """The client is made in the master, before gevent patches the workers: its lock once
    blocked every worker's hub after a few requests (WORKER TIMEOUT, in a loop)."""
    log = tmp_path / "gunicorn.log"
    extra = ["-k", "gevent", "--timeout", "10"]
    with (
        collector(tmp_path) as (base_url, received),
        gunicorn("examples.flask_app:app", base_url, log, extra) as (server, url),
    ):
        tracked = post_signups(url, 300)
        server.send_signal(signal.SIGTERM)
        returncode = server.wait(timeout=30)
        output = log.read_text()
        assert returncode == 0, output
        arrived = message_ids(received)
    assert "WORKER TIMEOUT" not in output
    assert len(set(tracked)) == 300
    assert {m: arrived[m] for m in tracked} == dict.fromkeys(tracked, 1), output
