"""Fast LayerNorm and RMSNorm on the CPU (numba), correctly rounded; float32, float16 or bfloat16.

Same mechanism as :mod:`normspec.kernels.batchnorm`: float64 inside, a rigorous
per-element certificate, and an exact fallback (Python integers) for the
elements it cannot certify.  float16 and bfloat16 inputs (and parameters, in
float32 or in x's format) are taken exactly to float32; ``y`` is in x's format,
correctly rounded there (see :mod:`._narrow`).
"""

from __future__ import annotations

import math
from fractions import Fraction
from typing import Any

import numpy as np
from normspec.kernels import _buffers, _exact, _narrow

from normspec.errors import DegenerateInputError, DomainError, DTypeError, ShapeError, expected

__all__ = ["layer_norm", "rms_norm"]


def _prepare(
    x: Any, normalized_ndim: int, weight: Any, bias: Any
) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    """x (float32, or float16/bfloat16 taken exactly to float32) as rows; the parameters (float32,
    or x's narrow format) as float64 vectors."""
    from normspec.kernels.batchnorm import _as_f32, _host

    xa = _host(x, "x")
    if xa.dtype != np.float32 and xa.dtype.name not in _narrow.NARROW:
        raise DTypeError(expected("float32, float16 or bfloat16", "x.dtype", xa.dtype.name))
    if xa.ndim == 0:
        raise ShapeError(expected("an array with at least one axis", "x.shape", xa.shape))
    ok = isinstance(normalized_ndim, (int, np.integer)) and not isinstance(normalized_ndim, bool)
    if not ok or not 1 <= normalized_ndim <= xa.ndim:
        raise ShapeError(expected(f"1 <= normalized_ndim <= {xa.ndim}", "normalized_ndim", normalized_ndim))
    feat = xa.shape[xa.ndim - normalized_ndim :]
    f = math.prod(feat)
    if f == 0:
        raise DegenerateInputError(expected("at least one value per row", "x.shape", xa.shape))
    x2 = np.ascontiguousarray(xa).reshape(-1, f)  # float16/bfloat16 rows stay: their kernel reads their bits
    params = []
    for name, value, default in (("weight", weight, 1.0), ("bias", bias, 0.0)):
        if value is None:
            arr = np.full(feat, default, np.float32)
        else:
            p = _host(value, name)
            narrow = p.dtype == xa.dtype and p.dtype.name in _narrow.NARROW
            arr = _as_f32(p.astype(np.float32) if narrow else p, name, feat)
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
    low = xa.dtype if xa.dtype.name in _narrow.NARROW else None
    _check_out(out, xa, np.float32 if low is None else low)
    if low is not None:
        return _run_narrow(xa, x2, gamma, beta, centred, eps, out)
    r = x2.shape[0]
    y2 = _buffers.empty(x2.shape, np.float32) if out is None else out.reshape(x2.shape)
    plan = np.empty((r, backend.PLAN_COLUMNS))
    flags = np.zeros(r, np.int64)
    backend.rows_norm(x2, gamma, beta, centred, float(eps), plan, y2, flags)
    for row_index in np.flatnonzero(flags):
        _fallback_row(x2[row_index], y2[row_index], plan[row_index], gamma, beta, centred, eps)
    return y2.reshape(xa.shape) if out is None else out


def _run_narrow(
    xa: np.ndarray, xb: np.ndarray, gamma: np.ndarray, beta: np.ndarray, centred: bool, eps: float, out: Any
) -> np.ndarray:
    """float16/bfloat16 rows straight through (bits in, bits out, ties settled in the kernel); the
    rows it flags are redone here through the float32 path, exactly where that needs it."""
    from normspec.kernels import _numba_cpu as backend

    y = np.empty(xb.shape, xa.dtype) if out is None else out.reshape(xb.shape)
    plan = np.empty((xb.shape[0], backend.PLAN_COLUMNS))
    flags = np.zeros(xb.shape[0], np.int64)
    tasks = max(1, min(xb.shape[0], 4 * backend.threads()))
    half = xa.dtype.name == "float16"
    backend.rows_norm_narrow(xb.view(np.uint16), gamma, beta, centred, eps, plan, y.view(np.uint16), flags, tasks, half)
    for r in np.flatnonzero(flags):
        row = _narrow.widen(xb[r : r + 1])
        y32 = np.empty(row.shape, np.float32)
        p1, f1 = plan[r : r + 1], np.zeros(1, np.int64)
        backend.rows_norm(row, gamma, beta, centred, eps, p1, y32, f1)
        if f1[0]:
            _fallback_row(row[0], y32[0], p1[0], gamma, beta, centred, eps)
        y[r] = _narrow.to_narrow(y32, xa.dtype, *_ties(row, p1, gamma, beta, centred, eps))[0]
    return y.reshape(xa.shape) if out is None else out


def _ties(
    x2: np.ndarray, plan: np.ndarray, gamma: np.ndarray, beta: np.ndarray, centred: bool, eps: float
) -> tuple[Any, Any]:
    """For :func:`._narrow.to_narrow`: y64 and its bound at ties of the narrow format (as
    :func:`_fallback_row` bounds them; a row whose plan is uncertain has none), and the side of
    the exact y from the row's exact statistics where those leave it open."""
    rows: dict[int, tuple[Fraction, Fraction]] = {}

    def bounds(at: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        r, j = np.unravel_index(at, x2.shape)
        t = plan[r]
        p = (x2[r, j].astype(np.float64) - t[:, 0]) * (t[:, 2] * gamma[j])
        yv = p + beta[j]
        err = (t[:, 3] + 1.01 * 2.0**-53) * np.abs(p) + t[:, 4] * np.abs(gamma[j]) + 2.0**-52 * np.abs(yv)
        return yv, np.where(t[:, 8] == 0, err * (1 + 2.0**-40), np.inf)

    def exact(idx: tuple[int, ...], m: float) -> int:
        r, j = idx
        if r not in rows:
            rows[r] = _row_stats(x2[r], centred)
        mean, var = rows[r]
        return _exact.y_compare(float(x2[r, j]), mean, var + Fraction(eps), gamma[j], beta[j], False, m)

    return bounds, exact


def _row_stats(row: np.ndarray, centred: bool) -> tuple[Fraction, Fraction]:
    """A row's exact mean and variance; for RMSNorm 0 and the mean square."""
    mean, var = _exact.channel_stats(row)
    return (mean, var) if centred else (Fraction(0), var + mean * mean)


def _fallback_row(
    row: np.ndarray, out: np.ndarray, plan: np.ndarray, gamma: np.ndarray, beta: np.ndarray, centred: bool, eps: float
) -> None:
    """Recheck the row's elements with the full bound; decide the uncertified ones exactly."""
    rowd = row.astype(np.float64)
    if not np.isfinite(rowd).all():
        if not centred and not np.isnan(rowd).any():  # RMSNorm over infinities: IEEE's x / inf
            with np.errstate(invalid="ignore"):
                out[:] = (rowd / np.inf * gamma).astype(np.float32)  # 0 for finite x, NaN at inf
        return  # otherwise the float result (NaN) is the defined one
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
    mean, var = _row_stats(row, centred)
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
