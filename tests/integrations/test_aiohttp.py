"""The aiohttp middleware and cleanup_ctx helper, through aiohttp's own test client."""

from __future__ import annotations

from collections.abc import AsyncIterator

import pytest
from aiohttp import web
from aiohttp.test_utils import TestClient, TestServer
from wire_check import is_uuid4

from koala_async import ValidationError
from koala_async.aiohttp import KOALA, PROFILE_ID, koala_context, koala_middleware
from koala_async.testing import FakeCollector

pytestmark = pytest.mark.anyio
KNOWN = "3e6a2c18-3b02-40c4-b8d2-1842c193d3ba"


@pytest.fixture
def anyio_backend() -> str:
    return "asyncio"  # aiohttp runs on asyncio only


async def whoami(request: web.Request) -> web.Response:
    response = web.json_response({"profile_id": request[PROFILE_ID]})
    response.headers["X-App"] = "kept"
    response.set_cookie("session", "abc")
    return response


async def moved(request: web.Request) -> web.Response:
    raise web.HTTPFound("/")


@pytest.fixture
async def client() -> AsyncIterator[TestClient[web.Request, web.Application]]:
    app = web.Application(middlewares=[koala_middleware(domain=".acme.com")])
    app.router.add_get("/", whoami)
    app.router.add_get("/moved", moved)
    async with TestClient(TestServer(app)) as client:
        yield client


def ko_id_cookie(response: object) -> str | None:
    for header in response.headers.getall("Set-Cookie", []):  # type: ignore[attr-defined]
        if header.startswith("ko_id="):
            return str(header)
    return None


async def test_a_new_visitor_gets_a_cookie_and_the_same_id(
    client: TestClient[web.Request, web.Application],
) -> None:
    response = await client.get("/")
    profile_id = (await response.json())["profile_id"]
    assert is_uuid4(profile_id)
    assert ko_id_cookie(response) == (
        f"ko_id={profile_id}; Path=/; Max-Age=63072000; Domain=.acme.com; SameSite=Lax"
    )
    assert response.headers["X-App"] == "kept"
    assert len(response.headers.getall("Set-Cookie")) == 2


async def test_a_returning_visitor_keeps_theirs_and_garbage_is_replaced(
    client: TestClient[web.Request, web.Application],
) -> None:
    kept = await client.get("/", headers={"Cookie": f"ko_id={KNOWN}"})
    assert (await kept.json())["profile_id"] == KNOWN
    assert ko_id_cookie(kept) is None
    replaced = await client.get("/", headers={"Cookie": "ko_id=garbage"})
    assert (await replaced.json())["profile_id"] != "garbage"
    assert ko_id_cookie(replaced) is not None


async def test_the_cookie_rides_on_raised_responses_too(
    client: TestClient[web.Request, web.Application],
) -> None:
    response = await client.get("/moved", allow_redirects=False)
    assert response.status == 302
    assert ko_id_cookie(response) is not None


async def test_cleanup_ctx_opens_the_client_and_flushes_it() -> None:
    fake = FakeCollector()
    async with fake.serve() as base_url:

        async def signup(request: web.Request) -> web.Response:
            await request.app[KOALA].track("Signed Up", profile_id=request[PROFILE_ID])
            return web.Response(text="ok")

        app = web.Application(middlewares=[koala_middleware()])
        app.router.add_post("/signup", signup)
        app.cleanup_ctx.append(
            koala_context(public_api_key="pk_test", base_url=base_url, flush_interval=60)
        )
        async with TestClient(TestServer(app)) as client:
            response = await client.post("/signup")
            assert response.status == 200
            assert fake.requests == [], "still queued while the app runs"
    assert len(fake.events) == 1
    assert fake.events[0].profile_id is not None


async def adopt(request: web.Request) -> web.Response:
    response = web.Response(text=request[PROFILE_ID])
    response.set_cookie("ko_id", KNOWN)
    return response


async def stream(request: web.Request) -> web.StreamResponse:
    response = web.StreamResponse()
    await response.prepare(request)
    await response.write(request[PROFILE_ID].encode())
    return response


async def socket(request: web.Request) -> web.WebSocketResponse:
    websocket = web.WebSocketResponse()
    await websocket.prepare(request)
    await websocket.send_str(request[PROFILE_ID])
    await websocket.close()
    return websocket


async def test_a_ko_id_the_handler_sets_itself_wins() -> None:
    app = web.Application(middlewares=[koala_middleware()])
    app.router.add_get("/adopt", adopt)
    async with TestClient(TestServer(app)) as client:
        response = await client.get("/adopt")
        assert response.headers.getall("Set-Cookie") == [f"ko_id={KNOWN}; Path=/"]


async def test_streamed_responses_cannot_take_the_cookie_and_say_so_once(
    caplog: pytest.LogCaptureFixture,
) -> None:
    app = web.Application(middlewares=[koala_middleware()])
    app.router.add_get("/stream", stream)
    app.router.add_get("/socket", socket)
    async with TestClient(TestServer(app)) as client:
        async with client.ws_connect("/socket") as websocket:
            assert is_uuid4(await websocket.receive_str())
        assert caplog.records == [], "websockets get no cookie, quietly"
        for _ in range(3):
            response = await client.get("/stream")
            assert is_uuid4(await response.text())
            assert ko_id_cookie(response) is None
    assert [r.getMessage() for r in caplog.records] == [
        "a new visitor's ko_id cookie was not set on GET /stream: the handler sent the headers "
        "itself (a streamed response); later cases are not logged"
    ]
    assert caplog.records[0].name == "koala_async.aiohttp"


def test_bad_cookie_options_fail_at_once() -> None:
    with pytest.raises(ValidationError, match="max_age must be a whole number"):
        koala_middleware(max_age=0)


async def test_a_sub_app_finds_the_client_and_gets_the_cookie() -> None:
    fake = FakeCollector()
    async with fake.serve() as base_url:

        async def signup(request: web.Request) -> web.Response:
            await request.config_dict[KOALA].track("Signed Up", profile_id=request[PROFILE_ID])
            return web.Response(text=request[PROFILE_ID])

        v1 = web.Application()
        v1.router.add_post("/signup", signup)
        app = web.Application(middlewares=[koala_middleware()])
        app.add_subapp("/v1/", v1)
        app.cleanup_ctx.append(koala_context(public_api_key="pk_test", base_url=base_url))
        async with TestClient(TestServer(app)) as client:
            response = await client.post("/v1/signup")
            assert response.status == 200
            profile_id = await response.text()
            assert ko_id_cookie(response) is not None
    assert [(e.event, e.profile_id) for e in fake.events] == [("Signed Up", profile_id)]
