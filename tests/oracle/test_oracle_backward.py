"""Every layer's exact backward against differentiation of an independent forward.

The reference shares no code with normspec.oracle.backward: it writes each layer's forward
as a plain loop over explicit groups in 320-bit mpmath, differentiates the loss
``sum(dy * y)`` by central differences at that precision (about 200 correct bits), and
rounds to the output format by nearest value.  The inputs are random, so no exact value
lies within 2**-150 of a rounding boundary.
"""

from __future__ import annotations

import itertools

import mpmath
import numpy as np
import pytest
from normspec.oracle.backward import (
    batch_norm_backward,
    group_norm_backward,
    instance_norm_backward,
    layer_norm_backward,
    rms_norm_backward,
)

from normspec.errors import ShapeError

F32 = np.float32
PREC = 320


def _groups(layer, shape, groups=None):
    """(members of each statistics group, parameter index of each element), by explicit index loops."""
    idx = list(itertools.product(*(range(n) for n in shape)))
    if layer == "batch_norm":
        key, par = (lambda i: i[1]), (lambda i: i[1])
    elif layer in ("layer_norm", "rms_norm"):
        key, par = (lambda i: i[0]), (lambda i: i[-1])
    elif layer == "group_norm":
        per = shape[1] // groups
        key, par = (lambda i: (i[0], i[1] // per)), (lambda i: i[1])
    else:
        key, par = (lambda i: (i[0], i[1])), (lambda i: i[1])
    members = {}
    for i in idx:
        members.setdefault(key(i), []).append(i)
    return list(members.values()), {i: par(i) for i in idx}


def _loss(layer, x, w, b, dy, groups, params, eps, stats=None):
    """sum(dy * y) in mpmath, y the layer's forward with the given (or batch) statistics."""
    total = mpmath.mpf(0)
    for g, members in enumerate(groups):
        vals = [x[i] for i in members]
        if stats is not None:
            mu, var = stats[g]
        elif layer == "rms_norm":
            mu, var = 0, mpmath.fsum(v * v for v in vals) / len(vals)
        else:
            mu = mpmath.fsum(vals) / len(vals)
            var = mpmath.fsum((v - mu) ** 2 for v in vals) / len(vals)
        r = 1 / mpmath.sqrt(var + eps)
        for i in members:
            total += dy[i] * ((x[i] - mu) * r * w[params[i]] + b[params[i]])
    return total


def r32(v):
    """Round an mpf to float32 directly (24 bits: normal range only, as in these tests)."""
    with mpmath.workprec(24):
        return F32(float(+v))


def reference(layer, x, dy, w, eps, groups=None, stats=None, extra=None):
    """(dx, dweight, dbias) rounded to float32 by nearest value, from central differences; ``extra``
    adds ``sum(extra * x)`` to the loss (a fused residual add's second output, the sum itself)."""
    members, params = _groups(layer, x.shape, groups)
    with mpmath.workprec(PREC):
        X = {i: mpmath.mpf(float(x[i])) for i in np.ndindex(x.shape)}
        DY = {i: mpmath.mpf(float(dy[i])) for i in np.ndindex(x.shape)}
        W = [mpmath.mpf(float(v)) for v in w]
        B = [mpmath.mpf(0)] * len(w)
        E = mpmath.mpf(float(eps))
        st = None if stats is None else [(mpmath.mpf(float(stats[0][g])), mpmath.mpf(float(stats[1][g]))) for g in
                                         range(len(members))]  # fmt: skip
        h = mpmath.mpf(2) ** -110

        def diff(f, v):
            return (f(v + h) - f(v - h)) / (2 * h)

        def at(d, i, v):
            e = dict(d)
            e[i] = v
            return e

        dx = np.empty(x.shape, F32)
        for i in np.ndindex(x.shape):
            d_i = diff(lambda v, i=i: _loss(layer, at(X, i, v), W, B, DY, members, params, E, st), X[i])
            dx[i] = r32(d_i if extra is None else d_i + mpmath.mpf(float(extra[i])))
        dw = np.empty(len(w), F32)
        db = np.empty(len(w), F32)
        for j in range(len(w)):
            dw[j] = r32(diff(lambda v, j=j: _loss(layer, X, [*W[:j], v, *W[j + 1:]], B, DY, members, params, E, st),
                                   W[j]))  # fmt: skip
            db[j] = r32(diff(lambda v, j=j: _loss(layer, X, W, [*B[:j], v, *B[j + 1:]], DY, members, params, E, st),
                                   B[j]))  # fmt: skip
    return dx, dw, db


def same(a, b):
    assert a.dtype == b.dtype and a.shape == b.shape
    assert (a == b).all(), (a, b)


@pytest.mark.parametrize("offset", [0.0, 1e4])
@pytest.mark.parametrize("layer", ["batch_norm", "layer_norm", "rms_norm", "group_norm", "instance_norm"])
def test_backward_matches_differentiated_forward(layer, offset):
    rng = np.random.default_rng(hash((layer, offset)) % 2**32)
    shape = {"batch_norm": (4, 3), "layer_norm": (3, 5), "rms_norm": (3, 5)}.get(layer, (2, 4, 3))
    x = (rng.random(shape) + offset).astype(F32) if offset else rng.standard_normal(shape).astype(F32)
    dy = rng.standard_normal(shape).astype(F32)
    c = shape[1] if layer in ("batch_norm", "group_norm", "instance_norm") else shape[-1]
    w = rng.standard_normal(c).astype(F32)
    eps = 1e-5
    if layer == "batch_norm":
        got = batch_norm_backward(x, dy, w, eps=eps)
    elif layer == "layer_norm":
        got = layer_norm_backward(x, dy, 1, w, eps=eps)
    elif layer == "rms_norm":
        got = rms_norm_backward(x, dy, 1, w, eps=eps)
    elif layer == "group_norm":
        got = group_norm_backward(x, dy, 2, w, eps=eps)
    else:
        got = instance_norm_backward(x, dy, w, eps=eps)
    want = reference(layer, x, dy, w, eps, groups=2)
    same(got.dx, want[0])
    same(got.dweight, want[1])
    same(got.dbias, want[2])


def test_fused_add_backward_matches_differentiated_forward():
    """A fused residual add normalizes ``h = x + residual`` and returns ``h``: the loss
    ``sum(dy * y) + sum(dresidual * h)`` differentiated at ``h`` (float32's correctly rounded sum;
    its rounding is an identity in the backward).  Row 0's ``dresidual`` cancels the layer's
    gradient up to its float32 rounding, so dx there is that rounding's tiny remainder."""
    rng = np.random.default_rng(11)
    x, r, dy, dres = (rng.standard_normal((3, 5)).astype(F32) for _ in range(4))
    w = rng.standard_normal(5).astype(F32)
    conv = "flashinfer_fused_add_rms_norm"  # float32 math, one rounding: no cast point in the backward
    dres[0] = -rms_norm_backward(x + r, dy, 1, w, eps=1e-5).dx[0]
    got = rms_norm_backward(x, dy, 1, w, eps=1e-5, convention=conv, residual=r, dresidual=dres)
    want = reference("rms_norm", x + r, dy, w, 1e-5, extra=dres)
    same(got.dx, want[0])
    same(got.dweight, want[1])
    assert 0 < np.abs(got.dx[0]).max() < 1e-6 * np.abs(dres[0]).max()


def test_eval_mode_backward_uses_the_running_statistics_as_constants():
    rng = np.random.default_rng(3)
    x, dy = rng.standard_normal((4, 3)).astype(F32), rng.standard_normal((4, 3)).astype(F32)
    w = rng.standard_normal(3).astype(F32)
    rm, rv = rng.standard_normal(3).astype(F32), (rng.random(3) + 0.5).astype(F32)
    got = batch_norm_backward(x, dy, w, rm, rv, training=False, eps=1e-5)
    want = reference("batch_norm", x, dy, w, 1e-5, stats=(rm, rv))
    for g, wnt in zip(got, want, strict=True):
        same(g, wnt)


def test_exact_cancellation_gives_zero_and_large_rows_stay_fast():
    """dy constant along a LayerNorm row: dx is exactly 0 (h - mean(h) = 0 and T = 0); the fast path
    cannot see that, the exact path can."""
    x = np.random.default_rng(5).standard_normal((4, 8)).astype(F32)
    g = layer_norm_backward(x, np.full(x.shape, 0.75, F32), 1)
    assert (g.dx == 0).all() and not np.signbit(g.dx).any()
    assert g.dbias.tolist() == [3.0] * 8


def test_backward_refuses_a_dy_of_another_shape():
    with pytest.raises(ShapeError, match=r"dy.shape=\(2, 3\)"):
        layer_norm_backward(np.ones((3, 2), F32), np.ones((2, 3), F32))
