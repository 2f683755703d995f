"""KoalaClient: the calls users make, and the lifecycle of the machinery that delivers them.

A call validates its input, encodes its entry once and appends it to the queue's inbox
(:mod:`._queue`); that is all the hot path does: no task, no I/O, O(1) whatever the queue
holds. A background task files the inbox into people's batches in bulk (every 50 ms while
calls come, and at the loop's next turn once 64 entries wait); a loop of calls that finds
128 entries unfiled has not let the loop run, so it yields once: ``await koala.track(...)``
in a bare loop still lets the senders run.
Delivery is a pipeline of small parts, each with one job:

- :mod:`._config` checks the options; :mod:`._calls` builds entries;
- :mod:`._queue` keeps per-person batches and the ready order; :mod:`._ledger` the counters;
- :mod:`._retry`, :mod:`._limiter` and :mod:`._circuit` decide (pure, no I/O): what an
  answer means and how long to wait; how many requests may be in flight; whether the
  endpoint is up;
- :mod:`._sender` performs those decisions for one batch; :mod:`._runtime` runs the workers,
  the ticker and the drain; :mod:`._reporter` logs and calls ``on_error``; :mod:`._loop`
  gives them what they await (asyncio's own on asyncio, anyio's on trio);
- :mod:`._spool` (opt-in) keeps accepted entries on disk until they are settled.
"""

from __future__ import annotations

import enum
import logging
import math
import os
import time
import weakref
from collections.abc import Awaitable, Callable, Coroutine, Mapping
from datetime import datetime
from types import TracebackType
from typing import Any

import anyio.to_thread
import httpx
import msgspec

from . import _loop, _validate
from ._calls import (
    EVENTS,
    IDENTIFIES,
    PAGE_VIEWS,
    account_traits,
    identify_entry,
    page_entry,
    track_entry,
)
from ._circuit import CLOSED, DEAD, Circuit
from ._config import Config, OnFull
from ._context import LIBRARY, RequestContext, normalize_ip
from ._context import current as _current
from ._exceptions import ClientClosedError, DeliveryError, QueueFullError, ValidationError
from ._http import HttpFactory
from ._ledger import Ledger
from ._limiter import Limiter
from ._queue import Queue, Waiter
from ._redact import redact
from ._reporter import OnError, Reporter
from ._retry import RetryPolicy
from ._runtime import FILE_EVERY, Runtime
from ._sender import _DROPS, Sender
from ._spool import Spool, SpooledQueue, SpoolFile, SpoolOptions
from ._stats import DeliveryFailure, DropReason, FlushResult, Stats
from ._validate import Who
from ._wire import Entry, Page, Track, encode

__all__ = ["KoalaClient"]

logger = logging.getLogger("koala_async")

_INITIAL_LIMIT = 32  # requests in flight at first; the limiter grows it as the backlog asks
_MAX_PROBLEMS = 64  # distinct bad-call problems logged apart; beyond, one kind per reason

BeforeSend = Callable[[dict[str, Any]], "dict[str, Any] | None"]
"""``before_send``: takes a call's message as a dict, returns it (changed) or None to drop it."""


class _State(enum.Enum):
    UNOPENED = "unopened"  # built; calls are refused until `async with` enters it
    OPEN = "open"  # taking calls; senders running
    CLOSING = "closing"  # aclose() is draining the queue; calls are refused
    CLOSED = "closed"  # done for good; a client cannot be reopened
    FORKED = "forked"  # this process is a fork of the one that opened the client
    ORPHANED = "orphaned"  # the event loop it was opened in has ended


_OPEN = _State.OPEN
_open_clients: weakref.WeakSet[KoalaClient] = weakref.WeakSet()


def _after_fork_in_child() -> None:
    for client in _open_clients:
        client._state = _State.FORKED
        client._limit = 0


os.register_at_fork(after_in_child=_after_fork_in_child)


class KoalaClient:
    """Sends events, identifies, page views and account traits to Koala in the background.

    Use it as an async context manager: entering starts the background senders, leaving
    delivers everything still queued, within ``shutdown_timeout``::

        async with KoalaClient("pk_live_123", user_agent="acme-app/2.3.0") as koala:
            await koala.track("Signed Up", email="ada@acme.com", properties={"plan": "pro"})

    Calls only validate, encode and queue: they cost microseconds and never wait for the
    network. A call with bad input is dropped and logged (``strict=True`` raises instead).

    Args:
        public_api_key: The workspace's public API key; defaults to ``KOALA_PUBLIC_API_KEY``.
        base_url: Where Koala is; defaults to ``KOALA_BASE_URL``, else Koala's API.
        user_agent: Your app, e.g. ``"acme-app/2.3.0"``; sent before ``koala-async/<version>``.
        flush_interval: Seconds an entry may wait before its batch is sent.
        max_queue_size: Entries that may be queued or in flight at once.
        on_full: When the queue is full: ``"pace"`` (default) makes the call wait for room
            while delivery is progressing, and drops the entry at once while the endpoint is
            down; ``"block"`` always waits; ``"drop"`` never waits; ``"raise"`` raises
            :class:`QueueFullError`. Drops are counted as ``queue_full`` and reported.
        max_concurrent_requests: The most requests in flight at once (one per person at
            most); the client adapts how many it uses to the round trip and the server.
        http_client: An ``httpx.AsyncClient`` of your own; the client never closes it.
        enabled: False validates every call but sends nothing.
        timeout: Seconds one HTTP request may take, all told.
        shutdown_timeout: Seconds closing may spend delivering what is queued; also the
            default timeout of :meth:`flush`.
        retry: How hard to retry; see :class:`RetryPolicy`.
        on_error: Called (sync or async) with a :class:`DeliveryFailure` for every batch
            given up; what it raises is logged and ignored.
        before_send: Called, in the caller, with every call as a dict (its wire fields and
            its ids); returns it, changed or not, or None to drop it (counted as
            ``filtered``). One that raises is logged and the message sent unchanged.
        strict: Raise :class:`ValidationError` (bad input) and :class:`ClientClosedError` at
            the call. By default such a call returns None and is dropped as ``invalid`` or
            ``closed``, logged and given to ``on_error``: analytics never takes a request
            handler down. Use it in tests and development.
        send_ip: False never sends a visitor's IP address (neither ``ip`` nor
            ``context.ip``), for privacy policies that forbid it.
        spool: A file path: keep accepted entries on disk (SQLite) until Koala took them, so
            an outage, a full queue, the shutdown deadline or a crash loses nothing; the
            next client opened on it sends what it holds first. See "Durable spool".
        spool_commit_interval: Seconds between the spool's group commits: what a kill -9
            may lose.
        spool_max_bytes: The spool's size cap; past it the oldest entries are dropped
            (``spool_full``).
        spool_max_age: Seconds an entry may wait in the spool; older ones are dropped
            (``expired``).

    Raises:
        ValidationError: An option is wrong; the message says how to fix it.
    """

    def __init__(
        self,
        public_api_key: str | None = None,
        *,
        base_url: str | None = None,
        user_agent: str | None = None,
        flush_interval: float = 1.0,
        max_queue_size: int = 100_000,
        on_full: OnFull = "pace",
        max_concurrent_requests: int = 256,
        http_client: httpx.AsyncClient | None = None,
        enabled: bool = True,
        timeout: float = 10.0,
        shutdown_timeout: float = 10.0,
        retry: RetryPolicy | None = None,
        on_error: OnError | None = None,
        before_send: BeforeSend | None = None,
        strict: bool = False,
        send_ip: bool = True,
        spool: str | os.PathLike[str] | None = None,
        spool_commit_interval: float = 0.2,
        spool_max_bytes: int = 1 << 30,
        spool_max_age: float = 7 * 86400.0,
    ) -> None:
        config = Config.build(
            public_api_key,
            base_url=base_url,
            user_agent=user_agent,
            flush_interval=flush_interval,
            max_queue_size=max_queue_size,
            on_full=on_full,
            max_concurrent_requests=max_concurrent_requests,
            enabled=enabled,
            timeout=timeout,
            shutdown_timeout=shutdown_timeout,
            retry=retry,
            strict=strict,
            send_ip=send_ip,
        )
        if http_client is not None and not isinstance(http_client, httpx.AsyncClient):
            raise ValidationError(
                f"http_client must be an httpx.AsyncClient, got {type(http_client).__name__}"
            )
        if on_error is not None and not callable(on_error):
            raise ValidationError("on_error must be a function taking a DeliveryFailure")
        if before_send is not None and not callable(before_send):
            raise ValidationError("before_send must be a function taking and returning a dict")
        self._config = config
        self._spool_options = (
            None
            if spool is None
            else SpoolOptions.build(spool, spool_commit_interval, spool_max_bytes, spool_max_age)
        )
        self._spool: Spool | None = None
        self._http = http_client
        self._before_send = before_send
        self._plain = before_send is None  # the calls' fast path needs no hook
        self._problems: set[str] = set()  # bad-call problems already given a log kind
        # What _put compares pending with: 0 refuses everything (disabled, dead, forked).
        self._limit = config.max_queue_size if config.enabled else 0
        self._state = _State.UNOPENED
        self._parked = 0  # calls that parked their entry on disk
        self._token: object = None
        self._queue = Queue()
        self._ledger = Ledger()
        self._reporter = Reporter(on_error)
        self._limiter = Limiter(config.max_concurrent_requests, initial=_INITIAL_LIMIT)
        self._circuit = Circuit(config.retry.backoff, config.retry.max_backoff)
        self._sender: Sender | None = None
        self._runtime: Runtime | None = None

    def __repr__(self) -> str:
        return (
            f"<KoalaClient {self._state.value} base_url={self._config.base_url!r} "
            f"public_api_key={redact(self._config.key)!r}>"
        )

    # Lifecycle

    async def __aenter__(self) -> KoalaClient:
        if self._state is not _State.UNOPENED:
            raise ClientClosedError(
                "a KoalaClient can be entered once; create a new one to send again"
            )
        config = self._config
        if config.enabled:
            loop = _loop.current()
            self._token = loop.token()
            if self._spool_options is not None:
                await self._open_spool(self._spool_options)
            self._sender = Sender(
                config,
                self._ledger,
                self._reporter,
                self._limiter,
                self._circuit,
                backlog=lambda: bool(self._queue.ready),
                on_change=self._circuit_changed,
                loop=loop,
            )
            http = self._http or HttpFactory(config.base_url, config.timeout)
            self._runtime = Runtime(
                self._queue,
                self._ledger,
                self._sender,
                self._limiter,
                self._reporter,
                config.flush_interval,
                http,
                on_death=self._orphaned,
                loop=loop,
            )
            await self._runtime.start()
            if self._spool is not None:
                self._sender.spool = self._spool
                self._runtime._spawn(self._spool.run)
            _open_clients.add(self)
        self._state = _State.OPEN
        return self

    async def _open_spool(self, options: SpoolOptions) -> None:
        """Open the spool file and take over what an earlier run left in it."""
        file, held = await anyio.to_thread.run_sync(SpoolFile.open, options.path)
        self._queue = queue = SpooledQueue(file.last_seq)
        self._spool = Spool(
            options,
            file,
            queue,
            self._ledger,
            self._reporter,
            self._config.max_queue_size,
            overflow=self._overflow,
            loaded=self._spool_loaded,
        )
        if held:
            self._ledger.recover(held)
            self._overflow(True)
            logger.info("%d entries wait in the spool %s: sending them first", held, options.path)

    def _overflow(self, on: bool) -> None:
        """With a spool: park every new entry on disk (on), or let memory take them again.
        A limit of -1 sends every call to :meth:`_full`, which parks it."""
        if on and self._limit > 0:
            self._limit = -1
        elif not on and self._limit == -1:
            self._limit = self._config.max_queue_size

    def _spool_loaded(self, ready: bool) -> None:
        """Entries came back from the spool: they waited already, so send them now."""
        runtime = self._runtime
        if runtime is not None:
            runtime.flush_waiting()

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
        ``shutdown_timeout``); backoff waits are cut so every queued batch gets its tries
        before then. What is still undelivered then is dropped as ``shutdown_timeout`` and
        logged. Call it from the task that entered the client, or just leave the
        ``async with`` block. Closing twice is harmless.

        Raises:
            ClientClosedError: Called from another event loop than the one that opened it.
        """
        if self._state is not _OPEN:
            if self._state in (_State.UNOPENED, _State.ORPHANED):
                await self._abandon()
            return self._result(0, 0)
        self._check_loop()
        self._state = _State.CLOSING
        ledger, runtime, sender = self._ledger, self._runtime, self._sender
        delivered, dropped = ledger.delivered, ledger.dropped_total
        deadline = self._config.shutdown_timeout if timeout is None else float(timeout)
        cancelled: BaseException | None = None
        try:
            if runtime is not None and sender is not None:
                sender.close_by(time.monotonic() + deadline)
                self._queue.eager = True
                runtime.flush_waiting()
                spool = self._spool
                cancelled = await runtime.loop.shielded(
                    runtime.settled if spool is None else lambda: spool.drained(runtime.settled),
                    deadline,
                )

                async def stop() -> None:
                    await runtime.stop()
                    self._drop_leftovers(sender)
                    if spool is not None:
                        await spool.close()
                    await runtime.release()

                cancelled = await runtime.loop.shielded(stop, math.inf) or cancelled
                await runtime.leave()
        finally:
            self._state = _State.CLOSED
            self._limit = 0
            _open_clients.discard(self)
        lost = ledger.dropped["shutdown_timeout"]
        if lost:
            circuit = self._circuit
            why = f": {sender.last_error}" if sender is not None and sender.last_error else ""
            hint = (
                f"; {self._config.shown_url} was not answering"
                if circuit.state is not CLOSED
                else "; raise shutdown_timeout to give delivery more time"
            )
            logger.warning(
                "%d %s not delivered within the shutdown deadline of %gs%s%s",
                lost,
                "entry was" if lost == 1 else "entries were",
                deadline,
                why,
                hint,
            )
        if ledger.spooled and self._spool is not None:
            logger.info(
                "%d entries wait in the spool %s for the next client opened on it",
                ledger.spooled,
                self._spool.options.path,
            )
        if cancelled is not None:
            raise cancelled  # the owner was cancelled while we flushed: tell it, now we are done
        return self._result(delivered, dropped)

    def _result(self, delivered: int, dropped: int) -> FlushResult:
        """What a flush or close achieved, given the counters when it began."""
        ledger = self._ledger
        return FlushResult(
            delivered=ledger.delivered - delivered,
            dropped=ledger.dropped_total - dropped,
            pending=ledger.pending + ledger.spooled,
            spooled=ledger.spooled,
        )

    def _drop_leftovers(self, sender: Sender) -> None:
        """After the deadline: count what is left as dropped (and report it)."""
        for target, batch in list(self._queue.batches()):
            sender.settle(target, batch, "shutdown_timeout")
        self._queue.clear()

    async def _abandon(self) -> None:
        """Close a client that was never opened, or whose event loop has ended."""
        state, self._state, self._limit = self._state, _State.CLOSED, 0
        if state is _State.ORPHANED:
            for _target, batch in list(self._queue.batches()):
                self._ledger.settle(batch, "shutdown_timeout")
            self._queue.clear()

    def _orphaned(self) -> None:
        if self._state in (_OPEN, _State.CLOSING):
            self._state = _State.ORPHANED
            self._limit = 0

    def _check_loop(self) -> None:
        if self._token is not None and _loop.current().token() != self._token:
            raise ClientClosedError(_ORPHANED)

    async def flush(self, timeout: float | None = None) -> FlushResult:
        """Send everything queued now and wait, at most ``timeout`` seconds, for the outcome.

        ``timeout`` defaults to ``shutdown_timeout``; pass ``math.inf`` to wait for as long
        as retries take. Entries queued after the call began are not waited for.

        Raises:
            DeliveryError: The endpoint refused the key, or is not Koala's, for good.
        """
        self._check_open()
        self._check_loop()
        ledger = self._ledger
        delivered, dropped = ledger.delivered, ledger.dropped_total
        runtime = self._runtime
        if runtime is not None:
            done = runtime.loop.event()
            waiter = Waiter(done)
            for _, batch in self._queue.batches():
                waiter.add(batch)
            runtime.flush_waiting()
            if waiter.left:
                await runtime.loop.wait(
                    done, self._config.shutdown_timeout if timeout is None else timeout
                )
        if self._circuit.state is DEAD:
            assert self._sender is not None
            raise DeliveryError(self._sender.last_error or "the endpoint is gone")
        return self._result(delivered, dropped)

    def stats(self) -> Stats:
        """A snapshot of the counters; see :class:`Stats`."""
        ledger = self._ledger
        return Stats(
            accepted=ledger.accepted,
            delivered=ledger.delivered,
            dropped=dict(ledger.dropped),
            pending=ledger.pending + ledger.spooled,
            requests=ledger.requests,
            retries=ledger.retries,
            last_error=None if self._sender is None else self._sender.last_error,
            circuit=self._circuit.state,
            concurrency=self._limiter.limit,
            spooled=ledger.spooled,
            recovered=ledger.recovered,
            capacity=self._config.max_queue_size,
            in_flight=0 if self._sender is None else self._sender.in_flight,
            request_seconds=ledger.request_seconds,
        )

    # The calls
    #
    # Each call has a fast path (no ip, no context, no request context, no before_send) that
    # does what it did before those existed, and a slower one that resolves them. A bad call
    # is caught here: dropped and counted, or raised with strict=True.

    async def track(
        self,
        event: str,
        *,
        profile_id: str | None = None,
        email: str | None = None,
        properties: Mapping[str, Any] | None = None,
        message_id: str | None = None,
        sent_at: datetime | str | None = None,
        ip: str | None = None,
        context: Mapping[str, Any] | None = None,
    ) -> str | None:
        """Record that a person did something, e.g. ``"Created Account"``.

        Args:
            event: What they did.
            profile_id: The visitor's ``ko_id`` (a UUID). With ``email`` too, entries are
                queued by profile_id and sent with both. Inside a request that the ``ko_id``
                middleware handles, a call with neither id is about that request's visitor.
            email: The person's e-mail address; used alone when there is no profile_id.
            properties: JSON values (str, int, float, bool, None, lists and dicts of them).
            message_id: Koala drops repeats of one id; default: a new UUID v4.
            sent_at: When it happened (datetime or ISO 8601); default: now.
            ip: The visitor's IP address, sent as the request's top-level ``ip``; default:
                the request context's.
            context: Segment-style context (``userAgent``, ``page``, ``locale``,
                ``campaign``...), sent in the entry with ``library`` added; merged over the
                request context's.

        Returns:
            The entry's ``message_id``; None if the call was dropped (bad input, a closed
            client, or ``before_send`` said so).

        Raises:
            ValidationError: Bad input, with ``strict=True``; the message says what to fix.
            ClientClosedError: The client is not open, with ``strict=True``.
        """
        entry: Entry
        try:
            if self._state is not _OPEN:
                self._check_open()
            if self._plain and ip is None and context is None and _current() is None:
                who = _validate.person(profile_id, email)
                entry = track_entry(event, properties, message_id, sent_at)
                waiting = self._put(EVENTS, entry, who)
            else:
                who, address, extra = self._person(profile_id, email, ip, context)
                entry = track_entry(event, properties, message_id, sent_at, extra)
                done = self._put_slow(EVENTS, entry, who, address)
                if done is None:
                    return None
                entry, waiting = done
            if waiting is not None:
                await waiting
        except (ValidationError, ClientClosedError) as exc:
            if self._config.strict:
                raise
            self._bad_call(exc, "profile", profile_id=profile_id, email=email)
            return None
        return entry.message_id

    async def identify(
        self,
        *,
        profile_id: str | None = None,
        email: str | None = None,
        traits: Mapping[str, Any] | None = None,
        message_id: str | None = None,
        sent_at: datetime | str | None = None,
        ip: str | None = None,
        context: Mapping[str, Any] | None = None,
    ) -> str | None:
        """Tell Koala who a visitor is and what they are like.

        With ids alone (no traits) it still records an identify, so it shows in Koala's
        debugger; an email here ties the ``ko_id`` visitor to that person: pass the
        profile_id too (a request's visitor is not assumed when an email is given).
        Arguments as for :meth:`track`; ``traits`` take the same values as properties.

        Returns:
            The entry's ``message_id``, or None if the call was dropped.
        """
        entry: Entry
        try:
            if self._state is not _OPEN:
                self._check_open()
            if self._plain and ip is None and context is None and _current() is None:
                who = _validate.person(profile_id, email)
                entry = identify_entry(_validate.fields(traits, "traits"), message_id, sent_at)
                waiting = self._put(IDENTIFIES, entry, who)
            else:
                who, address, extra = self._person(profile_id, email, ip, context)
                entry = identify_entry(
                    _validate.fields(traits, "traits"), message_id, sent_at, extra
                )
                done = self._put_slow(IDENTIFIES, entry, who, address)
                if done is None:
                    return None
                entry, waiting = done
            if waiting is not None:
                await waiting
        except (ValidationError, ClientClosedError) as exc:
            if self._config.strict:
                raise
            self._bad_call(exc, "profile", profile_id=profile_id, email=email)
            return None
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
        ip: str | None = None,
        context: Mapping[str, Any] | None = None,
    ) -> str | None:
        """Record a page view; put ``url``, ``referrer`` and ``title`` in ``properties``.

        Inside a request the ``ko_id`` middleware handles, ``await koala.page(name="Home")``
        is enough: the visitor, their ip and the page come from the request context.

        Returns:
            The entry's ``message_id``, or None if the call was dropped.
        """
        entry: Entry
        try:
            if self._state is not _OPEN:
                self._check_open()
            if self._plain and ip is None and context is None and _current() is None:
                who = _validate.person(profile_id, email)
                entry = page_entry(name, properties, message_id, sent_at)
                waiting = self._put(PAGE_VIEWS, entry, who)
            else:
                who, address, extra = self._person(profile_id, email, ip, context)
                entry = page_entry(name, properties, message_id, sent_at, extra)
                done = self._put_slow(PAGE_VIEWS, entry, who, address)
                if done is None:
                    return None
                entry, waiting = done
            if waiting is not None:
                await waiting
        except (ValidationError, ClientClosedError) as exc:
            if self._config.strict:
                raise
            self._bad_call(exc, "profile", profile_id=profile_id, email=email)
            return None
        return entry.message_id

    async def account_identify(
        self,
        *,
        domain: str | None = None,
        account_id: str | None = None,
        traits: Mapping[str, Any] | None = None,
        group_id: str | None = None,
        message_id: str | None = None,
        sent_at: datetime | str | None = None,
        ip: str | None = None,
        context: Mapping[str, Any] | None = None,
    ) -> str | None:
        """Set traits on a company account, keyed by ``domain`` (preferred) or ``account_id``.

        ``group_id`` tells apart tenants that share a domain (say, a customer's development
        and marketing workspaces); it is sent inside the traits, where Koala reads it.
        Account requests have no top-level ``ip``: ``ip`` is sent as ``context.ip``. The
        request context is not used: an account is not the request's visitor.

        Returns:
            The entry's ``message_id``, or None if the call was dropped.
        """
        entry: Entry
        try:
            if self._state is not _OPEN:
                self._check_open()
            who = _validate.account(domain, account_id)
            if self._plain and ip is None and context is None:
                entry = identify_entry(account_traits(traits, group_id), message_id, sent_at)
                waiting = self._put(IDENTIFIES, entry, who)
            else:
                _, extra = self._context(None, ip, context, top_level=False)
                entry = identify_entry(account_traits(traits, group_id), message_id, sent_at, extra)
                done = self._put_slow(IDENTIFIES, entry, who, None)
                if done is None:
                    return None
                entry, waiting = done
            if waiting is not None:
                await waiting
        except (ValidationError, ClientClosedError) as exc:
            if self._config.strict:
                raise
            self._bad_call(exc, "account", domain=domain, account_id=account_id)
            return None
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
        ip: str | None = None,
        context: Mapping[str, Any] | None = None,
    ) -> str | None:
        """Record something a company account did, e.g. ``"Workspace Created"``.

        ``ip`` and ``context`` as for :meth:`account_identify`.

        Returns:
            The entry's ``message_id``, or None if the call was dropped.
        """
        entry: Entry
        try:
            if self._state is not _OPEN:
                self._check_open()
            who = _validate.account(domain, account_id)
            if self._plain and ip is None and context is None:
                entry = track_entry(event, properties, message_id, sent_at)
                waiting = self._put(EVENTS, entry, who)
            else:
                _, extra = self._context(None, ip, context, top_level=False)
                entry = track_entry(event, properties, message_id, sent_at, extra)
                done = self._put_slow(EVENTS, entry, who, None)
                if done is None:
                    return None
                entry, waiting = done
            if waiting is not None:
                await waiting
        except (ValidationError, ClientClosedError) as exc:
            if self._config.strict:
                raise
            self._bad_call(exc, "account", domain=domain, account_id=account_id)
            return None
        return entry.message_id

    # Request context, before_send and bad calls: off the fast path

    def _person(
        self, profile_id: str | None, email: str | None, ip: object, context: object
    ) -> tuple[Who, str | None, dict[str, Any] | None]:
        """A person call's target, top-level ip and context, from its arguments and the
        request context. The request's visitor is assumed only when the call names nobody;
        its ip and context go only with calls about that visitor, so an admin's request that
        tracks another person by email never lends that person the admin's ip."""
        request = _current()
        if request is not None and profile_id is None and email is None:
            profile_id = request.profile_id
        who = _validate.person(profile_id, email)
        if request is not None and request.profile_id not in (None, who[1]):
            request = None
        address, extra = self._context(request, ip, context, top_level=True)
        return who, address, extra

    def _context(
        self, request: RequestContext | None, ip: object, context: object, *, top_level: bool
    ) -> tuple[str | None, dict[str, Any] | None]:
        """The ip sent top-level (persons only) and the entry's context, ``library`` added."""
        if ip is None and context is None and self._config.send_ip:
            # The common case in a web app: the request's context, checked and built once
            # per request, sent as it is (it is encoded before anything could change it).
            if request is None or not request.context:
                return None, None
            return request.ip, request.context
        extra: dict[str, Any] | None = None
        if context is not None:
            given = _validate.fields(context, "context")
            extra = {**request.context, **given} if request is not None else dict(given)
        elif request is not None and request.context:
            extra = dict(request.context)
        address: str | None = None
        if ip is not None:
            address = normalize_ip(ip)
            if address is None:
                raise ValidationError(
                    f"ip must be an IPv4 or IPv6 address such as '203.0.113.7', got {ip!r}"
                )
            if extra is not None or not top_level:
                extra = {**(extra or {}), "ip": address}
        elif extra is not None and "ip" in extra:
            address = normalize_ip(extra["ip"])
            if address is None:
                raise ValidationError(
                    f"context['ip'] must be an IPv4 or IPv6 address such as '203.0.113.7', "
                    f"got {extra['ip']!r}"
                )
            extra["ip"] = address
        if not self._config.send_ip:
            address = None
            if extra is not None:
                extra.pop("ip", None)
        if not extra:
            return (address if top_level else None), None
        extra.setdefault("library", LIBRARY)  # a wrapper (say, a sync client) may name itself
        return (address if top_level else None), extra

    def _put_slow(
        self, kind: int, entry: Entry, who: Who, ip: str | None
    ) -> tuple[Entry, Awaitable[None] | None] | None:
        """:meth:`_put` after ``before_send``; None if it dropped the entry."""
        if self._before_send is not None:
            changed = self._filter(entry, who, ip)
            if changed is None:
                self._ledger.refuse("filtered")
                return None
            entry, who, ip = changed
        return entry, self._put(kind, entry, who, ip)

    def _filter(
        self, entry: Entry, who: Who, ip: str | None
    ) -> tuple[Entry, Who, str | None] | None:
        """Run ``before_send`` on a call's message, and build what it returns.

        The message is a fresh copy (decoded from the entry's JSON): the hook may change it
        in place. What it returns is checked as the call's arguments are.
        """
        assert self._before_send is not None
        field, key, secondary_name, secondary = who
        message: dict[str, Any] = msgspec.json.decode(self._encode(entry))
        message.update(profile_id=None, email=None, domain=None, account_id=None, ip=ip)
        message[field] = key
        if secondary is not None:
            message[secondary_name] = secondary
        try:
            result = self._before_send(message)
        except Exception as exc:
            self._reporter.warn(
                "before_send", f"before_send raised {exc!r}; the message was sent unchanged"
            )
            return entry, who, ip
        if result is None:
            return None
        if not isinstance(result, dict):
            self._reporter.warn(
                "before_send",
                f"before_send returned a {type(result).__name__}, not a dict or None; "
                "the message was sent unchanged",
            )
            return entry, who, ip
        get = result.get
        extra = get("context")
        extra = None if extra is None else dict(_validate.fields(extra, "context")) or None
        if field in ("domain", "account_id"):
            who, ip = _validate.account(get("domain"), get("account_id")), None
        else:
            who = _validate.person(get("profile_id"), get("email"))
            ip = None if get("ip") is None else normalize_ip(get("ip"))
            if ip is None and get("ip") is not None:
                raise ValidationError(f"before_send returned ip {get('ip')!r}, not an IP address")
        if not self._config.send_ip:
            ip = None
            if extra is not None:
                extra.pop("ip", None)
        ids = get("message_id"), get("sent_at")
        if type(entry) is Track:
            event: Any = get("event")  # checked by track_entry, like a call's
            return track_entry(event, get("properties"), *ids, extra), who, ip
        if type(entry) is Page:
            return page_entry(get("name"), get("properties"), *ids, extra), who, ip
        return identify_entry(_validate.fields(get("traits"), "traits"), *ids, extra), who, ip

    def _bad_call(self, exc: ValidationError | ClientClosedError, kind: str, **ids: object) -> None:
        """Drop a call with bad input, or on a client that is not open (without strict):
        counted as ``invalid`` or ``closed``, logged (each problem once a minute at most)
        and handed to ``on_error``."""
        reason: DropReason = "closed" if isinstance(exc, ClientClosedError) else "invalid"
        self._ledger.refuse(reason)
        message = str(exc)
        # One log line per problem, not per bad value; a bounded number of problems.
        problem = f"{reason}: {message.split(', got ', 1)[0]}"
        if problem not in self._problems:
            if len(self._problems) >= _MAX_PROBLEMS:
                problem = reason
            else:
                self._problems.add(problem)
        self._reporter.warn(
            problem, f"dropped a call ({reason}): {message}; strict=True raises this instead"
        )
        self._reporter.refused(
            DeliveryFailure(
                reason=reason,
                kind="account" if kind == "account" else "profile",
                ids={k: v for k, v in ids.items() if isinstance(v, str)},
                entries=[],
                exception=exc,
            )
        )

    # The queue

    def _check_open(self) -> None:
        state = self._state
        if state is _State.OPEN or (state is _State.UNOPENED and not self._config.enabled):
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
        if state is _State.ORPHANED:
            raise ClientClosedError(_ORPHANED)
        raise ClientClosedError("the KoalaClient is closed; create a new one to send again")

    def _put(
        self, kind: int, entry: Entry, who: Who, ip: str | None = None
    ) -> Awaitable[None] | None:
        """Encode an entry and queue it for the target ``who`` names (and ``ip``).

        Returns None, or something the call must await: a yield to the event loop (a loop
        of calls that has not let it run, see :meth:`Runtime.added`), or a wait for room in
        a full queue.
        """
        try:
            raw = encode(entry)
        except (TypeError, ValueError, OverflowError) as exc:
            raise _validate.unencodable(entry, exc) from None
        ledger = self._ledger
        if ledger.pending >= self._limit:  # full, disabled, dead or forked: one compare
            return self._full(kind, raw, who, ip)
        ledger.accept()  # _enqueue(), inline: a method call here costs every call ~0.05 µs
        waiting = self._queue.add(kind, raw, who, ip)
        if waiting % FILE_EVERY and waiting != 1:  # nothing for the filer to hear of
            return None
        runtime = self._runtime
        # The 128th unfiled entry: the loop had no turn since the 64th, so let it run.
        return runtime.loop.checkpoint() if runtime.added(waiting) else None  # type: ignore[union-attr]

    def _put_encoded(
        self, kind: int, raw: bytes, who: Who, ip: str | None = None
    ) -> Coroutine[Any, Any, None] | None:
        """Queue an entry encoded elsewhere: :meth:`_put` without encoding or pacing.

        The one door :class:`~koala_async.KoalaSyncClient` uses: it validates and encodes in
        its caller's thread, and its engine thread (this client's event loop) queues here.
        Returns None, or a wait for room that the caller must await (the queue is full).
        """
        if self._ledger.pending >= self._limit:
            return self._full(kind, raw, who, ip)
        self._enqueue(kind, raw, who, ip)
        return None

    def _enqueue(self, kind: int, raw: bytes, who: Who, ip: str | None) -> None:
        """Count an entry accepted and queue it, to be filed at the loop's next turn.
        (:meth:`_put` does the same inline: it is the hot path.)"""
        self._ledger.accept()
        waiting = self._queue.add(kind, raw, who, ip)
        if not waiting % FILE_EVERY or waiting == 1:
            self._runtime.added(waiting)  # type: ignore[union-attr]

    def _encode(self, entry: Entry) -> bytes:
        try:
            return encode(entry)
        except (TypeError, ValueError, OverflowError) as exc:
            raise _validate.unencodable(entry, exc) from None

    def _full(
        self, kind: int, raw: bytes, who: Who, ip: str | None
    ) -> Coroutine[Any, Any, None] | None:
        """The queue is full (or the client takes nothing): drop, raise, or wait for room."""
        config = self._config
        if not config.enabled:
            return None
        if self._state is not _OPEN:
            self._check_open()
        if self._circuit.state is DEAD and self._spool is None:
            assert self._circuit.verdict is not None
            self._refuse(_DROPS[self._circuit.verdict], raw, who, ip)
            return None
        if self._spool is not None:  # memory is full, older entries wait on disk, or it is dead
            runtime = self._runtime
            assert runtime is not None
            runtime.file()  # the inbox's entries are older: they take their places first
            self._spool.park(kind, raw, who, ip)
            self._overflow(True)
            self._parked = parked = self._parked + 1
            # The writer takes parked entries at its own pace: a loop that only parks must
            # yield now and then, as a request handler does anyway.
            return None if parked % FILE_EVERY else runtime.loop.checkpoint()
        if config.on_full == "raise":
            raise QueueFullError(
                f"{self._ledger.pending} entries are queued, the most max_queue_size allows; "
                "raise max_queue_size, or use on_full='pace' to wait for room"
            )
        if config.on_full == "block" or (
            config.on_full == "pace" and self._circuit.state is CLOSED
        ):
            return self._wait_then_put(kind, raw, who, ip)
        self._refuse("queue_full", raw, who, ip)
        return None

    async def _wait_then_put(self, kind: int, raw: bytes, who: Who, ip: str | None) -> None:
        runtime = self._runtime
        assert runtime is not None
        runtime.flush_waiting()  # send partial batches now: room comes sooner
        limit = self._config.max_queue_size
        while self._ledger.pending >= self._limit:
            if self._limit == 0 or self._circuit.state is DEAD:
                if self._state is not _OPEN:
                    self._check_open()
                assert self._circuit.verdict is not None
                self._refuse(_DROPS[self._circuit.verdict], raw, who, ip)
                return
            if self._config.on_full == "pace" and self._circuit.state is not CLOSED:
                self._refuse("queue_full", raw, who, ip)  # the endpoint is down: never wait
                return
            await runtime.room(limit - max(1, limit // 10))
            if self._state is not _OPEN:
                self._check_open()
        self._enqueue(kind, raw, who, ip)

    def _refuse(self, reason: DropReason, raw: bytes, who: Who, ip: str | None) -> None:
        """Drop an entry at the call: counted, logged (rate-limited), given to on_error."""
        self._ledger.refuse(reason)
        if reason == "queue_full":
            why = (
                f"{self._config.shown_url} is not answering"
                if self._circuit.state is not CLOSED
                else f"max_queue_size={self._config.max_queue_size} entries are waiting"
            )
            self._reporter.warn(
                reason,
                f"dropping entries (queue_full): {why}; raise max_queue_size, or use "
                "on_full='block' to wait for room whatever happens",
            )
        self._reporter.dropped_entry(reason, raw, who, ip)

    def _circuit_changed(self) -> None:
        """The endpoint went down, came back, or is gone: wake what waits on that."""
        runtime = self._runtime
        assert runtime is not None
        if self._circuit.state is DEAD:
            if self._spool is not None:
                self._spool.paused = True  # later calls wait on disk, for a fixed key or URL
            self._limit = 0  # every later call is dropped at once, with the reason
            runtime.flush_waiting()  # and what is queued, rather than at the next tick
        runtime.wake_room()


_ORPHANED = (
    "this KoalaClient's event loop has ended (it was opened under another asyncio.run() or "
    "anyio.run()); open the client inside the event loop that uses it, e.g. "
    "`async with KoalaClient(...)` in your main coroutine or your app's lifespan"
)
