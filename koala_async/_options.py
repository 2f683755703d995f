"""Every option of both clients, declared once.

:class:`~koala_async.KoalaClient` and :class:`~koala_async.KoalaSyncClient` take
``**options: Unpack[ClientOptions]``: a new option is added here (and checked in
:mod:`._config`), never in two signatures.
"""

from __future__ import annotations

import os
from collections.abc import Mapping
from typing import TYPE_CHECKING, Any, TypedDict

if TYPE_CHECKING:
    import httpx

    from ._config import OnFull
    from ._intake import BeforeSend
    from ._reporter import OnError
    from ._retry import RetryPolicy

__all__ = ["DEFAULTS", "ClientOptions", "resolve"]


class ClientOptions(TypedDict, total=False):
    """The options of :class:`~koala_async.KoalaClient` and
    :class:`~koala_async.KoalaSyncClient`, all keyword-only; each is described in
    ``KoalaClient``'s docstring and its default is in :data:`DEFAULTS`. Annotate a function
    that passes them on with ``**options: Unpack[ClientOptions]``."""

    base_url: str | None
    user_agent: str | None
    flush_interval: float
    max_queue_size: int
    on_full: OnFull
    max_concurrent_requests: int
    http_client: httpx.AsyncClient | None
    enabled: bool
    timeout: float
    shutdown_timeout: float
    retry: RetryPolicy | None
    on_error: OnError | None
    before_send: BeforeSend | None
    strict: bool
    send_ip: bool
    spool: str | os.PathLike[str] | None
    spool_dir: str | os.PathLike[str] | None
    spool_commit_interval: float
    spool_max_bytes: int
    spool_max_age: float


DEFAULTS: Mapping[str, Any] = {
    "base_url": None,  # KOALA_BASE_URL, else Koala's API
    "user_agent": None,
    "flush_interval": 1.0,
    "max_queue_size": 100_000,
    "on_full": "pace",
    "max_concurrent_requests": 256,
    "http_client": None,
    "enabled": True,
    "timeout": 10.0,
    "shutdown_timeout": 10.0,
    "retry": None,  # RetryPolicy()
    "on_error": None,
    "before_send": None,
    "strict": False,
    "send_ip": True,
    "spool": None,
    "spool_dir": None,
    "spool_commit_interval": 0.2,
    "spool_max_bytes": 1 << 30,
    "spool_max_age": 7 * 86400.0,
}
"""Each option's default, as the clients apply it."""


def resolve(options: Mapping[str, Any], owner: str) -> dict[str, Any]:
    """The options given, over the defaults. A name no client takes raises ``TypeError``
    (as a misspelt keyword does), naming the closest option."""
    unknown = options.keys() - DEFAULTS.keys()
    if unknown:
        import difflib  # for a misspelt option only

        name = sorted(unknown)[0]
        close = difflib.get_close_matches(name, DEFAULTS, n=1)
        hint = f"; did you mean {close[0]!r}?" if close else f"; it takes {', '.join(DEFAULTS)}"
        raise TypeError(f"{owner}() got an unexpected keyword argument {name!r}{hint}")
    return {**DEFAULTS, **options}
