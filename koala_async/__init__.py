"""koala_async: send events, identifies, page views and account traits to Koala, asynchronously."""

from ._client import KoalaClient
from ._exceptions import (
    ClientClosedError,
    DeliveryError,
    KoalaError,
    QueueFullError,
    SpoolError,
    ValidationError,
)
from ._reporter import OnError
from ._retry import RetryPolicy
from ._stats import DeliveryFailure, DropReason, FlushResult, Stats
from ._version import __version__

__all__ = [
    "ClientClosedError",
    "DeliveryError",
    "DeliveryFailure",
    "DropReason",
    "FlushResult",
    "KoalaClient",
    "KoalaError",
    "OnError",
    "QueueFullError",
    "RetryPolicy",
    "SpoolError",
    "Stats",
    "ValidationError",
    "__version__",
]

# Show the supported path in reprs, tracebacks and docs (as httpx does).
for _name in __all__:
    _member = globals()[_name]
    if isinstance(_member, type):
        _member.__module__ = "koala_async"
del _name, _member
