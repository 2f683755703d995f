"""The Lambda examples in a real process frozen between invocations, as Lambda freezes a
container: SIGSTOP after each answer, for longer than the flush interval, while the
collector restarts (closing the kept-alive connection, as a server's idle timeout would);
then SIGCONT and the next invocation. Nothing is lost, nothing arrives twice, and the
closed connection is no error at all (not a drop, not even a retry)."""

from __future__ import annotations

import contextlib
import json
import os
import signal
import subprocess
import sys
import time
from collections import Counter
from collections.abc import Iterator
from pathlib import Path
from typing import Any

from lambda_runtime import http_event
from sync_support import ROOT, message_ids, stop, wait_until_listening
from wire_check import free_port

FREEZE = 1.3  # seconds frozen: past the flush interval (1 s), so its timer is overdue
INVOCATIONS = 4


class Collector:
    """``koala-async collector`` on a fixed port, appending to one file across restarts."""

    def __init__(self, tmp_path: Path) -> None:
        self.port, self.log = free_port(), tmp_path / "received.jsonl"
        self.url = f"http://127.0.0.1:{self.port}"
        self._process: subprocess.Popen[bytes] | None = None

    def start(self) -> None:
        command = [sys.executable, "-m", "koala_async", "collector", "--port", str(self.port)]
        self._process = process = subprocess.Popen(
            [*command, "--jsonl", str(self.log)],
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
        )
        wait_until_listening(self.port, process)

    def stop(self) -> None:
        if self._process is not None:
            self._process.terminate()
            self._process.wait()

    def restart(self) -> None:
        """Every connection to it is closed by the server."""
        self.stop()
        self.start()


class Runtime:
    """tests/lambda_runtime.py running a handler in its own process."""

    def __init__(self, process: subprocess.Popen[str]) -> None:
        self.process = process
        assert self._read() == {"ready": True}

    def _read(self) -> Any:
        assert self.process.stdout is not None
        line = self.process.stdout.readline()
        assert line, "the runtime exited"
        return json.loads(line)

    def invoke(self, event: object) -> Any:
        assert self.process.stdin is not None
        self.process.stdin.write((event if event == "stats" else json.dumps(event)) + "\n")
        self.process.stdin.flush()
        return self._read()

    @contextlib.contextmanager
    def frozen(self) -> Iterator[None]:
        os.kill(self.process.pid, signal.SIGSTOP)
        try:
            yield
        finally:
            os.kill(self.process.pid, signal.SIGCONT)


@contextlib.contextmanager
def lambda_runtime(handler: str, base_url: str, stderr: Path) -> Iterator[Runtime]:
    env = {**os.environ, "KOALA_BASE_URL": base_url, "KOALA_PUBLIC_API_KEY": "pk_lambda_test"}
    env["PYTHONPATH"] = os.pathsep.join([str(ROOT / "tests"), str(ROOT), env.get("PYTHONPATH", "")])
    command = [sys.executable, str(ROOT / "tests" / "lambda_runtime.py"), handler]
    with stderr.open("w") as errors:
        process = subprocess.Popen(
            command,
            cwd=ROOT,
            env=env,
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
            stderr=errors,
            text=True,
        )
    with process:  # closes its pipes
        try:
            yield Runtime(process)
        finally:
            stop(process)


def run_frozen(tmp_path: Path, handler: str, event: Any) -> tuple[list[Any], Collector, str]:
    """Invoke ``handler`` INVOCATIONS times, frozen between; returns the answers, the
    collector and what the runtime logged."""
    collector, log = Collector(tmp_path), tmp_path / "runtime.log"
    collector.start()
    try:
        with lambda_runtime(handler, collector.url, log) as runtime:
            answers = []
            for i in range(INVOCATIONS):
                answers.append(runtime.invoke(event(i)))
                if i < INVOCATIONS - 1:
                    with runtime.frozen():
                        collector.restart()
                        time.sleep(FREEZE)
            if handler.endswith("lambda_sync:handler"):
                answers.append(runtime.invoke("stats"))
    finally:
        collector.stop()
    return answers, collector, log.read_text()


def test_a_plain_handler_with_the_sync_client(tmp_path: Path) -> None:
    answers, collector, logged = run_frozen(
        tmp_path, "examples.lambda_sync:handler", lambda i: {"email": f"u{i}@acme.com"}
    )
    *invocations, stats = answers
    assert all(a["delivered"] == 1 and a["pending"] == 0 for a in invocations), invocations
    ids = [a["message_id"] for a in invocations]
    assert message_ids(collector.log) == Counter(dict.fromkeys(ids, 1))
    assert stats["accepted"] == stats["delivered"] == INVOCATIONS
    assert sum(stats["dropped"].values()) == 0
    # The connection the restart closed was replaced quietly: the request had not reached
    # the server, so it was sent again on a new one, which is no failed attempt.
    assert stats["retries"] == 0, stats
    assert stats["last_error"] is None, stats
    assert logged == ""


def test_an_asgi_app_through_mangum_with_the_async_client(tmp_path: Path) -> None:
    answers, collector, logged = run_frozen(
        tmp_path,
        "examples.lambda_asgi:handler",
        lambda i: http_event("/signup", {"email": f"u{i}@acme.com"}),
    )
    assert all(a["statusCode"] == 200 for a in answers), answers
    ids = [json.loads(a["body"])["message_id"] for a in answers]
    arrived = message_ids(collector.log)
    assert all(arrived[i] == 1 for i in ids), arrived
    assert sum(arrived.values()) == 2 * INVOCATIONS  # each identify too, once
    assert logged == ""
