"""A fake Koala collector: checks requests against Koala's rules and records what arrived.

The rules (``_rules.py``) are the collector's own copy of Koala's OpenAPI schemas
(``ProfileBatchRequest``, ``AccountBatchRequest``), its guide (one person per request, a
User-Agent on every request) and its 30-per-kind cap, so a mistake in the client's
constants cannot hide behind the same mistake in its checker.
"""

from __future__ import annotations

import re
from collections import Counter, deque
from collections.abc import Callable
from contextlib import AbstractAsyncContextManager
from dataclasses import dataclass, field, replace
from typing import Any, Literal

import anyio
import httpx
import msgspec

from ._http_server import serve_http
from ._reply import Reply
from ._rules import check_body

__all__ = ["Entry", "FakeCollector", "Received", "Reply", "Totals"]

_PATH = re.compile(r"/web/projects/(?P<key>[^/]+)/(?P<accounts>accounts/)?batch\Z")


@dataclass(frozen=True)
class Received:
    """One request as the collector saw it.

    Attributes:
        kind: ``"profile"`` (``/batch``) or ``"account"`` (``/accounts/batch``), or
            ``"unknown"`` for any other path.
        key: The public API key from the path.
        headers: The request headers, names in lower case.
        raw: The body as sent.
        body: The body parsed as JSON (empty if it was not JSON).
        status: The status it was answered with (0 for a reset).
        violations: Where it broke the spec's rules; empty if it is valid.
    """

    kind: Literal["profile", "account", "unknown"]
    key: str
    headers: dict[str, str]
    raw: bytes
    body: dict[str, Any]
    status: int
    violations: tuple[str, ...]

    @property
    def ip(self) -> str | None:
        """The visitor's IP sent at the top of a ``/batch`` body, if any."""
        value = self.body.get("ip")
        return value if isinstance(value, str) else None

    @property
    def traits(self) -> dict[str, Any]:
        """The top-level ``traits`` of a ``/batch`` body ({} if none)."""
        value = self.body.get("traits")
        return value if isinstance(value, dict) else {}


@dataclass(frozen=True)
class Entry:
    """One event, identify or page view that was accepted, with who it belongs to."""

    type: Literal["track", "identify", "page"]
    data: dict[str, Any]
    profile_id: str | None = None
    email: str | None = None
    domain: str | None = None
    account_id: str | None = None

    @property
    def message_id(self) -> str | None:
        """The entry's message_id, if it has one."""
        return self._text("message_id")

    @property
    def event(self) -> str | None:
        """A track entry's event name."""
        return self._text("event")

    @property
    def name(self) -> str | None:
        """A page view's name, if it has one."""
        return self._text("name")

    @property
    def properties(self) -> dict[str, Any]:
        """A track or page entry's properties ({} if none)."""
        return self._dict("properties")

    @property
    def traits(self) -> dict[str, Any]:
        """An identify entry's traits ({} if none)."""
        return self._dict("traits")

    @property
    def context(self) -> dict[str, Any]:
        """The entry's ``context`` (the sender's ip, user agent, page, library...; {} if none)."""
        return self._dict("context")

    def _text(self, name: str) -> str | None:
        value = self.data.get(name)
        return value if isinstance(value, str) else None

    def _dict(self, name: str) -> dict[str, Any]:
        value = self.data.get(name)
        return value if isinstance(value, dict) else {}


_LISTS = {"events": "track", "identifies": "identify", "page_views": "page"}


@dataclass
class Totals:
    """What a collector took, counted as it comes: entries and unique message_ids, by key,
    kind (profile or account) and entry type, plus requests and refused requests.

    Keeps one set of message_ids per (key, kind, type), so it answers "how many distinct
    entries arrived" without keeping the requests.
    """

    requests: int = 0
    refused: int = 0  # answered with anything but a 2xx, or breaking the spec's rules
    _ids: dict[tuple[str, str, str], tuple[list[int], set[str]]] = field(
        default_factory=dict, repr=False
    )

    def add(self, received: Received) -> None:
        """Count one request; only an accepted one's entries count."""
        self.requests += 1
        if not 200 <= received.status < 300 or received.violations:
            self.refused += 1
            return
        for name, kind in _LISTS.items():
            entries = received.body.get(name)
            if not isinstance(entries, list):
                continue
            count, ids = self._ids.setdefault((received.key, received.kind, kind), ([0], set()))
            count[0] += len(entries)
            ids.update(
                e["message_id"]
                for e in entries
                if isinstance(e, dict) and isinstance(e.get("message_id"), str)
            )

    def rows(self) -> list[dict[str, Any]]:
        """One row per (key, kind, type): ``{"key", "kind", "type", "entries", "unique_ids"}``."""
        return [
            {"key": key, "kind": kind, "type": type_, "entries": count[0], "unique_ids": len(ids)}
            for (key, kind, type_), (count, ids) in sorted(self._ids.items())
        ]

    def clear(self) -> None:
        self.requests = self.refused = 0
        self._ids.clear()


Responder = Callable[[Received], "Reply | None"]


@dataclass
class FakeCollector:
    """A stand-in for Koala's ingestion API, for tests and local development.

    Plug it into a client with :meth:`transport` (no sockets) or run it on a port with
    :meth:`serve`. Valid requests are answered ``200 {"ok": true}``; invalid ones ``400``
    with the violations, which are also kept in :attr:`violations`. Faults come from
    :meth:`fail_next` or from :attr:`responder`, a function that may return a
    :class:`Reply` for any valid request (None: answer normally); it sees the request as a
    :class:`Received` whose ``status`` is still 0.
    """

    responder: Responder | None = None
    requests: list[Received] = field(default_factory=list)
    totals: Totals = field(default_factory=Totals)
    """Entries and unique message_ids taken, by key, kind and type (see :class:`Totals`)."""
    violations: list[str] = field(default_factory=list)
    _entries: list[Entry] = field(default_factory=list, repr=False)
    _faults: deque[Reply] = field(default_factory=deque, repr=False)

    # What arrived

    @property
    def events(self) -> list[Entry]:
        """Accepted track entries of profiles, in arrival order."""
        return [e for e in self._entries if e.type == "track" and e.domain is e.account_id is None]

    @property
    def identifies(self) -> list[Entry]:
        """Accepted identify entries of profiles."""
        return [
            e for e in self._entries if e.type == "identify" and e.domain is e.account_id is None
        ]

    @property
    def page_views(self) -> list[Entry]:
        """Accepted page views."""
        return [e for e in self._entries if e.type == "page"]

    @property
    def accounts(self) -> list[Entry]:
        """Accepted account entries (identifies and events)."""
        return [e for e in self._entries if e.domain is not None or e.account_id is not None]

    def by_person(self) -> dict[str, list[Entry]]:
        """Accepted profile entries grouped by profile_id (or email, when there is none)."""
        people: dict[str, list[Entry]] = {}
        for entry in self._entries:
            who = entry.profile_id or entry.email
            if who is not None:
                people.setdefault(who, []).append(entry)
        return people

    def order_problems(self) -> list[str]:
        """Where a person's entries broke koala-async's ordering rule: an identify goes
        after everything made before it and before everything made after it (events and
        page views between two identifies may arrive in any order). Judged by ``sent_at``
        (the client's clock, in milliseconds: entries of one millisecond are not judged)
        and by the accepted request each arrived in first; [] if none."""
        made: dict[str, list[tuple[int, str, str, bool]]] = {}  # (request, sent_at, id, identify)
        seen: set[str] = set()
        accepted = (r for r in self.requests if r.kind == "profile" and 200 <= r.status < 300)
        for at, received in enumerate(accepted):
            body = received.body
            who = body.get("profile_id") or body.get("email")
            for name, kind in _LISTS.items():
                for item in body.get(name) or ():
                    mid, sent_at = item.get("message_id"), item.get("sent_at")
                    if not (isinstance(mid, str) and isinstance(sent_at, str)) or mid in seen:
                        continue
                    seen.add(mid)
                    made.setdefault(str(who), []).append((at, sent_at, mid, kind == "identify"))
        problems = []
        for who, entries in made.items():
            for at, sent_at, mid, identify in entries:
                if not identify:
                    continue
                for other_at, other_sent, other, _ in entries:
                    if (other_at > at and other_sent < sent_at) or (
                        other_at < at and other_sent > sent_at
                    ):
                        problems.append(
                            f"{who}: {other} (sent_at {other_sent}) arrived on the wrong side "
                            f"of identify {mid} (sent_at {sent_at})"
                        )
        return problems

    def message_ids(self) -> Counter[str]:
        """How many times each message_id arrived in an accepted request."""
        return Counter(e.message_id for e in self._entries if e.message_id is not None)

    def reset(self) -> None:
        """Forget everything received, and any faults still to come."""
        self.requests.clear()
        self.totals.clear()
        self.violations.clear()
        self._entries.clear()
        self._faults.clear()

    # Faults

    def fail_next(
        self,
        n: int = 1,
        status: int = 500,
        *,
        retry_after: float | None = None,
        reset: bool = False,
        delay: float = 0.0,
    ) -> None:
        """Answer the next ``n`` requests with ``status`` (or a reset), whatever they hold.

        With a 2xx ``status`` and a ``delay``, the request is accepted but answered late:
        that is how to make a client time out on a request that did arrive.
        """
        self._faults.extend([Reply(status, retry_after, delay, reset)] * n)

    # Plugs

    def transport(self) -> httpx.MockTransport:
        """An httpx transport that delivers to this collector in memory, with no sockets.

        Use it as ``KoalaClient(..., http_client=httpx.AsyncClient(transport=fake.transport()))``.
        """
        return _transport(self)

    def serve(self, host: str = "127.0.0.1", port: int = 0) -> AbstractAsyncContextManager[str]:
        """Serve this collector over HTTP while the ``async with`` block runs; yields its URL.

        It runs in the current event loop (asyncio or trio); ``port=0`` picks a free port.
        """
        return serve_http(self.handle, host, port)

    # The work

    def handle(self, method: str, path: str, headers: dict[str, str], raw: bytes) -> Reply:
        """Check and record one request; return how to answer it."""
        kind: Literal["profile", "account", "unknown"] = "unknown"
        key = ""
        body: dict[str, Any] = {}
        problems: list[str] = []
        match = _PATH.match(path)
        if method != "POST" or match is None:
            problems.append(
                f"{method} {path}: Koala takes POST /web/projects/<key>/[accounts/]batch"
            )
        else:
            key = match["key"]
            kind = "account" if match["accounts"] else "profile"
        if not headers.get("user-agent", "").strip():
            problems.append("no User-Agent: Koala may drop the request as a bot")
        if headers.get("content-type", "").split(";")[0].strip() != "application/json":
            problems.append("Content-Type is not application/json")
        try:
            parsed = msgspec.json.decode(raw)
        except msgspec.DecodeError as exc:
            problems.append(f"body is not JSON: {exc}")
        else:
            if isinstance(parsed, dict):
                body = parsed
            else:
                problems.append("body is not a JSON object")
        entries: list[Entry] = []
        if body and kind != "unknown":
            entries = self._check(kind, body, problems)

        reply = self._faults.popleft() if self._faults else None
        if reply is None and problems:
            reply = Reply(
                400, body=msgspec.json.encode({"error": "; ".join(problems), "code": "invalid"})
            )
        received = Received(kind, key, headers, raw, body, 0, tuple(problems))
        if reply is None and self.responder is not None:
            reply = self.responder(received)
        reply = reply or Reply()
        status = 0 if reply.reset else reply.status
        received = replace(received, status=status)
        self.requests.append(received)
        self.totals.add(received)
        self.violations.extend(problems)
        if 200 <= status < 300 and not problems:
            self._entries.extend(entries)
        return reply

    def _check(
        self, kind: Literal["profile", "account"], body: dict[str, Any], problems: list[str]
    ) -> list[Entry]:
        """Check a body against Koala's rules; return its entries (to keep if it is accepted)."""
        found, ids, entries = check_body(kind, body)
        problems.extend(found)
        return [Entry(data["type"], data, **ids) for _, data in entries]


def _transport(collector: FakeCollector) -> httpx.MockTransport:
    async def handler(request: httpx.Request) -> httpx.Response:
        headers = {name.lower(): value for name, value in request.headers.items()}
        reply = collector.handle(request.method, request.url.path, headers, await request.aread())
        if reply.delay:
            await anyio.sleep(reply.delay)
        if reply.reset:
            raise httpx.ReadError("the fake collector reset the connection", request=request)
        return httpx.Response(reply.status, headers=reply.all_headers(), content=reply.body)

    return httpx.MockTransport(handler)
