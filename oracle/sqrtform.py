"""Correct rounding of ``y = B + A / sqrt(D)`` with rational A, B, D.

Every normalization output has this form once its statistics are exact:
``A = (x - mean) * gamma``, ``B = beta``, ``D = var + eps``.  Deciding on
which side of a rounding midpoint ``m`` it falls needs no approximation:
``B + A/sqrt(D) > m`` is a comparison of squares of rationals
(:func:`compare`).  :func:`round_sqrt_form` narrows ``y`` with integer
square roots until at most two format values remain, then lets that exact
comparison decide, ties to even.  The result is the correctly rounded value;
no tolerance is involved anywhere.

>>> import numpy as np
>>> from fractions import Fraction as F
>>> from normspec.oracle.formats import FLOAT32
>>> round_sqrt_form(F(1), F(0), F(2), FLOAT32) == float(np.float32(2 ** -0.5))
True
>>> compare(F(1), F(0), F(4), F(1, 2))  # 1/sqrt(4) == 1/2 exactly
0
"""

from __future__ import annotations

import math
from fractions import Fraction

from normspec.oracle.formats import Format, is_even, next_up, round_rational

__all__ = ["compare", "round_sqrt_form", "round_fraction", "eps_outside_parts"]


def _sign(q: Fraction | int) -> int:
    return (q > 0) - (q < 0)


def compare(A: Fraction, B: Fraction, D: Fraction, m: Fraction) -> int:
    """Sign of ``B + A/sqrt(D) - m`` (``D > 0``), exactly."""
    c = m - B
    if A == 0:
        return -_sign(c)
    sa = _sign(A)
    if c == 0 or _sign(c) != sa:
        return sa
    return sa * _sign(A * A - c * c * D)


def eps_outside_parts(A: Fraction, B: Fraction, v: Fraction, e: Fraction) -> tuple[Fraction, Fraction, Fraction] | None:
    """``B + A/(sqrt(v) + e)`` (``v >= 0``) as ``B' + A'/sqrt(D')``; None where ``sqrt(v) + e == 0``.

    With ``s = sqrt(v)`` and ``v != e**2``: ``1/(s + e) = (s - e)/(v - e**2)``, so the value is
    ``B - A e/(v - e**2) + (A v/(v - e**2))/s``.  At ``v == e**2 > 0`` (``s == e``) and at
    ``v == 0`` it is rational.

    >>> eps_outside_parts(Fraction(1), Fraction(0), Fraction(4), Fraction(2))  # 1/(2 + 2)
    (Fraction(0, 1), Fraction(1, 4), Fraction(1, 1))
    """
    if v == e * e:
        return None if e <= 0 else (Fraction(0), B + A / (2 * e), Fraction(1))
    if v == 0:
        return Fraction(0), B + A / e, Fraction(1)
    k = 1 / (v - e * e)
    return A * v * k, B - A * e * k, v


def round_fraction(q: Fraction, fmt: Format) -> float:
    return round_rational(q.numerator, q.denominator, fmt)


def _sqrt_bracket(Q: Fraction, bits: int) -> tuple[Fraction, Fraction]:
    """``lo <= sqrt(Q) < hi`` with ``hi - lo = 2**-k`` and about ``bits`` significant bits."""
    mag = (Q.numerator.bit_length() - Q.denominator.bit_length()) // 2
    k = bits - mag
    if k >= 0:
        s = math.isqrt((Q.numerator << (2 * k)) // Q.denominator)
        return Fraction(s, 1 << k), Fraction(s + 1, 1 << k)
    s = math.isqrt(Q.numerator // (Q.denominator << (-2 * k)))
    return Fraction(s << -k), Fraction((s + 1) << -k)


def round_sqrt_form(A: Fraction, B: Fraction, D: Fraction, fmt: Format) -> float:
    """``B + A/sqrt(D)`` (``D > 0``) correctly rounded to ``fmt``, ties to even.

    A zero result is ``+0.0`` when the exact value is zero, ``-0.0`` when a
    negative value rounds to zero (IEEE keeps the sign of the exact value).
    """
    if A == 0:
        return round_fraction(B, fmt)
    bits = 2 * fmt.p + 24
    Q = A * A / D
    while True:
        lo, hi = _sqrt_bracket(Q, bits)
        ylo, yhi = (B + lo, B + hi) if A > 0 else (B - hi, B - lo)
        rlo, rhi = round_fraction(ylo, fmt), round_fraction(yhi, fmt)
        if rlo == rhi and (rlo != 0 or math.copysign(1, rlo) == math.copysign(1, rhi)):
            return rlo
        if rlo == rhi:  # both round to zero, the sign is in question
            s = compare(A, B, D, Fraction(0))
            return -0.0 if s < 0 else 0.0
        if next_up(rlo, fmt) == rhi:  # adjacent: the midpoint decides, exactly
            m = _midpoint(rlo, rhi, fmt)
            c = compare(A, B, D, m)
            if c == 0:
                return rlo if is_even(rlo, fmt) else rhi
            out = rlo if c < 0 else rhi
            if out == 0:
                return -0.0 if compare(A, B, D, Fraction(0)) < 0 else 0.0
            return out
        bits *= 2


def _midpoint(lo: float, hi: float, fmt: Format) -> Fraction:
    """Midpoint of two adjacent format values; infinity stands for 2**(emax+1)."""
    big = Fraction(2) ** (fmt.emax + 1)
    a = big if lo == math.inf else -big if lo == -math.inf else Fraction(lo)
    b = big if hi == math.inf else -big if hi == -math.inf else Fraction(hi)
    return (a + b) / 2
