"""KoalaSyncClient: the same calls for threads, WSGI apps, Celery workers and scripts.

A face, as ``KoalaClient`` is: a call goes through the same :class:`~._intake.Intake` in
the caller's thread and is handed, as it is, to this process's delivery engine
(:mod:`._thread_engine`: the async client's engine on an event loop in a daemon thread).
"""

from __future__ import annotations

from collections.abc import Mapping
from datetime import datetime
from types import TracebackType
from typing import TYPE_CHECKING, Any

from . import _thread_engine
from ._admission import State
from ._client import build
from ._exceptions import ClientClosedError, ValidationError
from ._redact import redact
from ._thread_engine import CLOSED, Engines

if TYPE_CHECKING:
    from typing_extensions import Unpack

    from ._intake import Built, Refusal
    from ._options import ClientOptions
    from ._stats import FlushResult, Stats

__all__ = ["KoalaSyncClient"]


class KoalaSyncClient:
    """:class:`KoalaClient` for code without an event loop: Django, Flask, Celery, scripts.

    Make one per process, at import time if you like (also before a server forks)::

        koala = KoalaSyncClient(user_agent="acme-app/2.3.0")

        def signup(request):
            koala.track("Signed Up", email=request.user.email, properties={"plan": "pro"})

    The same options, calls, return values, errors and :meth:`stats` as ``KoalaClient``:
    a call with bad input returns None and is dropped as ``invalid`` (``strict=True``
    raises); ``before_send`` runs in the caller's thread; inside a request that the WSGI,
    Django or Flask integration handles, calls that name nobody are about its visitor, with
    their ip, user agent and page. Calls validate and encode in your thread (microseconds)
    and never wait for the network; a daemon thread, started on the first call in each
    process, delivers. At interpreter exit the client is closed within
    ``shutdown_timeout``; :meth:`flush` and :meth:`close` block at most their ``timeout``.
    ``on_error`` runs on the delivery thread. Any number of threads may share one client.

    Raises:
        ValidationError: An option is wrong; the message says how to fix it.
    """

    def __init__(self, public_api_key: str | None = None, **options: Unpack[ClientOptions]) -> None:
        # Built now to check the options (same errors as KoalaClient); opened on first use.
        self._config, self._intake, core = build(public_api_key, dict(options), "KoalaSyncClient")
        self._strict = self._config.strict
        self._engines = Engines(self._config, core, public_api_key, dict(options))

    def __repr__(self) -> str:
        state = "closed" if self._engines.closed else "open"
        return (
            f"<KoalaSyncClient {state} base_url={self._config.base_url!r} "
            f"public_api_key={redact(self._config.key)!r}>"
        )

    def __enter__(self) -> KoalaSyncClient:
        if self._engines.closed:
            raise ClientClosedError(CLOSED)
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        traceback: TracebackType | None,
    ) -> None:
        self.close()

    def _hand(self, built: Built | None) -> str | None:
        """Hand what the intake built to the engine: the hot path, no waiting. Returns the
        entry's message id (None: ``before_send`` dropped it)."""
        if built is None:
            self._engines.count(lambda core: core.ledger.refuse("filtered"))
            return None
        message_id = built[4]
        engine = self._engines.engine
        if engine is None or engine.pid != _thread_engine.pid:
            engine = self._engines.start()
            if engine is None:
                return message_id  # disabled: validated, and that is all
        admission = engine.core.admission
        if engine.ledger.pending + len(engine.inbox) >= admission.limit:  # rare
            starting = admission.state is State.UNOPENED  # its loop is not up yet
            # While it starts, the inbox holds the calls until the loop opens the engine.
            if not starting or len(engine.inbox) >= self._config.max_queue_size:
                if not (starting or admission.taking):
                    raise ClientClosedError(CLOSED)  # closing: never wait for the drain
                if not engine.put_waiting(built):  # full, dead, spooling
                    return None  # dropped at the call (a dead endpoint, a full queue): counted
                return message_id
        engine.inbox.append(built)
        if not engine.woken:
            engine.woken = True
            engine.call(engine.wake.set)  # False: closed under us; counted at the close
        return message_id

    # Lifecycle

    def flush(self, timeout: float | None = None) -> FlushResult:
        """Send everything queued now and wait, at most ``timeout`` seconds, for the outcome.

        ``timeout`` defaults to ``shutdown_timeout``; pass ``math.inf`` to wait for as long
        as retries take. Called from the delivery thread (in ``on_error``) it cannot wait on
        itself: it makes everything due and returns at once.

        Raises:
            DeliveryError: The endpoint refused the key, or is not Koala's, for good.
            ClientClosedError: The client is closed.
        """
        return self._engines.flush(timeout)

    def close(self, timeout: float | None = None) -> FlushResult:
        """Stop taking calls, deliver what is queued within ``timeout``, stop the thread.

        ``timeout`` defaults to ``shutdown_timeout``; what is undelivered then is dropped
        as ``shutdown_timeout`` and logged, as ``KoalaClient.aclose`` does. Blocks at most
        ``timeout`` seconds; closing twice is harmless. Also done at interpreter exit.
        """
        return self._engines.close(timeout)

    @property
    def spool_path(self) -> str | None:
        """The file this client's spool keeps entries in; None without a spool. With
        ``spool_dir``: the directory until the client opens, then the file it took."""
        return self._engines.spool_path

    def stats(self) -> Stats:
        """A snapshot of the counters; see :class:`Stats`. Entries handed over by calls and
        not yet queued by the delivery thread count as pending."""
        return self._engines.stats()

    # The calls: the intake builds (in the caller's thread), the engine thread queues. A
    # bad call is dropped and counted, or raised with strict=True.

    def track(
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
        """Record that a person did something; see :meth:`KoalaClient.track`.

        Returns:
            The entry's ``message_id``; None if the call was dropped: bad input, a closed
            client, ``before_send`` said so, or the entry could not be queued (a full queue
            that ``on_full`` drops from, an endpoint known to be gone).

        Raises:
            ValidationError: Bad input, with ``strict=True``; the message says what to fix.
            ClientClosedError: The client is closed, with ``strict=True``.
        """
        try:
            return self._hand(
                self._intake.track(
                    event, profile_id, email, properties, message_id, sent_at, ip, context
                )
            )
        except (ValidationError, ClientClosedError) as exc:
            self._refused(exc, False, profile_id, email)
            return None

    def identify(
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
        """Tell Koala who a visitor is; see :meth:`KoalaClient.identify`.

        Returns:
            The entry's ``message_id``, or None if the call was dropped.
        """
        try:
            return self._hand(
                self._intake.identify(profile_id, email, traits, message_id, sent_at, ip, context)
            )
        except (ValidationError, ClientClosedError) as exc:
            self._refused(exc, False, profile_id, email)
            return None

    def page(
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
        """Record a page view; see :meth:`KoalaClient.page`. In a request the ``ko_id``
        middleware handles, ``koala.page(name="Home")`` is enough.

        Returns:
            The entry's ``message_id``, or None if the call was dropped.
        """
        try:
            return self._hand(
                self._intake.page(
                    profile_id, email, name, properties, message_id, sent_at, ip, context
                )
            )
        except (ValidationError, ClientClosedError) as exc:
            self._refused(exc, False, profile_id, email)
            return None

    def account_identify(
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
        """Set traits on a company account; see :meth:`KoalaClient.account_identify`.

        Returns:
            The entry's ``message_id``, or None if the call was dropped.
        """
        try:
            return self._hand(
                self._intake.account_identify(
                    domain, account_id, traits, group_id, message_id, sent_at, ip, context
                )
            )
        except (ValidationError, ClientClosedError) as exc:
            self._refused(exc, True, domain, account_id)
            return None

    def account_track(
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
        """Record something a company account did; see :meth:`KoalaClient.account_track`.

        Returns:
            The entry's ``message_id``, or None if the call was dropped.
        """
        try:
            return self._hand(
                self._intake.account_track(
                    event, domain, account_id, properties, message_id, sent_at, ip, context
                )
            )
        except (ValidationError, ClientClosedError) as exc:
            self._refused(exc, True, domain, account_id)
            return None

    # Off the fast path: drops counted where the counters live

    def _refused(
        self,
        exc: ValidationError | ClientClosedError,
        account: bool,
        first: str | None,
        second: str | None,
    ) -> None:
        """A bad call, or one on a closed client: raised with ``strict=True``, else dropped
        as ``invalid`` or ``closed``, logged and handed to ``on_error`` by the engine."""
        if self._strict:
            raise exc
        refusal: Refusal = self._intake.refusal(exc, account, first, second)
        self._engines.count(lambda core: core.refuse_call(refusal))
