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

    NaN stays NaN, infinities stay infinite, overflow goes to infinity.

    >>> round_array(np.array([1 + 2.0**-11, 1 + 3 * 2.0**-11, 70000.0]), FLOAT16).tolist()  # ties to even
    [1.0, 1.001953125, inf]
    """
    v = np.asarray(values, dtype=np.float64)
    if fmt is FLOAT64:
        return v.copy()
    if fmt is FLOAT32:  # the hardware conversion is the IEEE round-to-nearest-even
        with np.errstate(over="ignore"):
            return v.astype(np.float32).astype(np.float64)
    with np.errstate(invalid="ignore", over="ignore"):
        _, e = np.frexp(v)  # |v| in [2**(e-1), 2**e)
        qexp = np.maximum(e - 1, fmt.emin) - fmt.p + 1
        r = np.ldexp(np.rint(np.ldexp(v, -qexp)), qexp)
        r[np.abs(r) > fmt.max_finite] = np.copysign(np.inf, v[np.abs(r) > fmt.max_finite])
    r[~np.isfinite(v)] = v[~np.isfinite(v)]
    return r


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
