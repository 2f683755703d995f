"""The HTTP client each sender uses, made cheaply, and one POST through it."""

from __future__ import annotations

import ssl
import urllib.request
from collections.abc import Mapping

import httpx

from ._transport import Http11Transport

__all__ = ["HttpFactory", "post"]


class HttpFactory:
    """Makes the one-connection ``httpx.AsyncClient`` each sender uses.

    Building it costs nothing: the SSL context (loading the CA store takes ~18 ms) is made
    on the first https client, once, and never for an http:// base URL.
    """

    def __init__(self, base_url: str, timeout: float) -> None:
        self._https = base_url.startswith("https:")
        self._timeout = timeout
        self._ssl_context: ssl.SSLContext | None = None

    def new_client(self) -> httpx.AsyncClient:
        """A client for one sender: one connection, one request at a time. Over httpx's own
        transport when proxies are set in the environment (it honours them)."""
        if self._https and self._ssl_context is None:
            self._ssl_context = httpx.create_ssl_context()
        if urllib.request.getproxies():
            return httpx.AsyncClient(
                timeout=self._timeout,
                verify=self._ssl_context or True,
                limits=httpx.Limits(max_connections=1, max_keepalive_connections=1),
            )
        return httpx.AsyncClient(
            timeout=self._timeout, transport=Http11Transport(self._ssl_context)
        )


async def post(
    http: httpx.AsyncClient,
    url: str,
    content: bytes,
    headers: Mapping[str, str],
    timeout: float,
) -> httpx.Response:
    """POST one batch through ``http``, bounded by ``timeout`` all told."""
    import anyio

    with anyio.fail_after(timeout):
        return await http.post(url, content=content, headers=headers)
