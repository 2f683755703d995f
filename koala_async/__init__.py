"""koala_async: send events, identifies, page views and account traits to Koala, asynchronously."""

from ._client import BeforeSend, KoalaClient
from ._context import request_context, reset_request_context, set_request_context
from ._exceptions import (
    ClientClosedError,
    DeliveryError,
    KoalaError,
    QueueFullError,
    SpoolError,
    ValidationError,
)
from ._options import ClientOptions
from ._reporter import OnError
from ._retry import RetryPolicy
from ._stats import DeliveryFailure, DropReason, FlushResult, Stats
from ._sync import KoalaSyncClient
from ._version import __version__

__all__ = [
    "BeforeSend",
    "ClientClosedError",
    "ClientOptions",
    "DeliveryError",
    "DeliveryFailure",
    "DropReason",
    "FlushResult",
    "KoalaClient",
    "KoalaError",
    "KoalaSyncClient",
    "OnError",
    "QueueFullError",
    "RetryPolicy",
    "SpoolError",
    "Stats",
    "ValidationError",
    "__version__",
    "request_context",
    "reset_request_context",
    "set_request_context",
]


def _show_the_public_path() -> None:
    """Show the supported path in reprs, tracebacks and docs (as httpx does)."""
    from types import FunctionType

    namespace = globals()
    for name in __all__:
        member = namespace[name]
        # Not the type aliases (OnError, BeforeSend, DropReason): on 3.10 a Callable alias
        # even passes isinstance(..., type), and its __module__ is read-only.
        if isinstance(member, (type, FunctionType)) and not hasattr(member, "__origin__"):
            member.__module__ = "koala_async"


_show_the_public_path()
del _show_the_public_path
