"""Exact emulations of each Algorithm's float evaluation order, in numpy, one rounding per operation.

Independent of normspec.budgets.derive: this is what a real implementation following the
Algorithm record computes, operation by operation, in the stated precisions.
"""

from __future__ import annotations

import numpy as np
from normspec.budgets.algorithm import Algorithm


def _sum(v: np.ndarray, how: str) -> np.generic:
    if how == "recursive":
        return np.add.accumulate(v, dtype=v.dtype)[-1]
    if v.size == 1:
        return v[0]
    half = v.size // 2
    return v.dtype.type(_sum(v[:half], how) + _sum(v[half:], how))


def emulate(
    alg: Algorithm,
    x: np.ndarray,
    gamma: np.ndarray,
    beta: np.ndarray,
    eps: float,
    training: bool,
    running_mean: np.ndarray | None = None,
    running_var: np.ndarray | None = None,
) -> np.ndarray:
    acc, cd = np.dtype(alg.accumulator).type, np.dtype(alg.compute).type
    c = x.shape[1]
    means, variances = [], []
    for ch in range(c):
        if not training:
            means.append(cd(running_mean[ch]))
            variances.append(cd(running_var[ch]))
            continue
        vals = x[:, ch].ravel().astype(acc)
        n = acc(vals.size)
        with np.errstate(all="ignore"):
            if alg.variance == "welford":  # West's update, sequential: mean += d/k, M += d (x - mean)
                mu, m2 = acc(0), acc(0)
                for k, xv in enumerate(vals, start=1):
                    d = acc(xv - mu)
                    mu = acc(mu + acc(d / acc(k)))
                    m2 = acc(m2 + acc(d * acc(xv - mu)))
            else:
                mu = acc(_sum(vals, alg.summation) / n)
            if alg.mean_rounding != "none":
                mu = acc(np.dtype(alg.mean_rounding).type(mu))
            if alg.variance == "welford":
                v = acc(m2 / n)
            elif alg.variance == "two_pass":
                d = (vals - mu).astype(acc)
                v = acc(_sum((d * d).astype(acc), alg.summation) / n)
            else:
                m2 = acc(_sum((vals * vals).astype(acc), alg.summation) / n)
                v = acc(m2 - acc(mu * mu))
                if alg.variance == "raw_moments_clamped":
                    v = max(v, acc(0))
        means.append(cd(mu))
        variances.append(cd(v))
    shape = (1, c) + (1,) * (x.ndim - 2)
    m = np.array(means, dtype=cd).reshape(shape)
    v = np.array(variances, dtype=cd).reshape(shape)
    g, b = gamma.astype(cd).reshape(shape), beta.astype(cd).reshape(shape)
    xc = x.astype(cd)
    with np.errstate(all="ignore"):
        D = (v + cd(eps)).astype(cd)
        if alg.inv_std == "one_over_sqrt":
            inv = (cd(1) / np.sqrt(D).astype(cd)).astype(cd)
        else:  # within 1 ULP: a correctly rounded double rsqrt, rounded again
            inv = (1 / np.sqrt(D.astype(np.float64))).astype(cd)
        a = (g * inv).astype(cd)
        if alg.affine == "unfolded":
            y = (((xc - m).astype(cd) * a).astype(cd) + b).astype(cd)
        else:
            y = ((xc * a).astype(cd) + (b - (m * a).astype(cd)).astype(cd)).astype(cd)
    return y.astype(x.dtype)
