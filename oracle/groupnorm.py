"""GroupNorm, exactly, on the general core (the rest of the family builds the same way).

``x`` of shape (N, C, ...) is split into ``num_groups`` groups of C/G channels;
each (sample, group) has its own mean and biased variance over its channels
and spatial positions; the affine parameters are per *channel* (PyTorch,
ONNX GroupNormalization-21).  Same guarantee as :func:`~normspec.oracle.batch_norm`:
every output is the exact value rounded once.

>>> import numpy as np
>>> x = np.arange(8, dtype=np.float32).reshape(1, 4, 2)
>>> y = group_norm(x, 2, eps=0.0).y  # each group of 4 values normalized on its own
>>> y[0, :2].tolist() == y[0, 2:].tolist(), float(y[0, 0, 0]) == float(np.float32(-3 / 5**0.5))
(True, True)
"""

from __future__ import annotations

from dataclasses import dataclass
from fractions import Fraction
from typing import Any

import numpy as np
from normspec.oracle.core import GroupPlan, normalize
from normspec.oracle.exact import exact_sums
from normspec.oracle.formats import format_of
from normspec.spec.conventions import check_eps

from normspec.errors import DegenerateInputError, ShapeError, expected

__all__ = ["group_norm", "GroupNormResult"]


@dataclass(frozen=True)
class GroupNormResult:
    y: np.ndarray
    mean: tuple[Fraction | float, ...]  # exact, one per (sample, group), sample-major
    var: tuple[Fraction | float, ...]
    undecided: int


def group_norm(x: Any, num_groups: int, weight: Any = None, bias: Any = None, *, eps: float = 1e-5) -> GroupNormResult:
    """GroupNorm of ``x`` (N, C, ...) with ``num_groups`` groups and per-channel ``weight``/``bias``."""
    xa = np.asarray(x)
    fmt = format_of(xa.dtype, "x")
    if xa.ndim < 2:
        raise ShapeError(expected("an array (N, C, ...)", "x.shape", xa.shape))
    n, c = xa.shape[0], xa.shape[1]
    if not isinstance(num_groups, (int, np.integer)) or num_groups < 1 or c % num_groups:
        raise ShapeError(expected(f"a number of groups dividing C={c}", "num_groups", num_groups))
    check_eps(eps)
    length = int(np.prod(xa.shape[2:], dtype=np.int64))
    per = c // num_groups
    if per * length == 0 or n == 0:
        raise DegenerateInputError(expected("at least one value per group", "x.shape", xa.shape))
    w = np.ones(c) if weight is None else np.asarray(weight, dtype=np.float64)
    b = np.zeros(c) if bias is None else np.asarray(bias, dtype=np.float64)
    for name, arr in (("weight", w), ("bias", b)):
        if arr.shape != (c,):
            raise ShapeError(expected(f"{name} of shape ({c},), one value per channel", f"{name}.shape", arr.shape))
    x3 = xa.reshape(1, n * num_groups, per * length)
    # per-channel parameters laid out along each group's values: (1, N*G, C/G * L)
    g3 = np.tile(np.repeat(w.reshape(num_groups, per), length, axis=1), (n, 1)).reshape(1, n * num_groups, -1)
    b3 = np.tile(np.repeat(b.reshape(num_groups, per), length, axis=1), (n, 1)).reshape(1, n * num_groups, -1)
    s1, s2, nonfinite = exact_sums(x3, fmt_bits=fmt.p)
    m = per * length
    means: list[Fraction | float] = []
    variances: list[Fraction | float] = []
    special, denom, plan_means = [], [], []
    e = Fraction(float(eps))
    for g in range(n * num_groups):
        if nonfinite[g]:
            means.append(float("nan"))
            variances.append(float("nan"))
            special.append("nan")
            plan_means.append(Fraction(0))
            denom.append(Fraction(1))
            continue
        mu = s1[g] / m
        var = s2[g] / m - mu * mu
        means.append(mu)
        variances.append(var)
        plan_means.append(mu)
        denom.append(var + e)
        special.append("" if var + e != 0 else "div0")
    y3, undecided = normalize(x3, fmt, GroupPlan(plan_means, denom, special), g3, b3)
    return GroupNormResult(y3.reshape(xa.shape), tuple(means), tuple(variances), undecided)
