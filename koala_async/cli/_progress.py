"""The import's progress line: what is done counts entries *settled* (delivered, dropped or
refused), not lines read, so the bar does not sit at 100% while the queue drains."""

from __future__ import annotations

import math
import sys
import time
from dataclasses import dataclass
from typing import TextIO

__all__ = ["Progress", "Snapshot"]


@dataclass(frozen=True)
class Snapshot:
    """Where an import stands, as the progress line shows it.

    Attributes:
        read: Lines read so far.
        read_fraction: How much of the file (by bytes) has been read, 0 to 1.
        settled: Lines done with: delivered, given up or refused as invalid.
        last_error: The client's last delivery problem, if any.
    """

    read: int
    read_fraction: float
    settled: int
    last_error: str | None = None

    def fraction(self) -> float:
        """Settled lines over the file's estimated number of lines."""
        if self.read == 0 or self.read_fraction <= 0:
            return 0.0
        estimated_total = self.read / min(self.read_fraction, 1.0)
        return min(self.settled / estimated_total, 1.0)


class Progress:
    """A bar with rate and ETA on a terminal, a plain line every few seconds otherwise."""

    def __init__(self, stream: TextIO = sys.stderr, every: float | None = None) -> None:
        self.stream = stream
        self.tty = stream.isatty()
        self.every = (0.2 if self.tty else 5.0) if every is None else every
        self.started = time.monotonic()
        self.shown = -math.inf

    def due(self) -> bool:
        return time.monotonic() - self.shown >= self.every

    def show(self, now: Snapshot, final: bool = False) -> None:
        self.shown = time.monotonic()
        self.stream.write(self.line(now, self.shown - self.started, final))
        self.stream.flush()

    def line(self, now: Snapshot, elapsed: float, final: bool = False) -> str:
        fraction = now.fraction()
        elapsed = max(elapsed, 1e-9)
        eta = elapsed / fraction - elapsed if fraction > 0 else math.inf
        text = f"{now.settled:,} of {now.read:,} lines done, {now.settled / elapsed:,.0f}/s"
        if not final and not math.isinf(eta):
            text += f", ETA {eta:.0f}s"
        if now.last_error and now.settled < now.read:
            text += f"; last error: {now.last_error}"
        if self.tty:
            bar = "#" * int(fraction * 30)
            return f"\r[{bar:<30}] {fraction:6.1%} {text}\033[K" + ("\n" if final else "")
        return f"import: {fraction:.0%}, {text}\n"
