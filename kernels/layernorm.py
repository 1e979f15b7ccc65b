"""Fast float32 LayerNorm and RMSNorm on the CPU (numba), correctly rounded.

Same mechanism as :mod:`normspec.kernels.batchnorm`: float64 inside, a rigorous
per-element certificate, and an exact fallback (Python integers) for the
elements it cannot certify.
"""

from __future__ import annotations

import math
from fractions import Fraction
from typing import Any

import numpy as np
from normspec.kernels import _buffers, _exact

from normspec.errors import DegenerateInputError, DomainError, DTypeError, ShapeError, expected

__all__ = ["layer_norm", "rms_norm"]


def _prepare(
    x: Any, normalized_ndim: int, weight: Any, bias: Any
) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    from normspec.kernels.batchnorm import _as_f32, _host

    xa = _host(x, "x")
    if xa.dtype != np.float32:
        raise DTypeError(expected("float32 (the kernels' dtype)", "x.dtype", xa.dtype.name))
    if xa.ndim == 0:
        raise ShapeError(expected("an array with at least one axis", "x.shape", xa.shape))
    ok = isinstance(normalized_ndim, (int, np.integer)) and not isinstance(normalized_ndim, bool)
    if not ok or not 1 <= normalized_ndim <= xa.ndim:
        raise ShapeError(expected(f"1 <= normalized_ndim <= {xa.ndim}", "normalized_ndim", normalized_ndim))
    feat = xa.shape[xa.ndim - normalized_ndim :]
    f = math.prod(feat)
    if f == 0:
        raise DegenerateInputError(expected("at least one value per row", "x.shape", xa.shape))
    x2 = np.ascontiguousarray(xa).reshape(-1, f)
    params = []
    for name, value, default in (("weight", weight, 1.0), ("bias", bias, 0.0)):
        arr = np.full(feat, default, np.float32) if value is None else _as_f32(value, name, feat)
        params.append(arr.reshape(-1).astype(np.float64))
    return xa, x2, params[0], params[1]


def _run(
    xa: np.ndarray, x2: np.ndarray, gamma: np.ndarray, beta: np.ndarray, centred: bool, eps: float, out: Any
) -> np.ndarray:
    from normspec.kernels import _numba_cpu as backend
    from normspec.kernels.batchnorm import _check_out, _number

    if _number(eps, "eps") < 0:
        raise DomainError(expected("a finite eps >= 0", "eps", eps))
    eps = float(eps)
    _check_out(out, xa, np.float32)
    r = x2.shape[0]
    y2 = _buffers.empty(x2.shape, np.float32) if out is None else out.reshape(x2.shape)
    plan = np.empty((r, backend.PLAN_COLUMNS))
    flags = np.zeros(r, np.int64)
    backend.rows_norm(x2, gamma, beta, centred, float(eps), plan, y2, flags)
    for row_index in np.flatnonzero(flags):
        _fallback_row(x2[row_index], y2[row_index], plan[row_index], gamma, beta, centred, eps)
    return y2.reshape(xa.shape) if out is None else out


def _fallback_row(
    row: np.ndarray, out: np.ndarray, plan: np.ndarray, gamma: np.ndarray, beta: np.ndarray, centred: bool, eps: float
) -> None:
    """Recheck the row's elements with the full bound; decide the uncertified ones exactly."""
    rowd = row.astype(np.float64)
    if not np.isfinite(rowd).all():
        return  # a non-finite row: the float result (NaN or infinity) is the defined one
    mu, s, k, cg = plan[0], plan[2], plan[3] + 1.01 * 2.0**-53, plan[4]
    with np.errstate(all="ignore"):
        p = (rowd - mu) * (s * gamma)
        yv = p + beta
        r = yv.astype(np.float32)
        err = k * np.abs(p) + cg * np.abs(gamma) + 2.0**-52 * np.abs(yv)
        # decided when |y64 - r| + err stays below 2**(E-24), 2**E <= |y64| < 2**(E+1)
        gap = np.where(yv != 0, np.ldexp(1.0, np.frexp(yv)[1] - 25), 0.0) * (1 - 2.0**-40)
        ok = ((np.abs(yv - r.astype(np.float64)) + err) * (1 + 2.0**-40) < gap) | ((yv == 0) & (err == 0))
        ok &= np.isfinite(r) & (plan[8] == 0)
    out[ok] = r[ok]
    if ok.all():
        return
    mean, var = _exact.channel_stats(row)
    if not centred:
        var, mean = var + mean * mean, Fraction(0)  # the mean square, about 0
    denom = var + Fraction(eps)
    for j in np.flatnonzero(~ok):
        out[j] = _exact.y_correctly_rounded(float(rowd[j]), mean, denom, float(gamma[j]), float(beta[j]), False)


def layer_norm(
    x: Any,
    normalized_ndim: int = 1,
    weight: Any = None,
    bias: Any = None,
    *,
    eps: float = 1e-5,
    out: np.ndarray | None = None,
) -> np.ndarray:
    """LayerNorm over the trailing ``normalized_ndim`` axes (float32); every finite output is the
    exact value correctly rounded (a float64 evaluation with a rigorous per-element bound decides
    the rounding where it can, exact arithmetic elsewhere).  ``out`` may receive the result."""
    xa, x2, g, b = _prepare(x, normalized_ndim, weight, bias)
    return _run(xa, x2, g, b, True, eps, out)


def rms_norm(
    x: Any, normalized_ndim: int = 1, weight: Any = None, *, eps: float | None = None, out: np.ndarray | None = None
) -> np.ndarray:
    """RMSNorm ``x * weight / sqrt(mean(x^2) + eps)`` (float32; ``eps=None`` is float32's machine
    epsilon, as in PyTorch), correctly rounded like :func:`layer_norm`; ``out`` as there."""
    xa, x2, g, b = _prepare(x, normalized_ndim, weight, None)
    return _run(xa, x2, g, b, False, float(np.finfo(np.float32).eps) if eps is None else eps, out)
