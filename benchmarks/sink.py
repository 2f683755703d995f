"""A loopback HTTP sink for the benchmarks, run in its own process so it never shares a GIL
with the client being measured.

It answers every POST with ``200 {"ok":true}`` and counts the entries each body carries:
Koala bodies (``events`` + ``identifies`` + ``page_views``), Segment's and PostHog's
(``batch``, gzip or not). Control endpoints: ``GET /_count``, ``POST /_reset``, and
``POST /_config`` with ``{"delay": seconds, "stall": bool, "errors": share}``; a stall holds
every answer until it is lifted, a delay answers each request that much later without
blocking others, and ``errors`` answers that share of the requests, at random (seeded, so
runs compare), with a 500 whose entries are not counted.

    python benchmarks/sink.py --port 18700
"""

from __future__ import annotations

import argparse
import asyncio
import gzip
import json
import random
from typing import Any

OK = b'HTTP/1.1 200 OK\r\nContent-Type: application/json\r\nContent-Length: 11\r\n\r\n{"ok":true}'
ERROR = b"HTTP/1.1 500 Internal Server Error\r\nContent-Length: 0\r\n\r\n"


class Sink:
    def __init__(self) -> None:
        self.count = 0
        self.requests = 0
        self.delay = 0.0
        self.errors = 0.0
        self.random = random.Random(0)
        self.stalled: list[asyncio.Transport] | None = None

    def entries(self, body: bytes, headers: dict[bytes, bytes]) -> int:
        if headers.get(b"content-encoding") == b"gzip" or body[:2] == b"\x1f\x8b":
            body = gzip.decompress(body)
        data: Any = json.loads(body)
        if isinstance(data, list):
            return len(data)
        if "batch" in data:
            return len(data["batch"])
        return sum(len(data.get(k, ())) for k in ("events", "identifies", "page_views"))

    def answer(
        self, transport: asyncio.Transport, body: bytes, headers: dict[bytes, bytes]
    ) -> None:
        self.requests += 1
        reply = OK
        if self.errors and self.random.random() < self.errors:
            reply = ERROR
        else:
            self.count += self.entries(body, headers)
        if self.stalled is not None:
            self.stalled.append(transport)
        elif self.delay:
            asyncio.get_running_loop().call_later(self.delay, _write, transport, reply)
        else:
            transport.write(reply)

    def control(self, path: bytes, body: bytes) -> bytes:
        if path == b"/_reset":
            self.count = self.requests = 0
        elif path == b"/_config":
            config = json.loads(body or b"{}")
            self.delay = float(config.get("delay", self.delay))
            if "errors" in config:
                self.errors, self.random = float(config["errors"]), random.Random(0)
            if config.get("stall") and self.stalled is None:
                self.stalled = []
            elif not config.get("stall", True) and self.stalled is not None:
                waiting, self.stalled = self.stalled, None
                for transport in waiting:
                    _write(transport, OK)
        reply = json.dumps({"count": self.count, "requests": self.requests}).encode()
        head = f"HTTP/1.1 200 OK\r\nContent-Type: application/json\r\nContent-Length: {len(reply)}"
        return head.encode() + b"\r\n\r\n" + reply


def _write(transport: asyncio.Transport, payload: bytes) -> None:
    if not transport.is_closing():
        transport.write(payload)


class Connection(asyncio.Protocol):
    def __init__(self, sink: Sink) -> None:
        self.sink = sink
        self.buffer = bytearray()
        self.transport: asyncio.Transport | None = None

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        assert isinstance(transport, asyncio.Transport)
        self.transport = transport

    def data_received(self, data: bytes) -> None:
        self.buffer += data
        while True:
            end = self.buffer.find(b"\r\n\r\n")
            if end < 0:
                return
            lines = bytes(self.buffer[:end]).split(b"\r\n")
            headers = {}
            for line in lines[1:]:
                name, _, value = line.partition(b":")
                headers[name.strip().lower()] = value.strip()
            length = int(headers.get(b"content-length", b"0"))
            if len(self.buffer) < end + 4 + length:
                return
            body = bytes(self.buffer[end + 4 : end + 4 + length])
            del self.buffer[: end + 4 + length]
            path = lines[0].split(b" ", 2)[1]
            assert self.transport is not None
            if path.startswith(b"/_"):
                self.transport.write(self.sink.control(path, body))
                continue
            self.sink.answer(self.transport, body, headers)


async def serve(port: int) -> None:
    sink = Sink()
    loop = asyncio.get_running_loop()
    server = await loop.create_server(lambda: Connection(sink), "127.0.0.1", port, backlog=1024)
    print(f"sink listening on 127.0.0.1:{port}", flush=True)
    async with server:
        await server.serve_forever()


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--port", type=int, default=18700)
    asyncio.run(serve(parser.parse_args().port))
