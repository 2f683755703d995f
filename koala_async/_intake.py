"""The intake: a call's arguments become one encoded item, or a counted drop.

Both clients (and so the CLI, which calls them) go through one :class:`Intake`: the request
context, ``ip`` and ``context``, ``before_send``, validation, encoding and the bad-call policy
live here and nowhere else. It does no I/O and touches no counter: what it builds is offered
to an engine by the client's face, and what it refuses is described (:meth:`Intake.refusal`)
for the engine to count and report.

Each call has a fast path (no ip, no context, no request context, no before_send) that does
only what it did before those existed, and a slower one that resolves them.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from dataclasses import dataclass
from datetime import datetime
from typing import Any

import msgspec

from . import _validate
from ._calls import (
    EVENTS,
    IDENTIFIES,
    PAGE_VIEWS,
    account_traits,
    identify_entry,
    page_entry,
    track_entry,
)
from ._config import Config
from ._context import LIBRARY, RequestContext, normalize_ip
from ._context import current as _current
from ._exceptions import ClientClosedError, ValidationError
from ._queue import Item
from ._stats import DeliveryFailure, DropReason
from ._validate import Who
from ._wire import Entry, Page, Track, encode

__all__ = ["BeforeSend", "Built", "Intake", "Refusal"]

BeforeSend = Callable[[dict[str, Any]], "dict[str, Any] | None"]
"""``before_send``: takes a call's message as a dict, returns it (changed) or None to drop it."""

Built = Item
"""An accepted call: ``(array, encoded entry, target, top-level ip, message_id)``, the queue's
item as it is."""

_MAX_PROBLEMS = 64  # distinct bad-call problems logged apart; beyond, one kind per reason


@dataclass(frozen=True)
class Refusal:
    """A call dropped before its entry was queued: what to count, log and report."""

    reason: DropReason
    problem: str  # the log's rate-limit key: one line per problem, not per bad value
    message: str
    failure: DeliveryFailure


class Intake:
    """Builds the five calls' entries for one client; pure apart from ``before_send``."""

    def __init__(
        self, config: Config, before_send: BeforeSend | None, warn: Callable[[str, str], None]
    ) -> None:
        if before_send is not None and not callable(before_send):
            raise ValidationError("before_send must be a function taking and returning a dict")
        self._config = config
        self._before_send = before_send
        self._plain = before_send is None  # the fast path needs no hook
        self._problems: set[str] = set()  # bad-call problems already given a log kind
        self._warn = warn  # rate-limited warnings (the reporter's)

    # The calls. Each raises ValidationError for bad input; returns None if before_send
    # dropped the entry (counted as "filtered" by the face).

    def track(
        self,
        event: str,
        profile_id: str | None,
        email: str | None,
        properties: Mapping[str, Any] | None,
        message_id: str | None,
        sent_at: datetime | str | None,
        ip: str | None,
        context: Mapping[str, Any] | None,
    ) -> Built | None:
        if self._plain and ip is None and context is None and _current() is None:
            who = _validate.person(profile_id, email)
            entry = track_entry(event, properties, message_id, sent_at)
            try:
                return EVENTS, encode(entry), who, None, entry.message_id
            except _UNENCODABLE as exc:  # inline: a helper's call costs every call ~0.04 µs
                raise _validate.unencodable(entry, exc) from None
        who, address, extra = self._person(profile_id, email, ip, context)
        entry = track_entry(event, properties, message_id, sent_at, extra)
        return self._filtered(EVENTS, entry, who, address)

    def identify(
        self,
        profile_id: str | None,
        email: str | None,
        traits: Mapping[str, Any] | None,
        message_id: str | None,
        sent_at: datetime | str | None,
        ip: str | None,
        context: Mapping[str, Any] | None,
    ) -> Built | None:
        if self._plain and ip is None and context is None and _current() is None:
            who = _validate.person(profile_id, email)
            entry = identify_entry(_validate.fields(traits, "traits"), message_id, sent_at)
            try:
                return IDENTIFIES, encode(entry), who, None, entry.message_id
            except _UNENCODABLE as exc:  # inline: a helper's call costs every call ~0.04 µs
                raise _validate.unencodable(entry, exc) from None
        who, address, extra = self._person(profile_id, email, ip, context)
        entry = identify_entry(_validate.fields(traits, "traits"), message_id, sent_at, extra)
        return self._filtered(IDENTIFIES, entry, who, address)

    def page(
        self,
        profile_id: str | None,
        email: str | None,
        name: str | None,
        properties: Mapping[str, Any] | None,
        message_id: str | None,
        sent_at: datetime | str | None,
        ip: str | None,
        context: Mapping[str, Any] | None,
    ) -> Built | None:
        if self._plain and ip is None and context is None and _current() is None:
            who = _validate.person(profile_id, email)
            entry = page_entry(name, properties, message_id, sent_at)
            try:
                return PAGE_VIEWS, encode(entry), who, None, entry.message_id
            except _UNENCODABLE as exc:  # inline: a helper's call costs every call ~0.04 µs
                raise _validate.unencodable(entry, exc) from None
        who, address, extra = self._person(profile_id, email, ip, context)
        entry = page_entry(name, properties, message_id, sent_at, extra)
        return self._filtered(PAGE_VIEWS, entry, who, address)

    def account_identify(
        self,
        domain: str | None,
        account_id: str | None,
        traits: Mapping[str, Any] | None,
        group_id: str | None,
        message_id: str | None,
        sent_at: datetime | str | None,
        ip: str | None,
        context: Mapping[str, Any] | None,
    ) -> Built | None:
        who = _validate.account(domain, account_id)
        fields = account_traits(traits, group_id)
        if self._plain and ip is None and context is None:
            entry = identify_entry(fields, message_id, sent_at)
            try:
                return IDENTIFIES, encode(entry), who, None, entry.message_id
            except _UNENCODABLE as exc:  # inline: a helper's call costs every call ~0.04 µs
                raise _validate.unencodable(entry, exc) from None
        extra = self._context(None, ip, context, top_level=False)[1]
        entry = identify_entry(fields, message_id, sent_at, extra)
        return self._filtered(IDENTIFIES, entry, who, None)

    def account_track(
        self,
        event: str,
        domain: str | None,
        account_id: str | None,
        properties: Mapping[str, Any] | None,
        message_id: str | None,
        sent_at: datetime | str | None,
        ip: str | None,
        context: Mapping[str, Any] | None,
    ) -> Built | None:
        who = _validate.account(domain, account_id)
        if self._plain and ip is None and context is None:
            entry = track_entry(event, properties, message_id, sent_at)
            try:
                return EVENTS, encode(entry), who, None, entry.message_id
            except _UNENCODABLE as exc:  # inline: a helper's call costs every call ~0.04 µs
                raise _validate.unencodable(entry, exc) from None
        extra = self._context(None, ip, context, top_level=False)[1]
        entry = track_entry(event, properties, message_id, sent_at, extra)
        return self._filtered(EVENTS, entry, who, None)

    # Bad calls

    def refusal(
        self,
        exc: ValidationError | ClientClosedError,
        account: bool,
        first: str | None,
        second: str | None,
    ) -> Refusal:
        """What a bad call (or one on a client that is not open) is dropped as: ``invalid``
        or ``closed``, with its problem (each logged once a minute at most, and a bounded
        number of them) and the failure ``on_error`` hears of."""
        reason: DropReason = "closed" if isinstance(exc, ClientClosedError) else "invalid"
        message = str(exc)
        problem = f"{reason}: {message.split(', got ', 1)[0]}"
        if problem not in self._problems:
            if len(self._problems) >= _MAX_PROBLEMS:
                problem = reason
            else:
                self._problems.add(problem)
        names = ("domain", "account_id") if account else ("profile_id", "email")
        failure = DeliveryFailure(
            reason=reason,
            kind="account" if account else "profile",
            ids={k: v for k, v in zip(names, (first, second), strict=True) if isinstance(v, str)},
            entries=[],
            exception=exc,
        )
        return Refusal(
            reason,
            problem,
            f"dropped a call ({reason}): {message}; strict=True raises this instead",
            failure,
        )

    # The request context, ip, context and before_send: off the fast path

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

    def _filtered(self, kind: int, entry: Entry, who: Who, ip: str | None) -> Built | None:
        """The entry after ``before_send``; None if it dropped the entry."""
        if self._before_send is not None:
            changed = self._filter(entry, who, ip)
            if changed is None:
                return None
            entry, who, ip = changed
        return kind, _encode(entry), who, ip, entry.message_id

    def _filter(
        self, entry: Entry, who: Who, ip: str | None
    ) -> tuple[Entry, Who, str | None] | None:
        """Run ``before_send`` on a call's message, and build what it returns.

        The message is a fresh copy (decoded from the entry's JSON): the hook may change it
        in place. What it returns is checked as the call's arguments are.
        """
        assert self._before_send is not None
        field, key, secondary_name, secondary = who
        message: dict[str, Any] = msgspec.json.decode(_encode(entry))
        message.update(profile_id=None, email=None, domain=None, account_id=None, ip=ip)
        message[field] = key
        if secondary is not None:
            message[secondary_name] = secondary
        try:
            result = self._before_send(message)
        except Exception as exc:
            self._warn("before_send", f"before_send raised {exc!r}; the message was sent unchanged")
            return entry, who, ip
        if result is None:
            return None
        if not isinstance(result, dict):
            self._warn(
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


_UNENCODABLE = (TypeError, ValueError, OverflowError)  # what msgspec raises for a bad value


def _encode(entry: Entry) -> bytes:
    """The entry's JSON; a value msgspec cannot write is the caller's ValidationError."""
    try:
        return encode(entry)
    except _UNENCODABLE as exc:
        raise _validate.unencodable(entry, exc) from None
