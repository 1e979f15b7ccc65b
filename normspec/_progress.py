"""A dependency-free progress bar for long oracle runs (on stderr)."""

from __future__ import annotations

import sys
import time
from typing import TextIO


class Progress:
    """Call with the number of units done since the last call.

    Nothing is drawn during the first ``delay`` seconds, so quick jobs stay
    quiet; ``mode="always"`` draws from the start, ``"never"`` never, and
    ``"auto"`` only on a terminal.
    """

    def __init__(
        self, total: int, label: str, *, mode: str = "auto", delay: float = 1.0, stream: TextIO | None = None
    ) -> None:
        self.unknown = total <= 0  # a stream of unknown length: a count, no bar
        self.total = max(total, 1)
        self.label = label
        self.stream = stream if stream is not None else sys.stderr
        self.enabled = mode == "always" or (mode == "auto" and self.stream.isatty())
        self.delay = 0.0 if mode == "always" else delay
        self.start = time.perf_counter()
        self.done = 0
        self.drawn = False
        self.last = -1.0

    def __call__(self, n: int) -> None:
        self.done += n
        now = time.perf_counter()
        if not self.enabled or now - self.start < self.delay or now - self.last < 0.1:
            return
        self.last = now
        self._draw(now)

    def _draw(self, now: float) -> None:
        if self.unknown:
            self.stream.write(f"\r{self.label}: {self.done:,} done, {now - self.start:6.1f}s elapsed")
            self.stream.flush()
            self.drawn = True
            return
        frac = min(1.0, self.done / self.total)
        width = 30
        fill = int(frac * width)
        elapsed = now - self.start
        eta = elapsed / frac - elapsed if frac > 0 else float("nan")
        bar = "#" * fill + "-" * (width - fill)
        self.stream.write(f"\r{self.label} [{bar}] {100 * frac:5.1f}%  {elapsed:6.1f}s elapsed, ~{eta:5.1f}s left")
        self.stream.flush()
        self.drawn = True

    def close(self) -> None:
        if self.enabled and (self.drawn or time.perf_counter() - self.start >= self.delay):
            if not self.unknown:
                self.done = self.total
            self._draw(time.perf_counter())
            self.stream.write("\n")
            self.stream.flush()
