"""The exceptions koala_async raises, all rooted at :class:`KoalaError`.

::

    KoalaError
    ├── ValidationError     (also a ValueError) bad input, raised at the call
    ├── ClientClosedError   the client is not open: not entered yet, closing, closed, or forked
    ├── QueueFullError      the queue is full and ``on_full="raise"``
    ├── DeliveryError       Koala refused the key for good (HTTP 401, or ingest suspended)
    └── SpoolError          the spool file is another process's, corrupt, or not a spool
"""

from __future__ import annotations

__all__ = [
    "ClientClosedError",
    "DeliveryError",
    "KoalaError",
    "QueueFullError",
    "SpoolError",
    "ValidationError",
]


class KoalaError(Exception):
    """Base class of every error koala_async raises."""


class ValidationError(KoalaError, ValueError):
    """An argument cannot be sent to Koala; the message says what to fix."""


class ClientClosedError(KoalaError):
    """The client does not take calls in its current state."""


class QueueFullError(KoalaError):
    """``max_queue_size`` entries are waiting and the client was built with ``on_full="raise"``."""


class DeliveryError(KoalaError):
    """Koala refuses every request made with this key; nothing more will be sent."""


class SpoolError(KoalaError):
    """The spool file cannot be used: another live client owns it, or it is not a readable
    spool (corrupt, or another program's file). Nothing in it is touched."""
