"""KoalaClient: the calls users make in an event loop, as a thin face over one engine.

A call goes through the intake (:mod:`._intake`: validation, request context, ``before_send``,
encoding) and offers the item it built to the engine (:mod:`._engine`), which owns the queue,
the counters and the delivery machinery. That is all the hot path does: no task, no I/O,
O(1) whatever the queue holds. A loop of calls that finds 128 entries unfiled has not let
the loop run, so it yields once: ``await koala.track(...)`` in a bare loop still lets the
senders run. :class:`~koala_async.KoalaSyncClient` is the same intake and engine, driven from
threads.
"""

from __future__ import annotations

from collections.abc import Mapping
from datetime import datetime
from types import TracebackType
from typing import TYPE_CHECKING, Any

from ._config import Config
from ._engine import Engine
from ._exceptions import ClientClosedError, ValidationError
from ._intake import BeforeSend, Intake
from ._options import resolve
from ._redact import redact
from ._stats import FlushResult, Stats

if TYPE_CHECKING:
    from typing_extensions import Unpack

    from ._options import ClientOptions
    from ._spool import SpoolOptions

__all__ = ["BeforeSend", "KoalaClient", "build"]


def build(
    public_api_key: str | None, options: dict[str, Any], face: str
) -> tuple[Config, Intake, Engine]:
    """Check a client's options and build its intake and engine (both faces do this)."""
    given = resolve(options, face)
    spool, spool_dir = given.pop("spool"), given.pop("spool_dir")
    spool_options: SpoolOptions | None = None
    if spool is not None or spool_dir is not None:
        from ._spool import SpoolOptions  # and sqlite3: only for a client with a spool

        spool_options = SpoolOptions.build(
            spool,
            given.pop("spool_commit_interval"),
            given.pop("spool_max_bytes"),
            given.pop("spool_max_age"),
            spool_dir,
        )
    for name in ("spool_commit_interval", "spool_max_bytes", "spool_max_age"):
        given.pop(name, None)
    http_client, on_error, before_send = (
        given.pop("http_client"),
        given.pop("on_error"),
        given.pop("before_send"),
    )
    config = Config.build(public_api_key, **given)
    engine = Engine(
        config, http_client=http_client, on_error=on_error, spool=spool_options, face=face
    )
    return config, Intake(config, before_send, engine.reporter.warn), engine


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
            50 ms at most, then drops the entry, and drops it at once while the endpoint is
            down; ``"block"`` always waits; ``"drop"`` never waits; ``"raise"`` raises
            :class:`QueueFullError`. Drops are counted as ``queue_full`` and reported.
        max_concurrent_requests: The most requests in flight at once (16 per person at
            most, under the ordering rule); the client adapts how many it uses to the round
            trip and the server.
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
        spool_dir: A directory that many workers share (one configuration for all): each
            process takes a free spool file in it and, at open, adopts the files of processes
            that are gone. Instead of ``spool``.
        spool_commit_interval: Seconds between the spool's group commits: what a kill -9
            may lose.
        spool_max_bytes: The spool's size cap; past it the oldest entries are dropped
            (``spool_full``).
        spool_max_age: Seconds an entry may wait in the spool; older ones are dropped
            (``expired``).

    Every option is keyword-only; both clients take the same ones (:class:`ClientOptions`).

    Raises:
        ValidationError: An option is wrong; the message says how to fix it.
        TypeError: An option no client takes (a misspelt name: the message names the closest).
    """

    def __init__(self, public_api_key: str | None = None, **options: Unpack[ClientOptions]) -> None:
        self._config, self._intake, self._engine = build(
            public_api_key, dict(options), "KoalaClient"
        )
        self._offer = self._engine.offer  # bound once: the calls' hot path

    def __repr__(self) -> str:
        return (
            f"<KoalaClient {self._engine.state.value} base_url={self._config.base_url!r} "
            f"public_api_key={redact(self._config.key)!r}>"
        )

    # Lifecycle

    async def __aenter__(self) -> KoalaClient:
        await self._engine.open()
        return self

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
        return await self._engine.close(timeout)

    async def flush(self, timeout: float | None = None) -> FlushResult:
        """Send everything queued now and wait, at most ``timeout`` seconds, for the outcome.

        ``timeout`` defaults to ``shutdown_timeout``; pass ``math.inf`` to wait for as long
        as retries take. Entries queued after the call began are not waited for.

        Raises:
            DeliveryError: The endpoint refused the key, or is not Koala's, for good.
        """
        return await self._engine.flush(timeout)

    def stats(self) -> Stats:
        """A snapshot of the counters; see :class:`Stats`."""
        return self._engine.stats()

    @property
    def spool_path(self) -> str | None:
        """The file this client's spool keeps entries in; None without a spool. With
        ``spool_dir``: the directory until the client opens, then the file it took."""
        return self._engine.spool_path

    # The calls: the intake builds, the engine queues. A bad call is dropped and counted,
    # or raised with strict=True.

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
            The entry's ``message_id``; None if the call was dropped: bad input, a closed
            client, ``before_send`` said so, or the entry could not be queued (a full queue
            that ``on_full`` drops from, an endpoint known to be gone).

        Raises:
            ValidationError: Bad input, with ``strict=True``; the message says what to fix.
            ClientClosedError: The client is not open, with ``strict=True``.
        """
        try:
            built = self._intake.track(
                event, profile_id, email, properties, message_id, sent_at, ip, context
            )
            waiting = self._offer(built)
        except (ValidationError, ClientClosedError) as exc:
            self._refused(exc, False, profile_id, email)
            return None
        if waiting is not None and await waiting is False:
            return None  # dropped at the call (a dead endpoint, a full queue): counted
        return None if built is None else built[4]

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
        try:
            built = self._intake.identify(
                profile_id, email, traits, message_id, sent_at, ip, context
            )
            waiting = self._offer(built)
        except (ValidationError, ClientClosedError) as exc:
            self._refused(exc, False, profile_id, email)
            return None
        if waiting is not None and await waiting is False:
            return None  # dropped at the call (a dead endpoint, a full queue): counted
        return None if built is None else built[4]

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
        try:
            built = self._intake.page(
                profile_id, email, name, properties, message_id, sent_at, ip, context
            )
            waiting = self._offer(built)
        except (ValidationError, ClientClosedError) as exc:
            self._refused(exc, False, profile_id, email)
            return None
        if waiting is not None and await waiting is False:
            return None  # dropped at the call (a dead endpoint, a full queue): counted
        return None if built is None else built[4]

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
        try:
            built = self._intake.account_identify(
                domain, account_id, traits, group_id, message_id, sent_at, ip, context
            )
            waiting = self._offer(built)
        except (ValidationError, ClientClosedError) as exc:
            self._refused(exc, True, domain, account_id)
            return None
        if waiting is not None and await waiting is False:
            return None  # dropped at the call (a dead endpoint, a full queue): counted
        return None if built is None else built[4]

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
        try:
            built = self._intake.account_track(
                event, domain, account_id, properties, message_id, sent_at, ip, context
            )
            waiting = self._offer(built)
        except (ValidationError, ClientClosedError) as exc:
            self._refused(exc, True, domain, account_id)
            return None
        if waiting is not None and await waiting is False:
            return None  # dropped at the call (a dead endpoint, a full queue): counted
        return None if built is None else built[4]

    def _refused(
        self,
        exc: ValidationError | ClientClosedError,
        account: bool,
        first: str | None,
        second: str | None,
    ) -> None:
        """A bad call, or one on a client that is not open: raised with ``strict=True``,
        else dropped, counted, logged and given to ``on_error``."""
        if self._config.strict:
            raise exc
        self._engine.refuse_call(self._intake.refusal(exc, account, first, second))
