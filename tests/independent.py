"""An independent exact BatchNorm for checking the oracle.

Shares no code with normspec.oracle: statistics by two-pass rational
arithmetic (the oracle uses sums of squares), outputs by 600-bit mpmath,
rounding by picking the nearest of three neighbouring values of the target
dtype found through bit patterns, with exact rational tie checks.
"""

from __future__ import annotations

from fractions import Fraction

import mpmath
import numpy as np

_UINT = {2: np.uint16, 4: np.uint32, 8: np.uint64}


def _neighbours(v: np.ndarray) -> list[np.ndarray]:
    """The value itself and its two neighbours in its own dtype (finite ones only)."""
    dt = v.dtype
    ut = _UINT[dt.itemsize]
    bits = int(np.array(v, dtype=dt).reshape(1).view(ut)[0])
    out = []
    for b in (bits - 1, bits, bits + 1):
        if 0 <= b < 2 ** (8 * dt.itemsize):
            c = np.array([b], dtype=ut).view(dt)[0]
            if np.isfinite(np.float64(c)):
                out.append(c)
    return out


def _finfo(dtype: np.dtype):
    if dtype.name == "bfloat16":
        import ml_dtypes

        return ml_dtypes.finfo(dtype)
    return np.finfo(dtype)


def _exact_sign(parts: tuple[Fraction, Fraction, Fraction], m: Fraction) -> int:
    """Sign of B + A/sqrt(D) - m, by squaring (written apart from the oracle's)."""
    A, B, D = parts
    lhs, rhs = A, m - B  # compare A/sqrt(D) with rhs
    if lhs >= 0 and rhs <= 0:
        return 0 if lhs == 0 and rhs == 0 else 1
    if lhs <= 0 and rhs >= 0:
        return -1
    # same strict sign: compare squares, then flip for negatives
    s = (rhs * rhs * D < A * A) - (rhs * rhs * D > A * A)
    return s if lhs > 0 else -s


def round_mpf(y: mpmath.mpf, dtype: np.dtype, parts: tuple[Fraction, Fraction, Fraction]) -> np.generic:
    """Nearest value of ``dtype`` to ``y = B + A/sqrt(D)``, ties to even."""
    fi = _finfo(dtype)
    top = float(fi.max)
    half_ulp_top = 2.0 ** (fi.maxexp - 2 - fi.nmant)
    if _exact_sign(parts, Fraction(top) + Fraction(half_ulp_top)) >= 0:
        return np.array(np.inf).astype(dtype)
    if _exact_sign(parts, -Fraction(top) - Fraction(half_ulp_top)) <= 0:
        return np.array(-np.inf).astype(dtype)
    approx = np.array(float(y)).astype(dtype)
    if not np.isfinite(np.float64(approx)):
        approx = np.array(np.copysign(top, float(y))).astype(dtype)
    cands: set[float] = set()
    for a in _neighbours(approx):
        cands.update(float(c) for c in _neighbours(a))
    ranked = sorted(cands, key=lambda c: abs(mpmath.mpf(c) - y))
    best, second = ranked[0], ranked[1]
    if abs(abs(mpmath.mpf(best) - y) - abs(mpmath.mpf(second) - y)) < mpmath.mpf(2) ** -500 * (1 + abs(y)):
        # too close to call at 600 bits: decide on the midpoint exactly
        lo, hi = min(best, second), max(best, second)
        side = _exact_sign(parts, (Fraction(lo) + Fraction(hi)) / 2)
        if side == 0:
            ut = _UINT[dtype.itemsize]
            best = lo if int(np.array(lo).astype(dtype).reshape(1).view(ut)[0]) % 2 == 0 else hi
        else:
            best = hi if side > 0 else lo
    if best == 0:
        return np.array(-0.0 if _exact_sign(parts, Fraction(0)) < 0 else 0.0).astype(dtype)
    return np.array(best).astype(dtype)


def reference_train(x: np.ndarray, gamma: np.ndarray, beta: np.ndarray, eps: float, axis: int = 1):
    """Exact training-mode BatchNorm: (y, mean Fractions, biased var Fractions)."""
    xs = np.moveaxis(x, axis, 0)
    C = xs.shape[0]
    flat = xs.reshape(C, -1)
    means, vars_ = [], []
    for c in range(C):
        vals = [Fraction(float(v)) for v in flat[c]]
        m = sum(vals, Fraction(0)) / len(vals)
        means.append(m)
        vars_.append(sum(((v - m) ** 2 for v in vals), Fraction(0)) / len(vals))
    y = np.empty_like(xs)
    for idx in np.ndindex(xs.shape):
        c = idx[0]
        y[idx] = _one(float(xs[idx]), means[c], vars_[c], float(gamma[c]), float(beta[c]), eps, x.dtype)
    return np.moveaxis(y, 0, axis), means, vars_


def reference_eval(x, gamma, beta, rmean, rvar, eps, axis=1):
    xs = np.moveaxis(x, axis, 0)
    y = np.empty_like(xs)
    for idx in np.ndindex(xs.shape):
        c = idx[0]
        y[idx] = _one(
            float(xs[idx]),
            Fraction(float(rmean[c])),
            Fraction(float(rvar[c])),
            float(gamma[c]),
            float(beta[c]),
            eps,
            x.dtype,
        )
    return np.moveaxis(y, 0, axis)


def _one(x: float, m: Fraction, v: Fraction, g: float, b: float, eps: float, dtype) -> np.generic:
    D = v + Fraction(eps)
    A = (Fraction(x) - m) * Fraction(g)
    B = Fraction(b)
    if D == 0:  # the zero-variance guard of the torch profile
        return np.array(b).astype(dtype) + np.array(0).astype(dtype)
    with mpmath.workprec(600):
        y = mpmath.mpf(B.numerator) / B.denominator + (mpmath.mpf(A.numerator) / A.denominator) / mpmath.sqrt(
            mpmath.mpf(D.numerator) / D.denominator
        )
        return round_mpf(y, np.dtype(dtype), (A, B, D))
