"""``koala-async send`` and ``--version``, through the real entry point (issue 15)."""

from __future__ import annotations

import pytest
from test_cli import cli

from koala_async import __version__
from koala_async.testing import FakeCollector

pytestmark = pytest.mark.anyio


@pytest.fixture
def anyio_backend() -> str:
    return "asyncio"  # the CLI runs in its own process; the test's loop only serves


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["identify", "-e", "--prop", "plan=pro"], "identify takes --trait, not --prop"),
        (["track", "Signed Up", "-e", "--trait", "plan=pro"], "track takes --prop, not --trait"),
        (
            ["track", "Signed Up", "-e", "--domain", "acme.com"],
            "track takes --profile-id or --email, not --domain",
        ),
        (["track", "Signed Up", "-e", "--name", "Home"], "track takes no --name; page does"),
        (
            ["track", "Signed Up", "-e", "--group-id", "dev"],
            "track takes no --group-id; account-identify does",
        ),
        (
            ["account-track", "Paid", "--domain", "acme.com", "--trait", "x=1"],
            "account-track takes --prop, not --trait",
        ),
    ],
)
async def test_an_option_the_call_does_not_take_is_refused_naming_the_right_one(
    args: list[str], message: str
) -> None:
    fake = FakeCollector()
    async with fake.serve() as base_url:
        args = [arg for a in args for arg in (["--email", "ada@acme.com"] if a == "-e" else [a])]
        result = await cli("send", *args, base_url=base_url)
    assert result.returncode == 2, result.stdout
    assert f"koala-async: {message}" in result.stderr.decode()
    assert fake.requests == [], "nothing is sent"


async def test_identify_sends_its_traits() -> None:
    fake = FakeCollector()
    async with fake.serve() as base_url:
        result = await cli(
            "send", "identify", "--email", "ada@acme.com", "--trait", "plan=pro", base_url=base_url
        )
    assert result.returncode == 0, result.stderr
    assert [(e.traits, e.email) for e in fake.identifies] == [({"plan": "pro"}, "ada@acme.com")]


async def test_version() -> None:
    result = await cli("--version")
    assert result.returncode == 0
    assert result.stdout.decode().strip() == f"koala-async {__version__}"


async def test_context_takes_a_json_object_and_key_value_pairs() -> None:
    fake = FakeCollector()
    async with fake.serve() as base_url:
        result = await cli(
            "send",
            "track",
            "Signed Up",
            "--email",
            "ada@acme.com",
            "--context",
            '{"locale": "en-US", "page": {"url": "https://acme.com/"}}',
            "--context",
            "timezone=Europe/Paris",
            base_url=base_url,
        )
        bad = await cli(
            "send", "page", "--email", "a@b.co", "--context", "{nope", base_url=base_url
        )
    assert result.returncode == 0, result.stderr.decode()
    (event,) = fake.events
    assert event.context["locale"] == "en-US"
    assert event.context["timezone"] == "Europe/Paris"
    assert event.context["page"]["url"] == "https://acme.com/"
    assert bad.returncode == 2
    assert "--context '{nope' is not a JSON object" in bad.stderr.decode()
