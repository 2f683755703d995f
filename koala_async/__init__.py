"""koala_async: send events, identifies, page views and account traits to Koala, asynchronously."""

from ._client import KoalaClient
from ._exceptions import (
    ClientClosedError,
    DeliveryError,
    KoalaError,
    QueueFullError,
    ValidationError,
)
from ._retry import RetryPolicy
from ._stats import DeliveryFailure, FlushResult, Stats
from ._version import __version__

__all__ = [
    "ClientClosedError",
    "DeliveryError",
    "DeliveryFailure",
    "FlushResult",
    "KoalaClient",
    "KoalaError",
    "QueueFullError",
    "RetryPolicy",
    "Stats",
    "ValidationError",
    "__version__",
]
