"""What one request costs at each layer of httpx, in client CPU, against the loopback sink.

    python benchmarks/httpx_layers.py [--requests 3000] [--port PORT]

Posts the same pre-encoded 30-event Koala body, one request at a time on one keep-alive
connection, through: ``httpx.AsyncClient.post`` over httpx's default transport (httpcore),
that transport's ``handle_async_request`` called directly, and the same two over
koala_async's ``Http11Transport`` (when koala_async is importable). The difference between a
``post`` row and its ``transport`` row is httpx's client layer. It also says whether
``sniffio`` is importable: httpcore 1.0.9 tries ``import sniffio`` on every lock, event and
shield it sets up, and recent anyio no longer installs it. To see that cost, run this script
once in an environment with sniffio and once without (a fresh venv with only httpx).

Without ``--port`` it starts ``sink.py`` itself, in its own process.
"""

from __future__ import annotations

import argparse
import asyncio
import importlib.util
import json
import time
from collections.abc import Awaitable, Callable

import httpx
from run import BODY, HEADERS, running_sink  # benchmarks/ is on sys.path as a script


async def per_request_cpu(n: int, send: Callable[[], Awaitable[object]]) -> float:
    """Client CPU per request, in µs, after a warm-up that opens the connection."""
    for _ in range(50):
        await send()
    started = time.process_time()
    for _ in range(n):
        await send()
    return (time.process_time() - started) / n * 1e6


async def layers(n: int, port: int) -> dict[str, float]:
    url = f"http://127.0.0.1:{port}/web/projects/bench-key/batch"
    transports: dict[str, Callable[[], httpx.AsyncBaseTransport]] = {
        "httpx default transport": httpx.AsyncHTTPTransport,
    }
    if importlib.util.find_spec("koala_async") is not None:
        from koala_async._transport import Http11Transport

        transports["koala_async Http11Transport"] = Http11Transport
    results: dict[str, float] = {}
    for name, make in transports.items():
        transport = make()
        async with httpx.AsyncClient(transport=transport) as client:

            async def post(client: httpx.AsyncClient = client) -> object:
                return (await client.post(url, content=BODY, headers=HEADERS)).content

            async def direct(transport: httpx.AsyncBaseTransport = transport) -> object:
                request = httpx.Request("POST", url, content=BODY, headers=HEADERS)
                response = await transport.handle_async_request(request)
                return await response.aread()

            results[f"{name}: AsyncClient.post"] = await per_request_cpu(n, post)
            results[f"{name}: handle_async_request"] = await per_request_cpu(n, direct)
    return results


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--requests", type=int, default=3000)
    parser.add_argument("--port", type=int)
    args = parser.parse_args()
    if args.port is None:
        with running_sink() as port:
            results = asyncio.run(layers(args.requests, port))
    else:
        results = asyncio.run(layers(args.requests, args.port))
    sniffio = importlib.util.find_spec("sniffio") is not None
    print(f"sniffio importable: {sniffio}; httpx {httpx.__version__}; CPU µs per request:")
    for name, cpu in results.items():
        print(f"  {name:<55} {cpu:7.1f}")
    print(json.dumps({"sniffio": sniffio, **results}))


if __name__ == "__main__":
    main()
