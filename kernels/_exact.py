"""The kernels' rare exact fallback, in plain Python integers.

Used only for elements whose float64 certificate leaves the rounding open (an
output within a hair of a rounding boundary, one that cancels to far below its
terms, a channel whose variance is too small to bound).  Self-contained on purpose: kernels do not import the oracle.
"""

from __future__ import annotations

import math
from fractions import Fraction

import numpy as np

_F32_P, _F32_EMIN, _F32_EMAX = 24, -126, 127


def channel_stats(x3: np.ndarray, c: int = 0) -> tuple[Fraction, Fraction]:
    """Exact mean and biased variance of channel c of finite float32 values viewed (A, C, B)
    (a 1-D array is one channel), by exponent-binned integer sums; no copy is taken."""
    vals = np.asarray(x3)
    return channel_stats_many(vals.reshape(1, 1, -1) if vals.ndim == 1 else vals, [c])[0]


def channel_stats_many(x3: np.ndarray, channels: list[int]) -> list[tuple[Fraction, Fraction]]:
    """Exact mean and biased variance of several channels of an (A, C, B) array of finite float32
    values (integer sums binned by exponent, see ``exact_bins``), the channels in parallel."""
    from normspec.kernels._numba_cpu import exact_bins_many

    vals = np.ascontiguousarray(x3, dtype=np.float32)
    bins1 = np.zeros((len(channels), 254), np.int64)
    bins2 = np.zeros((len(channels), 254, 2), np.int64)
    exact_bins_many(vals.view(np.int32), np.asarray(channels, np.int64), bins1, bins2)
    n = vals.shape[0] * vals.shape[2]
    return [stats_from_bins(bins1[k], bins2[k], n) for k in range(len(channels))]


def stats_from_bins(bins1: np.ndarray, bins2: np.ndarray, n: int) -> tuple[Fraction, Fraction]:
    """Exact mean and biased variance of n values from their exponent bins (see exact_bins)."""
    # bin i holds multiples of 2**(i - 149) (S1) and of 2**(2i - 298) (S2): scale to 2**-149 / 2**-298
    s1 = sum(int(v) << i for i, v in enumerate(bins1.tolist()) if v)
    s2 = sum(((int(hi) << 24) + int(lo)) << (2 * i) for i, (hi, lo) in enumerate(bins2.tolist()) if hi or lo)
    mean = Fraction(s1, n << 149)
    return mean, Fraction(s2, n << 298) - mean * mean


def round_f32(q: Fraction) -> np.float32:
    """Correctly rounded float32 of a rational (ties to even, subnormals, overflow to inf)."""
    if q == 0:
        return np.float32(0.0)
    sign = -1.0 if q < 0 else 1.0
    a, d = abs(q.numerator), q.denominator
    e = a.bit_length() - d.bit_length()
    if (a << max(0, -e)) < (d << max(0, e)):
        e -= 1
    qe = max(e, _F32_EMIN) - _F32_P + 1
    num, den = (a, d << qe) if qe >= 0 else (a << -qe, d)
    m, rem = divmod(num, den)
    if 2 * rem > den or (2 * rem == den and m & 1):
        m += 1
    if qe + m.bit_length() - 1 > _F32_EMAX:
        return np.float32(sign * math.inf)
    return np.float32(sign * math.ldexp(float(m), qe))


def _y_parts(x: float, mean: Fraction, gamma: float, beta: float) -> tuple[Fraction, Fraction]:
    """y = B + A / sqrt(denom): A = gamma (x - mean), B = beta."""
    return (Fraction(x) - mean) * Fraction(gamma), Fraction(beta)


def _sqrt_exact(q: Fraction) -> Fraction | None:
    """sqrt(q) when it is rational (numerator and denominator of the reduced q both squares)."""
    a, b = math.isqrt(q.numerator), math.isqrt(q.denominator)
    return Fraction(a, b) if a * a == q.numerator and b * b == q.denominator else None


def y_correctly_rounded(
    x: float, mean: Fraction, denom: Fraction, gamma: float, beta: float, guard: bool
) -> np.float32:
    """The correctly rounded float32 of ``gamma (x - mean)/sqrt(denom) + beta`` (ties to even).

    A rational y (``A**2/denom`` a square) is rounded exactly; an irrational one is never a
    tie, so an enclosure of ``|A|/sqrt(denom)`` by integer square roots, its precision doubled
    until both ends round alike, decides it."""
    A, B = _y_parts(x, mean, gamma, beta)
    if denom == 0:
        if guard:
            return round_f32(B)
        return np.float32(math.nan if A == 0 else math.copysign(math.inf, A))
    if A == 0:
        return round_f32(B)
    Q = A * A / denom
    root = _sqrt_exact(Q)
    if root is not None:
        return round_f32(B + root if A > 0 else B - root)
    bits = 64
    while True:
        lo, hi = _sqrt_bracket(Q, bits)
        ylo, yhi = (B + lo, B + hi) if A > 0 else (B - hi, B - lo)
        rlo, rhi = round_f32(ylo), round_f32(yhi)
        if rlo.view(np.uint32) == rhi.view(np.uint32):  # bits: a bracket across 0 must settle the zero's sign
            return rlo
        bits *= 2


def _sqrt_bracket(Q: Fraction, bits: int) -> tuple[Fraction, Fraction]:
    """lo <= sqrt(Q) <= hi, hi - lo = 2**-k with k about ``bits`` above sqrt(Q)'s exponent."""
    k = bits - (Q.numerator.bit_length() - Q.denominator.bit_length()) // 2
    if k >= 0:
        s = math.isqrt((Q.numerator << (2 * k)) // Q.denominator)
        return Fraction(s, 1 << k), Fraction(s + 1, 1 << k)
    s = math.isqrt(Q.numerator // (Q.denominator << (-2 * k)))
    return Fraction(s << -k), Fraction((s + 1) << -k)


def y_compare(x: float, mean: Fraction, denom: Fraction, gamma: float, beta: float, guard: bool, m: float) -> int:
    """The sign of ``y - m`` for the exact ``y = gamma (x - mean)/sqrt(denom) + beta`` (-1, 0, 1;
    denom > 0, or 0 under the guard), by comparing squares: no square root is taken."""
    A, B = _y_parts(x, mean, gamma, beta)
    t = Fraction(m) - B  # y - m = A / sqrt(denom) - t
    if denom == 0:
        assert guard
        return (t < 0) - (t > 0)
    sa = (A > 0) - (A < 0)
    st = (t > 0) - (t < 0)
    if sa != st:
        return sa - st if sa != 0 or st != 0 else 0  # the signs alone decide (one of them may be 0)
    lhs, rhs = A * A, t * t * denom  # |A|/sqrt(denom) against |t|
    return sa * ((lhs > rhs) - (lhs < rhs))


def update_correctly_rounded(old: float, batch: Fraction, momentum: float, new_weight: bool) -> np.float32:
    """The correctly rounded running-statistic update, from the exact batch statistic."""
    m = Fraction(momentum)
    q = (1 - m) * Fraction(old) + m * batch if new_weight else m * Fraction(old) + (1 - m) * batch
    return round_f32(q)
