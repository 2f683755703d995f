"""The ko_id ASGI middleware and the Starlette and FastAPI helpers, via httpx's ASGI transport."""

from __future__ import annotations

import importlib
import sys
from collections.abc import AsyncIterator
from typing import Any

import httpx
import pytest
from fastapi import FastAPI
from starlette.applications import Starlette
from starlette.middleware import Middleware
from starlette.requests import Request
from starlette.responses import JSONResponse
from starlette.routing import Route
from wire_check import is_uuid4

from koala_async.asgi import KoalaMiddleware, Message, Receive, Scope, Send
from koala_async.fastapi import Koala, ProfileId
from koala_async.starlette import get_profile_id, koala_lifespan
from koala_async.testing import FakeCollector

pytestmark = pytest.mark.anyio
KNOWN = "3e6a2c18-3b02-40c4-b8d2-1842c193d3ba"


async def whoami(request: Request) -> JSONResponse:
    response = JSONResponse({"profile_id": request.state.koala_profile_id})
    response.headers["X-App"] = "kept"
    response.set_cookie("session", "abc")
    return response


def starlette_app(**options: Any) -> Starlette:
    return Starlette(
        routes=[Route("/", whoami)], middleware=[Middleware(KoalaMiddleware, **options)]
    )


@pytest.fixture
async def client() -> AsyncIterator[httpx.AsyncClient]:
    transport = httpx.ASGITransport(app=starlette_app(domain=".acme.com"))
    async with httpx.AsyncClient(transport=transport, base_url="https://app.acme.com") as http:
        yield http


def ko_id_cookie(response: httpx.Response) -> str | None:
    for header in response.headers.get_list("set-cookie"):
        if header.startswith("ko_id="):
            return header
    return None


async def test_a_new_visitor_gets_a_cookie_and_the_same_id(client: httpx.AsyncClient) -> None:
    response = await client.get("/")
    profile_id = response.json()["profile_id"]
    assert is_uuid4(profile_id)
    cookie = ko_id_cookie(response)
    assert cookie == (
        f"ko_id={profile_id}; Path=/; Max-Age=63072000; Domain=.acme.com; SameSite=Lax; Secure"
    )
    assert "HttpOnly" not in cookie, "Koala's pixel must be able to read it"


async def test_a_returning_visitor_keeps_theirs(client: httpx.AsyncClient) -> None:
    response = await client.get("/", headers={"Cookie": f"theme=dark; ko_id={KNOWN.upper()}"})
    assert response.json()["profile_id"] == KNOWN
    assert ko_id_cookie(response) is None


async def test_a_garbage_cookie_is_replaced(client: httpx.AsyncClient) -> None:
    response = await client.get("/", headers={"Cookie": "ko_id=<script>"})
    profile_id = response.json()["profile_id"]
    assert profile_id != "<script>"
    assert ko_id_cookie(response) is not None
    assert f"ko_id={profile_id};" in str(ko_id_cookie(response))


async def test_the_apps_own_headers_are_kept(client: httpx.AsyncClient) -> None:
    response = await client.get("/")
    assert response.headers["x-app"] == "kept"
    cookies = response.headers.get_list("set-cookie")
    assert len(cookies) == 2
    assert any(c.startswith("session=abc") for c in cookies)


async def test_options_http_only_and_plain_http() -> None:
    transport = httpx.ASGITransport(app=starlette_app(http_only=True, max_age=60))
    async with httpx.AsyncClient(transport=transport, base_url="http://localhost") as http:
        response = await http.get("/")
    cookie = ko_id_cookie(response)
    assert cookie is not None
    assert "Max-Age=60" in cookie
    assert "HttpOnly" in cookie
    assert "Secure" not in cookie
    assert "Domain" not in cookie


@pytest.mark.parametrize("kind", ["websocket", "lifespan"])
async def test_other_scopes_pass_through_untouched(kind: str) -> None:
    seen: list[tuple[Scope, Receive, Send]] = []

    async def inner(scope: Scope, receive: Receive, send: Send) -> None:
        seen.append((scope, receive, send))

    async def receive() -> Message:
        return {}

    async def send(message: Message) -> None:
        pass

    scope: Scope = {"type": kind, "headers": [(b"cookie", b"ko_id=nope")]}
    before = dict(scope)
    await KoalaMiddleware(inner)(scope, receive, send)
    assert seen == [(scope, receive, send)]
    assert scope == before


async def test_fastapi_parameters_and_lifespan_flush() -> None:
    fake = FakeCollector()
    async with fake.serve() as base_url:
        app = FastAPI(
            lifespan=koala_lifespan(public_api_key="pk_test", base_url=base_url, flush_interval=60)
        )
        app.add_middleware(KoalaMiddleware)

        @app.post("/signup")
        async def signup(email: str, koala: Koala, profile_id: ProfileId) -> dict[str, str]:
            await koala.identify(profile_id=profile_id, email=email)
            return {"profile_id": profile_id}

        async with app.router.lifespan_context(app):
            transport = httpx.ASGITransport(app=app)
            async with httpx.AsyncClient(transport=transport, base_url="http://t") as http:
                response = await http.post("/signup", params={"email": "ada@acme.com"})
            assert fake.requests == [], "still queued while the app runs"
    assert [(e.profile_id, e.email) for e in fake.identifies] == [
        (response.json()["profile_id"], "ada@acme.com")
    ]


async def test_helpers_say_what_is_missing() -> None:
    async def handler(request: Request) -> JSONResponse:
        return JSONResponse({"id": get_profile_id(request)})

    app = Starlette(routes=[Route("/", handler)])
    transport = httpx.ASGITransport(app=app, raise_app_exceptions=True)
    async with httpx.AsyncClient(transport=transport, base_url="http://t") as http:
        with pytest.raises(RuntimeError, match="add KoalaMiddleware"):
            await http.get("/")


@pytest.mark.parametrize(
    ("module", "framework", "extra"),
    [
        ("koala_async.starlette", "starlette", "starlette"),
        ("koala_async.fastapi", "fastapi", "fastapi"),
        ("koala_async.aiohttp", "aiohttp", "aiohttp"),
    ],
)
def test_a_missing_framework_names_the_extra(
    module: str, framework: str, extra: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setitem(sys.modules, framework, None)  # makes `import framework` fail
    monkeypatch.delitem(sys.modules, module, raising=False)
    with pytest.raises(ImportError, match=rf"pip install 'koala-async\[{extra}\]'"):
        importlib.import_module(module)
