"""Closing with the spool's writer far behind: no crash, no SQLite error, and the file holds
exactly what the client counts (issue 25, item 1). A manual check, not a timing.

    python benchmarks/spool_close.py [--entries 1000000] [--runs 20] [--backend asyncio]

Each run is a process under ``-X faulthandler``: a client with a spool accepts ``--entries``
entries while the endpoint is down (a closed port), then closes: plainly (``close``), or
cancelled at once and at every later await (``cancel``: a cancelled scope around the
``async with``), or, on asyncio, with a SIGINT during the close (``sigint``: Ctrl-C, which
cancels the main task; the close finishes, then KeyboardInterrupt), or two (``sigint2``: the
second stops the event loop; the writer finishes its jobs at exit). The parent then counts
the file's rows with sqlite3 and compares them with ``FlushResult.spooled`` and
``stats().spooled`` (for ``sigint2``, which has neither: no crash, an intact file, no more
rows than entries).
"""

from __future__ import annotations

import argparse
import json
import logging
import os
import signal
import socket
import sqlite3
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent


def _down() -> str:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return f"http://127.0.0.1:{probe.getsockname()[1]}"


class _Errors(logging.Handler):
    def __init__(self) -> None:
        super().__init__(logging.ERROR)
        self.messages: list[str] = []

    def emit(self, record: logging.LogRecord) -> None:
        self.messages.append(record.getMessage())


def child(path: str, entries: int, backend: str, mode: str) -> None:
    sys.path.insert(0, str(ROOT))
    import anyio

    from koala_async import KoalaClient

    errors = _Errors()
    logging.getLogger("koala_async").addHandler(errors)
    logging.getLogger("koala_async").setLevel(logging.ERROR)
    out: dict[str, object] = {}

    async def main() -> None:
        nonlocal koala
        koala = KoalaClient("pk_bench", base_url=_down(), spool=path, shutdown_timeout=0.5)
        with anyio.CancelScope() as scope:
            async with koala:
                for i in range(entries):
                    await koala.track("Step", email=f"p{i % 997}@acme.com")
                out["accepted"] = koala.stats().accepted
                began = time.monotonic()
                if mode == "cancel":
                    scope.cancel()
                elif mode.startswith("sigint"):

                    def interrupt() -> None:
                        for _ in range(2 if mode == "sigint2" else 1):
                            time.sleep(0.02)
                            os.kill(os.getpid(), signal.SIGINT)

                    threading.Thread(target=interrupt, daemon=True).start()
                else:
                    out["result_spooled"] = (await koala.aclose()).spooled
        out["close_s"] = round(time.monotonic() - began, 2)

    koala = None
    try:
        anyio.run(main, backend=backend)
    except KeyboardInterrupt:
        out["interrupted"] = True
    finally:
        if koala is not None and mode != "sigint2":
            stats = koala.stats()
            out.update(spooled=stats.spooled, dropped=stats.dropped_total)
        out["errors"] = errors.messages
        print(json.dumps(out), flush=True)


def run_once(entries: int, backend: str, mode: str) -> dict[str, object]:
    with tempfile.TemporaryDirectory() as tmp:
        path = f"{tmp}/spool.db"
        began = time.monotonic()
        done = subprocess.run(
            [sys.executable, "-X", "faulthandler", __file__, "--child", path, str(entries),
             backend, mode],
            capture_output=True, text=True, check=False,
        )  # fmt: skip
        seconds = time.monotonic() - began
        lines = [line for line in done.stdout.splitlines() if line.startswith("{")]
        out: dict[str, object] = json.loads(lines[-1]) if lines else {}
        with sqlite3.connect(path) as db:
            rows = db.execute("SELECT count(*) FROM entries").fetchone()[0]
            check = db.execute("PRAGMA quick_check").fetchone()[0]
        db.close()
    problems = []
    if done.returncode and not (mode == "sigint2" and done.returncode == -signal.SIGINT):
        problems.append(f"exit {done.returncode}: {done.stderr[-2000:]}")
    if "Fatal Python error" in done.stderr or "Segmentation" in done.stderr:
        problems.append("crash: " + done.stderr[-2000:])
    if check != "ok":
        problems.append(f"quick_check: {check}")
    if out.get("errors"):
        problems.append(f"errors logged: {out['errors']}")
    if mode == "sigint2":
        if rows > entries:
            problems.append(f"{rows} rows for {entries} entries")
    else:
        counted = {out.get("spooled"), out.get("result_spooled", out.get("spooled"))}
        if counted != {rows}:
            problems.append(f"file holds {rows}, counted {out}")
    return {"mode": mode, "rows": rows, "seconds": round(seconds, 1), **out,
            "problems": problems}  # fmt: skip


def main() -> None:
    if sys.argv[1:2] == ["--child"]:
        child(sys.argv[2], int(sys.argv[3]), sys.argv[4], sys.argv[5])
        return
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--entries", type=int, default=1_000_000)
    parser.add_argument("--runs", type=int, default=20)
    parser.add_argument("--backend", default="asyncio", choices=["asyncio", "trio"])
    args = parser.parse_args()
    modes = ["close", "cancel"] + (["sigint", "sigint2"] if args.backend == "asyncio" else [])
    failed = 0
    for run in range(args.runs):
        outcome = run_once(args.entries, args.backend, modes[run % len(modes)])
        failed += bool(outcome["problems"])
        print(json.dumps(outcome), flush=True)
    print(f"{args.runs - failed}/{args.runs} runs kept the promise ({args.backend}, "
          f"{args.entries:,} entries each)")  # fmt: skip
    sys.exit(1 if failed else 0)


if __name__ == "__main__":
    main()
