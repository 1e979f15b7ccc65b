"""Rigorous per-element error bounds for a float evaluation of BatchNorm.

The bound has three parts, for ``y* = gamma (x - mu)/sqrt(v + eps) + beta``:

1. **Statistics.**  The computed mean and variance carry errors ``e_mu``,
   ``e_v`` bounded per reduction algorithm from the standard model
   ``fl(a op b) = (a op b)(1 + d)``, ``|d| <= u`` (Higham, ch. 3-4):
   recursive sums of m terms err by at most ``gamma_{m-1} sum|terms|``,
   pairwise by ``gamma_{ceil(log2 m)+1} sum|terms|`` (``gamma_k = k u/(1 - k u)``);
   two-pass variance uses ``sum (x - mu_hat)^2 / n = v + (mu - mu_hat)^2``
   exactly; raw moments ``E[x^2] - E[x]^2`` err by the sums' errors
   *relative to E[x^2]*, which is why they fail for large means.
2. **Propagation** of those errors through the exact formula (closed form,
   monotone in the variance).
3. **Rounding of the elementwise stage**, FPTaylor-style on a SymPy model of
   the evaluation order: every operation gets a symbol ``d_i``; the first
   order term is ``sum_i max|dF/dd_i| u_i`` and the remainder (Taylor with
   Lagrange remainder) ``1/2 sum_ij max|d2F/dd_i dd_j| u_i u_j``, where the
   maxima are taken by interval arithmetic over the statistics' uncertainty
   and, for the remainder, over the box ``|d_i| <= u_i``.  SymPy derives the
   derivatives from the model; nothing is written by hand.  The interval
   evaluation runs in float64 with a 1e-12 relative margin for its own
   rounding.

Underflow is modelled too (``fl(a op b) = (a op b)(1 + d) + e``, ``|e|`` at
most half the smallest subnormal, ``e = 0`` for additions); overflow is not:
an implementation that overflows lands beyond its budget, as it should.
Outputs that may be NaN under the algorithm (a variance bound reaching
``-(v + eps)``) get an infinite budget.
"""

from __future__ import annotations

import math
import warnings
from dataclasses import dataclass
from fractions import Fraction
from functools import cache
from typing import Any

import numpy as np
import sympy as sp
from normspec.budgets.algorithm import UNIT_ROUNDOFF, Algorithm

__all__ = [
    "StatBounds",
    "stat_bounds",
    "elementwise_model",
    "element_budget",
    "gamma_k",
    "budget_for_layer",
    "running_budget",
]

x_s, m_s, g_s, b_s, D_s = sp.symbols("x m gamma beta D", real=True)
# Underflow: fl(a op b) = (a op b)(1 + d) + e with |e| <= half the smallest subnormal (e = 0 for + and -).
UNDERFLOW = {"float16": 2.0**-25, "bfloat16": 2.0**-134, "float32": 2.0**-150, "float64": 2.0**-1075}
_MARGIN = 1 + 1e-12
# With subnormals flushed, every result below the smallest normal may become zero (additions too)
# and every subnormal input is read as zero: the absolute error per operation is the smallest normal.
TINY = {"float16": 2.0**-14, "bfloat16": 2.0**-126, "float32": 2.0**-126, "float64": 2.0**-1022}


def _under(alg: Algorithm, fmt: str) -> float:
    """The absolute error an operation in ``fmt`` may add near zero under ``alg``'s subnormal mode."""
    return TINY[fmt] if alg.subnormals == "flush" else UNDERFLOW[fmt]


def gamma_k(k: float, u: float) -> float:
    return math.inf if k * u >= 1 else k * u / (1 - k * u)


@dataclass(frozen=True)
class StatBounds:
    """Per-channel |mu_hat - mu| <= e_mu and |v_hat - v| <= e_v (arrays over channels)."""

    e_mu: np.ndarray
    e_v: np.ndarray


def _depth(n: int, summation: str) -> int:
    return max(n - 1, 0) if summation == "recursive" else math.ceil(math.log2(max(n, 1))) + 1


def _rounded_mean_error(mean: np.ndarray, e_mu: np.ndarray, dtype: str) -> np.ndarray:
    from normspec.oracle.formats import FORMATS, round_array

    fmt = FORMATS[dtype]
    lo = (mean - e_mu) * (1 - np.sign(mean - e_mu) * 2.0**-52) - 2.0**-1070  # outward by more than one rounding
    hi = (mean + e_mu) * (1 + np.sign(mean + e_mu) * 2.0**-52) + 2.0**-1070
    r_lo, r_hi = round_array(lo, fmt), round_array(hi, fmt)
    return np.maximum(np.abs(r_lo - mean), np.abs(r_hi - mean)) * (1 + 2.0**-50) + 2.0**-1070


def _welford_bounds(
    n: int, ua: float, ea: float, max_abs: np.ndarray, spread: np.ndarray, var: np.ndarray
) -> tuple[np.ndarray, np.ndarray]:
    """Running error analysis of West's update, step by step (k = 2..n; step 1 is exact).

    With X = max|x| and R = max x - min x (every running mean lies in [min x, max x], so every
    deviation is at most R), the mean's error E_k obeys
    E_k <= E_{k-1}(1 - 1/k + g2/k + u(1 + g2)) + X(2 g2/k + u(1 + 2 g2)) + e  (g2 = gamma_2, e: underflow),
    each increment d (x - mean_k) errs by at most R(Ed + Ee) + Ed Ee + u(R + Ed)(R + Ee) (Ed, Ee: the
    errors of its two factors), and the increments are summed recursively.
    """
    g2 = gamma_k(2, ua)
    E = np.zeros_like(max_abs)
    term_err = np.zeros_like(max_abs)
    for k in range(2, n + 1):
        e_prev = E
        E = e_prev * (1 - 1 / k + g2 / k + ua * (1 + g2)) + max_abs * (2 * g2 / k + ua * (1 + 2 * g2)) + ea
        ed = e_prev + ua * (spread + e_prev)
        ee = E + ua * (spread + E)
        term_err = term_err + spread * (ed + ee) + ed * ee + ua * (spread + ed) * (spread + ee) + 2 * ea
    worst_terms = n * (spread + E + ua * (spread + E)) ** 2  # bounds the sum of |computed increments|
    e_m = term_err + gamma_k(max(n - 1, 0), ua) * worst_terms
    e_v = e_m / n + ua * (var + e_m / n) + ea
    return E * 1.01, e_v * 1.01


def stat_bounds(
    alg: Algorithm,
    n: int,
    mean: np.ndarray,
    var: np.ndarray,
    mean_abs: np.ndarray,
    mean_sq: np.ndarray,
    max_abs: np.ndarray | None = None,
    spread: np.ndarray | None = None,
) -> StatBounds:
    """Error bounds of the computed statistics from the exact per-channel mean, variance,
    mean |x| and mean x**2 (float64 arrays); Welford also needs max |x| and max x - min x."""
    ua = UNIT_ROUNDOFF[alg.accumulator]
    s = _depth(n, alg.summation)
    g_s1 = gamma_k(s, ua)
    ea = _under(alg, alg.accumulator)
    if alg.subnormals == "flush":  # subnormal inputs read as zero move the mean by at most TINY
        ea = 2 * ea
    e_mu = g_s1 * mean_abs + ua * (np.abs(mean) + g_s1 * mean_abs) + ea  # the sum, then the division
    e_v_welford = None
    if alg.variance == "welford":
        if max_abs is None or spread is None:
            raise ValueError("Welford's bound needs max |x| and max x - min x per channel")
        e_mu, e_v_welford = _welford_bounds(n, ua, ea, max_abs, spread, var)
    if alg.mean_rounding != "none":
        # the computed mean lies in [mean - e_mu, mean + e_mu]; rounding is monotone, so the rounded
        # mean lies between the roundings of the ends: its error is known exactly when they agree
        e_mu = _rounded_mean_error(mean, e_mu, alg.mean_rounding)
    if alg.mean_rounding == "none" and UNIT_ROUNDOFF[alg.compute] > ua:  # the mean enters the stage in compute
        e_mu = e_mu + UNIT_ROUNDOFF[alg.compute] * (np.abs(mean) + e_mu) + _under(alg, alg.compute)
    if e_v_welford is not None:
        e_v = e_v_welford
    elif alg.variance == "two_pass":
        # sum (x - mu_hat)^2 / n = v + (mu - mu_hat)^2 exactly; each term carries (1+d)^2(1+d'),
        # the positive sum gamma_s, the division u: relative gamma_{s+4} in all.
        shifted = var + e_mu**2
        e_v = e_mu**2 + gamma_k(s + 4, ua) * shifted + 3 * ea  # squares and the division may underflow
    else:
        # E[x^2] (squares rounded, summed, divided) minus the square of the computed mean
        e_m2 = gamma_k(s + 2, ua) * mean_sq
        mu_hi = np.abs(mean) + e_mu
        e_sq = 2 * np.abs(mean) * e_mu + e_mu**2 + ua * mu_hi**2
        e_v = e_m2 + e_sq + ua * (mean_sq + e_m2 + mu_hi**2) + 4 * ea  # the final subtraction; underflows
    if UNIT_ROUNDOFF[alg.compute] > ua:  # the variance is converted to the compute precision
        e_v = e_v + UNIT_ROUNDOFF[alg.compute] * (var + e_v) + _under(alg, alg.compute)
    return StatBounds(e_mu * _MARGIN, e_v * _MARGIN)


@cache
def elementwise_model(affine: str, inv_std: str) -> tuple[sp.Expr, tuple[sp.Symbol, ...]]:
    """The elementwise stage with a rounding symbol per operation, as SymPy.

    Inputs: x, the mean m and D = v_hat + eps *as computed* (their errors are
    accounted separately); ``d_D`` is the rounding of the addition v + eps.
    """
    d = sp.symbols("d_sub d_D d_sqrt d_div d_scale d_mul d_add d_shift d_fold", real=True)
    d_sub, d_D, d_sqrt, d_div, d_scale, d_mul, d_add, d_shift, d_fold = d
    D = D_s * (1 + d_D)
    if inv_std == "one_over_sqrt":
        inv = (1 + d_div) / (sp.sqrt(D) * (1 + d_sqrt))
        used = [d_D, d_sqrt, d_div]
    else:
        inv = (1 + d_sqrt) / sp.sqrt(D)
        used = [d_D, d_sqrt]
    a = g_s * inv * (1 + d_scale)
    if affine == "unfolded":
        y = ((x_s - m_s) * (1 + d_sub) * a * (1 + d_mul) + b_s) * (1 + d_add)
        used += [d_sub, d_scale, d_mul, d_add]
    else:
        shift = (b_s - m_s * a * (1 + d_fold)) * (1 + d_shift)
        y = (x_s * a * (1 + d_mul) + shift) * (1 + d_add)
        used += [d_scale, d_mul, d_fold, d_shift, d_add]
    return y, tuple(used)


@cache
def _derivatives(
    affine: str, inv_std: str
) -> tuple[tuple[sp.Symbol, ...], list[sp.Expr], list[tuple[int, int, sp.Expr]]]:
    y, ds = elementwise_model(affine, inv_std)
    first = [sp.diff(y, di) for di in ds]
    second = [(i, j, sp.diff(first[i], ds[j])) for i in range(len(ds)) for j in range(i, len(ds))]
    return ds, first, second


Interval = tuple[np.ndarray, np.ndarray]


def _ival(expr: sp.Expr, env: dict[sp.Symbol, Interval]) -> Interval:
    """Interval enclosure of ``expr`` over the boxes in ``env`` (numpy arrays, elementwise)."""
    if expr.is_Symbol:
        return env[expr]
    if expr.is_Number:
        v = float(expr)
        return np.asarray(v), np.asarray(v)
    if expr.is_Add:
        lo, hi = _ival(expr.args[0], env)
        for arg in expr.args[1:]:
            a, b = _ival(arg, env)
            lo, hi = lo + a, hi + b
        return lo, hi
    if expr.is_Mul:
        lo, hi = _ival(expr.args[0], env)
        for arg in expr.args[1:]:
            a, b = _ival(arg, env)
            cands = np.stack(np.broadcast_arrays(lo * a, lo * b, hi * a, hi * b))
            with warnings.catch_warnings():  # all four NaN (non-finite input): NaN, an infinite budget at the end
                warnings.simplefilter("ignore", RuntimeWarning)
                lo, hi = np.nanmin(cands, axis=0), np.nanmax(cands, axis=0)
        return lo, hi
    if expr.is_Pow:
        base, ex = expr.args
        lo, hi = _ival(base, env)
        p = float(ex)
        with np.errstate(divide="ignore", invalid="ignore"):
            if p == int(p) and p >= 0:
                c1, c2 = lo**p, hi**p
                out_lo, out_hi = np.minimum(c1, c2), np.maximum(c1, c2)
                if int(p) % 2 == 0:
                    out_lo = np.where((lo <= 0) & (hi >= 0), 0.0, out_lo)
                return out_lo, out_hi
            # negative or fractional powers: defined here only on positive intervals
            pos = lo > 0
            if p == int(p):  # negative integer power: fine on intervals not containing 0
                ok = pos | (hi < 0)
                c1, c2 = lo**p, hi**p
                return np.where(ok, np.minimum(c1, c2), -np.inf), np.where(ok, np.maximum(c1, c2), np.inf)
            c1, c2 = np.where(pos, lo, np.nan) ** p, np.where(pos, hi, np.nan) ** p
            return np.where(pos, np.minimum(c1, c2), -np.inf), np.where(pos, np.maximum(c1, c2), np.inf)
    raise TypeError(f"no interval rule for {expr!r}")


def _maxabs(expr: sp.Expr, env: dict[sp.Symbol, Interval]) -> np.ndarray:
    lo, hi = _ival(expr, env)
    return np.maximum(np.abs(lo), np.abs(hi)) * _MARGIN


def element_budget(
    alg: Algorithm,
    out_dtype: str,
    x: np.ndarray,
    mean: np.ndarray,
    var: np.ndarray,
    eps: float,
    gamma: np.ndarray,
    beta: np.ndarray,
    bounds: StatBounds,
) -> np.ndarray:
    """Bound on |y_computed - y*| for every element; arrays broadcast together (channel params
    already shaped to broadcast against x).  ``bounds`` of zero describe evaluation mode with
    given statistics."""
    uc = UNIT_ROUNDOFF[alg.compute]
    e_mu, e_v = bounds.e_mu, bounds.e_v
    D = var + eps
    D_lo = D - e_v
    with np.errstate(divide="ignore", invalid="ignore", over="ignore"):
        inv = 1 / np.sqrt(D)
        inv_hi = np.where(D_lo > 0, 1 / np.sqrt(D_lo), np.inf)
        # 2. the statistics' errors through the exact formula
        prop = np.abs(gamma) * (inv_hi * e_mu + np.abs(x - mean) * np.where(D_lo > 0, inv_hi - inv, np.inf))
        prop = np.where(np.isfinite(prop) | (D_lo > 0), prop, np.inf)
        # 3. the elementwise stage over the statistics' boxes
        ds, first, second = _derivatives(alg.affine, alg.inv_std)
        u_of = {d: (alg.rsqrt_ulps * 2 * uc if (d.name == "d_sqrt" and alg.inv_std == "rsqrt") else uc) for d in ds}
        box = {
            x_s: (x, x),
            m_s: (mean - e_mu, mean + e_mu),
            g_s: (gamma, gamma),
            b_s: (beta, beta),
            D_s: (np.where(D_lo > 0, D_lo, -np.inf), D + e_v),
        }
        zero = {d: (np.asarray(0.0), np.asarray(0.0)) for d in ds}
        full = {d: (np.asarray(-u_of[d]), np.asarray(u_of[d])) for d in ds}
        first_order = sum(
            (_maxabs(f, {**box, **zero}) * u_of[d] for f, d in zip(first, ds, strict=True)),
            np.zeros(np.broadcast(x, mean).shape),
        )
        remainder = np.zeros_like(first_order)
        for i, j, h in second:
            weight = 0.5 if i == j else 1.0  # the mixed terms appear twice in 1/2 sum_ij
            remainder = remainder + weight * _maxabs(h, {**box, **full}) * u_of[ds[i]] * u_of[ds[j]]
        # underflow in the stage's products (a = gamma inv, t a, mean a, x a): absolute, each at most
        # half the smallest subnormal, carried by at most |t| or |x| + |mean| afterwards
        tiny = _under(alg, alg.compute)
        under = tiny * (3 + (np.abs(x) + np.abs(mean) + e_mu) * (1 + np.abs(gamma) * inv_hi))
        if alg.subnormals == "flush":  # x read as zero, and the subtraction and addition flushed as well
            under = under + tiny * (2 + 2 * np.abs(gamma) * inv_hi)
        total = prop + first_order + remainder + np.where(np.isfinite(under), under, np.inf)
        # the final conversion to the output type, when the stage ran wider
        if UNIT_ROUNDOFF[out_dtype] > uc:  # half the output's spacing at the largest possible |y|
            y_abs = np.abs(gamma * (x - mean) * inv + beta)
            top = (y_abs + total) * (1 + 4 * UNIT_ROUNDOFF[out_dtype])
            total = total + 0.5 * np.spacing(top.astype(out_dtype)).astype(np.float64)
        total = np.where(np.isnan(total), np.inf, total)
    return total


def budget_for_batch_norm(
    alg: Algorithm | str | dict[str, Any],
    x: np.ndarray,
    weight: Any,
    bias: Any,
    eps: float,
    *,
    training: bool,
    running_mean: Any = None,
    running_var: Any = None,
    axis: int = 1,
) -> np.ndarray:
    """Per-element budget of ``alg`` on a BatchNorm forward (exact statistics from the oracle).

    ``alg`` is an :class:`Algorithm`, a preset name or a dict of its fields.  The arguments are
    checked as the oracle checks them (axis, shapes, dtypes, finite parameters, eps, running
    statistics present and non-negative in evaluation), with the same errors.
    """
    from fractions import Fraction

    from normspec.budgets.algorithm import get_algorithm
    from normspec.oracle import batch_norm

    alg = get_algorithm(alg)
    # the oracle validates every argument and gives the exact statistics
    res = batch_norm(
        x, weight, bias, running_mean, running_var, training=training, eps=eps, convention="torch_raw", axis=axis
    )
    xa = np.asarray(x)
    out_dtype = xa.dtype.name
    c = xa.shape[axis]
    shape = [1] * xa.ndim
    shape[axis] = c
    gamma = (np.ones(c) if weight is None else np.asarray(weight, np.float64)).reshape(shape)
    beta = (np.zeros(c) if bias is None else np.asarray(bias, np.float64)).reshape(shape)
    if training:
        mean = np.array([float(m) for m in res.exact.mean])
        var = np.array([float(v) for v in res.exact.var])
        moved = np.moveaxis(xa.astype(np.float64), axis, 0).reshape(c, -1)
        n = moved.shape[1]
        mean_abs = np.abs(moved).mean(axis=1) * (1 + 1e-12)
        mean_sq = np.array(
            [float(v) for v in (Fraction(0) + res.exact.var[i] + res.exact.mean[i] ** 2 for i in range(c))]
        ) * (1 + 1e-12)
        spread = moved.max(axis=1) - moved.min(axis=1)
        bounds = stat_bounds(alg, n, mean, var, mean_abs, mean_sq, np.abs(moved).max(axis=1), spread)
    else:
        mean = np.asarray(running_mean, np.float64)
        var = np.asarray(running_var, np.float64)
        bounds = StatBounds(np.zeros(c), np.zeros(c))
    return element_budget(
        alg,
        out_dtype,
        xa.astype(np.float64),
        mean.reshape(shape),
        var.reshape(shape),
        eps,
        gamma,
        beta,
        StatBounds(bounds.e_mu.reshape(shape), bounds.e_v.reshape(shape)),
    )


def budget_for_layer(
    alg: Algorithm,
    convention: Any,
    x: np.ndarray,
    weight: Any = None,
    bias: Any = None,
    *,
    eps: float | None = None,
    groups: int | None = None,
    input_dtype: Any = None,
) -> np.ndarray:
    """Per-element budget of ``alg`` on a training forward of any layer, ``y`` only.

    The layer's grouping and affine layout come from its convention record through the oracle
    (:func:`normspec.oracle.forward`, whose exact statistics the bound starts from): each group
    is a reduction of ``n`` values, each element carries its own ``gamma`` and ``beta``.  RMSNorm
    computes no mean: its "variance" is the mean square, a sum of squares.  Where eps sits
    outside the root (MeanVarianceNormalization) the elementwise model does not apply and the
    budget is infinite.  ``input_dtype``: the layer's input format when ``x`` is a wider value it
    normalizes (a fused residual add's float32 sum): casts and ``y`` are in that format.
    """
    import dataclasses

    from normspec.oracle import forward
    from normspec.spec.conventions import get_convention

    conv = get_convention(convention)
    xa = np.asarray(x)
    in_dtype = xa.dtype if input_dtype is None else np.dtype(input_dtype)
    if conv.cast_at("normalized") is not None:
        return _cast_budget(alg, conv, xa, weight, bias, eps, groups, in_dtype)
    training = {"training": True} if conv.running_stats else {}
    if in_dtype != xa.dtype:  # the weight is stored in the input's format, not in x's
        conv = dataclasses.replace(conv, weight_format=None)
    res = forward(conv, xa, weight, bias, eps=eps, groups=groups, **training)
    ex = res.exact
    if conv.eps_placement != "inside" or xa.size == 0:
        return np.full(xa.shape, np.inf)
    x3 = ex.x3.astype(np.float64)
    n = x3.shape[0] * x3.shape[2]
    shape = (1, x3.shape[1], 1)
    pairs = zip(ex.mean, ex.var, strict=True)
    finite = np.array([isinstance(m, Fraction) and isinstance(v, Fraction) for m, v in pairs], dtype=bool)
    mean = np.array([float(m) if ok else np.nan for m, ok in zip(ex.mean, finite, strict=True)])
    var = np.array([float(v) if ok else np.nan for v, ok in zip(ex.var, finite, strict=True)])
    with np.errstate(invalid="ignore", over="ignore"):
        max_abs = np.abs(x3).max(axis=(0, 2))
        spread = x3.max(axis=(0, 2)) - x3.min(axis=(0, 2))
        if conv.centred:
            mean_abs = np.abs(x3).mean(axis=(0, 2)) * (1 + 1e-12)
            mean_sq = np.array(
                [float(v + m * m) if ok else np.nan for m, v, ok in zip(ex.mean, ex.var, finite, strict=True)]
            ) * (1 + 1e-12)
        else:  # no mean is computed: a zero mean carries only the underflow term
            mean_abs = np.zeros_like(mean)
            mean_sq = var * (1 + 1e-12)
        bounds = stat_bounds(alg, n, mean, var, mean_abs, mean_sq, max_abs, spread)
    budget = element_budget(
        alg,
        in_dtype.name,
        x3,
        mean.reshape(shape),
        var.reshape(shape),
        float(ex.eps),
        ex.gamma3,
        ex.beta3,
        StatBounds(bounds.e_mu.reshape(shape), bounds.e_v.reshape(shape)),
    )
    return np.broadcast_to(budget, x3.shape).reshape(xa.shape)


def _cast_budget(
    alg: Algorithm,
    conv: Any,
    xa: np.ndarray,
    weight: Any,
    bias: Any,
    eps: float | None,
    groups: int | None,
    in_dtype: Any,
) -> np.ndarray:
    """A profile that rounds the normalized value to the input's dtype, then scales it (LlamaRMSNorm):
    a bound on |output - w * c(xhat)|, the profile's exact value before its final rounding.

    The kernel's rounded normalized value is within ``B`` (the plain profile's budget in the input's
    dtype, its own rounding included) of the exact xhat, and c(xhat) within half a spacing of it; the
    product's rounding adds half a spacing of the output.  Monotone spacings make both upper bounds.
    """
    import dataclasses

    from normspec.oracle import forward

    plain = dataclasses.replace(conv, cast_points=(), weight_format=None, residual=False)
    k = {"normalized_ndim": np.ndim(weight) if weight is not None else 1} if conv.layer != "group_norm" else {}
    b_n = budget_for_layer(alg, plain, xa, None, None, eps=eps, groups=groups)
    ref = forward(dataclasses.replace(conv, weight_format=None, residual=False), xa, weight, bias, eps=eps, **k)
    xr = forward(plain, xa, None, None, eps=eps, **k).y.astype(np.float64)
    w = np.abs(np.broadcast_to(ref.exact.gamma3, ref.exact.x3.shape)).reshape(xa.shape)
    beta = 0.0 if bias is None else np.abs(np.broadcast_to(ref.exact.beta3, ref.exact.x3.shape)).reshape(xa.shape)

    def spacing(v: np.ndarray) -> np.ndarray:  # a spacing of the input's dtype at or above |v|'s own
        return 2 * np.spacing(v.astype(in_dtype)).astype(np.float64)

    with np.errstate(invalid="ignore", over="ignore"):
        top = np.abs(xr) + b_n  # above |c(xhat)| and the kernel's rounded value
        out = w * (b_n + 0.5 * spacing(top)) + 0.5 * spacing(w * top + beta)
    return np.where(np.isnan(out), np.inf, out)


def running_budget(
    alg: Algorithm,
    convention: Any,
    x_steps: np.ndarray,
    running_mean: np.ndarray,
    running_var: np.ndarray,
    momentum: float,
    *,
    eps: float | None = None,
) -> tuple[np.ndarray, np.ndarray]:
    """Bounds on the running mean and variance after each training step, ``(steps, C)`` each.

    Step ``k`` computes ``r_k = (1 - w) r_{k-1} + w b_k`` (``w`` the weight of the new statistic
    under the convention's momentum direction; ``b`` the batch mean, or the batch variance times
    the convention's correction) from a batch statistic that carries the algorithm's error
    (:func:`stat_bounds`) and a running value that carries the previous step's.  Each step adds
    the roundings of the batch statistic to the update's precision, of the weights, the two
    products, the sum, the correction and the store in the running statistics' dtype.  Steps
    where the correction is undefined (n = 1) get an infinite bound.
    """
    from normspec.oracle import batch_norm
    from normspec.spec.conventions import get_convention

    conv = get_convention(convention)
    ua = UNIT_ROUNDOFF[alg.accumulator]
    us = UNIT_ROUNDOFF[np.asarray(running_mean).dtype.name]
    uo = max(ua, us, UNIT_ROUNDOFF[alg.compute])  # the update runs in one of these
    w = float(conv.effective_momentum(momentum))
    w = w if conv.momentum_direction == "new" else 1.0 - w
    rm, rv = np.asarray(running_mean), np.asarray(running_var)
    e_rm, e_rv = np.zeros(rm.shape), np.zeros(rv.shape)
    out_m: list[np.ndarray] = []
    out_v: list[np.ndarray] = []
    for x in np.asarray(x_steps):
        r = batch_norm(x, None, None, rm, rv, training=True, momentum=momentum, eps=eps, convention=conv)
        ex = r.exact
        c = x.shape[1]
        moved = np.moveaxis(x.astype(np.float64), 1, 0).reshape(c, -1)
        n = moved.shape[1]
        mean = np.array([float(m) for m in ex.mean])
        var = np.array([float(v) for v in ex.var])
        mean_sq = np.array([float(v + m * m) for m, v in zip(ex.mean, ex.var, strict=True)]) * (1 + 1e-12)
        spread = moved.max(axis=1) - moved.min(axis=1)
        b = stat_bounds(alg, n, mean, var, np.abs(moved).mean(axis=1) * (1 + 1e-12), mean_sq,
                        np.abs(moved).max(axis=1), spread)  # fmt: skip
        bessel = conv.bessel(n)
        f = math.inf if bessel is None else float(bessel)
        with np.errstate(invalid="ignore"):  # 0 * inf where the correction is undefined (n = 1)
            bv, e_bv = var * f, b.e_v * f + ua * var * f  # the correction's own rounding
        old_m, old_v = rm.astype(np.float64), rv.astype(np.float64)
        with np.errstate(invalid="ignore", over="ignore"):
            for old, e_old, new, e_new, acc in ((old_m, e_rm, mean, b.e_mu, out_m), (old_v, e_rv, bv, e_bv, out_v)):
                # the batch statistic rounded to the update's precision, then the weights (1 - m
                # computed), the two products and the sum, each rounded, and the store
                e_in = e_new + uo * (np.abs(new) + e_new)
                # each weight may be formed in the update's precision from the other (1 - m held in
                # float32, or m rounded first): an absolute error up to uo (|w| + |1 - w|)
                e_w = uo * (abs(w) + abs(1 - w)) * (np.abs(old) + e_old + np.abs(new) + e_in)
                carried = abs(1 - w) * e_old + abs(w) * e_in + e_w
                terms = (abs(1 - w) * (np.abs(old) + e_old) + abs(w) * (np.abs(new) + e_in)) * (1 + 8 * uo)
                acc.append(carried + (5 * uo + us) * terms + 4 * _under(alg, "float32"))
        e_rm, e_rv = out_m[-1], out_v[-1]
        assert r.running_mean is not None and r.running_var is not None
        rm, rv = r.running_mean, r.running_var
    return np.array(out_m), np.where(np.isnan(out_v), np.inf, np.array(out_v))
