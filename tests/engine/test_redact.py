"""The key stays out of logs and last_error in every form it takes on the wire."""

from __future__ import annotations

import json
import logging
import re
from urllib.parse import quote, quote_plus

import httpx
import pytest

from koala_async import KoalaClient, RetryPolicy
from koala_async._redact import redact_text
from koala_async.testing import Reply

pytestmark = pytest.mark.anyio

KEYS = [
    "pk_live_Ab+cd=ef",  # base64-ish: '+' and '=' are percent-encoded in the path
    "pk_live_!$&'()*,;:@~x",  # sub-delims and the like
    "pk_live_é☃_ünï",  # non-ASCII: UTF-8 percent-encoded
    'pk_live_"quote"\\back',  # JSON escapes a quote and a backslash
]


def _forms(key: str) -> list[str]:
    encoded = quote(key, safe="")
    return [
        key,
        encoded,
        quote(key),
        quote_plus(key),
        re.sub("%[0-9A-F]{2}", lambda m: m[0].lower(), encoded),  # a proxy's lower-case hex
        json.dumps(key)[1:-1],  # an echoed path in a JSON body
        repr(key)[1:-1],
    ]


@pytest.mark.parametrize("key", KEYS)
def test_every_form_of_the_key_is_redacted(key: str) -> None:
    for form in _forms(key):
        hidden = redact_text(f"POST https://x/web/projects/{form}/batch: 500", key)
        assert hidden == f"POST https://x/web/projects/{key[:4]}…/batch: 500", form


def test_text_without_the_key_is_left_alone() -> None:
    text = "POST https://x/web/projects/pk_live_Ab%2Bcd/batch pk_live_AB+cd=ef"  # near misses
    assert redact_text(text, "pk_live_Ab+cd=ef") == text


@pytest.mark.parametrize("key", KEYS)
async def test_the_key_never_shows_in_logs_or_last_error(
    key: str, caplog: pytest.LogCaptureFixture
) -> None:
    def echo(request: httpx.Request) -> httpx.Response:
        # A proxy that puts the request path, as sent, in its error.
        raise httpx.ConnectError(f"cannot reach {request.url.raw_path.decode()}", request=request)

    caplog.set_level(logging.DEBUG)
    async with (
        httpx.AsyncClient(transport=httpx.MockTransport(echo)) as http,
        KoalaClient(key, http_client=http, retry=RetryPolicy(max_attempts=2, backoff=0)) as koala,
    ):
        await koala.track("A", email="a@b.co")
    last_error = koala.stats().last_error
    assert last_error is not None
    assert "cannot reach" in last_error
    messages = [r.getMessage() for r in caplog.records]
    assert any("HTTP Request" in m or "cannot reach" in m for m in messages)
    for text in [last_error, *messages]:
        for form in _forms(key):
            assert form not in text


async def test_httpx_request_lines_are_redacted(caplog: pytest.LogCaptureFixture) -> None:
    key = "pk_live_Ab+cd=ef"
    caplog.set_level(logging.INFO, logger="httpx")
    async with (
        httpx.AsyncClient(transport=httpx.MockTransport(lambda r: httpx.Response(200))) as http,
        KoalaClient(key, http_client=http) as koala,
    ):
        await koala.track("A", email="a@b.co")
    lines = [r.getMessage() for r in caplog.records if r.name == "httpx"]
    assert lines, "httpx logged its request line"
    assert all("/web/projects/pk_l…/batch" in line for line in lines), lines


@pytest.mark.parametrize(
    "fault",
    [Reply(reset=True), Reply(status=200, delay=5.0)],
    ids=["reset", "timeout"],
)
async def test_exceptions_handed_to_on_error_keep_no_frames_with_the_key_or_entries(
    fault: Reply,
) -> None:
    """Rendered with capture_locals (as rich's show_locals or Sentry would), an exception
    given to on_error showed the request bytes: the key in the path, the body's e-mails."""
    import traceback

    from koala_async import DeliveryFailure
    from koala_async.testing import FakeCollector

    key, email = "pk_secret_key_4242", "ada.lovelace@example.com"
    failures: list[DeliveryFailure] = []
    fake = FakeCollector()
    fake.responder = lambda received: fault
    async with fake.serve() as base_url:
        koala = KoalaClient(
            key,
            base_url=base_url,
            retry=RetryPolicy(max_attempts=2, backoff=0),
            timeout=0.5,
            on_error=failures.append,
        )
        async with koala:
            await koala.track("Signed Up", email=email, properties={"plan": "pro"})
            await koala.flush(timeout=5)
    assert failures
    assert failures[0].exception is not None
    rendered = "".join(
        traceback.TracebackException.from_exception(
            failures[0].exception, capture_locals=True
        ).format()
    )
    assert key not in rendered
    assert quote(key, safe="") not in rendered
    assert email not in rendered
    assert failures[0].entries[0]["type"] == "track", "the failure still says what was dropped"
