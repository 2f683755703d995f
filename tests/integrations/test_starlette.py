"""KoalaMiddleware inside real Starlette and FastAPI apps, beyond the basics in test_asgi.py."""

from __future__ import annotations

import importlib.metadata
import re
import subprocess
import sys
from collections.abc import AsyncIterator, Awaitable, Callable
from contextlib import asynccontextmanager
from typing import Any

import anyio.to_thread
import httpx
import pytest
from fastapi import Depends, FastAPI
from starlette.applications import Starlette
from starlette.exceptions import HTTPException
from starlette.middleware import Middleware
from starlette.requests import Request
from starlette.responses import PlainTextResponse
from starlette.routing import Route, WebSocketRoute
from starlette.websockets import WebSocket

from koala_async import KoalaClient, ValidationError
from koala_async.asgi import KoalaMiddleware, Message, Receive, Scope, Send
from koala_async.fastapi import Koala, ProfileId
from koala_async.testing import FakeCollector

pytestmark = pytest.mark.anyio
KNOWN = "3e6a2c18-3b02-40c4-b8d2-1842c193d3ba"


def ko_id_cookies(response: httpx.Response) -> list[str]:
    return [c for c in response.headers.get_list("set-cookie") if c.startswith("ko_id=")]


async def adopt(request: Request) -> PlainTextResponse:
    response = PlainTextResponse(request.state.koala_profile_id)
    response.set_cookie("ko_id", KNOWN)
    return response


async def forget(request: Request) -> PlainTextResponse:
    response = PlainTextResponse("bye")
    response.delete_cookie("ko_id")
    return response


async def missing(request: Request) -> PlainTextResponse:
    raise HTTPException(404)


async def echo(websocket: WebSocket) -> None:
    await websocket.accept()
    await websocket.receive_text()
    await websocket.send_text(str(getattr(websocket.state, "koala_profile_id", None)))
    await websocket.close()


app = Starlette(
    routes=[
        Route("/adopt", adopt),
        Route("/forget", forget),
        Route("/missing", missing),
        WebSocketRoute("/ws", echo),
    ],
    middleware=[Middleware(KoalaMiddleware)],
)


async def get(path: str, **kwargs: Any) -> httpx.Response:
    transport = httpx.ASGITransport(app=app)
    async with httpx.AsyncClient(transport=transport, base_url="http://t") as http:
        return await http.get(path, **kwargs)


@pytest.mark.parametrize("path", ["/adopt", "/forget"])
async def test_a_ko_id_the_app_sets_itself_wins(path: str) -> None:
    response = await get(path)
    assert len(ko_id_cookies(response)) == 1
    if path == "/adopt":
        assert ko_id_cookies(response)[0].startswith(f"ko_id={KNOWN};")
    else:
        assert "Max-Age=0" in ko_id_cookies(response)[0]


async def test_error_responses_carry_the_cookie() -> None:
    response = await get("/missing")
    assert response.status_code == 404
    assert len(ko_id_cookies(response)) == 1


async def test_a_websocket_through_a_real_app_is_left_alone() -> None:
    inbox: list[Message] = [
        {"type": "websocket.connect"},
        {"type": "websocket.receive", "text": "hi"},
    ]
    sent: list[Message] = []

    async def receive() -> Message:
        return inbox.pop(0)

    async def send(message: Message) -> None:
        sent.append(message)

    scope = {
        "type": "websocket",
        "asgi": {"version": "3.0"},
        "scheme": "ws",
        "path": "/ws",
        "raw_path": b"/ws",
        "root_path": "",
        "query_string": b"",
        "headers": [(b"cookie", b"ko_id=garbage")],
        "subprotocols": [],
    }
    await app(scope, receive, send)
    assert [m["type"] for m in sent] == ["websocket.accept", "websocket.send", "websocket.close"]
    assert not any(name == b"set-cookie" for name, _ in sent[0].get("headers", ()))
    assert sent[1]["text"] == "None", "no profile id for a websocket"


async def test_bad_cookie_options_fail_when_the_middleware_is_built() -> None:
    bad = Starlette(middleware=[Middleware(KoalaMiddleware, domain="acme.com; HttpOnly")])
    transport = httpx.ASGITransport(app=bad)
    async with httpx.AsyncClient(transport=transport, base_url="http://t") as http:
        with pytest.raises(ValidationError, match="domain must be a host name"):
            await http.get("/")


def fastapi_app(
    koala_dependency: Callable[[Request], Any], profile_dependency: Callable[[Request], Any]
) -> FastAPI:
    api = FastAPI()
    api.add_middleware(KoalaMiddleware)
    api.state.koala = "the client"

    @api.get("/")
    async def handler(
        # Defaults, not Annotated: string annotations could not see these local names.
        koala: object = Depends(koala_dependency),
        profile_id: str = Depends(profile_dependency),
    ) -> dict[str, str]:
        return {"koala": str(koala), "profile_id": profile_id}

    return api


def dependency_of(parameter: Any) -> Callable[[Request], Any]:
    return parameter.__metadata__[0].dependency  # type: ignore[no-any-return]


def sync_koala(request: Request) -> object:
    return request.app.state.koala


async def test_the_fastapi_parameters_stay_off_the_thread_pool(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    threaded: list[object] = []
    run_sync = anyio.to_thread.run_sync

    def counting(func: Callable[..., Any], *args: Any, **kwargs: Any) -> Awaitable[Any]:
        threaded.append(func)
        return run_sync(func, *args, **kwargs)

    monkeypatch.setattr(anyio.to_thread, "run_sync", counting)
    ours = fastapi_app(dependency_of(Koala), dependency_of(ProfileId))
    control = fastapi_app(sync_koala, dependency_of(ProfileId))  # proves the probe sees a hop
    for api, hops in [(ours, 0), (control, 1)]:
        transport = httpx.ASGITransport(app=api)
        async with httpx.AsyncClient(transport=transport, base_url="http://t") as http:
            response = await http.get("/", headers={"Cookie": f"ko_id={KNOWN}"})
        assert response.json() == {"koala": "the client", "profile_id": KNOWN}
        assert len(threaded) == hops
        threaded.clear()


def test_installing_koala_async_pulls_no_framework() -> None:
    frameworks = {"starlette", "fastapi", "aiohttp", "uvicorn"}
    found = {}
    for requirement in importlib.metadata.requires("koala-async") or []:
        name = re.split(r"[^A-Za-z0-9._-]", requirement, maxsplit=1)[0].lower()
        if name in frameworks:
            found[name] = requirement
    assert set(found) == {"starlette", "fastapi", "aiohttp"}, found  # each one an extra
    assert all("extra ==" in requirement for requirement in found.values()), found


def test_the_core_and_the_asgi_middleware_import_without_any_framework() -> None:
    code = (
        "import sys\n"
        "for name in ('starlette', 'fastapi', 'aiohttp'): sys.modules[name] = None\n"
        "import koala_async, koala_async.asgi, koala_async.testing\n"
        "try:\n"
        "    import koala_async.starlette\n"
        "except ImportError as exc:\n"
        "    print(exc)\n"
    )
    result = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, timeout=60, check=True
    )
    assert result.stdout.strip() == (
        "koala_async.starlette needs starlette: pip install 'koala-async[starlette]'"
    )


async def test_a_mounted_app_finds_the_client_in_the_lifespan_state() -> None:
    fake = FakeCollector()

    @asynccontextmanager
    async def lifespan(app: FastAPI) -> AsyncIterator[dict[str, KoalaClient]]:
        http = httpx.AsyncClient(transport=fake.transport())
        async with http, KoalaClient("pk_test", http_client=http) as koala:
            yield {"koala": koala}

    root = FastAPI(lifespan=lifespan)
    root.add_middleware(KoalaMiddleware)
    v1 = FastAPI()  # a mounted app's own lifespan never runs, and its app.state is its own

    @v1.post("/signup")
    async def signup(koala: Koala, profile_id: ProfileId) -> dict[str, str]:
        await koala.track("Signed Up", profile_id=profile_id)
        return {"profile_id": profile_id}

    root.mount("/v1", v1)
    async with root.router.lifespan_context(root) as state:
        assert state is not None

        async def server(scope: Scope, receive: Receive, send: Send) -> None:
            scope["state"] = dict(state)  # what uvicorn and hypercorn do with lifespan state
            await root(scope, receive, send)

        transport = httpx.ASGITransport(app=server)
        async with httpx.AsyncClient(transport=transport, base_url="http://t") as http:
            response = await http.post("/v1/signup")
        assert response.status_code == 200
    assert [(e.event, e.profile_id) for e in fake.events] == [
        ("Signed Up", response.json()["profile_id"])
    ]


async def test_without_a_client_the_error_says_where_to_put_it() -> None:
    api = FastAPI()

    @api.get("/")
    async def handler(koala: Koala) -> None:
        raise AssertionError("not reached")

    transport = httpx.ASGITransport(app=api)
    async with httpx.AsyncClient(transport=transport, base_url="http://t") as http:
        with pytest.raises(RuntimeError, match=r"koala_lifespan\(\.\.\.\).*yield \{\"koala\""):
            await http.get("/")
