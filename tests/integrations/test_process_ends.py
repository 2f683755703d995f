"""Every way a process ends delivers what its KoalaSyncClient accepted.

Each test runs a script in a process of its own against ``koala-async collector`` (also its
own process) and counts, at the collector, the unique message ids the script's calls
returned: "lost" is an id that never arrived. Delivery waits for the end (an hour's flush
interval), so nothing arrives unless the end delivers it.
"""

from __future__ import annotations

import subprocess
import sys
import textwrap
from pathlib import Path

import pytest
from sync_support import ROOT, collector, message_ids

CLIENT = """
    import sys
    from koala_async import KoalaSyncClient

    def client():
        return KoalaSyncClient("pk_test", base_url=sys.argv[1], flush_interval=3600)

    def send(koala, n, event="Ran"):
        for i in range(n):
            print(koala.track(event, email=f"user{i % 7}@acme.com"), flush=True)
"""

IN_A_FUNCTION = """
    def main():
        koala = client()  # a local: nothing else holds the client when main returns
        send(koala, 1000)

    main()
"""

SYS_EXIT = """
    def main():
        send(client(), 300)
        sys.exit(0)

    main()
"""

COLLECTED = """
    import gc

    koala = client()
    send(koala, 300)
    del koala
    gc.collect()  # the client is gone, its engine closes in the background
    send(client(), 200, "Later")
"""

PROCESS = """
    import multiprocessing

    koala = client()  # made at import: spawn's children make their own

    def child():
        send(koala, 100, "In Child")

    if __name__ == "__main__":
        multiprocessing.set_start_method(sys.argv[2])
        process = multiprocessing.Process(target=child)
        process.start()
        process.join()
        assert process.exitcode == 0, process.exitcode
"""

POOL = """
    import multiprocessing

    koala = client()

    def task(i):
        return koala.track("In Pool", email=f"user{i % 7}@acme.com")

    if __name__ == "__main__":
        multiprocessing.set_start_method(sys.argv[2])
        pool = multiprocessing.Pool(3)
        for message_id in pool.map(task, range(100), chunksize=7):
            print(message_id, flush=True)
        pool.close()  # workers finish and exit: each has a partial batch
        pool.join()
"""


def run(tmp_path: Path, body: str, *args: str) -> list[str]:
    """Run ``CLIENT + body`` as a script; return the ids it printed, checking all arrived."""
    script = tmp_path / "script.py"
    script.write_text(textwrap.dedent(CLIENT) + textwrap.dedent(body))
    with collector(tmp_path) as (base_url, log):
        done = subprocess.run(
            [sys.executable, str(script), base_url, *args],
            cwd=ROOT,
            capture_output=True,
            text=True,
            timeout=60,
            check=False,
        )
    assert done.returncode == 0, done.stderr
    ids = done.stdout.split()
    assert message_ids(log) == dict.fromkeys(ids, 1)
    return ids


def test_a_client_made_in_a_function_is_delivered_at_exit(tmp_path: Path) -> None:
    assert len(run(tmp_path, IN_A_FUNCTION)) == 1000


def test_sys_exit_delivers(tmp_path: Path) -> None:
    assert len(run(tmp_path, SYS_EXIT)) == 300


def test_a_collected_client_delivers_what_it_held(tmp_path: Path) -> None:
    assert len(run(tmp_path, COLLECTED)) == 500


@pytest.mark.parametrize("start", ["fork", "spawn"])
def test_a_multiprocessing_child_delivers_before_it_ends(tmp_path: Path, start: str) -> None:
    """A child ends with os._exit, which skips atexit."""
    assert len(run(tmp_path, PROCESS, start)) == 100


@pytest.mark.parametrize("start", ["fork", "spawn"])
def test_pool_workers_deliver_their_last_partial_batch(tmp_path: Path, start: str) -> None:
    assert len(run(tmp_path, POOL, start)) == 100
