"""The HTTP clients senders use, cheap to open and cheap per request.

:class:`HttpFactory` makes each sender's one-connection ``httpx.AsyncClient``: over
:class:`Http11Transport`, or over httpx's own transport when proxies are configured in the
environment (it honours them). The SSL context (~18 ms: loading the CA store) is made only
for an https base URL, once, when the first client is made, and shared by all of them.

:func:`post` sends one batch. Through a client this module made, it hands the request to
the transport as bytes, its head made once per URL (:class:`Route`), and reads back only
the status and ``Retry-After``: no ``httpx.Request`` or ``httpx.Response`` is built, and the
client layer (URL and header merging, auth and hook plumbing, cookie extraction, which
builds urllib request objects on every response) has nothing to do for a client with none
of those settings. Through a user's ``http_client=`` it goes the whole way, so their base
URL, headers, cookies, auth, event hooks and timeouts all apply.

Measured with ``benchmarks/httpx_layers.py --steps`` (client CPU per request against the
sink, over Http11Transport, lowest of 3 interleaved rounds; two runs on a 2-core machine
other jobs kept at load 10, so absolute figures are ~4x inflated and only the ratios count):
``AsyncClient.post`` (before) 1082/1221/925 µs; ``build_request`` + ``send``
1248/1077/931 (no gain: ``post`` does just that); ``httpx.Request`` from a parsed URL and
``Headers`` + ``send`` 950/964/653 (-12 to -29%); that request straight to the transport
612/725/424 (-41 to -54%); :func:`post` 614/783/453 (-36 to -51%). Cookie extraction and
response wrapping go with the client layer. Then (2026-12-01, a quiet machine, CPU per
delivered request through the whole client, 5,000 one-event people, best of 6): requests as
bytes with a head made once, and no per-read cancel scope, 276 µs against 477-490 before.
"""

from __future__ import annotations

import urllib.request
import weakref
from collections.abc import Mapping
from typing import TYPE_CHECKING
from urllib.parse import unquote

import httpx

from ._redact import redact_text
from ._transport import Http11Transport, Misconfigured, origin, request_head

if TYPE_CHECKING:
    import ssl

__all__ = ["HttpFactory", "Misconfigured", "Route", "post"]

# Clients made here, with the transport they were made with: only these may skip the client
# layer. Weak, so a closed and dropped client is forgotten.
_own: weakref.WeakKeyDictionary[httpx.AsyncClient, Http11Transport] = weakref.WeakKeyDictionary()


class HttpFactory:
    """Makes the one-connection httpx.AsyncClient each sender uses."""

    def __init__(self, base_url: str, timeout: float) -> None:
        self._https = base_url.lower().startswith("https:")
        self._timeout = timeout
        self._ssl_context: ssl.SSLContext | None = None
        self._proxied: bool | None = None  # the environment names proxies; read once

    def _ssl(self) -> ssl.SSLContext:
        if self._ssl_context is None:
            self._ssl_context = httpx.create_ssl_context()
        return self._ssl_context

    def new_client(self) -> httpx.AsyncClient:
        """A client for one sender: one connection, one request at a time.

        httpcore's pool scans all its connections on every request and keeps bookkeeping a
        single sender does not need, so senders use :class:`Http11Transport`, unless
        proxies are configured in the environment (read once, at the first client: it costs
        ~150 µs, and a burst of new senders would pay it each): then httpx's own transport
        honours them.
        """
        if self._proxied is None:
            self._proxied = bool(urllib.request.getproxies())
        if self._proxied:
            # httpx makes a context per proxy transport unless given one; a proxy may be
            # https even for an http base URL, so this path always has one.
            return httpx.AsyncClient(
                timeout=self._timeout,
                verify=self._ssl(),
                limits=httpx.Limits(max_connections=1, max_keepalive_connections=1),
            )
        transport = Http11Transport(self._ssl() if self._https else None)
        # trust_env=False: httpx would read the proxies again, for a transport it never uses.
        client = httpx.AsyncClient(timeout=self._timeout, transport=transport, trust_env=False)
        _own[client] = transport
        return client


class Route:
    """A URL and the headers every request to it carries, prepared once for all of them."""

    __slots__ = ("_head", "headers", "origin", "url")

    def __init__(self, url: str, headers: Mapping[str, str]) -> None:
        self.url = url
        self.headers = httpx.Headers(headers)
        parsed = httpx.URL(url)
        self.origin = origin(parsed)
        # The head but its last line: Content-Length, which is each request's own.
        self._head = request_head("POST", parsed, self.headers.raw)[:-2] + b"Content-Length: "

    def message(self, content: bytes) -> bytes:
        """The whole request for one body."""
        return b"%s%d\r\n\r\n%s" % (self._head, len(content), content)


async def post(
    http: httpx.AsyncClient, route: Route, content: bytes, timeout: float
) -> tuple[int, str | None]:
    """POST one batch through `http` (the SDK's own client or a user's http_client=) doing
    as little work as httpx allows; return the answer's status and its ``Retry-After``.

    Through a client made by :class:`HttpFactory`, the request goes to its transport as
    bytes, and ``timeout`` bounds connecting (so that a connection that never comes is told
    apart, as a ``ConnectTimeout``); writing and reading are bounded by the deadline the
    caller must put around the whole request (a limit per read would cost a cancel scope
    per read, and could only fire later). A user's client keeps all of its settings.

    Raises:
        Misconfigured: a redirect (``3xx``: never followed, the batch may not go to another
            host; the message names the ``Location``), or TLS and plain HTTP crossed.
        httpx.TransportError: as ``httpx.AsyncClient.post`` would.
        RuntimeError: the client is closed, as ``httpx.AsyncClient.post`` would.
    """
    transport = _own.get(http)
    if transport is None:  # a user's client (or ours behind proxies): all of its settings
        response = await http.post(
            route.url, content=content, headers=route.headers, follow_redirects=False
        )
        status, found = response.status_code, response.headers
        if 300 <= status < 400:
            _redirected(route, status, found.get("location"))
        return status, found.get("retry-after")
    if http.is_closed:
        raise RuntimeError("Cannot send a request, as the client has been closed.")
    status, headers, _ = await transport.send(route.origin, route.message(content), timeout)
    retry_after = location = None
    for name, value in headers:
        lower = name.lower()
        if lower == b"retry-after":
            retry_after = value.decode("latin-1")
        elif lower == b"location":
            location = value.decode("latin-1")
    if 300 <= status < 400:
        _redirected(route, status, location)
    return status, retry_after


def _redirected(route: Route, status: int, location: str | None) -> None:
    """Refuse a redirect, naming where it points (the key in it redacted): the fix is
    base_url."""
    if location is None:
        raise Misconfigured(f"HTTP {status} (a redirect without a Location): check base_url")
    key = route.url.rpartition("/web/projects/")[2].partition("/")[0]
    shown = redact_text(location[:200], unquote(key)) + ("…" if len(location) > 200 else "")
    raise Misconfigured(
        f"HTTP {status} redirects to {shown}; batches are never sent on to another address: "
        "set base_url to the origin that answers there"
    )
