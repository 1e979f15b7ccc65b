"""Distances between floats, in units in the last place.

Two views, because outputs near zero make plain ULP counts meaningless:

* :func:`ulp_distance`: how many representable values lie between ``a`` and
  ``b`` (0 means equal).  Computed on the integer bit patterns, never by
  float subtraction.  ``+0`` and ``-0`` are the same number (distance 0);
  NaN is at distance 0 from NaN and infinite from anything else; an
  infinity is at distance 1 from the largest finite value of its sign.
* :func:`relative_ulp_error`: ``|a - b|`` measured in ULPs of a reference
  magnitude (the largest intermediate of the computation, say
  ``|gamma * xhat| + |beta|``), computed exactly with rationals.

>>> import numpy as np
>>> a = np.array([1.0, 0.0, np.inf, np.nan], np.float32)
>>> b = np.array([np.nextafter(np.float32(1), np.float32(2)), -0.0, np.finfo(np.float32).max, np.nan], np.float32)
>>> ulp_distance(a, b).tolist()
[1.0, 0.0, 1.0, 0.0]
"""

from __future__ import annotations

from fractions import Fraction
from typing import Any

import numpy as np
from normspec.oracle.formats import format_of

from normspec.errors import DTypeError, ShapeError, expected

__all__ = ["ulp_distance", "relative_ulp_error", "ordinal"]

_INT_OF = {1: np.int8, 2: np.int16, 4: np.int32, 8: np.int64}


def ordinal(a: Any) -> np.ndarray:
    """Map floats to int64 so that adjacent floats are adjacent integers
    (``-0`` and ``+0`` both map to 0).  The difference of two float64
    ordinals can exceed int64; :func:`ulp_distance` takes those as Python ints."""
    arr = np.asarray(a)
    format_of(arr.dtype, "a")
    bits = arr.view(_INT_OF[arr.dtype.itemsize]).astype(np.int64)
    magnitude = np.int64((1 << (8 * arr.dtype.itemsize - 1)) - 1)
    return np.where(bits < 0, -(bits & magnitude), bits)


def ulp_distance(a: Any, b: Any) -> np.ndarray:
    """Elementwise number of representable steps from ``a`` to ``b`` (same dtype), as float64.

    NaN vs NaN is 0; NaN vs a number is ``inf``.
    """
    aa, bb = np.asarray(a), np.asarray(b)
    if aa.dtype != bb.dtype:
        raise DTypeError(expected(f"b.dtype equal to a.dtype={aa.dtype.name}", "b.dtype", bb.dtype.name))
    if aa.shape != bb.shape:
        raise ShapeError(expected(f"b.shape equal to a.shape={aa.shape}", "b.shape", bb.shape))
    oa, ob = ordinal(aa), ordinal(bb)
    if aa.dtype.itemsize == 8:  # the difference can exceed int64
        dist = np.array(
            [abs(int(p) - int(q)) for p, q in zip(oa.ravel(), ob.ravel(), strict=True)], dtype=np.float64
        ).reshape(aa.shape)
    else:
        dist = np.abs(oa - ob).astype(np.float64)
    na, nb = np.isnan(aa.astype(np.float64)), np.isnan(bb.astype(np.float64))
    dist[na & nb] = 0.0
    dist[na ^ nb] = np.inf
    return dist


def relative_ulp_error(observed: Any, exact: Any, magnitude: Any) -> np.ndarray:
    """``|observed - exact| / ulp(magnitude)`` elementwise, computed exactly.

    ``observed`` gives the format; ``exact`` may hold Fractions (object
    array) or floats; ``magnitude`` is the reference size whose ULP is the
    unit.  NaN anywhere gives NaN; a non-finite difference gives ``inf``.
    """
    obs = np.asarray(observed)
    fmt = format_of(obs.dtype, "observed")
    ex = np.asarray(exact, dtype=object)
    mag = np.broadcast_to(np.asarray(magnitude, dtype=np.float64), obs.shape)
    out = np.empty(obs.shape, dtype=np.float64)
    for i in np.ndindex(obs.shape):
        o, e = float(obs[i]), ex[i]
        if o != o or (isinstance(e, float) and e != e):
            out[i] = np.nan
            continue
        if abs(o) == np.inf or (isinstance(e, float) and abs(e) == np.inf):
            out[i] = 0.0 if o == e else np.inf
            continue
        unit = Fraction(fmt.ulp(float(mag[i])))
        ex_i = e if isinstance(e, Fraction) else Fraction(float(e))
        out[i] = float(abs(Fraction(o) - ex_i) / unit)
    return out
