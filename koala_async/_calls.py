"""The five calls: what each takes, where its entry goes, and how the entry is built.

One definition per call kind. :class:`~koala_async.KoalaClient` builds its entries with the
functions here; the importer and the CLI read :data:`CALLS` to know which arguments a call
takes, instead of restating the signatures.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from datetime import datetime
from typing import Any

from . import _validate
from ._exceptions import ValidationError
from ._wire import Identify, Page, Track, new_message_id, now_iso

__all__ = [
    "CALLS",
    "EVENTS",
    "IDENTIFIES",
    "PAGE_VIEWS",
    "CallKind",
    "account_traits",
    "identify_entry",
    "page_entry",
    "track_entry",
]

EVENTS, IDENTIFIES, PAGE_VIEWS = 0, 1, 2
"""Which array of a request body an entry goes in."""

PERSON_IDS = ("profile_id", "email")
ACCOUNT_IDS = ("domain", "account_id")
_COMMON = ("message_id", "sent_at", "ip", "context")


@dataclass(frozen=True)
class CallKind:
    """One public call: ``KoalaClient.<name>(*positional, **keywords)``.

    Attributes:
        name: The method's name, also the ``kind`` of an importer line.
        entry: Which array of the body its entry joins (EVENTS, IDENTIFIES, PAGE_VIEWS).
        account: True for ``/accounts/batch``, False for ``/batch``.
        positional: Required arguments passed by position (``event``).
        ids: The id keywords, the first one preferred as the queue key.
        keywords: The call's other keyword arguments.
        payload: The keyword holding a dict of values (``properties`` or ``traits``).
    """

    name: str
    entry: int
    account: bool
    positional: tuple[str, ...]
    keywords: tuple[str, ...]
    payload: str

    @property
    def ids(self) -> tuple[str, str]:
        return ACCOUNT_IDS if self.account else PERSON_IDS

    @property
    def parameters(self) -> tuple[str, ...]:
        """Every argument the call takes, by name."""
        return self.positional + self.ids + self.keywords


CALLS: Mapping[str, CallKind] = {
    call.name: call
    for call in (
        CallKind("track", EVENTS, False, ("event",), ("properties", *_COMMON), "properties"),
        CallKind("identify", IDENTIFIES, False, (), ("traits", *_COMMON), "traits"),
        CallKind("page", PAGE_VIEWS, False, (), ("name", "properties", *_COMMON), "properties"),
        CallKind(
            "account_identify", IDENTIFIES, True, (), ("traits", "group_id", *_COMMON), "traits"
        ),
        CallKind("account_track", EVENTS, True, ("event",), ("properties", *_COMMON), "properties"),
    )
}


# The defaults are spelled out in each builder rather than in a helper: these run on every
# call, and a function call per field measured ~0.05 µs each.


def track_entry(
    event: str,
    properties: Mapping[str, Any] | None,
    message_id: str | None,
    sent_at: datetime | str | None,
    context: dict[str, Any] | None = None,
) -> Track:
    """Check a track call's arguments (a person's or an account's) and build its entry."""
    return Track(
        event=_validate.event_name(event),
        properties=_validate.fields(properties, "properties"),
        message_id=new_message_id()
        if message_id is None
        else _validate.text(message_id, "message_id"),
        sent_at=now_iso() if sent_at is None else _validate.sent_at(sent_at),
        context=context,
    )


def identify_entry(
    traits: dict[str, Any],
    message_id: str | None,
    sent_at: datetime | str | None,
    context: dict[str, Any] | None = None,
) -> Identify:
    """Build an identify entry (a person's or an account's) from checked traits."""
    return Identify(
        traits=traits,
        message_id=new_message_id()
        if message_id is None
        else _validate.text(message_id, "message_id"),
        sent_at=now_iso() if sent_at is None else _validate.sent_at(sent_at),
        context=context,
    )


def page_entry(
    name: str | None,
    properties: Mapping[str, Any] | None,
    message_id: str | None,
    sent_at: datetime | str | None,
    context: dict[str, Any] | None = None,
) -> Page:
    """Check a page call's arguments and build its entry."""
    return Page(
        message_id=new_message_id()
        if message_id is None
        else _validate.text(message_id, "message_id"),
        name=None if name is None else _validate.text(name, "name"),
        properties=_validate.fields(properties, "properties"),
        sent_at=now_iso() if sent_at is None else _validate.sent_at(sent_at),
        context=context,
    )


def account_traits(traits: Mapping[str, Any] | None, group_id: str | None) -> dict[str, Any]:
    """An account's traits with ``group_id`` inside them, where Koala reads it."""
    fields = _validate.fields(traits, "traits")
    if group_id is None:
        return fields
    group_id = _validate.text(group_id, "group_id")
    if fields.get("group_id", group_id) != group_id:
        raise ValidationError(
            f"group_id is given twice, as {_validate.shown(group_id)} and as traits['group_id'] = "
            f"{_validate.shown(fields['group_id'])}: pass one"
        )
    return {**fields, "group_id": group_id}
