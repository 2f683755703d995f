"""The README's sync quickstart and the docs' sync pages run as written, against a collector."""

from __future__ import annotations

import os
import re
import subprocess
import sys
import textwrap
from pathlib import Path
from typing import Any

import pytest
from sync_support import ROOT, collector, message_ids, received

README = (ROOT / "README.md").read_text()
SECTION = README[README.index("### From sync code") : README.index("## Documentation")]
# The sync pages of the docs site (tests/test_docs.py runs them too, in this process; these
# tests run them as users do, in a process of their own).
PAGES = [
    ROOT / "docs" / "how-to" / f"{page}.md" for page in ("scripts", "django", "flask", "celery")
]
BLOCKS = re.findall(
    r"```python\n(.*?)```", "\n".join([SECTION] + [p.read_text() for p in PAGES]), re.S
)


def test_the_sync_snippet_delivers_to_a_local_collector(tmp_path: Path) -> None:
    snippet = BLOCKS[0]
    assert "KoalaSyncClient(" in snippet
    with collector(tmp_path) as (base_url, received):
        env = {"KOALA_BASE_URL": base_url, "KOALA_PUBLIC_API_KEY": "pk_test", "PATH": ""}
        done = subprocess.run(
            [sys.executable, "-c", snippet], env=env, capture_output=True, text=True, timeout=60
        )
        assert done.returncode == 0, done.stderr
        assert message_ids(received).total() == 1


@pytest.mark.parametrize("framework", ["django", "flask", "celery"])
def test_each_framework_section_imports_and_builds(framework: str) -> None:
    pytest.importorskip(framework)
    blocks = [b for b in BLOCKS if f"koala_async.{framework}" in b and "import" in b]
    assert blocks, f"no {framework} example in docs/how-to/{framework}.md"
    prelude = ""
    if framework == "django":
        prelude = textwrap.dedent(
            """
            import django
            from django.conf import settings
            settings.configure(KOALA={"enabled": False})
            django.setup()
            """
        )
    code = prelude + "\n".join(blocks)
    env = {**os.environ, "KOALA_PUBLIC_API_KEY": "pk_test"}  # no call is made: nothing is sent
    done = subprocess.run(
        [sys.executable, "-c", code], cwd=ROOT, env=env, capture_output=True, text=True, timeout=60
    )
    assert done.returncode == 0, done.stderr


def test_the_options_snippet_filters_drops_and_sends_the_rest(tmp_path: Path) -> None:
    [snippet] = [b for b in BLOCKS if "before_send=scrub" in b]
    with collector(tmp_path) as (base_url, jsonl):
        env = {"KOALA_BASE_URL": base_url, "KOALA_PUBLIC_API_KEY": "pk_test", "PATH": ""}
        done = subprocess.run(
            [sys.executable, "-c", snippet], env=env, capture_output=True, text=True, timeout=60
        )
        assert done.returncode == 0, done.stderr
        [body] = received(jsonl)
    assert done.stdout == "1 1\n"
    assert "dropped a call (invalid)" in done.stderr  # logged, not raised
    assert body["email"] == "ada@acme.com"
    assert body["ip"] == "203.0.113.7"
    assert body["events"][0]["context"]["locale"] == "en-US"


def test_the_django_proxy_middleware_gives_koala_the_visitors_address() -> None:
    django = pytest.importorskip("django")
    from django.conf import settings
    from django.http import HttpRequest, HttpResponse
    from django.test import RequestFactory, override_settings

    from koala_async._context import current
    from koala_async.django import KoalaMiddleware

    if not settings.configured:
        settings.configure(KOALA={"enabled": False})
        django.setup()
    [snippet] = [b for b in BLOCKS if "def forwarded_for" in b]
    namespace: dict[str, Any] = {}
    exec(snippet, namespace)
    seen: list[str | None] = []

    def view(request: HttpRequest) -> HttpResponse:
        context = current()
        seen.append(None if context is None else context.ip)
        return HttpResponse()

    app = namespace["forwarded_for"](KoalaMiddleware(view))
    request = RequestFactory().get(
        "/", REMOTE_ADDR="10.0.0.5", HTTP_X_FORWARDED_FOR="198.51.100.1, 203.0.113.7"
    )
    with override_settings(ALLOWED_HOSTS=["*"]):
        app(request)
        app(RequestFactory().get("/", REMOTE_ADDR="10.0.0.5"))  # not forwarded: the peer
    assert seen == ["203.0.113.7", "10.0.0.5"]
