"""Timing shared by the benchmark scripts (run as ``python benchmarks/NAME.py``, so this folder is on sys.path)."""

from __future__ import annotations

import time
from collections.abc import Callable
from typing import Any


def best_of(fn: Callable[[], Any], repeat: int) -> float:
    """Seconds of the fastest of ``repeat`` calls, after one warm-up call (JIT, caches, allocation)."""
    return spread(fn, repeat)["min"]


def spread(fn: Callable[[], Any], repeat: int) -> dict[str, float]:
    """Median, minimum and maximum seconds of ``repeat`` calls after one warm-up call."""
    import statistics

    fn()
    times = []
    for _ in range(repeat):
        t0 = time.perf_counter()
        fn()
        times.append(time.perf_counter() - t0)
    return {"median": statistics.median(times), "min": min(times), "max": max(times), "runs": repeat}
