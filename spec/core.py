"""The general core of every normalization layer, in SymPy.

Normalization = statistics over a set of values, then
``xhat = (x - mean) / sqrt(var + eps)`` and an affine map
``y = gamma * xhat + beta``.  BatchNorm, LayerNorm, GroupNorm and
InstanceNorm differ only in which values share the statistics (the
reduction axes) and in the shape of ``gamma``/``beta``; those choices live
in the operator modules.  Here every function takes the values that are
reduced together as a flat sequence of SymPy expressions.

>>> import sympy as sp
>>> a, b = sp.symbols("a b", real=True)
>>> mean([a, b])
a/2 + b/2
>>> sp.factor(biased_var([a, b]))
(a - b)**2/4
"""

from __future__ import annotations

from collections.abc import Sequence

import sympy as sp

__all__ = ["mean", "biased_var", "unbiased_var", "normalize", "affine"]


def mean(xs: Sequence[sp.Expr]) -> sp.Expr:
    """Arithmetic mean: ``mean = (1/n) * sum(x_i)``."""
    return sp.Add(*xs) / len(xs)


def biased_var(xs: Sequence[sp.Expr]) -> sp.Expr:
    """Population variance ``(1/n) * sum((x_i - mean)**2)``, the one every
    implementation normalizes with.

    Hazard: the algebraically equal ``E[x**2] - E[x]**2`` cancels
    catastrophically in floating point when ``|mean| >> std`` and can go
    negative (docs/bug-corpus.md #23, #38, #43, #50).
    """
    m = mean(xs)
    return sp.Add(*[(x - m) ** 2 for x in xs]) / len(xs)


def unbiased_var(xs: Sequence[sp.Expr]) -> sp.Expr:
    """Sample variance ``(1/(n-1)) * sum((x_i - mean)**2)``; 0/0 at n = 1.

    >>> import sympy as sp
    >>> unbiased_var([sp.Integer(1), sp.Integer(2), sp.Integer(3), sp.Integer(4)])
    5/3
    """
    n = len(xs)
    return biased_var(xs) * sp.Integer(n) / (n - 1) if n > 1 else sp.nan


def normalize(x: sp.Expr, mean: sp.Expr, var: sp.Expr, eps: sp.Expr) -> sp.Expr:
    """``xhat = (x - mean) / sqrt(var + eps)``: eps *inside* the square root.

    Hazard: eps outside (``/(sqrt(var) + eps)``, Keras CNTK, docs/bug-corpus.md #32) or
    the unbiased variance here are different functions, not roundings.
    """
    return (x - mean) / sp.sqrt(var + eps)


def affine(xhat: sp.Expr, gamma: sp.Expr, beta: sp.Expr) -> sp.Expr:
    """``y = gamma * xhat + beta``.

    Hazard: the folded float form ``x * a + (beta - mean * a)`` with
    ``a = gamma / sqrt(var + eps)`` is equal in exact arithmetic but loses
    about ``|mean * a| * 2**-24`` in float32 (pytorch#5410).
    """
    return gamma * xhat + beta
