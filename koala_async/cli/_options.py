"""What the commands share: connection options, the key, KEY=VALUE pairs, plurals, colour."""

from __future__ import annotations

import argparse
import json
import logging
import os
import re
from typing import Any, TextIO

from .. import KoalaError
from ..backfill import CALLS, CallKind

__all__ = [
    "DEFAULT_BASE_URL",
    "LogFormatter",
    "color",
    "connection_options",
    "endpoint",
    "key",
    "option_name",
    "pairs",
    "plural",
]

DEFAULT_BASE_URL = "https://api2.getkoala.com"


def connection_options(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--key", help="public API key (default: $KOALA_PUBLIC_API_KEY)")
    parser.add_argument("--base-url", help="default: $KOALA_BASE_URL, else Koala's API")
    parser.add_argument("--user-agent", default="koala-async-cli")


def key(args: argparse.Namespace) -> str:
    value: str | None = args.key or os.environ.get("KOALA_PUBLIC_API_KEY")
    if not value:
        raise KoalaError("pass --key or set KOALA_PUBLIC_API_KEY to your workspace's public key")
    return value


def endpoint(args: argparse.Namespace, public_key: str) -> str:
    """The ``/batch`` URL the client sends to, with the key redacted, for messages."""
    base = args.base_url or os.environ.get("KOALA_BASE_URL") or DEFAULT_BASE_URL
    shown = f"{public_key[:4]}…" if len(public_key) > 8 else "…"  # as the client's logs
    return f"{base.rstrip('/')}/web/projects/{shown}/batch"


def option_name(parameter: str) -> str:
    """The ``send`` option that fills a call's parameter: ``--prop`` for properties."""
    return {"properties": "--prop", "traits": "--trait"}.get(
        parameter, "--" + parameter.replace("_", "-")
    )


def calls_taking(parameter: str) -> list[CallKind]:
    return [call for call in CALLS.values() if parameter in call.parameters]


def pairs(values: list[str], option: str) -> dict[str, Any]:
    """Parse KEY=VALUE options; values that are JSON (12, true, ["a"]) keep their type."""
    result: dict[str, Any] = {}
    for pair in values:
        name, sep, value = pair.partition("=")
        if not sep or not name:
            raise KoalaError(f"{option} takes KEY=VALUE, got {pair!r}")
        try:
            result[name] = json.loads(value)
        except json.JSONDecodeError:
            result[name] = value
    return result


def plural(count: int, noun: str) -> str:
    """``1 entry``, ``2 entries``, ``1,000 lines``."""
    if count == 1:
        return f"1 {noun}"
    noun = noun[:-1] + "ies" if noun.endswith("y") else noun + "s"
    return f"{count:,} {noun}"


def color(text: str, code: str, stream: TextIO) -> str:
    return (
        f"\033[{code}m{text}\033[0m" if stream.isatty() and not os.environ.get("NO_COLOR") else text
    )


class LogFormatter(logging.Formatter):
    """``koala-async: warning: <message>``, naming the program once.

    The core's messages may still start with ``koala_async: `` (from when they were meant
    for handlers that do not name the logger); that prefix is dropped here, and so is the
    "1 entries" such messages say with a ``%d``.
    """

    _PREFIX = "koala_async: "
    _ONE = re.compile(r"\b1 entries\b")

    def format(self, record: logging.LogRecord) -> str:
        message = record.getMessage().removeprefix(self._PREFIX)
        message = self._ONE.sub("1 entry", message)
        text = f"koala-async: {record.levelname.lower()}: {message}"
        if record.exc_info:
            text += "\n" + self.formatException(record.exc_info)
        return text
