"""Developer tasks: ``nox`` runs what CI runs (``tests``, ``tests_other_pythons``, ``lint``,
``typecheck``, ``docs``); ``nox -s bench`` measures.

``tests`` runs the whole suite on the interpreter nox runs on, in two processes
(pytest-xdist): most tests wait on real servers, so two took the suite from 337 s to 185 s
on a 2-core machine. ``tests_other_pythons`` runs
the fast, pure tests (validation, encoding, ids, timestamps: what differs between Python
versions) on every other supported Python that is installed, and skips, saying so, those
that are not: the whole suite on four Pythons would take CI past its time budget.
"""

from __future__ import annotations

import os
import re
import sys
from pathlib import Path

import nox

nox.options.default_venv_backend = "venv"
nox.options.reuse_existing_virtualenvs = True
nox.options.sessions = ["tests", "tests_other_pythons", "lint", "typecheck", "docs"]
# Run on the Pythons this machine has; the summary lists the others as skipped.
nox.options.error_on_missing_interpreters = False
nox.options.download_python = "never"  # test the Pythons installed, not fetched builds

SUPPORTED = ["3.10", "3.11", "3.12", "3.13"]  # as pyproject's requires-python and classifiers
RUNNING = f"{sys.version_info.major}.{sys.version_info.minor}"
OTHERS = [version for version in SUPPORTED if version != RUNNING]
TEST_DEPS = [
    "pytest>=8",
    "pytest-timeout>=2.3",
    "pytest-xdist>=3.5",
    "hypothesis>=6.100",
    "jsonschema>=4.21",
    "trio>=0.25",
    "uvicorn>=0.29",
    "trustme>=1.1",
    # uvicorn runs on uvloop where it is installed (uvicorn[standard]): so do some tests.
    "uvloop>=0.19; platform_system != 'Windows'",
    # The sync client's real-process tests: gunicorn serves the Flask and Django examples;
    # Celery talks to a redis-server the tests start (.ci/run installs it).
    "gunicorn>=22",
    "redis>=5",
    # gevent is supported, so it is tested: a script under patch_all, gunicorn -k gevent
    # (with --preload), celery -P gevent. hypercorn: SIGTERM under a second ASGI server.
    "gevent>=24.2",
    "hypercorn>=0.17",
    # koala_async.otel is tested with the SDK's InMemoryMetricReader (the extra needs the API only).
    "opentelemetry-sdk>=1.27",
    # examples/lambda_asgi.py: an ASGI app on AWS Lambda (tests/integrations/test_serverless.py).
    "mangum>=0.17",
    # tests/system/test_docs.py runs the code on the documentation pages.
    "sybil>=6",
]
# tests/integrations/test_spark.py: koala_async.spark on Spark in local mode (on the Java
# .ci/run installs), through examples/spark_backfill.py, which typecheck checks against
# pyspark's own types. Heavy (~490 MB), so only those two sessions install it.
SPARK = ["pyspark>=3.5"]
PEERS = ["segment-analytics-python==2.4.0", "posthog==7.91.1"]  # measured side by side
FRAMEWORKS = "starlette,fastapi,aiohttp,django,flask,celery,dask,otel,prometheus"  # extras
EXTRAS = f".[{FRAMEWORKS}]"
# The pure tier, plus what differs between Python versions (validation, encoding, what the
# core awaits: asyncio's own on 3.11+, anyio's on 3.10): each other Python runs these.
FAST_TESTS = [
    "tests/unit",
    "tests/engine/test_validation.py",
    "tests/engine/test_encoding.py",
    "tests/engine/test_redact.py",
    "tests/engine/test_loop.py",
    "tests/engine/test_lifecycle.py",
]


def _expose_pyenv_pythons() -> None:
    """Make pyenv's interpreters findable as ``python3.X``.

    nox looks for ``python3.X`` on PATH, but pyenv's shims answer only for the versions
    ``pyenv global`` names ("pyenv: python3.10: command not found"). This links the newest
    installed patch release of each supported version into ``.nox/_pythons`` and puts that
    first on PATH; where pyenv is absent it does nothing and nox searches as usual.
    """
    versions = Path(os.environ.get("PYENV_ROOT", Path.home() / ".pyenv")) / "versions"
    if not versions.is_dir():
        return
    links = Path(__file__).parent / ".nox" / "_pythons"
    for version in SUPPORTED:
        # Only plain releases: "3.13.0t" (free-threaded) and "3.12-dev" are not targets.
        found = sorted(
            (tuple(map(int, d.name.split("."))), d / "bin" / f"python{version}")
            for d in versions.glob(f"{version}.*")
            if re.fullmatch(rf"{re.escape(version)}\.\d+", d.name)
        )
        link = links / f"python{version}"
        if link.is_symlink():
            link.unlink()  # a link left from before may point at a version since removed
        if found and found[-1][1].is_file():
            links.mkdir(parents=True, exist_ok=True)
            link.symlink_to(found[-1][1])
    if links.is_dir():
        os.environ["PATH"] = f"{links}{os.pathsep}{os.environ.get('PATH', '')}"


_expose_pyenv_pythons()


@nox.session
def tests(session: nox.Session) -> None:
    """Run the test suite on asyncio and trio (anyio's pytest plugin)."""
    # The peers: the benchmarks' pieces are tested.
    session.install("-e", EXTRAS, *TEST_DEPS, *SPARK, *PEERS)
    session.run("pytest", *(session.posargs or ["-n", "2"]))


@nox.session
def unit(session: nox.Session) -> None:
    """The pure tier (tests/unit: no sockets, no event loops): seconds, for every edit."""
    session.install("-e", ".", *TEST_DEPS)
    session.run("pytest", "tests/unit", *session.posargs)


@nox.session
def mutation(session: nox.Session) -> None:
    """mutmut over the pure core (pyproject's [tool.mutmut]) against the unit tier alone:
    a mutant that survives is a missing test, or a change named as equivalent there."""
    session.install("-e", ".", *TEST_DEPS, "mutmut>=3.3")
    # posargs go to `mutmut run`: mutant name globs, and a last --max-children wins, e.g.
    # `nox -s mutation -- --max-children 1 "koala_async._ledger*"` on a shared machine.
    session.run("mutmut", "run", "--max-children", str(os.cpu_count() or 2), *session.posargs)
    session.run("python", "tools/mutation_score.py")


@nox.session(python=OTHERS)
def tests_other_pythons(session: nox.Session) -> None:
    """Run the fast, pure tests on each other supported Python that is installed."""
    session.install("-e", ".", *TEST_DEPS)
    session.run("pytest", *(session.posargs or FAST_TESTS))


@nox.session
def lint(session: nox.Session) -> None:
    """Ruff: lint and formatting."""
    session.install("ruff>=0.6")
    session.run("ruff", "check", ".")
    session.run("ruff", "format", "--check", ".")


@nox.session
def typecheck(session: nox.Session) -> None:
    """mypy --strict over the package and its tests; pyright --strict over the package,
    gated on private usage and possibly-unbound variables (tools/pyright_gate.py)."""
    session.install(
        "-e",
        EXTRAS,
        *TEST_DEPS,
        *SPARK,
        "mypy>=1.10",
        "types-jsonschema",
        "django-stubs>=5",
        "pyright>=1.1.380",
    )
    session.run("mypy")
    session.run("python", "tools/pyright_gate.py")


@nox.session
def docs(session: nox.Session) -> None:
    """Build the docs site (docs/_build/html) with warnings as errors, and check its links.

    The API reference imports every integration, so the frameworks are installed. Links
    between pages and to their anchors are checked by the build (MyST reports a missing
    one); ``linkcheck`` then fetches nothing (``linkcheck_ignore`` skips links out of the
    site), so neither step needs the network.
    """
    session.install("-e", f".[docs,{FRAMEWORKS}]")
    build = Path("docs", "_build")
    for builder in ("html", "linkcheck"):
        # -E: read every page each time, so a warning in a page unchanged since the last
        # build is raised again rather than hidden by Sphinx's saved environment.
        options = ["-E", "-W", "--keep-going", "-q", "-b", builder]
        session.run("sphinx-build", *options, "docs", str(build / builder))


@nox.session
def bench(session: nox.Session) -> None:
    """Benchmarks against Segment's and PostHog's clients, printed as a table of ratios."""
    session.install("-e", ".", *PEERS)
    session.run("python", "benchmarks/run.py", *session.posargs)
