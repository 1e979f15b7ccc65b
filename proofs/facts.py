"""Derived facts about BatchNorm: a registry of data, proven by one checker.

Each :class:`Fact` has a statement, its assumptions, a line on why it
matters, a derivation (a list of steps, each an equality that
:func:`normspec.proofs.symbolic.prove_equal` must reduce to 0), and a
numeric confirmation that runs the oracle at sampled points and checks its
*exact* results (the rationals behind the outputs, or bit patterns where the
fact predicts equal roundings).  :func:`normspec.proofs.checker.prove` runs
both; ``normspec prove`` is the command.

>>> sorted(FACTS)[:2]
['backward_closed_form', 'bessel_factor']
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from fractions import Fraction

import numpy as np
import sympy as sp
from normspec.oracle import BatchNormResult, batch_norm
from normspec.oracle.layers import Stat
from normspec.spec.batchnorm import (
    backward_from_autodiff,
    batch_norm_backward,
    batch_norm_eval,
    batch_norm_train,
    running_update,
)
from normspec.spec.core import biased_var, mean, unbiased_var

__all__ = ["Fact", "FACTS", "Step"]

Step = tuple[str, sp.Expr, sp.Expr]

x, m, g, b = sp.symbols("x mean gamma beta", real=True)
v = sp.Symbol("var", nonnegative=True)
e = sp.Symbol("eps", positive=True)
k = sp.Symbol("k", positive=True)
mom = sp.Symbol("m", real=True)
r0, bs = sp.symbols("r0 b", real=True)
j = sp.Symbol("j", integer=True, nonnegative=True)
F32 = np.float32


class FactCheckError(AssertionError):
    """A numeric confirmation found the oracle disagreeing with a fact."""


def _check(cond: bool, what: str) -> None:
    if not cond:
        raise FactCheckError(what)


@dataclass(frozen=True)
class Fact:
    name: str
    statement: str
    assumptions: tuple[str, ...]
    why: str
    steps: Callable[[], list[Step]]
    confirm: Callable[[np.random.Generator], int]


def _running(res: BatchNormResult) -> tuple[np.ndarray, np.ndarray, tuple[Stat, ...], tuple[Stat, ...]]:
    """Rounded and exact running statistics of a result that has them."""
    ex = res.exact
    if res.running_mean is None or res.running_var is None or ex.running_mean is None or ex.running_var is None:
        raise FactCheckError("expected running statistics in the result")
    return res.running_mean, res.running_var, ex.running_mean, ex.running_var


def _xs(n: int) -> tuple[sp.Symbol, ...]:
    return sp.symbols(f"x0:{n}", real=True)


def _rand_case(rng: np.random.Generator, shape: tuple[int, ...] = (4, 2, 3)) -> np.ndarray:
    return (rng.integers(-64, 64, shape) / 8.0).astype(F32)


# 1 ------------------------------------------------------------------ eval affine
def _eval_affine_steps() -> list[Step]:
    s = g / sp.sqrt(v + e)
    return [
        (
            "y = x*s + t with s = gamma/sqrt(var+eps), t = beta - mean*s",
            batch_norm_eval(x, m, v, g, b, e),
            x * s + (b - m * s),
        )
    ]


def _eval_affine_confirm(rng: np.random.Generator) -> int:
    xs = _rand_case(rng)
    rm, rv = rng.standard_normal(2).astype(F32), (rng.random(2) + 0.5).astype(F32)
    w, bb = rng.standard_normal(2).astype(F32), rng.standard_normal(2).astype(F32)
    res = batch_norm(xs, w, bb, rm, rv, training=False)
    for idx in np.ndindex(xs.shape):
        A, B, D = res.exact.parts(idx)
        c = idx[1]
        # slope and intercept in the parts: A = (x - mean) * gamma, so A is affine in x with slope gamma
        _check((Fraction(float(xs[idx])) - Fraction(float(rm[c]))) * Fraction(float(w[c])) == A, "slope")
        _check(Fraction(float(bb[c])) == B and Fraction(float(rv[c])) + Fraction(1e-5) == D, "intercept")
    return xs.size


# 2 ------------------------------------------------------------------ fold into linear
def _fold_steps() -> list[Step]:
    w1, w2, x1, x2, c = sp.symbols("w1 w2 x1 x2 c", real=True)
    s = g / sp.sqrt(v + e)
    return [
        (
            "BN(w.x + c) = (s*w).x + (s*(c - mean) + beta)",
            batch_norm_eval(w1 * x1 + w2 * x2 + c, m, v, g, b, e),
            (s * w1) * x1 + (s * w2) * x2 + (s * (c - m) + b),
        )
    ]


def _fold_confirm(rng: np.random.Generator) -> int:
    W = rng.integers(-4, 5, (2, 3)).astype(np.float64)
    c = rng.integers(-4, 5, 2).astype(np.float64)
    xin = rng.integers(-8, 9, (5, 3)).astype(np.float64)
    z = xin @ W.T + c  # small integers: exact
    rm, rv = np.array([0.5, -1.0]), np.array([2.0, 0.25])
    res = batch_norm(z, None, None, rm, rv, training=False, eps=0.0)
    for i in range(5):
        for o in range(2):
            s_num = Fraction(1)  # gamma = 1; s = 1/sqrt(D)
            A, B, D = res.exact.parts((i, o))
            folded = (
                sum(Fraction(W[o, q]) * Fraction(xin[i, q]) for q in range(3)) * s_num
                + (Fraction(c[o]) - Fraction(rm[o])) * s_num
            )
            _check(folded == A and B == 0 and Fraction(rv[o]) == D, "folded weights")
    return 10


# 3 ------------------------------------------------------------------ training output moments
def _moments_steps() -> list[Step]:
    xs = _xs(3)
    ys = batch_norm_train(xs, g, b, e)
    vb = biased_var(xs)
    return [
        ("mean of the outputs is beta", mean(ys), b),
        ("biased variance of the outputs is gamma^2 var/(var + eps)", biased_var(ys), g**2 * vb / (vb + e)),
    ]


def _moments_confirm(rng: np.random.Generator) -> int:
    xs = _rand_case(rng)
    w, bb = rng.standard_normal(2).astype(F32), rng.standard_normal(2).astype(F32)
    res = batch_norm(xs, w, bb, training=True)
    for c in range(2):
        parts = [res.exact.parts((i, c, q)) for i in range(4) for q in range(3)]
        D, n = parts[0][2], len(parts)
        _check(sum(p[0] for p in parts) == 0, "sum of (x - mean) * gamma is 0, so mean(y) = beta")
        var_y = sum(p[0] ** 2 for p in parts) / n / D
        _check(var_y == Fraction(float(w[c])) ** 2 * res.exact.var[c] / D, "variance of y")
    return 2


# 4 ------------------------------------------------------------------ shift and scale
def _invariance_steps() -> list[Step]:
    xs = _xs(3)
    d = sp.Symbol("d", real=True)
    ys = batch_norm_train(xs, g, b, e)
    shifted = batch_norm_train([xi + d for xi in xs], g, b, e)
    scaled = batch_norm_train([k * xi for xi in xs], g, b, k**2 * e)
    same_eps = batch_norm_train([k * xi for xi in xs], g, b, e)
    fixed_eps = batch_norm_train(xs, g, b, e / k**2)
    dy_deps = sp.diff(ys[0], e)
    mu = mean(xs)
    return [
        ("shift: y(x + d) = y(x)", shifted[0], ys[0]),
        ("scale: y(k x, k^2 eps) = y(x, eps) for k > 0", scaled[0], ys[0]),
        ("with eps unchanged, y(k x, eps) = y(x, eps/k^2)", same_eps[0], fixed_eps[0]),
        (
            "and y is strictly monotone in eps where x != mean: dy/deps = -gamma (x - mean) / (2 (var + eps)^(3/2)), "
            "so y(k x, eps) = y(x, eps) only if k = 1",
            dy_deps,
            -g * (xs[0] - mu) / (2 * (biased_var(xs) + e) ** sp.Rational(3, 2)),
        ),
    ]


def _invariance_confirm(rng: np.random.Generator) -> int:
    xs = _rand_case(rng)
    base = batch_norm(xs, training=True, eps=2.0**-6)
    shifted = batch_norm((xs + F32(3.0)).astype(F32), training=True, eps=2.0**-6)
    _check(base.y.tobytes() == shifted.y.tobytes(), "shift invariance, bit for bit")
    scaled = batch_norm((xs * F32(4)).astype(F32), training=True, eps=2.0**-2)
    _check(base.y.tobytes() == scaled.y.tobytes(), "scale by 4 with eps * 16, bit for bit")
    same = batch_norm((xs * F32(4)).astype(F32), training=True, eps=2.0**-6)
    _check(base.y.tobytes() != same.y.tobytes(), "scale with the same eps changes y")
    return 3


# 5 ------------------------------------------------------------------ momentum
def _momentum_steps() -> list[Step]:
    closed = (1 - mom) ** j * r0 + (1 - (1 - mom) ** j) * bs
    closed_next = closed.subs(j, j + 1)
    return [
        (
            "new-weight m equals old-weight 1 - m",
            running_update(r0, bs, mom, "new"),
            running_update(r0, bs, 1 - mom, "old"),
        ),
        ("closed form holds at k = 0", closed.subs(j, 0), r0),
        ("one update takes the closed form at k to k + 1", running_update(closed, bs, mom, "new"), closed_next),
    ]


def _momentum_confirm(rng: np.random.Generator) -> int:
    x = np.array([[1.0], [3.0]])  # batch mean 2, biased var 1
    torch_rm, keras_rm = np.array([8.0]), np.array([8.0])
    rv = np.array([1.0])
    for step in range(1, 6):
        t = batch_norm(x, None, None, torch_rm, rv, training=True, momentum=0.25)
        kk = batch_norm(x, None, None, keras_rm, rv, training=True, momentum=0.75, convention="keras3")
        torch_rm, _, torch_exact, _ = _running(t)
        keras_rm, _, keras_exact, _ = _running(kk)
        closed = Fraction(3, 4) ** step * 8 + (1 - Fraction(3, 4) ** step) * 2
        _check(torch_exact[0] == closed == keras_exact[0], f"step {step}")
    return 5


# 6 ------------------------------------------------------------------ Bessel
def _bessel_steps() -> list[Step]:
    steps: list[Step] = []
    for n in (2, 3, 4):
        xs = _xs(n)
        steps.append(
            (f"n = {n}: unbiased = biased * n/(n-1)", unbiased_var(xs), biased_var(xs) * sp.Rational(n, n - 1))
        )
    steps.append(("n = 1: the unbiased variance is 0/0", unbiased_var(_xs(1)), sp.nan))
    return steps


def _bessel_confirm(rng: np.random.Generator) -> int:
    xs = _rand_case(rng, (5, 2, 1))
    zeros = np.zeros(2)
    t = _running(batch_norm(xs, None, None, zeros, zeros, training=True, momentum=1.0))
    kk = _running(batch_norm(xs, None, None, zeros, zeros, training=True, momentum=0.0, convention="keras3"))
    for c in range(2):
        _check(t[3][c] == kk[3][c] * Fraction(5, 4), "n/(n-1) with n = 5")
    one = _running(batch_norm(xs[:1], None, None, zeros, zeros, training=True, momentum=1.0, convention="torch_raw"))
    _check(bool(np.isnan(one[1]).all()), "NaN at n = 1")
    return 3


# 7 ------------------------------------------------------------------ one value per channel
def _one_value_steps() -> list[Step]:
    return [("n = 1: y = beta for every gamma and eps > 0", batch_norm_train(_xs(1), g, b, e)[0], b)]


def _one_value_confirm(rng: np.random.Generator) -> int:
    xs = _rand_case(rng, (1, 3))
    w, bb = rng.standard_normal(3).astype(F32), rng.standard_normal(3).astype(F32)
    res = batch_norm(xs, w, bb, training=True, convention="torch_raw")
    _check(res.y.tobytes() == bb.reshape(1, 3).tobytes(), "y = beta")
    return 3


# 8 ------------------------------------------------------------------ backward
def _backward_steps() -> list[Step]:
    xs, dys = _xs(3), sp.symbols("dy0:3", real=True)
    dx, dgamma, dbeta = batch_norm_backward(xs, dys, g, e)
    adx, adg, adb = backward_from_autodiff(xs, dys, g, b, e)
    mu, sigma = mean(xs), sp.sqrt(biased_var(xs) + e)
    xhat = [(xi - mu) / sigma for xi in xs]
    steps: list[Step] = [(f"dx_{i} equals SymPy's derivative", dx[i], adx[i]) for i in range(3)]
    sum_dy_xhat = sp.Add(*[d * h for d, h in zip(dys, xhat, strict=True)])
    steps += [
        ("dgamma = sum(dy * xhat)", dgamma, adg),
        ("dbeta = sum(dy)", dbeta, adb),
        ("sum(dx) = 0", sp.Add(*dx), 0),
        # Often quoted as 0; that holds only at eps = 0, where xhat has unit variance.
        (
            "sum(dx * xhat) = gamma eps / (sigma (var + eps)) * sum(dy * xhat): zero only when eps = 0",
            sp.Add(*[d * h for d, h in zip(dx, xhat, strict=True)]),
            g * e / (sigma * (biased_var(xs) + e)) * sum_dy_xhat,
        ),
    ]
    return steps


def _backward_confirm(rng: np.random.Generator) -> int:
    """The oracle has no backward yet: evaluate both gradients exactly at rational points."""
    xs, dys = _xs(3), sp.symbols("dy0:3", real=True)
    dx = batch_norm_backward(xs, dys, g, e)[0]
    adx = backward_from_autodiff(xs, dys, g, b, e)[0]
    count = 0
    for _ in range(3):
        point = {
            **{xi: sp.Rational(int(rng.integers(-9, 9)), 4) for xi in xs},
            **{d: sp.Rational(int(rng.integers(-9, 9)), 2) for d in dys},
            g: sp.Rational(3, 2),
            e: sp.Rational(1, 8),
        }
        for p, q in zip(dx, adx, strict=True):
            _check(sp.nsimplify(sp.simplify((p - q).subs(point))) == 0, "gradients agree at a rational point")
            count += 1
    return count


# 9 ------------------------------------------------------------------ cumulative average
def _cumulative_steps() -> list[Step]:
    S = sp.Symbol("S", real=True)  # sum of the first k batch statistics
    kk = sp.Symbol("k", integer=True, positive=True)
    return [
        (
            "factor 1/(k+1) takes the mean of k values to the mean of k + 1",
            running_update(S / kk, bs, 1 / (kk + 1), "new"),
            (S + bs) / (kk + 1),
        )
    ]


def _cumulative_confirm(rng: np.random.Generator) -> int:
    """Batch means chosen so every partial mean is an integer: no rounding between steps."""
    targets = [int(t) for t in rng.integers(-50, 50, 4)]
    rm, rv, seen = np.zeros(1), np.ones(1), 0
    for step, target in enumerate(targets, start=1):
        prev = targets[step - 2] if step > 1 else 0
        mu = float(step * target - (step - 1) * prev)
        res = batch_norm(
            np.array([[mu - 1], [mu + 1]]),
            None,
            None,
            rm,
            rv,
            training=True,
            momentum="cumulative",
            num_batches_tracked=seen,
        )
        rm, rv, exact_mean, _ = _running(res)
        seen = res.num_batches_tracked
        _check(exact_mean[0] == target, f"mean of the first {step} batch means")
    return len(targets)


# 10 ----------------------------------------------------------------- eps inside vs outside
def _eps_steps() -> list[Step]:
    u = sp.Symbol("u", positive=True)  # eps = u/(1+u) runs over (0, 1)
    eps_u = u / (1 + u)
    return [
        (
            "squaring: (sqrt(var) + eps)^2 - (var + eps) = eps (2 sqrt(var) + eps - 1), and both sides are >= 0, "
            "so for eps > 0 they agree iff sqrt(var) = (1 - eps)/2, i.e. var = ((1 - eps)/2)^2 with eps <= 1",
            sp.expand((sp.sqrt(v) + e) ** 2 - (v + e)),
            e * (2 * sp.sqrt(v) + e - 1),
        ),
        (
            "on that set they agree, for every eps in (0, 1) (eps = u/(1+u), u > 0)",
            sp.sqrt(((1 - eps_u) / 2) ** 2 + eps_u),
            sp.sqrt(((1 - eps_u) / 2) ** 2) + eps_u,
        ),
        ("and at eps = 1, var = 0", sp.sqrt(0 + sp.Integer(1)), sp.sqrt(0) + sp.Integer(1)),
    ]


def _eps_confirm(rng: np.random.Generator) -> int:
    from normspec.spec.bugzoo import get_variant

    variant = get_variant("eps_outside_sqrt")
    eps = 0.25  # the agreement point: var = (3/8)^2; x = mean +- 3/8 gives var (3/8)^2
    agree = {
        "x": np.array([[[-0.375, 0.375]]], F32),
        "weight": np.ones(1, F32),
        "bias": np.zeros(1, F32),
        "running_mean": np.zeros(1, F32),
        "running_var": np.ones(1, F32),
        "training": True,
        "momentum": 0.1,
        "eps": eps,
    }
    spec = batch_norm(agree["x"], training=True, eps=eps)
    _check(variant.behaviour(agree)["y"].tobytes() == spec.y.tobytes(), "agree on the agreement set")
    apart = dict(agree, x=np.array([[[0.0, 1.0]]], F32))
    spec2 = batch_norm(apart["x"], training=True, eps=eps)
    _check(variant.behaviour(apart)["y"].tobytes() != spec2.y.tobytes(), "differ off it")
    return 2


# 11-15 ------------------------------------------------------------ the family
def _ln_gn_steps() -> list[Step]:
    from normspec.spec.family import group_norm, layer_norm

    xs = _xs(4)
    g0, g1, b0, b1 = sp.symbols("g0 g1 b0 b1", real=True)
    gn = group_norm([xs[:2], xs[2:]], 1, [g0, g1], [b0, b1], e)
    ln = layer_norm(xs, [g0, g0, g1, g1], [b0, b0, b1, b1], e)
    flat = [y for ch in gn for y in ch]
    return [(f"element {i}: GroupNorm with one group = LayerNorm over the sample", flat[i], ln[i]) for i in range(4)]


def _ln_gn_confirm(rng: np.random.Generator) -> int:
    from normspec.oracle import group_norm, layer_norm

    x = _rand_case(rng, (3, 4, 5))
    w, b = rng.standard_normal(4).astype(F32), rng.standard_normal(4).astype(F32)
    gn = group_norm(x, 1, w, b).y
    ln = layer_norm(x, 2, np.repeat(w[:, None], 5, axis=1), np.repeat(b[:, None], 5, axis=1)).y
    _check(gn.tobytes() == ln.tobytes(), "GroupNorm(G=1) and LayerNorm agree bit for bit")
    return x.size


def _in_gn_steps() -> list[Step]:
    from normspec.spec.family import group_norm, instance_norm

    chans = [_xs(2), sp.symbols("z0:2", real=True)]
    g0, g1, b0, b1 = sp.symbols("g0 g1 b0 b1", real=True)
    gn = group_norm(chans, 2, [g0, g1], [b0, b1], e)
    inn = instance_norm(chans, [g0, g1], [b0, b1], e)
    return [
        (f"channel {c}, element {k}: InstanceNorm = GroupNorm with one channel per group", gn[c][k], inn[c][k])
        for c in range(2)
        for k in range(2)
    ]


def _in_gn_confirm(rng: np.random.Generator) -> int:
    from normspec.oracle import instance_norm, layer_norm

    x = _rand_case(rng, (2, 3, 6))
    inn = instance_norm(x).y
    ln = layer_norm(x.reshape(6, 6), 1).y.reshape(x.shape)  # a different code path: rows of LayerNorm
    _check(inn.tobytes() == ln.tobytes(), "InstanceNorm and per-(sample, channel) LayerNorm agree bit for bit")
    return x.size


def _rms_ln_steps() -> list[Step]:
    from normspec.spec.family import layer_norm, rms_norm

    a, b2, c2 = sp.symbols("a b c", real=True)
    xs = [a, b2, c2, -(a + b2 + c2)]  # a zero-mean row
    gs = sp.symbols("g0:4", real=True)
    return [
        (
            f"element {i}: RMSNorm = LayerNorm (beta = 0) on a zero-mean row",
            rms_norm(xs, gs, e)[i],
            layer_norm(xs, gs, [0, 0, 0, 0], e)[i],
        )
        for i in range(4)
    ]


def _rms_ln_confirm(rng: np.random.Generator) -> int:
    from normspec.oracle import layer_norm, rms_norm

    half = _rand_case(rng, (3, 3))
    x = np.concatenate([half, -half], axis=1)  # every row sums to exactly 0
    _check(rms_norm(x, 1, eps=2.0**-10).y.tobytes() == layer_norm(x, 1, eps=2.0**-10).y.tobytes(), "bit for bit")
    return x.size


def _ln_shift_steps() -> list[Step]:
    from normspec.spec.family import layer_norm

    xs, d = _xs(3), sp.Symbol("d", real=True)
    gs, bs = sp.symbols("g0:3", real=True), sp.symbols("b0:3", real=True)
    shifted = layer_norm([x + d for x in xs], gs, bs, e)
    base = layer_norm(xs, gs, bs, e)
    return [(f"element {i}: LayerNorm(x + d) = LayerNorm(x)", shifted[i], base[i]) for i in range(3)]


def _ln_shift_confirm(rng: np.random.Generator) -> int:
    from normspec.oracle import layer_norm

    x = _rand_case(rng, (4, 6))
    _check(layer_norm(x, 1).y.tobytes() == layer_norm((x + F32(16)).astype(F32), 1).y.tobytes(), "shift, bit for bit")
    return x.size


def _ln_backward_steps() -> list[Step]:
    from normspec.spec.family import layer_norm, layer_norm_backward

    xs, dys = _xs(3), sp.symbols("dy0:3", real=True)
    gs, bs = sp.symbols("g0:3", real=True), sp.symbols("b0:3", real=True)
    loss = sp.Add(*[d * y for d, y in zip(dys, layer_norm(xs, gs, bs, e), strict=True)])
    closed = layer_norm_backward(xs, dys, gs, e)
    steps = [(f"dx_{i} of LayerNorm equals SymPy's derivative", closed[i], sp.diff(loss, xs[i])) for i in range(3)]
    from normspec.spec.family import rms_norm, rms_norm_backward

    rms_loss = sp.Add(*[d * y for d, y in zip(dys, rms_norm(xs, gs, e), strict=True)])
    rms_closed = rms_norm_backward(xs, dys, gs, e)
    steps += [
        (f"dx_{i} of RMSNorm equals SymPy's derivative", rms_closed[i], sp.diff(rms_loss, xs[i])) for i in range(3)
    ]
    from normspec.spec.family import group_norm, group_norm_backward

    # GroupNorm: one group of two channels with two values each and a gamma per channel
    # (InstanceNorm is the same formula with one channel per group).
    gx = sp.symbols("x0:4", real=True)
    gd = sp.symbols("dy0:4", real=True)
    chans, dchans = [list(gx[:2]), list(gx[2:])], [list(gd[:2]), list(gd[2:])]
    gn = group_norm(chans, 1, gs[:2], bs[:2], e)
    gn_loss = sp.Add(*[d * y for dc, yc in zip(dchans, gn, strict=True) for d, y in zip(dc, yc, strict=True)])
    gn_closed = [v for row in group_norm_backward(chans, dchans, 1, gs[:2], e) for v in row]
    steps += [
        (f"dx_{i} of GroupNorm (per-channel gamma) equals SymPy's derivative", gn_closed[i], sp.diff(gn_loss, gx[i]))
        for i in range(4)
    ]
    return steps


def _ln_backward_confirm(rng: np.random.Generator) -> int:
    from normspec.spec.family import layer_norm, layer_norm_backward

    xs, dys = _xs(3), sp.symbols("dy0:3", real=True)
    gs = [sp.Rational(3, 2), sp.Rational(-1, 2), sp.Integer(2)]
    loss = sp.Add(*[d * y for d, y in zip(dys, layer_norm(xs, gs, [0, 0, 0], e), strict=True)])
    closed = layer_norm_backward(xs, dys, gs, e)
    point = {
        **{x: sp.Rational(int(rng.integers(-9, 9)), 4) for x in xs},
        **{d: sp.Rational(int(rng.integers(-9, 9)), 2) for d in dys},
        e: sp.Rational(1, 8),
    }
    for i in range(3):
        _check(sp.nsimplify(sp.simplify((closed[i] - sp.diff(loss, xs[i])).subs(point))) == 0, "at a rational point")
    from normspec.spec.family import group_norm, group_norm_backward

    gx, gd = sp.symbols("x0:4", real=True), sp.symbols("dy0:4", real=True)
    chans, dchans = [list(gx[:2]), list(gx[2:])], [list(gd[:2]), list(gd[2:])]
    gn = group_norm(chans, 1, gs[:2], [0, 0], e)
    gn_loss = sp.Add(*[d * y for dc, yc in zip(dchans, gn, strict=True) for d, y in zip(dc, yc, strict=True)])
    gn_closed = [v for row in group_norm_backward(chans, dchans, 1, gs[:2], e) for v in row]
    gpoint = {
        **{x: sp.Rational(int(rng.integers(-9, 9)), 4) for x in gx},
        **{d: sp.Rational(int(rng.integers(-9, 9)), 2) for d in gd},
        e: sp.Rational(1, 8),
    }
    for i in range(4):
        diff = (gn_closed[i] - sp.diff(gn_loss, gx[i])).subs(gpoint)
        _check(sp.nsimplify(sp.simplify(diff)) == 0, "GroupNorm at a rational point")
    return 7


# ------------------------------------------------------------------ running statistics vs the data
def _total_variance_steps() -> list[Step]:
    steps: list[Step] = []
    for batches, size in ((2, 2), (3, 2), (2, 3)):
        xs = _xs(batches * size)
        groups = [xs[i * size : (i + 1) * size] for i in range(batches)]
        within = mean([biased_var(gr) for gr in groups])
        between = biased_var([mean(gr) for gr in groups])
        steps.append(
            (
                f"{batches} batches of {size}: var(all) = mean within-batch var + var of batch means",
                biased_var(xs),
                within + between,
            )
        )
    b1, b2, b3 = sp.symbols("b1 b2 b3", real=True)
    for direction, keep in (("new", 1 - mom), ("old", mom)):
        r = r0
        for bk in (b1, b2, b3):
            r = running_update(r, bk, mom, direction)
        steps.append(
            (f"after 3 steps ({direction}-weight) the initial value weighs ({keep})**3", sp.diff(r, r0), keep**3)
        )
    return steps


def _total_variance_confirm(rng: np.random.Generator) -> int:
    checks = 0
    for _ in range(3):
        batches = [_rand_case(rng, (4, 2, 3)) + F32(rng.integers(-8, 8)) for _ in range(3)]
        whole = batch_norm(np.concatenate(batches), None, None, training=True)
        parts = [batch_norm(xb, None, None, training=True) for xb in batches]
        for c in range(2):
            means = [p.exact.mean[c] for p in parts]
            within = sum((p.exact.var[c] for p in parts), Fraction(0)) / len(parts)
            grand = sum(means, Fraction(0)) / len(means)
            between = sum(((mk - grand) ** 2 for mk in means), Fraction(0)) / len(means)
            _check(whole.exact.mean[c] == grand, "the mean of all the data is the mean of the batch means")
            _check(whole.exact.var[c] == within + between, "law of total variance, exactly")
            checks += 2
    # each running update keeps 1 - momentum of the old value: two runs that differ only in it
    x = _rand_case(rng, (4, 2, 3))
    for convention, momentum, keep in (("torch", 0.25, Fraction(3, 4)), ("keras3", 0.75, Fraction(3, 4))):
        a = batch_norm(
            x, None, None, np.zeros(2, F32), np.ones(2, F32), training=True, momentum=momentum, convention=convention
        )
        b = batch_norm(
            x,
            None,
            None,
            np.full(2, 8, F32),
            np.full(2, 3, F32),
            training=True,
            momentum=momentum,
            convention=convention,
        )
        _, _, am, av = _running(a)
        _, _, bm, bv = _running(b)
        for c in range(2):
            _check(Fraction(bm[c]) - Fraction(am[c]) == keep * 8, f"{convention}: the old mean weighs {keep}")
            _check(Fraction(bv[c]) - Fraction(av[c]) == keep * 2, f"{convention}: the old variance weighs {keep}")
            checks += 2
    return checks


_FACT_LIST = [
    Fact(
        "eval_affine",
        "Evaluation BatchNorm is affine in x: y = x*s + t, s = gamma/sqrt(var+eps), t = beta - mean*s",
        ("eps > 0", "var >= 0"),
        "why fusing eval BN into a scale-and-shift is exact, and why its float form can cancel",
        _eval_affine_steps,
        _eval_affine_confirm,
    ),
    Fact(
        "fold_into_linear",
        "BN(W x + c) = W' x + c' with W' = s W (per output channel), c' = s (c - mean) + beta",
        ("eps > 0", "var >= 0"),
        "conv/linear + BN folding used by every inference optimizer",
        _fold_steps,
        _fold_confirm,
    ),
    Fact(
        "train_output_moments",
        "Training output per channel: mean beta, biased variance gamma^2 var/(var+eps)",
        ("eps > 0", "n = 3 symbolic"),
        "the output is not exactly unit variance: eps shrinks it",
        _moments_steps,
        _moments_confirm,
    ),
    Fact(
        "shift_scale_invariance",
        "Training BN is invariant to a per-channel shift; to a scale k > 0 only with eps * k^2",
        ("eps > 0", "k > 0"),
        "explains why rescaled inputs give different outputs unless eps scales too",
        _invariance_steps,
        _invariance_confirm,
    ),
    Fact(
        "momentum_maps",
        "New-weight m equals old-weight 1 - m; after k updates r_k = (1-m)^k r_0 + (1-(1-m)^k) b",
        ("constant batch statistic b",),
        "PyTorch 0.1 is Keras 0.9; Keras's default 0.99 is PyTorch 0.01",
        _momentum_steps,
        _momentum_confirm,
    ),
    Fact(
        "bessel_factor",
        "Unbiased running update = biased * n/(n-1); undefined at n = 1",
        ("n >= 2",),
        "the biased/unbiased running-variance split across frameworks (pytorch#19902; Paddle PR #68159)",
        _bessel_steps,
        _bessel_confirm,
    ),
    Fact(
        "one_value_is_beta",
        "One value per channel in training: x - mean = 0 so y = beta",
        ("eps > 0",),
        "n = 1 carries no information; frameworks error, return NaN or pass x through",
        _one_value_steps,
        _one_value_confirm,
    ),
    Fact(
        "backward_closed_form",
        "dx = gamma/(n sigma) (n dy - sum(dy) - xhat sum(dy xhat)) is the derivative; sum(dx) = 0; "
        "sum(dx xhat) = gamma eps/(sigma (var+eps)) sum(dy xhat), which vanishes only at eps = 0",
        ("eps > 0", "n = 3 symbolic"),
        "the reference every hand-written BN backward must match",
        _backward_steps,
        _backward_confirm,
    ),
    Fact(
        "cumulative_average",
        "Cumulative mode (PyTorch momentum=None) after k batches is the mean of the k statistics",
        ("k >= 1",),
        "what momentum=None really computes",
        _cumulative_steps,
        _cumulative_confirm,
    ),
    Fact(
        "eps_inside_vs_outside",
        "sqrt(var+eps) = sqrt(var)+eps exactly when var = ((1-eps)/2)^2, eps <= 1",
        ("eps > 0", "var >= 0"),
        "eps placement is a different function almost everywhere (keras-team/keras PR #10427)",
        _eps_steps,
        _eps_confirm,
    ),
    Fact(
        "layer_norm_is_group_norm_one_group",
        "LayerNorm over a sample = GroupNorm with one group",
        ("eps > 0",),
        "one reference serves both layers",
        _ln_gn_steps,
        _ln_gn_confirm,
    ),
    Fact(
        "instance_norm_is_group_norm_c_groups",
        "InstanceNorm = GroupNorm with one channel per group",
        ("eps > 0",),
        "one reference serves both layers",
        _in_gn_steps,
        _in_gn_confirm,
    ),
    Fact(
        "rms_norm_is_layer_norm_on_zero_mean",
        "RMSNorm = LayerNorm without centring, on a zero-mean row",
        ("eps > 0", "sum x = 0"),
        "where the two agree, and so where a swapped RMS/LN goes unseen",
        _rms_ln_steps,
        _rms_ln_confirm,
    ),
    Fact(
        "layer_norm_shift_invariance",
        "LayerNorm is invariant to a per-row shift",
        ("eps > 0",),
        "large-mean rows must give the same output (pytorch#51102)",
        _ln_shift_steps,
        _ln_shift_confirm,
    ),
    Fact(
        "layer_norm_backward_closed_form",
        "LayerNorm's, RMSNorm's and GroupNorm's closed-form dx equal SymPy's derivatives",
        ("eps > 0",),
        "the reference for hand-written LayerNorm backward passes",
        _ln_backward_steps,
        _ln_backward_confirm,
    ),
]

_FACT_LIST.append(
    Fact(
        "total_variance",
        "For data split into batches of equal size, var(all) = mean of the within-batch (biased) variances + "
        "variance of the batch means (checked symbolically for 2 batches of 2, 3 of 2 and 2 of 3, and exactly on the "
        "oracle for 3 batches of 12); after k running updates the initial value weighs (1 - m)**k (new-weight "
        "momentum m) or m**k (old-weight): checked for k = 3 symbolically and one step at a time on the oracle",
        ("batches of equal size", "biased variances"),
        "a running variance estimates only the within-batch term, so batches that are not i.i.d. samples leave "
        "evaluation-mode outputs with the wrong scale; short runs keep their initial statistics (normspec diagnose)",
        _total_variance_steps,
        _total_variance_confirm,
    )
)

FACTS: dict[str, Fact] = {f.name: f for f in _FACT_LIST}
