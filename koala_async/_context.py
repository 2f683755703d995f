"""The visitor a request is for, kept in a ``contextvars`` variable while the request runs.

The ``ko_id`` middlewares (ASGI, aiohttp) set it for each HTTP request: the visitor's
profile id, IP address, user agent and page. A person call made while the request runs takes
them unless it is given its own: ``await koala.page(name="Pricing")`` in a handler needs no
ids. Other integrations (WSGI, Django, Flask) use the same two functions::

    token = set_request_context(profile_id=ko_id, ip=remote_addr, user_agent=ua, page=page)
    try:
        ...  # handle the request
    finally:
        reset_request_context(token)

or ``with request_context(...):``. A ``contextvars`` variable follows the request into the
tasks it starts and never leaks into another request, on asyncio, trio and threads alike.
"""

from __future__ import annotations

import ipaddress
from collections.abc import Iterator, Mapping
from contextlib import contextmanager
from contextvars import ContextVar, Token
from dataclasses import dataclass
from typing import Any

from ._exceptions import ValidationError
from ._validate import UUID
from ._version import __version__

__all__ = [
    "LIBRARY",
    "RequestContext",
    "current",
    "normalize_ip",
    "request_context",
    "reset_request_context",
    "set_request_context",
]

LIBRARY = {"name": "koala-async", "version": __version__}
"""Added to every ``context`` sent, as Segment's libraries add theirs."""

_PAGE_KEYS = ("url", "path", "referrer", "title", "search")


@dataclass(frozen=True)
class RequestContext:
    """One request's visitor.

    Attributes:
        profile_id: The visitor's ``ko_id`` (lowercase), or None.
        ip: The visitor's IP address, or None.
        context: What calls about this visitor send as ``context`` (Segment's key names:
            ``ip``, ``userAgent``, ``page``, and ``library``), built once per request and
            sent as it is: empty when there is nothing to send.
    """

    profile_id: str | None
    ip: str | None
    context: dict[str, Any]


_request: ContextVar[RequestContext | None] = ContextVar("koala_request", default=None)

current = _request.get
"""The request context in force, or None outside a request."""


def normalize_ip(value: object) -> str | None:
    """An IPv4 or IPv6 address in its canonical text form, or None if ``value`` is not one.

    An IPv4-mapped IPv6 address (``::ffff:192.0.2.1``, what a dual-stack server reports
    for an IPv4 client) is its IPv4 address, on every Python: 3.10-3.12 write it as
    ``::ffff:c000:201`` and 3.13 as itself, and Koala's company lookup needs the IPv4.
    Servers put other things where the client's address goes (Starlette's test client says
    ``"testclient"``, a Unix socket has none): those are not sent.
    """
    if not isinstance(value, str):
        return None
    try:
        address = ipaddress.ip_address(value.strip())
    except ValueError:
        return None
    if isinstance(address, ipaddress.IPv6Address) and address.ipv4_mapped is not None:
        return str(address.ipv4_mapped)
    return str(address)


def set_request_context(
    *,
    profile_id: str | None = None,
    ip: str | None = None,
    user_agent: str | None = None,
    page: Mapping[str, str | None] | None = None,
) -> Token[RequestContext | None]:
    """Make the calls of the current context (a request) about this visitor.

    Person calls made until :func:`reset_request_context` that name no person use
    ``profile_id``; those about this visitor (no ids, or this ``profile_id``) send ``ip`` as
    the request's top-level ``ip`` and ``context`` with ``ip``, ``userAgent`` and ``page``.

    Args:
        profile_id: The visitor's ``ko_id`` cookie (a UUID), e.g. from the cookie middleware.
        ip: The visitor's address; anything that is not an IP address is left out.
        user_agent: The request's ``User-Agent`` header.
        page: ``url``, ``path``, ``referrer`` (the ``Referer`` header), ``title``, ``search``;
            empty values and other keys are left out.

    Returns:
        A token for :func:`reset_request_context`.

    Raises:
        ValidationError: ``profile_id`` is not a UUID.
    """
    if profile_id is not None:
        if not isinstance(profile_id, str) or not UUID.match(profile_id):
            raise ValidationError(
                f"profile_id must be a UUID string such as the ko_id cookie holds, got "
                f"{profile_id!r}"
            )
        profile_id = profile_id.lower()
    address = normalize_ip(ip)
    context: dict[str, Any] = {}
    if address is not None:
        context["ip"] = address
    if isinstance(user_agent, str) and user_agent:
        context["userAgent"] = user_agent
    if page:
        shown = {k: v for k in _PAGE_KEYS if isinstance(v := page.get(k), str) and v}
        if shown:
            context["page"] = shown
    if context:
        context["library"] = LIBRARY
    return _request.set(RequestContext(profile_id, address, context))


def reset_request_context(token: Token[RequestContext | None]) -> None:
    """End what :func:`set_request_context` began: restore the context before it."""
    _request.reset(token)


@contextmanager
def request_context(
    *,
    profile_id: str | None = None,
    ip: str | None = None,
    user_agent: str | None = None,
    page: Mapping[str, str | None] | None = None,
) -> Iterator[RequestContext]:
    """:func:`set_request_context` for the length of a ``with`` block."""
    token = set_request_context(profile_id=profile_id, ip=ip, user_agent=user_agent, page=page)
    try:
        context = _request.get()
        assert context is not None
        yield context
    finally:
        reset_request_context(token)
