"""Developer tasks: ``nox -s tests lint typecheck`` is what CI runs; ``nox -s bench`` measures."""

from __future__ import annotations

import nox

nox.options.default_venv_backend = "venv"
nox.options.reuse_existing_virtualenvs = True

TEST_DEPS = [
    "pytest>=8",
    "pytest-timeout>=2.3",
    "hypothesis>=6.100",
    "jsonschema>=4.21",
    "trio>=0.25",
    "uvicorn>=0.29",
    "trustme>=1.1",
    # The sync client's real-process tests: gunicorn serves the Flask and Django examples;
    # Celery talks to a redis-server the tests start (.ci/run installs it).
    "gunicorn>=22",
    "redis>=5",
]
EXTRAS = ".[starlette,fastapi,aiohttp,django,flask,celery]"


@nox.session
def tests(session: nox.Session) -> None:
    """Run the test suite on asyncio and trio (anyio's pytest plugin)."""
    session.install("-e", EXTRAS, *TEST_DEPS)
    session.run("pytest", *session.posargs)


@nox.session
def lint(session: nox.Session) -> None:
    """Ruff: lint and formatting."""
    session.install("ruff>=0.6")
    session.run("ruff", "check", ".")
    session.run("ruff", "format", "--check", ".")


@nox.session
def typecheck(session: nox.Session) -> None:
    """mypy --strict over the package and its tests."""
    session.install("-e", EXTRAS, *TEST_DEPS, "mypy>=1.10", "types-jsonschema", "django-stubs>=5")
    session.run("mypy")


@nox.session
def bench(session: nox.Session) -> None:
    """Benchmarks against Segment's and PostHog's clients, printed as a table of ratios."""
    session.install("-e", ".", "segment-analytics-python==2.4.0", "posthog==7.91.1")
    session.run("python", "benchmarks/run.py", *session.posargs)
