"""What ``import koala_async`` loads, in a fresh interpreter (issue 29, item 3): not the
delivery machinery's heavy modules (httpx, asyncio, anyio, sqlite3 and ssl through them), which
wait until a client opens, its spool opens, or a sync client's first call. What is imported
is checked, never how long it takes (benchmarks/import_time.py measures that)."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).parents[2]  # the checkout whose koala_async is tested

HEAVY = ["httpx", "asyncio", "anyio", "sqlite3", "ssl", "backoff", "concurrent.futures"]


def loaded_after(code: str) -> list[str]:
    """The HEAVY modules a fresh interpreter holds after running ``code``."""
    listed = f"[name for name in {HEAVY!r} if name in sys.modules]"
    probe = f"import sys\n{code}\nprint(__import__('json').dumps({listed}))"
    done = subprocess.run(
        [sys.executable, "-c", probe],
        capture_output=True,
        text=True,
        check=False,
        timeout=60,
        cwd=ROOT,
    )
    assert done.returncode == 0, done.stderr
    return list(json.loads(done.stdout.splitlines()[-1]))


def test_importing_koala_async_loads_none_of_the_delivery_modules() -> None:
    assert loaded_after("import koala_async") == []


@pytest.mark.parametrize("face", ["KoalaClient", "KoalaSyncClient"])
def test_making_a_client_loads_none_of_them_either(face: str) -> None:
    """A web worker or a script that makes its client at import time pays for the delivery
    modules when they run: the async client's open, the sync client's first call."""
    code = f"from koala_async import {face}\nclient = {face}('pk_test', user_agent='t/1')"
    assert loaded_after(code) == []


def test_a_disabled_sync_client_s_calls_load_none_of_them() -> None:
    """enabled=False validates and sends nothing: it starts no engine, so its calls have
    nothing to import (each of them asks for its engine)."""
    code = (
        "from koala_async import KoalaSyncClient\n"
        "koala = KoalaSyncClient('pk_test', enabled=False)\n"
        "koala.track('Signed Up', email='ada@acme.com')"
    )
    assert loaded_after(code) == []


def test_a_client_that_is_used_loads_them() -> None:
    """The other side: the sync client's first call starts its engine (and closes it at exit,
    with nothing deliverable: the address refuses connections)."""
    code = (
        "from koala_async import KoalaSyncClient\n"
        "koala = KoalaSyncClient('pk_test', base_url='http://127.0.0.1:9', shutdown_timeout=0.2)\n"
        "koala.track('Signed Up', email='ada@acme.com')\n"
        "koala.close(0.2)"
    )
    assert set(loaded_after(code)) >= {"asyncio", "anyio", "httpx", "concurrent.futures"}


def test_a_wrong_http_client_is_refused_without_importing_httpx() -> None:
    """Whoever made an httpx.AsyncClient imported httpx: the type check needs no import."""
    code = (
        "from koala_async import KoalaClient, ValidationError\n"
        "try:\n"
        "    KoalaClient('pk_test', http_client=object())\n"
        "except ValidationError as exc:\n"
        "    assert 'httpx.AsyncClient' in str(exc), exc\n"
        "else:\n"
        "    raise SystemExit('accepted')"
    )
    assert loaded_after(code) == []


def test_the_sync_client_imports_them_before_it_starts_its_thread() -> None:
    """In the caller's thread, before the engine's thread starts: an import under way in that
    thread when the process forks (a call just before os.fork(), gunicorn --preload) would
    leave the child a half-initialised module, and its engine could not start."""
    code = (
        "import sys\n"
        "from koala_async import KoalaSyncClient, _thread_engine\n"
        "seen = []\n"
        "original = _thread_engine._start_thread\n"
        "def start(run):\n"
        "    seen.extend(sorted(name for name in sys.modules if name.startswith(\n"
        "        ('httpx', 'anyio', 'koala_async._'))))\n"
        "    original(run)\n"
        "_thread_engine._start_thread = start\n"
        "koala = KoalaSyncClient('pk_test', base_url='http://127.0.0.1:9', shutdown_timeout=0.2)\n"
        "koala.track('Signed Up', email='ada@acme.com')\n"
        "koala.close(0.2)\n"
        "print(' '.join(seen))"
    )
    done = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, timeout=60, cwd=ROOT
    )
    assert done.returncode == 0, done.stderr
    before_the_thread = set(done.stdout.split())
    expected = {"koala_async._loop", "koala_async._runtime", "koala_async._sender"}
    assert before_the_thread >= {"httpx", "anyio", "koala_async._http", *expected}
