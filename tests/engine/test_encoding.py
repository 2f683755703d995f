"""Whatever a call accepts encodes to JSON that decodes back to it; the rest is refused at the call.

msgspec raises on a lone surrogate, writes NaN and infinities as ``null`` and writes the
keys ``"1"`` and ``1`` as the same string: each would fail (or change) in the sender, after
the call returned, so each must be refused by the call.
"""

from __future__ import annotations

import dataclasses
import enum
import json
import math
import re
from typing import Any

import httpx
import msgspec
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from koala_async import KoalaClient, ValidationError, _validate, _wire
from koala_async._wire import Identify, Page, Track

pytestmark = pytest.mark.anyio
PID = "3e6a2c18-3b02-40c4-b8d2-1842c193d3ba"
SURROGATE = "\ud800"
SENT_AT = re.compile(r"\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d\.\d{3}Z\Z")


@dataclasses.dataclass
class Point:
    x: float


class Reading(msgspec.Struct):
    value: float


# Ids are encoded by the sender, not at the call, so the test encodes them itself.
BAD_IDS: list[tuple[str, dict[str, Any], str]] = [
    ("identify", {"email": f"a{SURROGATE}@b.co"}, "email holds a lone surrogate"),
    ("identify", {"email": f"ada@b{SURROGATE}.co"}, "email holds a lone surrogate"),
    ("account_identify", {"account_id": f"acct{SURROGATE}"}, "account_id holds a lone surrogate"),
    ("account_identify", {"domain": f"acme{SURROGATE}.com"}, "domain must be a domain name"),
]
BAD_ENTRIES: list[tuple[str, dict[str, Any], str]] = [
    ("track", {"event": f"Signed{SURROGATE}Up"}, "event holds a lone surrogate"),
    ("page", {"name": f"Pricing{SURROGATE}"}, "name holds a lone surrogate"),
    ("track", {"event": "E", "message_id": f"m{SURROGATE}"}, "message_id holds a lone surrogate"),
    (
        "account_identify",
        {"domain": "acme.com", "group_id": f"g{SURROGATE}"},
        "group_id holds a lone surrogate",
    ),
    ("track", {"event": "E", "properties": {"a": [f"x{SURROGATE}"]}}, "lone surrogate"),
    ("track", {"event": "E", "properties": {"a": {SURROGATE: 1}}}, "lone surrogate"),
    ("identify", {"traits": {"tags": {1.0, math.nan}}}, r"traits\['tags'\]\[\d\] is nan"),
    ("identify", {"traits": {"tags": frozenset([math.inf])}}, r"traits\['tags'\]\[0\] is inf"),
    ("track", {"event": "E", "properties": {"p": Point(math.nan)}}, r"\['p'\]\['x'\] is nan"),
    ("page", {"properties": {"r": Reading(-math.inf)}}, r"\['r'\]\['value'\] is -inf"),
    # Plain floats, lists and dicts take the fast walk: it must refuse what the full check does.
    ("track", {"event": "E", "properties": {"price": math.nan}}, r"\['price'\] is nan"),
    ("track", {"event": "E", "properties": {"a": [1.5, math.inf]}}, r"\['a'\]\[1\] is inf"),
    ("identify", {"traits": {"m": {"x": -math.inf}}}, r"traits\['m'\]\['x'\] is -inf"),
    ("track", {"event": "E", "properties": {"a": [{"1": 0, 1: 0}]}}, "both sent as '1'"),
    ("track", {"event": "E", "properties": {"1": "a", 1: "b"}}, "both sent as '1'"),
    ("track", {"event": "E", "properties": {"x": {1.5: 0, "1.5": 0}}}, "both sent as '1.5'"),
    ("identify", {"traits": {math.nan: 1}}, "has the key nan: keys must be strings"),
    ("identify", {"traits": {True: 1}}, "has the key True: keys must be strings"),
    # A lone surrogate in a top-level string is left to the encoder, which raises at the call.
    ("track", {"event": "E", "properties": {"a": SURROGATE}}, "JSON cannot carry"),
    ("identify", {"traits": {SURROGATE: 1}}, "JSON cannot carry"),
]


def _ids(method: str, kwargs: dict[str, Any]) -> dict[str, Any]:
    """Valid ids for a call whose kwargs give none."""
    if method.startswith("account"):
        return {} if {"domain", "account_id"} & kwargs.keys() else {"domain": "acme.com"}
    return {} if "email" in kwargs else {"email": "ada@acme.com"}


@pytest.mark.parametrize(("method", "kwargs", "message"), BAD_IDS + BAD_ENTRIES)
async def test_what_cannot_be_encoded_is_refused_at_the_call(
    method: str, kwargs: dict[str, Any], message: str
) -> None:
    koala = KoalaClient("pk_test", enabled=False, strict=True)
    with pytest.raises(ValidationError, match=message):
        await getattr(koala, method)(**kwargs, **_ids(method, kwargs))
    assert koala.stats().accepted == 0


@pytest.mark.parametrize(
    ("entry", "message"),
    [
        (Track(event="E", properties={"a": SURROGATE}, message_id="m", sent_at="t"), "a'\\]"),
        (Identify(traits={SURROGATE: 1}, sent_at="t"), r"traits key '\\ud800'"),
        (Page(message_id="m", properties={}, sent_at="t", name=SURROGATE), "name holds"),
    ],
)
def test_unencodable_names_the_value_the_encoder_refused(entry: _wire.Entry, message: str) -> None:
    with pytest.raises(UnicodeEncodeError) as caught:
        _wire.encode(entry)
    error = _validate.unencodable(entry, caught.value)
    assert re.search(message, str(error))
    assert "lone surrogate" in str(error)
    assert "errors='replace'" in str(error), "the message says how to fix it"


async def test_number_keys_that_stay_distinct_are_accepted() -> None:
    koala = KoalaClient("pk_test", enabled=False, strict=True)
    properties: dict[Any, Any] = {
        1: "a",
        "2": "b",
        1.5: "c",
        "nested": {3: [Point(1.0)], "s": {2.5}},
    }
    await koala.track("E", email="ada@acme.com", properties=properties)
    assert json.loads(_wire.encode(properties)) == {
        "1": "a",
        "2": "b",
        "1.5": "c",
        "nested": {"3": [{"x": 1.0}], "s": [2.5]},
    }


# Hypothesis: every argument of every call, with lone surrogates, NaN, odd keys and containers.

texts = st.text(st.characters(exclude_categories=()), max_size=6) | st.sampled_from(
    ["", " ", SURROGATE, f"a{SURROGATE}", "é", "x"]
)
floats = st.floats() | st.sampled_from([math.nan, math.inf, -math.inf, 1.5])
keys = texts | st.integers(-3, 3) | st.sampled_from([1.5, -2.0, 0.25, True, None, math.nan])
scalars = st.none() | st.booleans() | st.integers() | floats | texts
containers = st.one_of(
    st.frozensets(st.integers(-3, 3) | floats, max_size=3),
    st.builds(Point, floats),
    st.builds(Reading, floats),
)
values = st.recursive(
    scalars | containers,
    lambda inner: (
        st.lists(inner, max_size=3)
        | st.tuples(inner, inner)
        | st.dictionaries(keys, inner, max_size=3)
    ),
    max_leaves=6,
)
fields = st.none() | st.dictionaries(keys, values, max_size=4)
uuids = st.uuids().map(str)
profile_ids = st.none() | uuids | uuids.map(str.upper) | texts
emails = st.none() | st.builds("{}@{}.co".format, texts, texts) | st.just("ada@acme.com")
domains = st.none() | st.just("acme.com") | st.builds("{}.com".format, texts)
optional_texts = st.none() | texts
sent_ats = st.none() | st.datetimes() | texts | st.just("2024-05-01T14:00:00.5+02:00")

CALLS = {
    "track": {
        "event": texts,
        "profile_id": profile_ids,
        "email": emails,
        "properties": fields,
        "message_id": optional_texts,
        "sent_at": sent_ats,
    },
    "identify": {
        "profile_id": profile_ids,
        "email": emails,
        "traits": fields,
        "message_id": optional_texts,
        "sent_at": sent_ats,
    },
    "page": {
        "profile_id": profile_ids,
        "email": emails,
        "name": optional_texts,
        "properties": fields,
        "message_id": optional_texts,
        "sent_at": sent_ats,
    },
    "account_identify": {
        "domain": domains,
        "account_id": optional_texts,
        "traits": fields,
        "group_id": optional_texts,
        "message_id": optional_texts,
        "sent_at": sent_ats,
    },
    "account_track": {
        "event": texts,
        "domain": domains,
        "account_id": optional_texts,
        "properties": fields,
        "message_id": optional_texts,
        "sent_at": sent_ats,
    },
}
calls = st.one_of(
    [st.tuples(st.just(name), st.fixed_dictionaries(args)) for name, args in CALLS.items()]
)


def _strict_json(raw: bytes) -> Any:
    """Decode as a strict reader would: UTF-8, no NaN, no duplicate keys."""

    def no_duplicates(pairs: list[tuple[str, Any]]) -> dict[str, Any]:
        assert len({k for k, _ in pairs}) == len(pairs), f"duplicate keys in {raw!r}"
        return dict(pairs)

    def no_constants(name: str) -> None:
        raise AssertionError(f"{name} in {raw!r}")

    return json.loads(
        raw.decode("utf-8"), object_pairs_hook=no_duplicates, parse_constant=no_constants
    )


def _expected(value: Any) -> Any:
    """What JSON should bring back of ``value``: the test's own model of the conversion."""
    if isinstance(value, dict):
        return {str(k): _expected(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [_expected(v) for v in value]
    if isinstance(value, frozenset):
        return sorted(value)
    if isinstance(value, Point):
        return {"x": value.x}
    if isinstance(value, Reading):
        return {"value": value.value}
    return value


def _decoded(value: Any, like: Any) -> Any:
    """``value`` with lists that stand for sets sorted, so they compare with ``_expected``."""
    if isinstance(like, dict) and isinstance(value, dict):
        if set(value) != {str(k) for k in like}:
            return value  # differs from _expected: the comparison fails and shows both
        return {str(k): _decoded(value[str(k)], v) for k, v in like.items()}
    if isinstance(like, frozenset) and isinstance(value, list):
        return sorted(value)
    if isinstance(like, (list, tuple)) and isinstance(value, list):
        return [_decoded(v, w) for v, w in zip(value, like, strict=False)]
    return value


@pytest.mark.parametrize("anyio_backend", ["asyncio"])  # no I/O: one backend is enough
@settings(max_examples=300, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(call=calls)
async def test_whatever_a_call_accepts_encodes_and_round_trips(
    call: tuple[str, dict[str, Any]],
) -> None:
    method, kwargs = call
    koala = KoalaClient(
        "pk_test", enabled=False, strict=True
    )  # validates and encodes, sends nothing
    try:
        await getattr(koala, method)(**kwargs)
    except ValidationError:
        return
    # Accepted: each argument, in the form the client sends it, must survive a strict reader.
    who = (
        _validate.account(kwargs["domain"], kwargs["account_id"])
        if method.startswith("account")
        else _validate.person(kwargs["profile_id"], kwargs["email"])
    )
    head = (who[:2], who[2:])
    assert _strict_json(b"{" + _wire.head(head) + b"}") == {k: v for k, v in head if v is not None}
    for name in ("event", "name", "message_id", "group_id"):
        if kwargs.get(name) is not None:
            assert _strict_json(_wire.encode(kwargs[name])) == kwargs[name]
    if kwargs.get("sent_at") is not None:
        assert SENT_AT.match(_validate.sent_at(kwargs["sent_at"]))
    given_fields = kwargs.get("properties", kwargs.get("traits")) or {}
    expected = _expected(given_fields)
    assert len(expected) == len(given_fields), "two keys were sent as one"
    decoded = _strict_json(_wire.encode(given_fields))
    assert _decoded(decoded, given_fields) == expected


# One rule for values JSON cannot carry, the same with and without strict
# (docs/reference/calls.md): what has one obvious JSON form is converted, bytes and the
# rest are refused.


class _Plan(enum.Enum):
    PRO = "pro"


def _converted() -> list[tuple[object, object]]:
    import datetime
    import decimal
    import uuid

    cases: list[tuple[object, object]] = [
        (
            datetime.datetime(2024, 5, 1, 12, 0, tzinfo=datetime.timezone.utc),
            "2024-05-01T12:00:00Z",
        ),
        (datetime.date(2024, 5, 1), "2024-05-01"),
        (uuid.UUID(int=1), "00000000-0000-0000-0000-000000000001"),
        (decimal.Decimal("19.99"), 19.99),
        (_Plan.PRO, "pro"),
        (Point(1.5), {"x": 1.5}),
        ({3}, [3]),
    ]
    try:
        import pydantic
    except ImportError:  # pragma: no cover
        pass
    else:

        class Model(pydantic.BaseModel):
            day: datetime.date

        cases.append((Model(day=datetime.date(2024, 5, 1)), {"day": "2024-05-01"}))
    try:
        import numpy
    except ImportError:  # pragma: no cover
        pass
    else:
        cases += [(numpy.int64(3), 3), (numpy.float32(1.5), 1.5), (numpy.bool_(True), True)]
    return cases


@pytest.mark.parametrize("strict", [False, True])
@pytest.mark.parametrize(("value", "sent"), _converted())
async def test_values_with_one_json_form_are_converted(
    value: object, sent: object, strict: bool
) -> None:
    from koala_async.testing import FakeCollector

    fake = FakeCollector()
    async with KoalaClient(
        "pk_test", http_client=httpx.AsyncClient(transport=fake.transport()), strict=strict
    ) as koala:
        assert await koala.track("E", email="a@b.co", properties={"v": value}) is not None
    assert fake.events[0].properties == {"v": sent}


def _refused() -> list[object]:
    import decimal

    cases: list[object] = [b"raw", bytearray(b"raw"), memoryview(b"raw"), decimal.Decimal("NaN")]
    cases.append(object())
    try:
        import numpy
    except ImportError:  # pragma: no cover
        pass
    else:
        cases += [numpy.array([1, 2]), numpy.float64("nan")]
    return cases


@pytest.mark.parametrize("strict", [False, True])
@pytest.mark.parametrize("value", _refused())
async def test_bytes_and_what_has_no_one_json_form_are_refused(value: object, strict: bool) -> None:
    koala = KoalaClient("pk_test", enabled=False, strict=strict)
    call = koala.track("E", email="a@b.co", properties={"nested": [{"v": value}]})
    if strict:
        with pytest.raises(ValidationError, match="JSON cannot carry") as raised:
            await call
        if isinstance(value, bytes | bytearray | memoryview):
            assert "base64" in str(raised.value), "the fix is named"
    else:
        assert await call is None
        assert koala.stats().dropped["invalid"] == 1
