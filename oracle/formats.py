"""Binary floating-point formats and correct rounding into them.

The bottom layer of the oracle.  Two kinds of rounding live here:

* :func:`round_rational` rounds an exact rational ``num/den`` to a format
  with integer arithmetic only: round to nearest, ties to even, gradual
  underflow into the subnormals, overflow to infinity exactly as IEEE 754
  specifies for round-to-nearest.  It is the reference rounding; nothing in
  it is approximate.
* :func:`round_array` rounds float64 arrays to a narrower format
  (float32, float16, bfloat16), vectorized.  It is exact too: scaling by a
  power of two and ``numpy.rint`` (ties to even) on a double are exact
  operations, so the only rounding is the one we ask for.

A rounded value of any supported format is exactly representable as a
Python float (a double), which is how the functions hand values around.

>>> FLOAT32.max_finite == float(np.finfo(np.float32).max)
True
>>> round_rational(1, 3, FLOAT16)  # 1/3 to float16
0.333251953125
>>> round_rational(3, 2**26, FLOAT32) == 3 / 2**26
True
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any

import numpy as np

from normspec.errors import DTypeError, expected

__all__ = [
    "Format",
    "FLOAT16",
    "BFLOAT16",
    "FLOAT32",
    "FLOAT64",
    "FORMATS",
    "format_of",
    "numpy_dtype",
    "round_rational",
    "round_array",
    "round_bracket",
    "store",
    "bfloat16_dtype",
]


@dataclass(frozen=True)
class Format:
    """A binary interchange format: precision ``p`` (with the hidden bit),
    minimum and maximum normal exponents."""

    name: str
    p: int
    emin: int
    emax: int

    @property
    def quantum_min_exp(self) -> int:
        """Exponent of the smallest subnormal, 2**(emin - p + 1)."""
        return self.emin - self.p + 1

    @property
    def max_finite(self) -> float:
        return math.ldexp(2.0**self.p - 1.0, self.emax - self.p + 1)

    @property
    def min_subnormal(self) -> float:
        return math.ldexp(1.0, self.quantum_min_exp)

    def ulp(self, value: float) -> float:
        """Spacing of the format at ``value`` (the gap above |value|)."""
        if value == 0 or not math.isfinite(value):
            return self.min_subnormal if value == 0 else math.inf
        e = math.frexp(abs(value))[1] - 1  # |value| in [2**e, 2**(e+1))
        return math.ldexp(1.0, max(e, self.emin) - self.p + 1)


FLOAT16 = Format("float16", 11, -14, 15)
BFLOAT16 = Format("bfloat16", 8, -126, 127)
FLOAT32 = Format("float32", 24, -126, 127)
FLOAT64 = Format("float64", 53, -1022, 1023)
FORMATS = {f.name: f for f in (FLOAT16, BFLOAT16, FLOAT32, FLOAT64)}


def bfloat16_dtype() -> Any:
    """numpy's bfloat16 dtype from ml_dtypes, or None when it is not installed."""
    try:
        import ml_dtypes
    except ImportError:  # optional extra
        return None
    return np.dtype(ml_dtypes.bfloat16)


def format_of(dtype: Any, name: str = "x") -> Format:
    """The :class:`Format` of a numpy dtype; refuses every other dtype.

    >>> format_of(np.float32).name
    'float32'
    >>> format_of(np.int32)
    Traceback (most recent call last):
    ...
    normspec.errors.DTypeError: Expected a floating dtype (float16, bfloat16, float32, float64), but got x.dtype='int32'
    """
    dt = np.dtype(dtype)
    fmt = FORMATS.get(dt.name)
    if fmt is None or dt.kind not in "fV":
        raise DTypeError(expected("a floating dtype (float16, bfloat16, float32, float64)", f"{name}.dtype", dt.name))
    return fmt


def numpy_dtype(fmt: Format) -> Any:
    if fmt is BFLOAT16:
        dt = bfloat16_dtype()
        if dt is None:
            raise DTypeError("bfloat16 needs the ml_dtypes package: pip install 'normspec[bfloat16]'")
        return dt
    return np.dtype(fmt.name)


def round_rational(num: int, den: int, fmt: Format) -> float:
    """Round ``num/den`` (``den > 0``) to ``fmt``, ties to even; returns a float.

    Exact integer arithmetic throughout.  A zero result is ``+0.0``: the
    exact value carries no sign, and normspec does not invent one.

    >>> round_rational(1, 2**150, FLOAT32)  # half the smallest subnormal: tie to even (0)
    0.0
    >>> round_rational(3, 2**151, FLOAT32) == 2.0**-149  # 0.75 of it rounds up
    True
    >>> round_rational(2**128, 1, FLOAT32)
    inf
    """
    if den <= 0:
        raise ValueError("den must be positive")
    if num == 0:
        return 0.0
    sign = -1.0 if num < 0 else 1.0
    a = abs(num)
    # e = floor(log2(a/den)), from bit lengths then one correction.
    e = a.bit_length() - den.bit_length()
    if (a << max(0, -e)) < (den << max(0, e)):
        e -= 1
    qexp = max(e, fmt.emin) - fmt.p + 1  # exponent of the quantum at this magnitude
    # r = round(a / den / 2**qexp) to nearest, ties to even.
    if qexp >= 0:
        n, d = a, den << qexp
    else:
        n, d = a << -qexp, den
    q, rem = divmod(n, d)
    twice = 2 * rem
    if twice > d or (twice == d and q & 1):
        q += 1
    if qexp + q.bit_length() - 1 > fmt.emax:  # rounded past the largest binade
        return sign * math.inf
    return sign * math.ldexp(float(q), qexp)  # q < 2**p here: exact


def round_array(values: np.ndarray, fmt: Format) -> np.ndarray:
    """Round a float64 array to ``fmt``; the result is float64 holding exact format values.

    NaN stays NaN, infinities stay infinite, overflow goes to infinity.  In ``fmt``'s normal range
    the rounding is done on the bits (add half a unit less one, plus the kept last bit, and cut:
    round to nearest, ties to even); elsewhere by scaling with ``ldexp`` and ``rint``, exact too.

    >>> round_array(np.array([1 + 2.0**-11, 1 + 3 * 2.0**-11, 70000.0]), FLOAT16).tolist()  # ties to even
    [1.0, 1.001953125, inf]
    """
    v = np.asarray(values, dtype=np.float64)
    if fmt is FLOAT64:
        return v.copy()
    if fmt is FLOAT32:  # the hardware conversion is the IEEE round-to-nearest-even
        with np.errstate(over="ignore"):
            return v.astype(np.float32).astype(np.float64)
    r, e = _nearest_by_bits(v, fmt)
    edge = _outside_normal(e, fmt)
    if edge.any():
        r[edge] = _round_scaled(v[edge], fmt)
    return r


def _round_scaled(v: np.ndarray, fmt: Format) -> np.ndarray:
    with np.errstate(invalid="ignore", over="ignore"):
        _, e = np.frexp(v)  # |v| in [2**(e-1), 2**e)
        qexp = np.maximum(e - 1, fmt.emin) - fmt.p + 1
        r = np.ldexp(np.rint(np.ldexp(v, -qexp)), qexp)
        r[np.abs(r) > fmt.max_finite] = np.copysign(np.inf, v[np.abs(r) > fmt.max_finite])
    r[~np.isfinite(v)] = v[~np.isfinite(v)]
    return r


_EXPONENT_MASK = np.uint64(0x7FF0000000000000)


def _nearest_by_bits(y: np.ndarray, fmt: Format) -> tuple[np.ndarray, np.ndarray]:
    """``(r, 2**E)``: ``y`` rounded to ``p`` significant bits by its bits (right in ``fmt``'s normal
    range only: see :func:`_outside_normal`), and the power of two of ``y``'s binade (0 for zero and
    subnormal doubles, inf for NaN and infinities)."""
    u = y.view(np.uint64)
    shift = np.uint64(53 - fmt.p)
    rb = u >> shift
    rb &= np.uint64(1)  # the last kept bit: ties go to even
    rb += np.uint64((1 << (52 - fmt.p)) - 1)
    rb += u
    rb &= ~np.uint64((1 << (53 - fmt.p)) - 1)
    return rb.view(np.float64), (u & _EXPONENT_MASK).view(np.float64)


def _outside_normal(e: np.ndarray, fmt: Format) -> np.ndarray:
    """Where the bit rounding does not hold, from ``2**E``: below the normal range, the top binade
    (which may round past the largest finite value), NaN and infinities."""
    with np.errstate(invalid="ignore"):
        edge = e < 2.0**fmt.emin
        edge |= e >= 2.0**fmt.emax
    return edge


def round_bracket(y: np.ndarray, delta: np.ndarray, fmt: Format) -> tuple[np.ndarray, np.ndarray]:
    """Round exact values known only as ``y +- delta`` (float64 arrays) to ``fmt``.

    Returns ``(r, undecided)``: ``r`` (float64 holding ``fmt`` values) is the correct rounding of
    every exact value in ``[y - delta, y + delta]`` where ``undecided`` is False.  Where it is True
    the bracket may hold a rounding boundary and the caller decides exactly.

    The certificate: with ``2**E <= |y| < 2**(E+1)`` and ``r`` the ``fmt`` value nearest ``y``,
    the rounding boundaries next to ``r`` lie at least ``h = 2**(E - p)`` from it (half the spacing
    in ``y``'s binade), except below a power of two ``r <= |y|``, where the binade below has half the
    spacing: there ``h/2``, which the bracket reaches only when ``delta`` does.  So
    ``|y - r| + 2 delta < h`` keeps the bracket in ``r``'s rounding interval.  ``r`` comes from
    the bits of ``y`` (round to nearest even at bit ``53 - p``), valid in ``fmt``'s normal range;
    values outside it (subnormal results, overflow, NaN, infinities) are bracketed by
    :func:`round_array` instead.  ``y == 0`` is always undecided (the sign of a zero is the
    caller's to settle).

    >>> y = np.array([1 + 2.0**-8, 1 + 2.0**-8 + 2.0**-30, 1 + 2.0**-8 + 2.0**-50, 1 - 2.0**-12])
    >>> r, und = round_bracket(y, np.full(4, 2.0**-40), BFLOAT16)
    >>> r.tolist(), und.tolist()  # a tie, and a value just past a tie, inside or outside the bracket
    ([1.0, 1.0078125, 1.0078125, 1.0], [True, False, True, False])
    """
    y = np.asarray(y, dtype=np.float64)
    delta = np.asarray(delta, dtype=np.float64)
    if fmt is FLOAT64:
        raise ValueError("round_bracket rounds to a narrower format than float64")
    r, e = _nearest_by_bits(y, fmt)
    with np.errstate(invalid="ignore", over="ignore"):
        err = y - r
        np.abs(err, out=err)
        err += delta
        err += delta
        # (the sum err is rounded: a margin of 2**-50 keeps an exact sum at the gap undecided)
        undecided = err >= e * (2.0**-fmt.p * (1 - 2.0**-50))
        edge = _outside_normal(e, fmt)
        if edge.any():  # the few values outside the normal range, by the slower bracket
            ys, ds = y[edge], np.broadcast_to(delta, y.shape)[edge]
            # the ends one double outward: y +- delta rounded to float64 may fall short of the bracket
            lo = round_array(np.nextafter(ys - ds, -np.inf), fmt)
            hi = round_array(np.nextafter(ys + ds, np.inf), fmt)
            r[edge] = hi
            undecided[edge] = ~((lo == hi) & (np.signbit(lo) == np.signbit(hi)) | (np.isnan(lo) & np.isnan(hi)))
    return r, undecided


def store(values: np.ndarray, fmt: Format, out: np.ndarray | None = None) -> np.ndarray:
    """float64 values that are exactly ``fmt`` values, in ``fmt``'s numpy dtype (into ``out`` if
    given).  Nothing rounds, so the 16-bit formats are written by their bits (ml_dtypes' and numpy's
    own conversions from float64 run element by element).

    >>> store(np.array([1.5, -2.0**-24, np.inf, -0.0]), FLOAT16).tolist()
    [1.5, -5.960464477539063e-08, inf, -0.0]
    """
    v = np.asarray(values, dtype=np.float64)
    if out is None:
        out = np.empty(v.shape, dtype=numpy_dtype(fmt))
    if fmt.p not in (BFLOAT16.p, FLOAT16.p):
        out[...] = v
        return out
    with np.errstate(invalid="ignore", over="ignore"):
        b32 = v.astype(np.float32).view(np.uint32)  # exact: fmt values are float32 values
    bits = out.view(np.uint16)
    if fmt is BFLOAT16:
        bits[...] = b32 >> np.uint32(16)
        return out
    mag = b32 & np.uint32(0x7FFFFFFF)
    normal = (mag >> np.uint32(13)) - np.uint32(112 << 10)  # rebias the exponent (valid from 2**-14 up)
    with np.errstate(invalid="ignore", over="ignore"):
        tiny = (np.abs(v) * 2.0**24).astype(np.uint32)  # subnormals and zero: the integer significand
    mag = np.where(mag < np.uint32(0x38800000), tiny, normal)  # below 2**-14
    mag = np.where(np.isfinite(v), mag, np.where(np.isnan(v), np.uint32(0x7E00), np.uint32(0x7C00)))
    bits[...] = mag | ((b32 >> np.uint32(16)) & np.uint32(0x8000))
    return out


def _quantum_exp(value: float, fmt: Format) -> int:
    return max(math.frexp(abs(value))[1] - 1, fmt.emin) - fmt.p + 1


def next_up(value: float, fmt: Format) -> float:
    """The least ``fmt`` value above ``value`` (a ``fmt`` value); past the
    largest finite one it is ``inf``.

    >>> next_up(1.0, FLOAT16) == 1 + 2.0**-10, next_up(-0.0, FLOAT32) == 2.0**-149
    (True, True)
    """
    if math.isnan(value) or value == math.inf:
        return value
    if value == -math.inf:
        return -fmt.max_finite
    if value == 0:
        return fmt.min_subnormal
    if value < 0:
        return -next_down(-value, fmt)
    if value == fmt.max_finite:
        return math.inf
    return value + math.ldexp(1.0, _quantum_exp(value, fmt))


def next_down(value: float, fmt: Format) -> float:
    """The greatest ``fmt`` value below ``value``.

    >>> next_down(1.0, FLOAT16) == 1 - 2.0**-11
    True
    """
    if math.isnan(value) or value == -math.inf:
        return value
    if value <= 0:
        return -next_up(-value, fmt)
    if value == math.inf:
        return fmt.max_finite
    q = _quantum_exp(value, fmt)
    mant, e = math.frexp(value)
    if mant == 0.5 and e - 1 > fmt.emin:  # a power of two: the gap below is half
        q -= 1
    return value - math.ldexp(1.0, q)


def is_even(value: float, fmt: Format) -> bool:
    """Whether ``value``'s last significand bit is 0 (zero and infinity count as even,
    which makes a tie just above the largest finite value round to infinity)."""
    if value == 0 or math.isinf(value):
        return True
    return int(math.ldexp(abs(value), -_quantum_exp(value, fmt))) % 2 == 0
