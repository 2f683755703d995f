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

``--steps`` also measures, over ``Http11Transport``, each way of trimming httpx's client
layer that ``koala_async._http.post`` could take (from ``AsyncClient.post`` down to the
transport), ``_http.post`` itself, and an h11-based one-connection transport (the parser
httpcore uses) for the h11-or-not decision. The variants run in interleaved rounds and the
lowest figure of each is kept: on a shared machine, noise only ever adds.
"""

from __future__ import annotations

import argparse
import asyncio
import importlib.util
import json
import time
from collections.abc import Awaitable, Callable

import anyio
import h11
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


class H11Transport(httpx.AsyncBaseTransport):
    """One keep-alive HTTP/1.1 connection parsed by h11: a minimal one, for comparison."""

    def __init__(self) -> None:
        self._stream: anyio.abc.ByteStream | None = None
        self._conn = h11.Connection(h11.CLIENT)

    async def handle_async_request(self, request: httpx.Request) -> httpx.Response:
        url = request.url
        if self._stream is None or self._conn.our_state is not h11.IDLE:
            self._stream = await anyio.connect_tcp(url.host, url.port or 80)
            self._conn = h11.Connection(h11.CLIENT)
        conn, stream = self._conn, self._stream
        headers = request.headers.raw  # httpx.Request has added Host
        data = conn.send(h11.Request(method=b"POST", target=url.raw_path, headers=headers))
        data += conn.send(h11.Data(data=request.content)) or b""
        data += conn.send(h11.EndOfMessage()) or b""
        await stream.send(data)
        body: list[bytes] = []
        status, response_headers = 0, []
        while True:
            event = conn.next_event()
            if event is h11.NEED_DATA:
                conn.receive_data(await stream.receive())
            elif isinstance(event, h11.Response):
                status, response_headers = event.status_code, event.headers.raw_items()
            elif isinstance(event, h11.Data):
                body.append(bytes(event.data))
            elif isinstance(event, h11.EndOfMessage):
                break
        conn.start_next_cycle()
        return httpx.Response(
            status, headers=response_headers, content=b"".join(body), request=request
        )

    async def aclose(self) -> None:
        if self._stream is not None:
            await self._stream.aclose()


async def steps(n: int, port: int, rounds: int) -> dict[str, float]:
    """Each way of trimming the client layer over Http11Transport, and h11 for comparison."""
    from koala_async import _http
    from koala_async._transport import Http11Transport

    url = f"http://127.0.0.1:{port}/web/projects/bench-key/batch"
    parsed, headers = httpx.URL(url), httpx.Headers(HEADERS)
    route = _http.Route(url, HEADERS)
    timeouts = {"timeout": dict.fromkeys(("connect", "read", "write", "pool"), 10.0)}
    own = _http.HttpFactory(url, 10.0).new_client()
    plain = httpx.AsyncClient(transport=Http11Transport())
    h11_client = httpx.AsyncClient(transport=H11Transport())
    transport = Http11Transport()

    async def client_post() -> object:
        return (await plain.post(url, content=BODY, headers=HEADERS)).content

    async def build_and_send() -> object:
        request = plain.build_request("POST", url, content=BODY, headers=HEADERS)
        return (await plain.send(request)).content

    async def request_and_send() -> object:
        request = httpx.Request("POST", parsed, content=BODY, headers=headers)
        return (await plain.send(request)).content

    async def request_to_transport() -> object:
        request = httpx.Request("POST", parsed, content=BODY, headers=headers, extensions=timeouts)
        return (await transport.handle_async_request(request)).content

    async def sdk_post() -> object:
        return await _http.post(own, route, BODY, 10.0)

    async def h11_post() -> object:
        return (await h11_client.post(url, content=BODY, headers=HEADERS)).content

    async def h11_direct() -> object:
        request = httpx.Request("POST", parsed, content=BODY, headers=headers)
        return (await h11_client._transport.handle_async_request(request)).content

    variants = {
        "Http11Transport: 0 AsyncClient.post (today)": client_post,
        "Http11Transport: 1 build_request + send": build_and_send,
        "Http11Transport: 2 Request(parsed URL, Headers) + send": request_and_send,
        "Http11Transport: 3 Request + handle_async_request": request_to_transport,
        "Http11Transport: 4 koala_async._http.post": sdk_post,
        "h11 transport: AsyncClient.post": h11_post,
        "h11 transport: Request + handle_async_request": h11_direct,
    }
    results: dict[str, float] = {}
    for _ in range(rounds):
        for name, send in variants.items():
            cpu = await per_request_cpu(n, send)
            results[name] = min(results.get(name, cpu), cpu)
    for client in (own, plain, h11_client):
        await client.aclose()
    await transport.aclose()
    return results


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--requests", type=int, default=3000)
    parser.add_argument("--port", type=int)
    parser.add_argument("--steps", action="store_true", help="measure _http.post's steps")
    parser.add_argument("--rounds", type=int, default=3, help="interleaved rounds (--steps)")
    args = parser.parse_args()

    async def measure(port: int) -> dict[str, float]:
        if args.steps:
            return await steps(args.requests, port, args.rounds)
        return await layers(args.requests, port)

    if args.port is None:
        with running_sink() as port:
            results = asyncio.run(measure(port))
    else:
        results = asyncio.run(measure(args.port))
    sniffio = importlib.util.find_spec("sniffio") is not None
    print(f"sniffio importable: {sniffio}; httpx {httpx.__version__}; CPU µs per request:")
    for name, cpu in results.items():
        print(f"  {name:<55} {cpu:7.1f}")
    print(json.dumps({"sniffio": sniffio, **results}))


if __name__ == "__main__":
    main()
