"""Exact emulations of each Algorithm's float evaluation order, in numpy, one rounding per operation.

Independent of normspec.budgets.derive: this is what a real implementation following the
Algorithm record computes, operation by operation, in the stated precisions.
"""

from __future__ import annotations

import numpy as np
from normspec.budgets.algorithm import Algorithm


def _keep(v):
    return v


def _flusher(dtype: type):
    """Flush-to-zero in ``dtype``: a result (or an input) below the smallest normal becomes zero."""
    tiny = np.finfo(dtype).tiny

    def flush(v):
        arr = np.asarray(v, dtype=dtype)
        out = np.where(np.abs(arr) < tiny, dtype(0) * np.sign(arr), arr).astype(dtype)
        return out if out.ndim else dtype(out)

    return flush


def _sum(v: np.ndarray, how: str, f=_keep) -> np.generic:
    if how == "recursive":
        if f is _keep:
            return np.add.accumulate(v, dtype=v.dtype)[-1]
        total = v.dtype.type(0)
        for term in v:
            total = f(v.dtype.type(total + term))
        return total
    if v.size == 1:
        return v[0]
    half = v.size // 2
    return f(v.dtype.type(_sum(v[:half], how, f) + _sum(v[half:], how, f)))


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
    flush = alg.subnormals == "flush"
    fa, fc = (_flusher(acc), _flusher(cd)) if flush else (_keep, _keep)
    c = x.shape[1]
    means, variances = [], []
    for ch in range(c):
        if not training:
            means.append(cd(running_mean[ch]))
            variances.append(cd(running_var[ch]))
            continue
        vals = fa(x[:, ch].ravel().astype(acc))  # flushed: subnormal inputs read as zero
        n = acc(vals.size)
        with np.errstate(all="ignore"):
            if alg.variance == "welford":  # West's update, sequential: mean += d/k, M += d (x - mean)
                mu, m2 = acc(0), acc(0)
                for k, xv in enumerate(vals, start=1):
                    d = fa(acc(xv - mu))
                    mu = fa(acc(mu + fa(acc(d / acc(k)))))
                    m2 = fa(acc(m2 + fa(acc(d * fa(acc(xv - mu))))))
            else:
                mu = fa(acc(_sum(vals, alg.summation, fa) / n))
            if alg.mean_rounding != "none":
                mu = acc(np.dtype(alg.mean_rounding).type(mu))
            if alg.variance == "welford":
                v = fa(acc(m2 / n))
            elif alg.variance == "two_pass":
                d = fa((vals - mu).astype(acc))
                v = fa(acc(_sum(fa((d * d).astype(acc)), alg.summation, fa) / n))
            else:
                m2 = fa(acc(_sum(fa((vals * vals).astype(acc)), alg.summation, fa) / n))
                v = fa(acc(m2 - fa(acc(mu * mu))))
                if alg.variance == "raw_moments_clamped":
                    v = max(v, acc(0))
        means.append(cd(mu))
        variances.append(cd(v))
    shape = (1, c) + (1,) * (x.ndim - 2)
    m = np.array(means, dtype=cd).reshape(shape)
    v = np.array(variances, dtype=cd).reshape(shape)
    g, b = gamma.astype(cd).reshape(shape), beta.astype(cd).reshape(shape)
    xc = fc(x.astype(cd))
    with np.errstate(all="ignore"):
        D = fc((v + cd(eps)).astype(cd))
        if alg.inv_std == "one_over_sqrt":
            inv = fc((cd(1) / fc(np.sqrt(D).astype(cd))).astype(cd))
        else:  # within 1 ULP: a correctly rounded double rsqrt, rounded again
            inv = fc((1 / np.sqrt(D.astype(np.float64))).astype(cd))
        a = fc((g * inv).astype(cd))
        if alg.affine == "unfolded":
            y = fc((fc(fc((xc - m).astype(cd)) * a).astype(cd) + b).astype(cd))
        else:
            y = fc((fc((xc * a).astype(cd)) + fc((b - fc((m * a).astype(cd))).astype(cd))).astype(cd))
    return y.astype(x.dtype)
