"""Retry decisions beyond tests/unit/test_decisions.py: which failures mean the endpoint is
gone or unreachable, a ``Retry-After`` date read against the given clock, and the budget's
edge."""

from __future__ import annotations

from datetime import datetime, timezone
from email.utils import format_datetime

import httpx
import pytest

from koala_async import RetryPolicy
from koala_async._retry import Tries, Verdict, classify, classify_error, retry_after


class _Misconfigured(httpx.TransportError):
    """As the transport marks a redirect, or TLS and plain HTTP crossed."""

    gone = True


def test_an_error_marked_gone_means_the_endpoint_is_gone_even_wrapped() -> None:
    assert classify_error(_Misconfigured("301 to https://elsewhere")) is Verdict.GONE
    wrapped = httpx.ConnectError("failed")
    wrapped.__cause__ = _Misconfigured("TLS to a plain-HTTP port")
    assert classify_error(wrapped) is Verdict.GONE


def test_an_error_not_marked_gone_is_retried() -> None:
    class Marked(httpx.TransportError):
        gone = False

    assert classify_error(Marked("x")) is Verdict.RETRY


def test_a_connect_timeout_means_unreachable() -> None:
    assert classify_error(httpx.ConnectTimeout("no SYN-ACK")) is Verdict.UNREACHABLE


def test_an_error_chain_that_loops_is_still_classified() -> None:
    first, second = httpx.ReadError("a"), OSError("b")
    first.__cause__ = second
    second.__context__ = first
    assert classify_error(first) is Verdict.RETRY


@pytest.mark.parametrize("status", [600, 700, 999])
def test_a_status_past_5xx_is_not_retried(status: int) -> None:
    assert classify(status) is Verdict.REJECTED


def test_a_retry_after_date_is_read_against_the_clock_given() -> None:
    when = datetime(2030, 1, 1, tzinfo=timezone.utc)
    header = format_datetime(when, usegmt=True)
    assert retry_after(header, now=when.timestamp() - 30) == pytest.approx(30)


def test_a_budget_spent_exactly_allows_the_retry() -> None:
    tries = Tries(RetryPolicy(backoff=0.5, budget=1.5), jitter=lambda ceiling: ceiling)
    assert tries.failed(0.0, None) == 0.5
    assert tries.failed(0.0, None) == 1.0, "0.5 + 1.0 is the whole budget, not past it"
    assert tries.failed(0.0, None) is None
