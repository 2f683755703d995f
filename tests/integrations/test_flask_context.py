"""The sync request context through a real server: the Flask example under gunicorn, behind
a (pretend) proxy that ProxyFix trusts (``TRUSTED_PROXIES=1``). A request with
``X-Forwarded-For``, ``User-Agent`` and ``Referer`` must reach a collector on 127.0.0.1 as
bodies with that top-level ``ip`` and entries whose ``context`` has that user agent and page.
"""

from __future__ import annotations

import http.client
import json
import signal
from pathlib import Path
from typing import Any

import pytest
from sync_support import collector, gunicorn, received
from test_context_examples import REFERRER, USER_AGENT, VISITOR_IP

import koala_async

pytest.importorskip("flask")

SEARCH = {"search": "?utm_source=news"}


def request(url: str, method: str, path: str, headers: dict[str, str], body: Any = None) -> Any:
    host, port = url.removeprefix("http://").split(":")
    connection = http.client.HTTPConnection(host, int(port), timeout=30)
    try:
        data = None if body is None else json.dumps(body)
        connection.request(method, path, data, headers)
        answer = connection.getresponse()
        content = answer.read()
    finally:
        connection.close()
    assert answer.status == 200, content
    return json.loads(content)


def test_a_visitor_behind_a_proxy_reaches_koala_with_ip_and_context(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("TRUSTED_PROXIES", "1")
    log = tmp_path / "gunicorn.log"
    headers = {"X-Forwarded-For": VISITOR_IP, "User-Agent": USER_AGENT, "Referer": REFERRER}
    with (
        collector(tmp_path) as (base_url, jsonl),
        gunicorn("examples.flask_app:app", base_url, log) as (
            server,
            url,
        ),
    ):
        port = url.rsplit(":", 1)[1]
        profile_id = request(url, "GET", "/pricing?utm_source=news", headers)["profile_id"]
        signup = {"email": "ada@acme.com", "plan": "pro"}
        request(
            url,
            "POST",
            "/signup",
            {**headers, "Cookie": f"ko_id={profile_id}", "Content-Type": "application/json"},
            signup,
        )
        server.send_signal(signal.SIGTERM)
        assert server.wait(timeout=30) == 0, log.read_text()
        bodies = received(jsonl)  # each checked against the spec by the collector
    output = log.read_text()
    assert bodies, output
    # Two workers: the page view and the signup may each come from either.
    assert {b["profile_id"] for b in bodies} == {profile_id}, output
    assert {b["ip"] for b in bodies} == {VISITOR_IP}, "the proxy's own address was sent"
    entries = [
        e for b in bodies for k in ("page_views", "identifies", "events") for e in b.get(k, ())
    ]
    [page] = [e for b in bodies for e in b.get("page_views", ())]
    assert page["name"] == "Pricing"
    context = page["context"]
    assert set(context) == {"ip", "userAgent", "page", "library"}
    assert (context["ip"], context["userAgent"]) == (VISITOR_IP, USER_AGENT)
    url = f"http://127.0.0.1:{port}/pricing?utm_source=news"
    assert context["page"] == {"url": url, "path": "/pricing", "referrer": REFERRER, **SEARCH}
    assert context["library"]["version"] == koala_async.__version__
    assert len(entries) == 3  # the page view, the identify and the track
    for entry in entries:
        assert entry["context"]["ip"] == VISITOR_IP
        assert entry["context"]["userAgent"] == USER_AGENT
        assert entry["context"]["page"]["referrer"] == REFERRER
