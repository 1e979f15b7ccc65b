"""BatchNorm, the formulas: one function per formula, named after it.

Per channel, over the ``n`` values that share it (all axes but the channel):

* training forward: ``y_i = gamma * (x_i - mean) / sqrt(var + eps) + beta`` with
  the batch ``mean`` and the *biased* batch ``var``;
* evaluation forward: the same with the running statistics;
* running update: ``r <- (1 - m) r + m b`` ("new-weight" momentum, PyTorch) or
  ``r <- m r + (1 - m) b`` ("old-weight", Keras/Flax/MXNet/ONNX/Paddle), where
  the variance fed in is biased or Bessel-corrected per convention;
* backward: ``dx_i = gamma / (n sigma) * (n dy_i - sum(dy) - xhat_i * sum(dy * xhat))``,
  ``dgamma = sum(dy * xhat)``, ``dbeta = sum(dy)`` with ``sigma = sqrt(var + eps)``.

>>> import sympy as sp
>>> xs = sp.symbols("x0:3", real=True)
>>> g, b, e = sp.symbols("gamma beta epsilon", positive=True)
>>> ys = batch_norm_train(xs, g, b, e)
>>> sp.simplify(sum(ys) / 3)  # the output's mean is beta
beta
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Literal

import sympy as sp
from normspec.spec.conventions import running_update
from normspec.spec.core import affine, biased_var, mean, normalize, unbiased_var

__all__ = [
    "batch_mean",
    "batch_var",
    "batch_norm_train",
    "batch_norm_eval",
    "running_update",
    "running_var_input",
    "batch_norm_backward",
    "backward_from_autodiff",
]


def batch_mean(xs: Sequence[sp.Expr]) -> sp.Expr:
    """Per-channel batch mean ``(1/n) sum x_i``."""
    return mean(xs)


def batch_var(xs: Sequence[sp.Expr], unbiased: bool = False) -> sp.Expr:
    """Per-channel batch variance, biased (normalizes) or unbiased (some running updates)."""
    return unbiased_var(xs) if unbiased else biased_var(xs)


def batch_norm_train(xs: Sequence[sp.Expr], gamma: sp.Expr, beta: sp.Expr, eps: sp.Expr) -> list[sp.Expr]:
    """Training forward of one channel: batch statistics, biased variance.

    Hazard: at n = 1 every ``x_i - mean`` is 0, so ``y = beta`` whatever
    ``gamma``; with ``eps = 0`` as well the value is 0/0 (PyTorch and MXNet
    guard it to ``beta``).
    """
    m, v = batch_mean(xs), batch_var(xs)
    return [affine(normalize(x, m, v, eps), gamma, beta) for x in xs]


def batch_norm_eval(x: sp.Expr, mean: sp.Expr, var: sp.Expr, gamma: sp.Expr, beta: sp.Expr, eps: sp.Expr) -> sp.Expr:
    """Evaluation forward: ``gamma * (x - mean) / sqrt(var + eps) + beta`` with running statistics.

    >>> import sympy as sp
    >>> batch_norm_eval(sp.Integer(3), 1, 3, 2, 1, 1)
    3
    """
    return affine(normalize(x, mean, var, eps), gamma, beta)


def running_var_input(xs: Sequence[sp.Expr], correction: Literal["none", "unbiased", "unbiased_clamped"]) -> sp.Expr:
    """The batch variance that enters the running variance: biased times
    ``1``, ``n/(n-1)`` or ``n/max(n-1, 1)``.

    Hazard: ``n/(n-1)`` is 0/0 at n = 1 (NaN running variance, pytorch#1381).
    """
    n = len(xs)
    v = biased_var(xs)
    if correction == "none":
        return v
    if correction == "unbiased":
        return v * n / (n - 1) if n > 1 else sp.nan
    return v * sp.Integer(n) / max(n - 1, 1)


def batch_norm_backward(
    xs: Sequence[sp.Expr], dys: Sequence[sp.Expr], gamma: sp.Expr, eps: sp.Expr
) -> tuple[list[sp.Expr], sp.Expr, sp.Expr]:
    """Closed-form backward of the training forward: ``(dx, dgamma, dbeta)``.

    ``dx_i = gamma / (n sigma) * (n dy_i - sum(dy) - xhat_i * sum(dy * xhat))``.
    The statistics depend on x, which is why dx is not ``gamma * dy / sigma``.
    """
    n = len(xs)
    m, v = batch_mean(xs), batch_var(xs)
    sigma = sp.sqrt(v + eps)
    xhat = [(x - m) / sigma for x in xs]
    sum_dy = sp.Add(*dys)
    sum_dy_xhat = sp.Add(*[d * h for d, h in zip(dys, xhat, strict=True)])
    dx = [gamma / (n * sigma) * (n * d - sum_dy - h * sum_dy_xhat) for d, h in zip(dys, xhat, strict=True)]
    return dx, sum_dy_xhat, sum_dy


def backward_from_autodiff(
    xs: Sequence[sp.Expr], dys: Sequence[sp.Expr], gamma: sp.Expr, beta: sp.Expr, eps: sp.Expr
) -> tuple[list[sp.Expr], sp.Expr, sp.Expr]:
    """The same gradients by SymPy's differentiation of :func:`batch_norm_train`
    (the vector-Jacobian product with ``dys``); the reference the closed form
    is checked against."""
    ys = batch_norm_train(xs, gamma, beta, eps)
    loss = sp.Add(*[d * y for d, y in zip(dys, ys, strict=True)])
    return [sp.diff(loss, x) for x in xs], sp.diff(loss, gamma), sp.diff(loss, beta)
