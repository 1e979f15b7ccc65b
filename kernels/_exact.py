"""The kernels' rare exact fallback, in plain Python integers.

Used only for elements whose float64 certificate fails (an output that
cancels to far below its terms, a channel whose variance is too small to
bound).  Self-contained on purpose: kernels do not import the oracle.
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


def _ordinal(v: np.float32) -> int:
    bits = int(np.array([v], dtype=np.float32).view(np.int32)[0])
    return -(bits & 0x7FFFFFFF) if bits < 0 else bits


def y_within_one_ulp(x: float, mean: Fraction, denom: Fraction, gamma: float, beta: float, guard: bool) -> np.float32:
    """A float32 within 1 ULP of the correctly rounded ``gamma (x - mean)/sqrt(denom) + beta``."""
    A = (Fraction(x) - mean) * Fraction(gamma)
    B = Fraction(beta)
    if denom == 0:
        if guard:
            return round_f32(B)
        return np.float32(math.nan if A == 0 else math.copysign(math.inf, A))
    if A == 0:
        return round_f32(B)
    Q = A * A / denom
    bits = 64
    while True:
        k = bits - (Q.numerator.bit_length() - Q.denominator.bit_length()) // 2
        if k >= 0:
            s = math.isqrt((Q.numerator << (2 * k)) // Q.denominator)
            lo, hi = Fraction(s, 1 << k), Fraction(s + 1, 1 << k)
        else:
            s = math.isqrt(Q.numerator // (Q.denominator << (-2 * k)))
            lo, hi = Fraction(s << -k), Fraction((s + 1) << -k)
        ylo, yhi = (B + lo, B + hi) if A > 0 else (B - hi, B - lo)
        rlo, rhi = round_f32(ylo), round_f32(yhi)
        if abs(_ordinal(rhi) - _ordinal(rlo)) <= 1:  # the rounding of y lies between them
            return rlo
        bits *= 2


def update_within_one_ulp(old: float, batch: Fraction, momentum: float, new_weight: bool) -> np.float32:
    m = Fraction(momentum)
    q = (1 - m) * Fraction(old) + m * batch if new_weight else m * Fraction(old) + (1 - m) * batch
    return round_f32(q)
