"""Timing shared by the benchmark scripts (run as ``python benchmarks/NAME.py``, so this folder is on sys.path)."""

from __future__ import annotations

import time
from collections.abc import Callable
from typing import Any


def best_of(fn: Callable[[], Any], repeat: int) -> float:
    """Seconds of the fastest of ``repeat`` calls, after one warm-up call (JIT, caches, allocation)."""
    return spread(fn, repeat)["min"]


def spread(fn: Callable[[], Any], repeat: int, *, hold: bool = False) -> dict[str, float]:
    """Median, minimum and maximum seconds of ``repeat`` calls after one warm-up call.

    ``hold``: keep every call's result alive until all calls are timed (the warm-up's too), as a
    training loop keeps its activations for the backward pass.  A library that recycles the
    memory of dropped outputs then cannot recycle it, and neither can the other side: each call
    pays for fresh memory, on both sides alike.
    """
    import statistics

    held = [fn()]
    if not hold:
        held.clear()
    times = []
    for _ in range(repeat):
        t0 = time.perf_counter()
        out = fn()
        times.append(time.perf_counter() - t0)
        if hold:
            held.append(out)
        del out
    held.clear()
    return {"median": statistics.median(times), "min": min(times), "max": max(times), "runs": repeat}
