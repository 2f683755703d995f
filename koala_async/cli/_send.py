"""``koala-async send KIND ...``: make one call and wait for Koala to take it."""

from __future__ import annotations

import argparse
import json
import logging
import sys
from typing import Any

from .. import DeliveryError, DeliveryFailure, KoalaClient, KoalaError, RetryPolicy
from ..backfill import CALLS, CallKind
from ._options import calls_taking, connection_options, key, option_name, pairs

__all__ = ["add_parser"]

# Every parameter of any call that ``send`` takes as an option (event is positional).
_OPTIONS = sorted(
    {name for call in CALLS.values() for name in call.parameters} - {"event"},
    key=lambda name: (name in ("properties", "traits"), name),
)


def add_parser(commands: Any) -> argparse.ArgumentParser:
    send: argparse.ArgumentParser = commands.add_parser(
        "send", help="make one call, e.g. send track 'Signed Up' --email …"
    )
    send.add_argument("kind", choices=[name.replace("_", "-") for name in CALLS])
    send.add_argument("event", nargs="?", help="the event name, for track and account-track")
    for name in _OPTIONS:
        if name in ("properties", "traits"):
            send.add_argument(option_name(name), dest=name, action="append", metavar="KEY=VALUE")
        elif name == "context":
            send.add_argument(
                "--context",
                action="append",
                metavar="JSON|KEY=VALUE",
                help="the call's context: a JSON object, or KEY=VALUE (repeatable)",
            )
        elif name == "sent_at":
            send.add_argument("--sent-at", dest=name, help="ISO 8601 time (default: now)")
        else:
            send.add_argument(option_name(name), dest=name)
    send.add_argument(
        "--timeout", type=float, default=15.0, help="give up after SECONDS (default 15)"
    )
    connection_options(send)
    send.set_defaults(run=_send)
    return send


def arguments(call: CallKind, args: argparse.Namespace) -> dict[str, Any]:
    """The call's keyword arguments from ``args``; an option the call does not take is an
    error that names the one it does take, rather than being dropped."""
    kind = call.name.replace("_", "-")
    for name in _OPTIONS:
        if getattr(args, name) is None or name in call.parameters:
            continue
        if name in ("properties", "traits"):
            raise KoalaError(f"{kind} takes {option_name(call.payload)}, not {option_name(name)}")
        if name in ("profile_id", "email", "domain", "account_id"):
            ids = " or ".join(option_name(i) for i in call.ids)
            raise KoalaError(f"{kind} takes {ids}, not {option_name(name)}")
        others = [c.name.replace("_", "-") for c in calls_taking(name)]
        verb = "does" if len(others) == 1 else "do"
        raise KoalaError(f"{kind} takes no {option_name(name)}; {', '.join(others)} {verb}")
    if "event" in call.positional:
        kwargs: dict[str, Any] = {"event": args.event}
    elif args.event is not None:
        raise KoalaError(f"{kind} takes no event name; did you mean track?")
    else:
        kwargs = {}
    for name in call.parameters:
        value = getattr(args, name, None)
        if name == call.payload:
            kwargs[name] = pairs(value or [], option_name(name))
        elif name == "context" and value is not None:
            kwargs[name] = context(value)
        elif name != "event" and value is not None:
            kwargs[name] = value
    return kwargs


def context(values: list[str]) -> dict[str, Any]:
    """``--context`` options: JSON objects (``'{"locale": "en-US"}'``) and ``KEY=VALUE``
    pairs, merged in order; a value that is JSON keeps its type."""
    result: dict[str, Any] = {}
    for value in values:
        if value.lstrip().startswith("{"):
            try:
                parsed = json.loads(value)
            except json.JSONDecodeError as exc:
                raise KoalaError(f"--context {value!r} is not a JSON object: {exc}") from None
            result.update(parsed)
        else:
            result.update(pairs([value], "--context (a JSON object, or KEY=VALUE)"))
    return result


async def _send(args: argparse.Namespace) -> int:
    call = CALLS[args.kind.replace("-", "_")]
    kwargs = arguments(call, args)
    if not args.verbose:
        logging.getLogger("koala_async").setLevel(logging.ERROR)  # we say what happened
    failures: list[DeliveryFailure] = []
    async with KoalaClient(
        key(args),
        base_url=args.base_url,
        user_agent=args.user_agent,
        timeout=min(args.timeout, 10.0),
        retry=RetryPolicy(budget=args.timeout),
        shutdown_timeout=1.0,
        on_error=failures.append,
        strict=True,  # bad input exits 2 with the message, rather than being counted
    ) as koala:
        message_id = await getattr(koala, call.name)(**kwargs)
        try:
            await koala.flush(timeout=args.timeout)
        except DeliveryError as exc:
            print(f"koala-async: not delivered: {exc}", file=sys.stderr)
            return 1
    stats = koala.stats()
    if stats.delivered:
        suffix = f" (message_id {message_id})" if message_id else ""
        print(f"delivered: {args.kind}{suffix}")
        return 0
    reason = failures[0].reason if failures else "not delivered in time"
    detail = f": {stats.last_error}" if stats.last_error else ""
    print(
        f"koala-async: not delivered within {args.timeout:g}s ({reason}){detail}", file=sys.stderr
    )
    return 1
