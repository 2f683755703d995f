"""The code on the documentation pages runs as written.

sybil finds every ``python`` block of every page in ``docs/``, shown or hidden (MyST's
``% invisible-code-block: python`` comments: setup and assertions a reader need not see),
and this runs them in order, one namespace per page, against a fake collector of the
page's own on 127.0.0.1 (``KOALA_BASE_URL``). A block may ``await`` at the top level: it
runs on an event loop that lives as long as the page (an anyio blocking portal), so a
client opened in one block still delivers in the next. Hidden blocks see ``collector`` and
``tmp_path``; the samples' ``/var/lib/acme/`` paths are put in ``tmp_path``.
"""

from __future__ import annotations

import ast
import contextlib
import inspect
import re
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any, get_args

import pytest
from anyio.from_thread import BlockingPortal, start_blocking_portal
from sybil import Document, Example
from sybil.evaluators.python import pad
from sybil.parsers.myst import CodeBlockParser

from koala_async import DropReason, KoalaClient, KoalaError, KoalaSyncClient, RetryPolicy
from koala_async._options import DEFAULTS
from koala_async.testing import FakeCollector

DOCS = Path(__file__).parents[2] / "docs"
PAGES = sorted(p for p in DOCS.rglob("*.md") if "_build" not in p.parts)
SYSTEM_PATH = "/var/lib/acme/"  # where the samples keep files; a temporary directory here


def _evaluate(example: Example) -> None:
    namespace = example.namespace
    source = example.parsed.replace(SYSTEM_PATH, f"{namespace['tmp_path']}/")
    code = compile(
        pad(source, example.line + example.parsed.line_offset),
        example.path,
        "exec",
        flags=ast.PyCF_ALLOW_TOP_LEVEL_AWAIT,
        dont_inherit=True,  # the samples run without this file's `from __future__`
    )
    if code.co_flags & inspect.CO_COROUTINE:  # top-level await: on the page's event loop
        portal: BlockingPortal = namespace["__portal__"]

        async def run() -> None:
            await eval(code, namespace)

        portal.call(run)
    else:
        exec(code, namespace)


PARSER = CodeBlockParser(language="python", evaluator=_evaluate)


def _document(page: Path) -> Document:
    return Document.parse(str(page), PARSER)


def _pages_with_code() -> Iterator[Any]:
    for page in PAGES:
        if list(_document(page)):
            yield pytest.param(page, id=str(page.relative_to(DOCS)))


def _close_clients(namespace: dict[str, Any], portal: BlockingPortal) -> None:
    """Close what a page left open, so no client outlives its page's collector."""
    for value in list(namespace.values()):
        with contextlib.suppress(KoalaError):
            if isinstance(value, KoalaClient):
                portal.call(value.aclose)
            elif isinstance(value, KoalaSyncClient):
                value.close()


@pytest.mark.parametrize("page", list(_pages_with_code()))
def test_the_code_on_the_page_runs(
    page: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    document = _document(page)
    collector = FakeCollector()
    with (
        start_blocking_portal() as portal,
        portal.wrap_async_context_manager(collector.serve()) as base_url,
    ):
        monkeypatch.setenv("KOALA_BASE_URL", base_url)
        monkeypatch.setenv("KOALA_PUBLIC_API_KEY", "pk_test")
        namespace = document.namespace
        namespace.update(
            __name__="__main__", __portal__=portal, collector=collector, tmp_path=tmp_path
        )
        failed: Exception | None = None
        try:
            for example in document:
                example.evaluate()
        except Exception as exc:  # raised below, not wrapped in the server's task group
            failed = exc
        finally:
            _close_clients(namespace, portal)
    if failed is not None:
        raise failed
    assert collector.violations == []


def test_every_page_is_in_the_table_of_contents() -> None:
    """A page left out of every toctree is built but never reachable from the site."""
    listed = set()
    for page in PAGES:
        text = page.read_text()
        for block in text.split("```{toctree}")[1:]:
            entries = block.split("```")[0].splitlines()
            for entry in entries:
                if entry.strip() and not entry.startswith(":"):
                    listed.add((page.parent / entry.strip()).with_suffix(".md"))
    assert {p for p in PAGES if p.name != "index.md"} - listed == set()


def _table_rows(page: str, heading: str) -> dict[str, str]:
    """The first table under ``heading`` on a reference page: first cell -> second cell."""
    text = (DOCS / "reference" / page).read_text()
    section = text[text.index(heading) :]
    rows: dict[str, str] = {}
    for line in section.splitlines()[2:]:
        if rows and not line.startswith("|"):
            break
        cells = [cell.strip() for cell in line.strip("|").split("|")]
        if len(cells) > 1 and cells[0].startswith("`"):
            rows[cells[0].strip("`")] = cells[1]
    return rows


def _defaults(function: Callable[..., object]) -> dict[str, object]:
    parameters = inspect.signature(function).parameters.values()
    return {p.name: p.default for p in parameters if p.name != "self"}


@pytest.mark.parametrize(
    ("heading", "defaults"),
    [
        ("## Client options", {"public_api_key": None, **DEFAULTS}),
        ("## `RetryPolicy`", _defaults(RetryPolicy)),
    ],
)
def test_the_options_page_gives_every_option_and_its_default(
    heading: str, defaults: dict[str, object]
) -> None:
    rows = _table_rows("options.md", heading)
    assert list(rows) == list(defaults)  # every option, in the order they are declared
    for name, default in defaults.items():
        shown = re.match(r"`([^`]*)`", rows[name])
        if default is None:  # read from the environment, made for you, or unset
            continue
        assert shown, f"{name}: the default should be written as code"
        assert eval(shown.group(1)) == default, name


def test_both_clients_take_the_options_declared_once() -> None:
    for client in (KoalaClient, KoalaSyncClient):
        parameters = inspect.signature(client.__init__).parameters
        assert list(parameters) == ["self", "public_api_key", "options"]
        assert "Unpack[ClientOptions]" in str(parameters["options"].annotation)


def test_the_stats_page_explains_every_drop_reason() -> None:
    assert list(_table_rows("stats.md", "## Drop reasons")) == list(get_args(DropReason))


def test_the_supported_pythons_are_those_nox_tests() -> None:
    """The README's and the install page's tables say "supported" of what nox runs, only."""
    noxfile = (DOCS.parent / "noxfile.py").read_text()
    [listed] = re.findall(r"^SUPPORTED = (\[.*?\])", noxfile, re.M)
    tested = ast.literal_eval(listed)
    for page in (DOCS.parent / "README.md", DOCS / "install.md"):
        claimed = re.findall(r"^\| (3\.\d+t?) \| supported \|", page.read_text(), re.M)
        assert claimed == tested, page.name
