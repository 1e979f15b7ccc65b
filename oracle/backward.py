"""BatchNorm's backward pass, exactly, rounded once.

Every gradient has the form ``A / sqrt(D)`` with rational ``A`` and ``D = var + eps``
(or is rational), so :func:`~normspec.oracle.sqrtform.round_sqrt_form` rounds it
correctly:

* training: ``dx_i = gamma (n dy_i - S - (x_i - mean) T / D) / (n sqrt(D))`` with
  ``S = sum dy`` and ``T = sum dy (x - mean)``; ``dgamma = T / sqrt(D)``; ``dbeta = S``;
* evaluation: ``dx = gamma dy / sqrt(D)``, ``dgamma = sum dy (x - mean) / sqrt(D)``,
  ``dbeta = S`` with the running statistics.

Exact rational arithmetic per element: meant for test- and audit-sized tensors
(thousands of elements a second), not for training runs.

>>> import numpy as np
>>> dx, dg, db = batch_norm_backward(np.array([[1.0], [3.0]], np.float32), np.array([[1.0], [0.0]], np.float32),
...                                  eps=0.0)
>>> dx.ravel().tolist(), dg.tolist(), db.tolist()  # xhat = [-1, 1]: dx = (dy - mean dy - xhat mean(dy xhat)) / 1
([0.0, 0.0], [-1.0], [1.0])
"""

from __future__ import annotations

import math
from fractions import Fraction
from typing import Any

import numpy as np
from normspec.oracle.formats import format_of, numpy_dtype
from normspec.oracle.sqrtform import round_fraction, round_sqrt_form
from normspec.spec.conventions import check_eps

from normspec.errors import DegenerateInputError, ShapeError, expected

__all__ = ["batch_norm_backward"]


def _fr(a: np.ndarray) -> list[Fraction]:
    return [Fraction(float(v)) for v in np.asarray(a, dtype=np.float64).ravel()]


def batch_norm_backward(
    x: Any,
    dy: Any,
    weight: Any = None,
    running_mean: Any = None,
    running_var: Any = None,
    *,
    training: bool = True,
    eps: float = 1e-5,
    axis: int = 1,
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """``(dx, dweight, dbias)``, each correctly rounded: dx to x's dtype, the others to float32
    (float64 when x is float64)."""
    xa, dya = np.asarray(x), np.asarray(dy)
    fmt = format_of(xa.dtype, "x")
    if dya.shape != xa.shape:
        raise ShapeError(expected(f"dy of shape {xa.shape}", "dy.shape", dya.shape))
    check_eps(eps)
    axis %= xa.ndim
    c = xa.shape[axis]
    xs = np.moveaxis(xa, axis, 0).reshape(c, -1)
    gs = np.moveaxis(dya, axis, 0).reshape(c, -1)
    n = xs.shape[1]
    if training and n < 1:
        raise DegenerateInputError(expected("at least one value per channel", "x.shape", xa.shape))
    gamma = _fr(np.ones(c) if weight is None else weight)
    pfmt = format_of(np.float64 if xa.dtype == np.float64 else np.float32)
    dx = np.empty(xs.shape, dtype=np.float64)
    dgamma, dbeta = np.empty(c), np.empty(c)
    e = Fraction(float(eps))
    for ch in range(c):
        xv, gv = _fr(xs[ch]), _fr(gs[ch])
        if training:
            mean = sum(xv, Fraction(0)) / n
            var = sum(((v - mean) ** 2 for v in xv), Fraction(0)) / n
        else:
            mean = Fraction(float(np.asarray(running_mean)[ch]))
            var = Fraction(float(np.asarray(running_var)[ch]))
        D = var + e
        S = sum(gv, Fraction(0))
        T = sum((g * (v - mean) for g, v in zip(gv, xv, strict=True)), Fraction(0))
        dbeta[ch] = round_fraction(S, pfmt)
        if D == 0:
            dx[ch] = math.nan
            dgamma[ch] = math.nan
            continue
        dgamma[ch] = round_sqrt_form(T, Fraction(0), D, pfmt)
        for i, (g, v) in enumerate(zip(gv, xv, strict=True)):
            A = gamma[ch] * g if not training else gamma[ch] * (n * g - S - (v - mean) * T / D) / n
            dx[ch, i] = round_sqrt_form(A, Fraction(0), D, fmt)
    dx_out = np.moveaxis(dx.reshape(np.moveaxis(xa, axis, 0).shape), 0, axis).astype(numpy_dtype(fmt))
    return dx_out, dgamma.astype(numpy_dtype(pfmt)), dbeta.astype(numpy_dtype(pfmt))
