"""Correct rounding to float16 and bfloat16 from a correctly rounded float32 (shared by the kernels).

Rounding r = fl32(y) once more gives fl16(y) unless r is itself a tie of the narrow format: a
narrow midpoint strictly between y and r would be a float32 nearer y than r.  At such a tie the
side of y decides, which :func:`to_narrow` asks the caller for (from the float64 value and its
bound where they settle it, exactly otherwise; exactly at the tie, ties to even).
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import numpy as np

# precision, smallest normal, smallest subnormal
NARROW_BITS = {"float16": (11, 2.0**-14, 2.0**-24), "bfloat16": (8, 2.0**-126, 2.0**-133)}
NARROW = tuple(NARROW_BITS)


def ties(y: np.ndarray, low: Any) -> np.ndarray:
    """The flat indices of the float32 values in ``y`` that are ties (midpoints) of ``low``."""
    from normspec.kernels._numba_cpu import narrow_ties

    p, min_normal, min_sub = NARROW_BITS[np.dtype(low).name]
    flat = np.ascontiguousarray(y).reshape(-1)
    mn = int(np.array([min_normal], np.float32).view(np.uint32)[0])
    out = np.empty(flat.size // 1024 + 64, np.int64)  # ties are rare: about 2**(p - 24) of random values
    n = narrow_ties(flat.view(np.uint32), flat, p, mn, min_sub, out)
    if n > out.size:  # many ties (a constant row, say): once more with room for them all
        out = np.empty(n, np.int64)
        narrow_ties(flat.view(np.uint32), flat, p, mn, min_sub, out)
    return out[:n]


def widen(x: np.ndarray) -> np.ndarray:
    """float16/bfloat16 values as float32, exactly, from their bits (in parallel)."""
    from normspec.kernels._numba_cpu import bf16_to_f32, f16_to_f32

    src = np.ascontiguousarray(x).reshape(-1).view(np.uint16)
    out = np.empty(x.shape, np.float32)
    flat = out.reshape(-1)
    (bf16_to_f32 if x.dtype.name == "bfloat16" else f16_to_f32)(src, flat.view(np.uint32))
    return out


def _round(y: np.ndarray, low: Any) -> np.ndarray:
    """float32 to ``low``, rounded to nearest, ties to even, by bits (in parallel)."""
    from normspec.kernels._numba_cpu import f32_to_bf16, f32_to_f16

    src = np.ascontiguousarray(y).reshape(-1)
    out = np.empty(y.shape, low)
    if np.dtype(low).name == "bfloat16":
        f32_to_bf16(src.view(np.uint32), out.reshape(-1).view(np.uint16))
    else:
        f32_to_f16(src, src.view(np.uint32), out.reshape(-1).view(np.uint16))
    return out


def to_narrow(
    y: np.ndarray,
    low: Any,
    bounds: Callable[[np.ndarray], tuple[np.ndarray, np.ndarray]],
    exact: Callable[[tuple[int, ...], float], int],
) -> np.ndarray:
    """``y`` (float32, each the correctly rounded exact value) correctly rounded to ``low``.  At the
    ties (flat indices i), ``bounds(i)`` gives the float64 values and bounds on their errors: the
    side of the exact value where they settle it (0 where the bound is 0: y64 is the tie itself),
    ``exact(index, m)`` elsewhere (1 above the tie m, -1 below, 0 at it)."""
    narrow = _round(y, low)
    at = ties(y, low)
    if at.size == 0:
        return narrow
    flat_y, flat_n = y.reshape(-1), narrow.reshape(-1)
    m = flat_y[at].astype(np.float64)
    yv, err = bounds(at)
    with np.errstate(invalid="ignore"):
        side = np.where(yv - m > err, 1, np.where(m - yv > err, -1, 0))
    for k in np.flatnonzero((side == 0) & ~(err == 0)):
        side[k] = exact(tuple(int(v) for v in np.unravel_index(at[k], y.shape)), float(m[k]))
    moved = np.flatnonzero(side != 0)
    with np.errstate(over="ignore"):
        flat_n[at[moved]] = np.nextafter(flat_y[at[moved]], side[moved] * np.float32(np.inf)).astype(low)
    return narrow
