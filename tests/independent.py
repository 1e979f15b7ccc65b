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


# ---------------------------------------------------------------- any layer, any reduction


def _outside(A: Fraction, B: Fraction, v: Fraction, e: Fraction):
    """Parts (A', B', D') of B + A/(sqrt(v) + e) as B' + A'/sqrt(D'), for the tie checks only."""
    if v == 0:
        return Fraction(0), B + A / e, Fraction(1)
    if v == e * e:
        return Fraction(0), B + A / (2 * e), Fraction(1)
    # A/(s + e) = A (s - e) / (v - e^2) = A v/((v - e^2) s) - A e/(v - e^2)
    d = v - e * e
    return A * v / d, B - A * e / d, v


def round_exact(q: Fraction, dtype) -> np.generic:
    """A rational rounded to ``dtype`` through the same independent rounding."""
    with mpmath.workprec(600):
        return round_mpf(mpmath.mpf(q.numerator) / q.denominator, np.dtype(dtype), (Fraction(0), q, Fraction(1)))


def reference_norm(x, reduce_axes, gamma, beta, eps, *, centred=True, eps_outside=False, stats_dtype=None):
    """Exact normalization of ``x`` over ``reduce_axes``: ``(x - m) * gamma / sqrt(v + eps) + beta``
    (``/ (sqrt(v) + eps)`` with ``eps_outside``), m and v by two-pass rationals (RMSNorm: m = 0,
    v the mean square), each output by 600-bit mpmath and the independent rounding.

    ``gamma``/``beta`` broadcast against x.  Returns ``y`` and the rounded ``mean``, ``var``,
    ``rstd`` (x's shape with 1 on the reduced axes) and the exact per-row means and variances.
    """
    x = np.asarray(x)
    red = sorted(a % x.ndim for a in reduce_axes)
    kept = [a for a in range(x.ndim) if a not in red]
    perm = kept + red
    K = int(np.prod([x.shape[a] for a in kept], dtype=np.int64))
    R = int(np.prod([x.shape[a] for a in red], dtype=np.int64))
    xt = np.transpose(x, perm).reshape(K, R)
    gt = np.transpose(np.broadcast_to(np.asarray(gamma, np.float64), x.shape), perm).reshape(K, R)
    bt = np.transpose(np.broadcast_to(np.asarray(beta, np.float64), x.shape), perm).reshape(K, R)
    e = Fraction(eps)
    sdt = np.dtype(stats_dtype or x.dtype)
    y = np.empty((K, R), x.dtype)
    means, variances = [], []
    mean_r, var_r, rstd_r = (np.empty(K, sdt) for _ in range(3))
    for k in range(K):
        vals = [Fraction(float(v)) for v in xt[k]]
        if R == 0:
            means.append(None)
            variances.append(None)
            mean_r[k] = var_r[k] = rstd_r[k] = np.nan
            continue
        m = sum(vals, Fraction(0)) / R if centred else Fraction(0)
        v = sum(((u - m) ** 2 for u in vals), Fraction(0)) / R
        means.append(m)
        variances.append(v)
        mean_r[k], var_r[k] = round_exact(m, sdt), round_exact(v, sdt)
        with mpmath.workprec(600):
            sv = mpmath.sqrt(mpmath.mpf(v.numerator) / v.denominator)
            ev = mpmath.mpf(e.numerator) / e.denominator
            den = sv + ev if eps_outside else mpmath.sqrt(mpmath.mpf((v + e).numerator) / (v + e).denominator)
            rparts = _outside(Fraction(1), Fraction(0), v, e) if eps_outside else (Fraction(1), Fraction(0), v + e)
            rstd_r[k] = round_mpf(1 / den, sdt, rparts)
            for j, u in enumerate(vals):
                A, B = (u - m) * Fraction(float(gt[k, j])), Fraction(float(bt[k, j]))
                parts = _outside(A, B, v, e) if eps_outside else (A, B, v + e)
                val = mpmath.mpf(B.numerator) / B.denominator + (mpmath.mpf(A.numerator) / A.denominator) / den
                y[k, j] = round_mpf(val, x.dtype, parts)
    stats_shape = tuple(1 if a in red else n for a, n in enumerate(x.shape))
    back = np.argsort(perm)
    y_out = np.transpose(y.reshape([x.shape[a] for a in perm]), back)
    return {
        "y": y_out,
        "mean": mean_r.reshape(stats_shape),
        "var": var_r.reshape(stats_shape),
        "rstd": rstd_r.reshape(stats_shape),
        "means": means,
        "vars": variances,
    }
