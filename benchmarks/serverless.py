"""What Lambda's recipe costs (examples/lambda_sync.py, examples/lambda_asgi.py), against
``sink.py`` on loopback (so a real endpoint's round trip, and a TLS handshake per new
connection, come on top).

- **cold start**: a fresh process: import koala_async, make the client, one event, flush
  (the sync example's module and handler; the ASGI example's imports and one invocation
  through Mangum). Median of several processes.
- **per invocation**: a warm process, one event per invocation: the handler with its flush
  (sync) or Mangum's lifespan opening and closing a KoalaClient (ASGI), median; and, for
  the sync client, the same invocation without the flush (what the flush adds).

    python benchmarks/serverless.py [--processes N] [--invocations N]
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import statistics
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parent.parent
sys.path[:0] = [str(ROOT), str(ROOT / "tests")]

COLD = {
    "import koala_async alone": "import koala_async",
    "sync": "from examples.lambda_sync import handler\nhandler({'email': 'ada@acme.com'}, None)",
    "asgi": (
        "from examples.lambda_asgi import handler\nfrom lambda_runtime import http_event\n"
        "handler(http_event('/signup', {'email': 'ada@acme.com'}), None)"
    ),
}


def cold(kind: str, env: dict[str, str]) -> float:
    code = f"import time\nstart = time.perf_counter()\n{COLD[kind]}\n"
    code += "print(time.perf_counter() - start)"
    done = subprocess.run(
        [sys.executable, "-c", code], env=env, cwd=ROOT, capture_output=True, text=True
    )
    return float(done.stdout.split()[-1]) * 1000


def warm(invocations: int) -> dict[str, float]:
    from lambda_runtime import http_event

    import examples.lambda_asgi as asgi
    import examples.lambda_sync as plain

    def median_ms(invoke: Any) -> float:
        invoke(0)
        times = []
        for i in range(invocations):
            start = time.perf_counter()
            invoke(i)
            times.append(time.perf_counter() - start)
        return statistics.median(times) * 1000

    event = http_event("/signup", {"email": "ada@acme.com"})
    figures = {
        "sync handler (track + flush)": median_ms(
            lambda i: plain.handler({"email": f"u{i}@acme.com"}, None)
        ),
        "sync track alone": median_ms(
            lambda i: plain.koala.track("Signed Up", email=f"u{i}@acme.com")
        ),
        "asgi invocation (Mangum, open + 2 calls + close)": median_ms(
            lambda i: asgi.handler(event, None)
        ),
    }
    plain.koala.close()
    return figures


def main() -> None:
    from run import running_sink

    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--processes", type=int, default=7)
    parser.add_argument("--invocations", type=int, default=300)
    args = parser.parse_args()
    with running_sink() as port:
        os.environ["KOALA_BASE_URL"] = f"http://127.0.0.1:{port}"
        os.environ["KOALA_PUBLIC_API_KEY"] = "pk_bench"
        env = {**os.environ, "PYTHONPATH": os.pathsep.join(sys.path[:2])}
        colds = {k: [cold(k, env) for _ in range(args.processes)] for k in COLD}
        result: dict[str, Any] = {
            "cold_start_ms": {k: round(statistics.median(v), 1) for k, v in colds.items()},
            "per_invocation_ms": {k: round(v, 3) for k, v in warm(args.invocations).items()},
            "machine": f"{platform.python_version()} {platform.machine()}",
        }
    print(json.dumps(result, indent=1))


if __name__ == "__main__":
    main()
