"""Checks a request against Koala's contract: the spec's schemas (in tests/spec) and its rules."""

from __future__ import annotations

import json
import re
import socket
from pathlib import Path
from typing import Any

import httpx
import jsonschema

from koala_async import Stats

_SPEC = json.loads((Path(__file__).parent / "spec" / "openapi-schemas.json").read_text())
_ACCOUNT_SCHEMA = json.loads(
    (Path(__file__).parent / "spec" / "account-batch-schema.json").read_text()
)
_SENT_AT = re.compile(r"\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d\.\d{3}Z\Z")
_UUID4 = re.compile(r"[0-9a-f]{8}-[0-9a-f]{4}-4[0-9a-f]{3}-[89ab][0-9a-f]{3}-[0-9a-f]{12}\Z")
_USER_AGENT = re.compile(r"(\S.* )?koala-async/\d+\.\d+\.\d+\S*\Z")

_formats = jsonschema.FormatChecker()


@_formats.checks("date-time")
def _is_sent_at(value: object) -> bool:
    # Stricter than RFC 3339 on purpose: the SDK promises UTC, milliseconds and "Z".
    return not isinstance(value, str) or bool(_SENT_AT.match(value))


def _validator(name: str) -> jsonschema.Draft202012Validator:
    schema = {"$ref": f"#/components/schemas/{name}", **_SPEC}
    return jsonschema.Draft202012Validator(schema, format_checker=_formats)


PROFILE = _validator("ProfileBatchRequest")
ACCOUNT = _validator("AccountBatchRequest")
ACCOUNT_PAGE = jsonschema.Draft202012Validator(_ACCOUNT_SCHEMA, format_checker=_formats)


def check_request(request: httpx.Request, key: str = "pk_test") -> dict[str, Any]:
    """Assert that ``request`` is one a Koala server accepts; return its parsed body."""
    assert request.method == "POST"
    assert request.headers["content-type"] == "application/json"
    assert _USER_AGENT.match(request.headers["user-agent"]), request.headers["user-agent"]
    body = json.loads(request.content)
    path = request.url.path
    if path == f"/web/projects/{key}/batch":
        PROFILE.validate(body)
        kinds: tuple[str, ...] = ("events", "identifies", "page_views")
    elif path == f"/web/projects/{key}/accounts/batch":
        ACCOUNT.validate(body)
        ACCOUNT_PAGE.validate(body)
        kinds = ("events", "identifies")
        assert "page_views" not in body
    else:
        raise AssertionError(f"unexpected path {path}")
    assert any(body.get(kind) for kind in kinds), "a request carries at least one entry"
    for kind in kinds:
        entries = body.get(kind, [])
        if kind in body:
            assert 0 < len(entries) <= 30, (kind, len(entries))
        for entry in entries:
            assert _SENT_AT.match(entry["sent_at"]), entry
            if entry["type"] in ("track", "page"):
                assert entry["message_id"], entry
    return dict(body)


def invariant(stats: Stats) -> None:
    """Every accepted entry is delivered, dropped or still pending: none vanish, none is
    counted below zero (a batch settled twice once left pending at -7)."""
    assert stats.accepted == stats.delivered + stats.dropped_total + stats.pending, stats
    assert min(stats.pending, stats.delivered, *stats.dropped.values()) >= 0, stats


def free_port() -> int:
    """A loopback port that nothing listens on (for the moment)."""
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return int(probe.getsockname()[1])


def is_uuid4(value: str | None) -> bool:
    """Whether a call returned a message id that is a UUID v4 (not None: a dropped call)."""
    return value is not None and bool(_UUID4.match(value))
