"""KoalaClient: the calls users make, and the background tasks that deliver them.

A call validates its input, encodes its entry once, and appends it to its person's (or
account's) :class:`~koala_async._batch.Target`. That is all the hot path does: no task, no
I/O, O(1) whatever the queue holds.

A target becomes *ready* when one of its batches fills, when ``flush_interval`` passes, on
``flush()`` and on close. Ready targets go into one memory stream read by
``max_concurrent_requests`` sender tasks. A sender seals the target's first batch, delivers
it (retrying as :class:`RetryPolicy` says), and puts the target back at the end of the
stream if more is queued. So at most one request per person is in flight, each person's
entries arrive in the order they were made, and a busy person takes turns with the rest.

The background tasks run in a task group the client owns, each under a shielded cancel
scope: cancelling the task that holds the client does not kill them, so the final flush
in :meth:`KoalaClient.aclose` still delivers, within its deadline.
"""

from __future__ import annotations

import enum
import inspect
import logging
import math
import os
import ssl
import time
import urllib.request
import weakref
from collections import Counter
from collections.abc import Awaitable, Callable, Mapping
from datetime import datetime
from types import TracebackType
from typing import Any, Literal
from urllib.parse import quote, urlsplit

import anyio
import httpx
import msgspec
from anyio.abc import TaskGroup
from anyio.streams.memory import MemoryObjectReceiveStream, MemoryObjectSendStream

from . import _validate
from ._batch import EVENTS, IDENTIFIES, PAGE_VIEWS, Batch, Target, Waiter
from ._exceptions import ClientClosedError, DeliveryError, QueueFullError, ValidationError
from ._redact import protect, redact, redact_text
from ._retry import RetryPolicy, Verdict, classify, retry_after
from ._stats import DROP_REASONS, DeliveryFailure, DropReason, FlushResult, Stats
from ._transport import Http11Transport
from ._validate import Who
from ._version import __version__
from ._wire import Entry, Identify, Page, Track, encode, new_message_id, now_iso

__all__ = ["KoalaClient"]

logger = logging.getLogger("koala_async")

DEFAULT_BASE_URL = "https://api2.getkoala.com"
OnError = Callable[[DeliveryFailure], "Awaitable[None] | None"]
_FATAL = {
    Verdict.UNAUTHORIZED: (
        "Koala answered HTTP 401: it does not know this public API key. Check public_api_key "
        "(or KOALA_PUBLIC_API_KEY); nothing more will be sent."
    ),
    Verdict.SUSPENDED: (
        "Koala answered that its ingest is suspended (HTTP 400). Point base_url (or "
        "KOALA_BASE_URL) at a collector that takes data; nothing more will be sent."
    ),
}
_REASONS: dict[Verdict, DropReason] = {
    Verdict.UNAUTHORIZED: "unauthorized",
    Verdict.SUSPENDED: "suspended",
    Verdict.REJECTED: "rejected",
    Verdict.TOO_LARGE: "too_large",
}
_CALLBACK_GRACE = 1.0  # seconds on_error may take, past the deadline, to hear of the last drops
_LOG_EVERY = 60.0  # seconds between repeated warnings of one kind


_ACCOUNT_FIELDS = ("domain", "account_id")


class _State(enum.Enum):
    UNOPENED = "unopened"  # built; calls are refused until `async with` enters it
    OPEN = "open"  # taking calls; senders running
    CLOSING = "closing"  # aclose() is draining the queue; calls are refused
    CLOSED = "closed"  # done for good; a client cannot be reopened
    FORKED = "forked"  # this process is a fork of the one that opened the client


_OPEN = _State.OPEN
_open_clients: weakref.WeakSet[KoalaClient] = weakref.WeakSet()


def _after_fork_in_child() -> None:
    for client in _open_clients:
        client._state = _State.FORKED


os.register_at_fork(after_in_child=_after_fork_in_child)


class KoalaClient:
    """Sends events, identifies, page views and account traits to Koala in the background.

    Use it as an async context manager: entering starts the background senders, leaving
    delivers everything still queued, within ``shutdown_timeout``::

        async with KoalaClient("pk_live_123", user_agent="acme-app/2.3.0") as koala:
            await koala.track("Signed Up", email="ada@acme.com", properties={"plan": "pro"})

    Calls only validate, encode and queue: they cost microseconds and never wait for the
    network (unless ``on_full="block"`` and the queue is full). Bad input raises
    :class:`ValidationError` at the call.

    Args:
        public_api_key: The workspace's public API key; defaults to ``KOALA_PUBLIC_API_KEY``.
        base_url: Where Koala is; defaults to ``KOALA_BASE_URL``, else Koala's API.
        user_agent: Your app, e.g. ``"acme-app/2.3.0"``; sent before ``koala-async/<version>``.
        flush_interval: Seconds an entry may wait before its batch is sent.
        max_queue_size: Entries that may be queued or in flight at once.
        on_full: When the queue is full: ``"drop"`` the entry (counted and reported),
            ``"block"`` the call until there is room, or ``"raise"`` :class:`QueueFullError`.
        max_concurrent_requests: Requests in flight at once (one per person at most).
        http_client: An ``httpx.AsyncClient`` of your own; the client never closes it.
        enabled: False validates every call but sends nothing.
        timeout: Seconds one HTTP request may take, all told.
        shutdown_timeout: Seconds closing may spend delivering what is queued; also the
            default timeout of :meth:`flush`.
        retry: How hard to retry; see :class:`RetryPolicy`.
        on_error: Called (sync or async) with a :class:`DeliveryFailure` for every batch
            given up; what it raises is logged and ignored.
    """

    def __init__(
        self,
        public_api_key: str | None = None,
        *,
        base_url: str | None = None,
        user_agent: str | None = None,
        flush_interval: float = 1.0,
        max_queue_size: int = 100_000,
        on_full: Literal["drop", "block", "raise"] = "drop",
        max_concurrent_requests: int = 8,
        http_client: httpx.AsyncClient | None = None,
        enabled: bool = True,
        timeout: float = 10.0,
        shutdown_timeout: float = 10.0,
        retry: RetryPolicy | None = None,
        on_error: OnError | None = None,
    ) -> None:
        key = public_api_key or os.environ.get("KOALA_PUBLIC_API_KEY")
        if not key or not isinstance(key, str) or any(c in key for c in "/?# \t\r\n"):
            raise ValidationError(
                "pass public_api_key or set KOALA_PUBLIC_API_KEY to your workspace's public "
                "API key (Koala: Settings → Workspace → Public API key)"
                if not key
                else f"public_api_key {redact(str(key))!r} is not a key: it holds a space, "
                "slash or similar"
            )
        base = (base_url or os.environ.get("KOALA_BASE_URL") or DEFAULT_BASE_URL).rstrip("/")
        parts = urlsplit(base)
        if parts.scheme not in ("http", "https") or not parts.netloc:
            raise ValidationError(
                f"base_url must be an http(s) URL such as {DEFAULT_BASE_URL!r}, got {base!r}"
            )
        if user_agent is not None and (
            not isinstance(user_agent, str) or not user_agent.strip() or "\n" in user_agent
        ):
            raise ValidationError(f"user_agent must be one line of text, got {user_agent!r}")
        if on_full not in ("drop", "block", "raise"):
            raise ValidationError(f"on_full must be 'drop', 'block' or 'raise', got {on_full!r}")
        for name, value in (
            ("flush_interval", flush_interval),
            ("timeout", timeout),
            ("max_queue_size", max_queue_size),
            ("max_concurrent_requests", max_concurrent_requests),
        ):
            if not value > 0:
                raise ValidationError(f"{name} must be greater than 0, got {value!r}")
        if not shutdown_timeout >= 0:
            raise ValidationError(f"shutdown_timeout must be 0 or more, got {shutdown_timeout!r}")

        protect(key)
        self._key = key
        self._base_url = base
        path = f"{base}/web/projects/{quote(key, safe='')}"
        self._urls = (f"{path}/batch", f"{path}/accounts/batch")
        agent = f"koala-async/{__version__}"
        self._headers = {
            "User-Agent": f"{user_agent.strip()} {agent}" if user_agent else agent,
            "Content-Type": "application/json",
        }
        self._flush_interval = float(flush_interval)
        self._max_queue_size = int(max_queue_size)
        self._on_full = on_full
        self._concurrency = int(max_concurrent_requests)
        self._http = http_client
        self._own_clients: list[httpx.AsyncClient] = []
        self._ssl_context: ssl.SSLContext | None = None
        self._enabled = enabled
        # What _put compares the queue's length with: 0 refuses everything (disabled, fatal).
        self._limit = self._max_queue_size if enabled else 0
        self._timeout = float(timeout)
        self._shutdown_timeout = float(shutdown_timeout)
        self._retry = retry or RetryPolicy()
        self._on_error = on_error

        self._state = _State.UNOPENED
        # Targets by the field they are keyed by, so ids of different kinds never collide.
        self._targets: dict[str, dict[str, Target]] = {
            field: {} for field in ("profile_id", "email", "domain", "account_id")
        }
        self._waiting: set[Target] = set()  # targets with entries that no sender has yet
        self._fatal: Verdict | None = None
        self._paused_until = 0.0
        self._room: anyio.Event | None = None
        self._idle: anyio.Event | None = None
        self._scopes: list[anyio.CancelScope] = []
        self._running = 0  # senders and ticker still running
        self._stopped: anyio.Event | None = None
        self._callback_scope: anyio.CancelScope | None = None
        self._streams: tuple[Any, ...] = ()
        self._task_group: TaskGroup | None = None
        self._ready: MemoryObjectSendStream[Target] | None = None
        self._failures: MemoryObjectSendStream[DeliveryFailure] | None = None
        self._callbacks_done: anyio.Event | None = None
        self._logged: dict[str, tuple[float, int]] = {}

        self._accepted = 0
        self._delivered = 0
        self._pending = 0
        self._dropped: Counter[str] = Counter(dict.fromkeys(DROP_REASONS, 0))
        self._requests = 0
        self._retries = 0
        self._last_error: str | None = None

    def __repr__(self) -> str:
        return (
            f"<KoalaClient {self._state.value} base_url={self._base_url!r} "
            f"public_api_key={redact(self._key)!r}>"
        )

    # Lifecycle

    async def __aenter__(self) -> KoalaClient:
        if self._state is not _State.UNOPENED:
            raise ClientClosedError(
                "a KoalaClient can be entered once; create a new one to send again"
            )
        if self._enabled:
            if self._http is None:
                self._own_clients = [self._new_http_client() for _ in range(self._concurrency)]
            ready_send, ready_receive = anyio.create_memory_object_stream[Target](math.inf)
            failure_send, failure_receive = anyio.create_memory_object_stream[DeliveryFailure](
                math.inf
            )
            self._ready, self._failures = ready_send, failure_send
            self._streams = (ready_send, ready_receive, failure_send, failure_receive)
            self._callbacks_done, self._stopped = anyio.Event(), anyio.Event()
            task_group = anyio.create_task_group()
            await task_group.__aenter__()
            self._task_group = task_group
            http = self._http
            senders = self._own_clients if http is None else [http] * self._concurrency
            for http in senders:
                task_group.start_soon(self._shielded, self._send_forever, ready_receive, http)
            task_group.start_soon(self._shielded, self._tick_forever)
            task_group.start_soon(self._call_back_forever, failure_receive)
            _open_clients.add(self)
        self._state = _State.OPEN
        return self

    def _new_http_client(self) -> httpx.AsyncClient:
        """An HTTP client for one sender: one connection, one request at a time.

        httpcore's pool scans all its connections on every request (4x the CPU at 32
        connections), and most of the rest of its cost is bookkeeping a single sender does
        not need, so senders use :class:`Http11Transport`, unless proxies are configured in
        the environment: then httpx's own transport, which honours them.
        """
        if self._ssl_context is None:
            self._ssl_context = httpx.create_ssl_context()
        if urllib.request.getproxies():
            return httpx.AsyncClient(
                timeout=self._timeout,
                verify=self._ssl_context,
                limits=httpx.Limits(max_connections=1, max_keepalive_connections=1),
            )
        return httpx.AsyncClient(
            timeout=self._timeout, transport=Http11Transport(self._ssl_context)
        )

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        traceback: TracebackType | None,
    ) -> None:
        await self.aclose()

    async def aclose(self, timeout: float | None = None) -> FlushResult:
        """Stop taking calls and deliver everything queued, then release resources.

        Runs shielded from cancellation, for at most ``timeout`` seconds (default:
        ``shutdown_timeout``); what is still undelivered then is dropped with reason
        ``shutdown_timeout`` and logged. Call it from the task that entered the client,
        or just leave the ``async with`` block. Closing twice is harmless.
        """
        if self._state is not _State.OPEN:
            if self._state is _State.UNOPENED:
                self._state = _State.CLOSED
            return FlushResult(delivered=0, dropped=0, pending=self._pending)
        self._state = _State.CLOSING
        delivered, dropped = self._delivered, self._dropped.total()
        deadline = self._shutdown_timeout if timeout is None else timeout
        try:
            if self._task_group is not None:
                with anyio.CancelScope(shield=True):
                    with anyio.move_on_after(deadline):
                        await self._drain()
                    await self._stop_senders()
                    await self._report_leftovers()
                # Outside the shield: a task group's scope must be exited after its children's.
                await self._task_group.__aexit__(None, None, None)
        finally:
            with anyio.CancelScope(shield=True):
                for stream in self._streams:
                    stream.close()
                for http in self._own_clients:
                    await http.aclose()
            self._state = _State.CLOSED
            _open_clients.discard(self)
        lost = self._dropped["shutdown_timeout"]
        if lost:
            logger.warning(
                "koala_async: %d entries were not delivered within the shutdown deadline of %gs",
                lost,
                deadline,
            )
        return FlushResult(
            delivered=self._delivered - delivered,
            dropped=self._dropped.total() - dropped,
            pending=self._pending,
        )

    async def flush(self, timeout: float | None = None) -> FlushResult:
        """Send everything queued now and wait, at most ``timeout`` seconds, for the outcome.

        ``timeout`` defaults to ``shutdown_timeout``; pass ``math.inf`` to wait for as long
        as retries take. Entries queued after the call began are not waited for.

        Raises:
            DeliveryError: Koala refuses this key for good (HTTP 401, or ingest suspended).
        """
        self._check_open()
        delivered, dropped = self._delivered, self._dropped.total()
        if self._task_group is not None:
            waiter = Waiter()
            for targets in self._targets.values():
                for target in targets.values():
                    for batch in target.batches:
                        waiter.add(batch)
            self._schedule_waiting()
            if waiter.left:
                waiter.done = event = anyio.Event()
                with anyio.move_on_after(self._shutdown_timeout if timeout is None else timeout):
                    await event.wait()
        if self._fatal is not None:
            raise DeliveryError(_FATAL[self._fatal])
        return FlushResult(
            delivered=self._delivered - delivered,
            dropped=self._dropped.total() - dropped,
            pending=self._pending,
        )

    def stats(self) -> Stats:
        """A snapshot of the counters; see :class:`Stats`."""
        return Stats(
            accepted=self._accepted,
            delivered=self._delivered,
            dropped=dict(self._dropped),
            pending=self._pending,
            requests=self._requests,
            retries=self._retries,
            last_error=self._last_error,
        )

    # The calls

    async def track(
        self,
        event: str,
        *,
        profile_id: str | None = None,
        email: str | None = None,
        properties: Mapping[str, Any] | None = None,
        message_id: str | None = None,
        sent_at: datetime | str | None = None,
    ) -> str:
        """Record that a person did something, e.g. ``"Created Account"``.

        Returns:
            The entry's ``message_id``, which Koala uses to drop duplicates.
        """
        if self._state is not _OPEN:
            self._check_open()
        who = _validate.person(profile_id, email)
        entry = _track(event, properties, message_id, sent_at)
        while not self._put(EVENTS, entry, who):
            await self._wait_for_room()
        return entry.message_id

    async def identify(
        self,
        *,
        profile_id: str | None = None,
        email: str | None = None,
        traits: Mapping[str, Any] | None = None,
        message_id: str | None = None,
        sent_at: datetime | str | None = None,
    ) -> str | None:
        """Tell Koala who a visitor is and what they are like.

        With ids alone (no traits) it still records an identify, so it shows in Koala's
        debugger; an email here ties the ``ko_id`` visitor to that person.

        Returns:
            ``message_id`` if you gave one (identifies have none otherwise).
        """
        if self._state is not _OPEN:
            self._check_open()
        who = _validate.person(profile_id, email)
        entry = _identify(_validate.fields(traits, "traits"), message_id, sent_at)
        while not self._put(IDENTIFIES, entry, who):
            await self._wait_for_room()
        return entry.message_id

    async def page(
        self,
        *,
        profile_id: str | None = None,
        email: str | None = None,
        name: str | None = None,
        properties: Mapping[str, Any] | None = None,
        message_id: str | None = None,
        sent_at: datetime | str | None = None,
    ) -> str:
        """Record a page view; put ``url``, ``referrer`` and ``title`` in ``properties``.

        Returns:
            The entry's ``message_id``.
        """
        if self._state is not _OPEN:
            self._check_open()
        who = _validate.person(profile_id, email)
        message_id = (
            new_message_id() if message_id is None else _validate.text(message_id, "message_id")
        )
        entry = Page(
            message_id=message_id,
            name=None if name is None else _validate.text(name, "name"),
            properties=_validate.fields(properties, "properties"),
            sent_at=now_iso() if sent_at is None else _validate.sent_at(sent_at),
        )
        while not self._put(PAGE_VIEWS, entry, who):
            await self._wait_for_room()
        return message_id

    async def account_identify(
        self,
        *,
        domain: str | None = None,
        account_id: str | None = None,
        traits: Mapping[str, Any] | None = None,
        group_id: str | None = None,
        message_id: str | None = None,
        sent_at: datetime | str | None = None,
    ) -> str | None:
        """Set traits on a company account, keyed by ``domain`` (preferred) or ``account_id``.

        ``group_id`` tells apart tenants that share a domain (say, a customer's development
        and marketing workspaces); it is sent inside the traits, where Koala reads it.

        Returns:
            ``message_id`` if you gave one.
        """
        if self._state is not _OPEN:
            self._check_open()
        who = _validate.account(domain, account_id)
        fields = _validate.fields(traits, "traits")
        if group_id is not None:
            group_id = _validate.text(group_id, "group_id")
            if fields.get("group_id", group_id) != group_id:
                raise ValidationError(
                    f"group_id is given twice, as {group_id!r} and as traits['group_id'] = "
                    f"{fields['group_id']!r}: pass one"
                )
            fields = {**fields, "group_id": group_id}
        entry = _identify(fields, message_id, sent_at)
        while not self._put(IDENTIFIES, entry, who):
            await self._wait_for_room()
        return entry.message_id

    async def account_track(
        self,
        event: str,
        *,
        domain: str | None = None,
        account_id: str | None = None,
        properties: Mapping[str, Any] | None = None,
        message_id: str | None = None,
        sent_at: datetime | str | None = None,
    ) -> str:
        """Record something a company account did, e.g. ``"Workspace Created"``.

        Returns:
            The entry's ``message_id``.
        """
        if self._state is not _OPEN:
            self._check_open()
        who = _validate.account(domain, account_id)
        entry = _track(event, properties, message_id, sent_at)
        while not self._put(EVENTS, entry, who):
            await self._wait_for_room()
        return entry.message_id

    # The queue

    def _check_open(self) -> None:
        state = self._state
        if state is _State.OPEN or (state is _State.UNOPENED and not self._enabled):
            return
        if state is _State.UNOPENED:
            raise ClientClosedError(
                "the KoalaClient is not open: use `async with KoalaClient(...) as koala:` "
                "(in a web app, in its lifespan) before calling it"
            )
        if state is _State.FORKED:
            raise ClientClosedError(
                "this KoalaClient was opened before os.fork(); create a new KoalaClient in the "
                "child process (e.g. in your worker's startup hook)"
            )
        raise ClientClosedError("the KoalaClient is closed; create a new one to send again")

    def _put(self, kind: int, entry: Entry, who: Who) -> bool:
        """Encode an entry and queue it for the target ``who`` names.

        Returns False, having done nothing, when the queue is full and ``on_full="block"``:
        the caller waits for room and tries again.
        """
        try:
            raw = encode(entry)
        except (TypeError, ValueError, OverflowError) as exc:
            what = "traits" if type(entry) is Identify else "properties"
            raise ValidationError(
                f"{what} hold a value JSON cannot carry ({exc}); use str, int, float, bool, "
                "None, lists and dicts of them"
            ) from None
        if self._pending >= self._limit:  # full, disabled or fatal: rare, so one compare
            return self._refuse(kind, raw, who)
        self._accepted += 1
        self._pending += 1
        primary, key, secondary, value = who
        targets = self._targets[primary]
        target = targets.get(key)
        if target is None:
            target = targets[key] = Target((primary, key), secondary, primary in _ACCOUNT_FIELDS)
        if target.add(kind, raw, value):
            if not target.scheduled:
                self._schedule(target)
        elif not target.scheduled:
            self._waiting.add(target)
        return True

    def _refuse(self, kind: int, entry: bytes, who: Who) -> bool:
        """Drop an entry at the call (or raise, with ``on_full="raise"``); see :meth:`_put`."""
        if not self._enabled:
            return True
        if self._fatal is None and self._on_full == "block":
            return False
        if self._fatal is not None:
            reason = _REASONS[self._fatal]
        elif self._on_full == "raise":
            raise QueueFullError(
                f"{self._pending} entries are queued, the most max_queue_size allows; raise "
                "max_queue_size, or use on_full='block' to wait for room"
            )
        else:
            reason = "queue_full"
            self._warn(reason, f"the queue is full (max_queue_size={self._max_queue_size})")
        self._accepted += 1
        self._dropped[reason] += 1
        if self._failures is not None and self._on_error is not None:
            primary, key, secondary, value = who
            ids = {primary: key} if value is None else {primary: key, secondary: value}
            self._failures.send_nowait(
                DeliveryFailure(
                    reason=reason,
                    kind="account" if primary in _ACCOUNT_FIELDS else "profile",
                    ids=ids,
                    entries=[msgspec.json.decode(entry)],
                )
            )
        return True

    async def _wait_for_room(self) -> None:
        """With ``on_full="block"``: wait until the queue has room (or the client closes)."""
        while self._pending >= self._max_queue_size and self._fatal is None:
            if self._room is None:
                self._room = anyio.Event()
            await self._room.wait()
            self._check_open()

    def _schedule(self, target: Target) -> None:
        assert self._ready is not None
        target.scheduled = True
        self._ready.send_nowait(target)

    def _schedule_waiting(self) -> None:
        waiting, self._waiting = self._waiting, set()
        for target in waiting:
            if target.batches and not target.scheduled:
                self._schedule(target)

    # The background tasks

    async def _shielded(self, run: Callable[..., Awaitable[None]], *args: Any) -> None:
        """Run a sender or the ticker, out of reach of the owner's cancellation."""
        self._running += 1
        try:
            with anyio.CancelScope(shield=True) as scope:
                self._scopes.append(scope)
                await run(*args)
        finally:
            self._running -= 1
            if not self._running:
                assert self._stopped is not None
                self._stopped.set()

    async def _tick_forever(self) -> None:
        while True:
            await anyio.sleep(self._flush_interval)
            self._schedule_waiting()

    async def _send_forever(
        self, ready: MemoryObjectReceiveStream[Target], http: httpx.AsyncClient
    ) -> None:
        async for target in ready:
            batch = target.seal()
            try:
                await self._deliver(http, target, batch)
            except Exception:  # pragma: no cover - a bug; the flusher must outlive it
                logger.exception("koala_async: unexpected error delivering a batch; dropped")
                self._finish(target, batch, "rejected")
            target.batches.popleft()
            if target.batches:
                self._ready.send_nowait(target)  # type: ignore[union-attr]
            else:
                target.scheduled = False
                targets = self._targets[target.primary[0]]
                if targets.get(target.key) is target:
                    del targets[target.key]

    async def _call_back_forever(
        self, failures: MemoryObjectReceiveStream[DeliveryFailure]
    ) -> None:
        # Shielded like the senders, but stopped last: after the deadline it still tells
        # on_error of every drop, within _CALLBACK_GRACE.
        with anyio.CancelScope(shield=True) as self._callback_scope:
            async for failure in failures:
                await self._call_back(failure)
        assert self._callbacks_done is not None
        self._callbacks_done.set()

    async def _call_back(self, failure: DeliveryFailure) -> None:
        if self._on_error is None:
            return
        try:
            result = self._on_error(failure)
            if inspect.isawaitable(result):
                await result
        except Exception:
            logger.exception("koala_async: the on_error callback raised; carrying on")

    async def _drain(self) -> None:
        """Deliver everything queued (calls are refused by now), then run the callbacks."""
        self._schedule_waiting()
        while self._pending:
            self._idle = anyio.Event()
            await self._idle.wait()
        assert self._failures is not None
        assert self._callbacks_done is not None
        self._failures.close()
        await self._callbacks_done.wait()

    async def _stop_senders(self) -> None:
        """Cancel the senders and the ticker, and wait until they are gone: after this,
        nothing else settles a batch."""
        for scope in self._scopes:
            scope.cancel()
        assert self._stopped is not None
        await self._stopped.wait()

    async def _report_leftovers(self) -> None:
        """After the deadline: count what is left as dropped, and let the callback task tell
        ``on_error`` of it and of every earlier drop, within a short grace period."""
        for targets in self._targets.values():
            for target in targets.values():
                for batch in target.batches:
                    self._finish(target, batch, "shutdown_timeout")
            targets.clear()
        assert self._failures is not None
        assert self._callbacks_done is not None
        self._failures.close()
        with anyio.move_on_after(_CALLBACK_GRACE):
            await self._callbacks_done.wait()
        if not self._callbacks_done.is_set():
            assert self._callback_scope is not None
            self._callback_scope.cancel()
            logger.warning("koala_async: on_error was too slow to hear of every drop at shutdown")

    # Delivery

    async def _deliver(self, http: httpx.AsyncClient, target: Target, batch: Batch) -> None:
        reason, status, error = await self._attempt(http, target, batch)
        if reason == "too_large" and batch.size > 1:
            for half in batch.halves():
                size = half.size
                await self._deliver(http, target, half)
                batch.size -= size  # settled by the half; a cancelled half stays with the batch
            self._settle(batch)
        else:
            self._finish(target, batch, reason, status, error)

    async def _attempt(
        self, http: httpx.AsyncClient, target: Target, batch: Batch
    ) -> tuple[DropReason | None, int | None, BaseException | None]:
        """Send one batch until it is accepted or given up; return why it was given up."""
        url = self._urls[target.account]
        content = target.body(batch)
        policy = self._retry
        waits = policy.waits()
        started = time.monotonic()
        attempts = 0
        while True:
            if self._fatal is not None:
                return _REASONS[self._fatal], None, None
            pause = self._paused_until - time.monotonic()
            if pause > 0:
                await anyio.sleep(pause)
            status: int | None = None
            error: BaseException | None = None
            header: str | None = None
            self._requests += 1
            try:
                with anyio.fail_after(self._timeout):
                    response = await http.post(url, content=content, headers=self._headers)
            except Exception as exc:  # transport errors, timeouts, a closed http_client, ...
                error, verdict = exc, Verdict.RETRY
                self._last_error = redact_text(f"{type(exc).__name__}: {exc}", self._key)
            else:
                status = response.status_code
                verdict = classify(status, response.content)
                if verdict is Verdict.DELIVERED:
                    return None, status, None
                header = response.headers.get("retry-after")
                self._last_error = f"HTTP {status} from {'/accounts' * target.account}/batch"
            if verdict in _FATAL:
                self._go_fatal(verdict)
                return _REASONS[verdict], status, None
            if verdict in (Verdict.REJECTED, Verdict.TOO_LARGE):
                return _REASONS[verdict], status, None
            if verdict is not Verdict.RATE_LIMITED:
                attempts += 1
                if attempts >= policy.max_attempts:
                    return "retries_exhausted", status, error
            wait = retry_after(header, policy.max_retry_after)
            if wait is None:
                wait = next(waits)
            if verdict is Verdict.RATE_LIMITED:
                # Waiting out a rate limit uses neither an attempt nor the batch's budget.
                self._paused_until = max(self._paused_until, time.monotonic() + wait)
                started += wait
            elif time.monotonic() + wait - started > policy.budget:
                return "retries_exhausted", status, error
            logger.debug(
                "koala_async: %s; retrying a batch of %d in %.2fs",
                self._last_error,
                batch.size,
                wait,
            )
            self._retries += 1
            await anyio.sleep(wait)

    def _go_fatal(self, verdict: Verdict) -> None:
        if self._fatal is None:
            self._fatal = verdict
            self._limit = 0
            self._last_error = _FATAL[verdict]
            logger.error("koala_async: %s", _FATAL[verdict])
            self._schedule_waiting()  # drop what is queued now rather than at the next tick

    def _finish(
        self,
        target: Target,
        batch: Batch,
        reason: DropReason | None,
        status: int | None = None,
        error: BaseException | None = None,
    ) -> None:
        """Count a batch's outcome, then wake whoever waits on it."""
        if reason is None:
            self._delivered += batch.size
        else:
            self._dropped[reason] += batch.size
            if reason not in ("unauthorized", "suspended", "shutdown_timeout"):  # logged once
                self._warn(reason, self._last_error or reason)
            if self._failures is not None and self._on_error is not None:
                self._failures.send_nowait(self._failure(target, batch, reason, status, error))
        self._settle(batch)

    def _settle(self, batch: Batch) -> None:
        self._pending -= batch.size
        batch.size = 0
        for waiter in batch.waiters or ():
            waiter.left -= 1
            if not waiter.left:
                waiter.done.set()  # type: ignore[attr-defined]
        if self._room is not None and self._pending < self._max_queue_size:
            self._room.set()
            self._room = None
        if self._idle is not None and not self._pending:
            self._idle.set()

    def _failure(
        self,
        target: Target,
        batch: Batch,
        reason: DropReason,
        status: int | None = None,
        error: BaseException | None = None,
    ) -> DeliveryFailure:
        return DeliveryFailure(
            reason=reason,
            kind="account" if target.account else "profile",
            ids=target.ids(batch),
            entries=[msgspec.json.decode(entry) for _, entry in batch.entries()],
            status=status,
            exception=error,
        )

    def _warn(self, reason: str, detail: str) -> None:
        """Log a drop: the first of each reason at once, repeats once a minute at most."""
        now = time.monotonic()
        last, suppressed = self._logged.get(reason, (-math.inf, 0))
        if now - last < _LOG_EVERY:
            self._logged[reason] = (last, suppressed + 1)
            return
        self._logged[reason] = (now, 0)
        more = f" ({suppressed} more since the last warning)" if suppressed else ""
        logger.warning("koala_async: dropping entries (%s): %s%s", reason, detail, more)


def _track(
    event: str,
    properties: Mapping[str, Any] | None,
    message_id: str | None,
    sent_at: datetime | str | None,
) -> Track:
    """Check a track call's arguments (a person's or an account's) and build its entry."""
    return Track(
        event=_validate.event_name(event),
        properties=_validate.fields(properties, "properties"),
        message_id=new_message_id()
        if message_id is None
        else _validate.text(message_id, "message_id"),
        sent_at=now_iso() if sent_at is None else _validate.sent_at(sent_at),
    )


def _identify(
    traits: dict[str, Any], message_id: str | None, sent_at: datetime | str | None
) -> Identify:
    """Check an identify call's other arguments (a person's or an account's); build its entry."""
    return Identify(
        traits=traits,
        message_id=None if message_id is None else _validate.text(message_id, "message_id"),
        sent_at=now_iso() if sent_at is None else _validate.sent_at(sent_at),
    )
