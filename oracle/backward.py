"""Every layer's backward pass, exactly, rounded once.

One engine for every layer (the same (A, G, B) view of ``x`` as the forward,
:mod:`normspec.oracle.layers`).  In group ``g`` with ``m`` values, mean ``mu``
(0 for RMSNorm), ``D = var + eps`` and the scaled gradient ``h = dy * gamma``:

* training: ``dx = (h - c S / m - (x - mu) T / (m D)) / sqrt(D)`` with
  ``S = sum h``, ``T = sum h (x - mu)`` over the group and ``c`` 1 where the layer
  centres (0 for RMSNorm);
* evaluation (running statistics, constant in x): ``dx = h / sqrt(D)``;
* ``dweight[j] = sum dy (x - mu_g) / sqrt(D_g)`` over the values that parameter ``j``
  scales, ``dbias[j] = sum dy`` over the same values.

Every ``dx`` is one ``A / sqrt(D)`` with rational ``A``; BatchNorm's ``dweight``
too.  Where a parameter spans several groups (LayerNorm's per-element weight
spans every row), ``dweight`` is a sum of such terms with different ``D``.

**Guarantee.**  Each output is the exact value rounded once, correctly, to its
format (``dx`` to x's dtype; ``dweight``/``dbias`` to the weight's dtype, or
float32 (float64 for float64 x) when no weight is given).  The mechanism: a
vectorized float64 evaluation with a rigorous error bound (derived in
:func:`_dx_fast`) settles almost every element; the rest are decided exactly:
``A / sqrt(D)`` by exact rational comparison of squares
(:func:`~normspec.oracle.sqrtform.round_sqrt_form`), sums of square-root terms
by interval arithmetic at rising precision until the rounding is decided
(:func:`round_sqrt_sum`, which first proves the sum irrational or computes it
exactly where it is rational, so the loop ends).  Cast points of the
convention are identities in the backward pass, as autograd treats a cast.
float64 outputs skip the float64 evaluation (it cannot bound a double's
rounding) and take the exact path for every element: slow, for small tensors.

>>> import numpy as np
>>> g = batch_norm_backward(np.array([[1.0], [3.0]], np.float32), np.array([[1.0], [0.0]], np.float32), eps=0.0)
>>> g.dx.ravel().tolist(), g.dweight.tolist(), g.dbias.tolist()  # xhat = [-1, 1]
([0.0, 0.0], [-1.0], [1.0])
"""

from __future__ import annotations

import dataclasses
import math
from dataclasses import dataclass
from fractions import Fraction
from typing import Any

import numpy as np
from normspec.oracle.core import _split_fraction
from normspec.oracle.exact import blocks, exact_sums
from normspec.oracle.formats import FLOAT32, FLOAT64, Format, format_of, numpy_dtype, round_array, round_bracket, store
from normspec.oracle.layers import (
    _array,
    _fused_inputs,
    _group_stats,
    _layout,
    _plan,
    _rms_forward,
    _running_params,
    _spread,
    _View,
)
from normspec.oracle.sqrtform import round_fraction, round_sqrt_form
from normspec.spec.conventions import Convention, check_eps, get_convention

from normspec.errors import DomainError, InvalidArgumentError, ShapeError, expected

__all__ = [
    "Gradients",
    "batch_norm_backward",
    "layer_norm_backward",
    "rms_norm_backward",
    "group_norm_backward",
    "instance_norm_backward",
    "round_sqrt_sum",
]

_U = 2.0**-53


@dataclass(frozen=True)
class Gradients:
    """What every backward returns: ``dx``, ``dweight``, ``dbias`` (the last two in the parameters'
    shape), each correctly rounded, and ``undecided``: how many outputs the exact path settled.
    Unpacks as ``dx, dweight, dbias``."""

    dx: np.ndarray
    dweight: np.ndarray
    dbias: np.ndarray
    undecided: int

    def __iter__(self) -> Any:
        return iter((self.dx, self.dweight, self.dbias))


# ---------------------------------------------------------------- sums of square roots


def _same_rounding(lo: Fraction, hi: Fraction, fmt: Format) -> float | None:
    rlo, rhi = round_fraction(lo, fmt), round_fraction(hi, fmt)
    if rlo == rhi and math.copysign(1, rlo) == math.copysign(1, rhi):
        return rlo
    return None


def _rational_value(terms: list[tuple[Fraction, Fraction]]) -> Fraction | None:
    """The exact value of ``sum A / sqrt(D)`` where it is rational, else None.

    ``A / sqrt(p/q) = (A/p) sqrt(p q)``.  Terms whose radicands ``k`` differ by a square
    factor (``k1 k2`` a perfect square) are merged; square roots of integers in distinct
    classes are linearly independent over the rationals, so the sum is rational exactly when
    every irrational class has coefficient zero.
    """
    rational = Fraction(0)
    classes: list[list[Any]] = []  # [radicand, coefficient]
    for A, D in terms:
        p, q = D.numerator, D.denominator
        k, c = p * q, A / p
        s = math.isqrt(k)
        if s * s == k:
            rational += c * s
            continue
        for cls in classes:
            kk = k * cls[0]
            t = math.isqrt(kk)
            if t * t == kk:  # sqrt(k) = t / cls[0] * sqrt(cls[0])
                cls[1] += c * Fraction(t, cls[0])
                break
        else:
            classes.append([k, c])
    return rational if all(c == 0 for _, c in classes) else None


def _rsqrt_floor(D: Fraction, bits: int, cache: dict[tuple[int, int, int], int]) -> int:
    """``floor(2**bits / sqrt(D))``, exactly (an integer square root of a floor is the floor of the root)."""
    key = (D.numerator, D.denominator, bits)  # integer keys: hashing a Fraction costs a modular inverse
    got = cache.get(key)
    if got is None:
        got = math.isqrt((D.denominator << (2 * bits)) // D.numerator)
        cache[key] = got
    return got


def round_sqrt_sum(
    terms: list[tuple[Fraction, Fraction]], fmt: Format, cache: dict[tuple[int, int, int], int] | None = None
) -> float:
    """``sum A_k / sqrt(D_k)`` (every ``D_k > 0``) correctly rounded to ``fmt``, ties to even.

    Terms with equal ``D`` are combined exactly; one term left is
    :func:`~normspec.oracle.sqrtform.round_sqrt_form`.  Otherwise, with ``M`` the common
    denominator of the ``A_k`` and ``R_k = floor(2**P / sqrt(D_k))`` (so that ``1/sqrt(D_k)``
    lies in ``[R_k, R_k + 1] / 2**P``), the sum lies in an interval of integers over ``M 2**P``,
    computed exactly; where both ends round alike that is the answer, else ``P`` doubles.
    Before going past 1024 bits the sum is checked for rationality (:func:`_rational_value`): a
    rational sum is rounded exactly, and an irrational one is never a rounding boundary, so the
    loop ends.  ``cache`` keeps the ``R_k`` between calls that share radicands (every column of
    a LayerNorm's weight gradient shares the rows' ``D``).

    >>> half, eighth = Fraction(1, 2), Fraction(1, 8)
    >>> round_sqrt_sum([(Fraction(1), half), (Fraction(-1), eighth), (Fraction(1), Fraction(9))], FLOAT32)
    -1.0808802843093872
    >>> round_sqrt_sum([(Fraction(1), Fraction(2)), (Fraction(-2), Fraction(8))], FLOAT32)  # exactly 0
    0.0
    """
    by_d: dict[tuple[int, int], list[Any]] = {}
    for A, D in terms:
        if A != 0:
            slot = by_d.setdefault((D.numerator, D.denominator), [Fraction(0), D])
            slot[0] += A
    items = [(A, D) for A, D in by_d.values() if A != 0]
    if not items:
        return 0.0
    if len(items) == 1:
        return round_sqrt_form(items[0][0], Fraction(0), items[0][1], fmt)
    cache = {} if cache is None else cache
    M = math.lcm(*(A.denominator for A, _ in items))
    ints = [(A.numerator * (M // A.denominator), D) for A, D in items]
    bits, checked = 2 * fmt.p + 40, False
    while True:
        if bits > 1024 and not checked:
            exact = _rational_value(items)
            if exact is not None:
                return round_fraction(exact, fmt)
            checked = True
        lo = hi = 0
        for a, D in ints:
            r = _rsqrt_floor(D, bits, cache)
            if a > 0:
                lo += a * r
                hi += a * (r + 1)
            else:
                lo += a * (r + 1)
                hi += a * r
        got = _same_rounding(Fraction(lo, M << bits), Fraction(hi, M << bits), fmt)
        if got is not None:
            return got
        bits *= 2


# ---------------------------------------------------------------- the engine


def _decided(v: np.ndarray, delta: np.ndarray, fmt: Format) -> tuple[np.ndarray, np.ndarray]:
    """Round ``v +- delta`` to ``fmt``: (the rounding, where the bracket decides it)."""
    if fmt is FLOAT64:  # both ends agree bit for bit only where the bound is 0
        with np.errstate(invalid="ignore", over="ignore"):
            lo, hi = v - delta, v + delta
        return hi, (lo == hi) & (np.signbit(lo) == np.signbit(hi)) & np.isfinite(delta)
    r, undecided = round_bracket(v, delta, fmt)
    return r, ~undecided & np.isfinite(delta)


def _dx_fast(
    d: np.ndarray,
    e_d: np.ndarray,
    h: np.ndarray,
    per_group: np.ndarray,
    centred: bool,
    training: bool,
) -> tuple[np.ndarray, np.ndarray]:
    """float64 ``dx`` and a rigorous bound on its error, for every element.

    ``d`` is x - mu within ``e_d`` (see :func:`_backward`), ``h = dy * gamma`` within ``u |h|``
    (u = 2**-53; exact for inputs of at most 26 bits, bounded anyway).  Per group
    (``per_group`` rows ``s, e_s, q, e_q, r``): ``s`` = S/m and ``q`` = T/(m D) as computed from
    float sums, within ``e_s`` and ``e_q``; ``r`` = 1/sqrt(D) within 2**-52 r.  Then ``t = fl(d
    q)`` is within ``|q| e_d + |d| e_q + u |t|``; ``a = fl(fl(h - s) - t)`` within ``e_a =
    u|h| + e_s + e_t + u|h - s| + u|a|``; ``dx = fl(a r)`` within ``|r| e_a + 2**-52 |r| (|a| +
    e_a) + u |dx|``.  The bound returned doubles that sum (covering the roundings made in
    computing it) and adds 2**-1060 for underflow.
    """
    s, e_s, q, e_q, r = (v.reshape(1, -1, 1) for v in per_group)
    with np.errstate(invalid="ignore", over="ignore"):
        if training:
            t = d * q
            e_t = np.abs(q) * e_d + np.abs(d) * e_q + _U * np.abs(t)
            hs = h - s if centred else h
            a = hs - t
            e_a = _U * np.abs(h) + e_s + e_t + _U * np.abs(hs) + _U * np.abs(a)
        else:
            a = h
            e_a = _U * np.abs(h)
        dx = a * r
        ar = np.abs(r)
        delta = 2 * (ar * e_a + 2.0**-52 * ar * (np.abs(a) + e_a) + _U * np.abs(dx)) + 2.0**-1060
    return dx, delta


def _upstream(xa: np.ndarray, dya: np.ndarray, name: str = "dy") -> np.ndarray:
    """An upstream gradient (dy) as float64, checked: x's shape, finite."""
    if dya.shape != xa.shape:
        raise ShapeError(expected(f"{name} of shape {xa.shape}, the shape of x", f"{name}.shape", dya.shape))
    dyd = dya.astype(np.float64)
    if not np.isfinite(dyd).all():
        raise DomainError(expected(f"finite {name}", f"{name} element", float(dyd[~np.isfinite(dyd)][0])))
    return dyd


def _backward(
    xa: np.ndarray,
    dya: np.ndarray,
    conv: Convention,
    view: _View,
    w: np.ndarray | None,
    pshape: tuple[int, ...],
    *,
    eps: float | None,
    training: bool,
    running_mean: np.ndarray | None,
    running_var: np.ndarray | None,
    parameters: bool = True,
    out_fmt: Format | None = None,
    extra: np.ndarray | None = None,
) -> Gradients:
    """The engine.  ``xa`` is the value normalized; ``dx`` is rounded to ``out_fmt`` (default: its
    format; a fused residual add may normalize a float32 sum of 16-bit inputs), after adding
    ``extra`` exactly (the gradient the sum receives besides the layer's: that of the new residual)."""
    fmt = format_of(xa.dtype, "x")
    ofmt = out_fmt or fmt
    dyd = _upstream(xa, dya)
    pfmt = format_of(w.dtype, "weight") if w is not None else (FLOAT64 if ofmt is FLOAT64 else FLOAT32)
    x3 = view.x3
    dy3 = dyd.reshape(x3.shape)
    m = x3.shape[0] * x3.shape[2]
    g_n = x3.shape[1]
    eps_v = conv.default_eps(ofmt.p) if eps is None else check_eps(eps)
    eps_q = Fraction(conv.effective_eps(eps_v))
    extra3 = None if extra is None else extra.reshape(x3.shape)
    if training:
        mean, var = _group_stats(x3, fmt, conv.centred, None)
    else:
        assert running_mean is not None and running_var is not None
        mean = [Fraction(float(running_mean[c])) for c in view.channel]
        var = [Fraction(float(running_var[c])) for c in view.channel]
    plan, denom = _plan(mean, var, eps_q, conv.zero_var_guard, view.stats_shape)
    finite = [k == "" for k in plan.special]
    gamma = np.broadcast_to(view.gamma3, x3.shape)
    # d = x - mu, computed once for dx, T and dweight: mu = mu_hi + mu_lo within e_mu, and with
    # u = 2**-53, d = fl(fl(x - mu_hi) - mu_lo) is within e_d = e_mu + 2u(|x - mu_hi| + |d|) of x - mu.
    split = np.array([_split_fraction(mc) for mc in plan.mean], dtype=np.float64).reshape(g_n, 3).T
    mu_hi, mu_lo = split[0].reshape(1, g_n, 1), split[1].reshape(1, g_n, 1)
    e_mu = (split[2] + 2.0**-52 * np.abs(split[1])).reshape(1, g_n, 1)
    with np.errstate(invalid="ignore", over="ignore"):
        t1 = x3 - mu_hi
        d = t1 - mu_lo
        e_d = e_mu + 2 * _U * (np.abs(t1) + np.abs(d))
        del t1
        h = dy3 * gamma
    rs = np.array([plan.rsqrt(g)[0] if finite[g] else math.nan for g in range(g_n)])

    # per-group float parameters of the fast path (s, e_s, q, e_q, r), each with its error bound
    per_group = np.zeros((5, g_n))
    per_group[4] = rs
    if training:
        with np.errstate(invalid="ignore", over="ignore"):
            sum_h = h.sum(axis=(0, 2))
            abs_h = np.abs(h).sum(axis=(0, 2))
            hd = h * d
            t_sum = hd.sum(axis=(0, 2))
            t_abs = np.abs(hd).sum(axis=(0, 2))
            h_e_d = (np.abs(h) * e_d).sum(axis=(0, 2))
        del hd
        for g in map(int, np.flatnonzero(finite)):
            if conv.centred:
                # S's float sum: each h within u, summed within (m+2)u
                s = float(sum_h[g]) / m
                per_group[0, g] = s
                per_group[1, g] = (m + 2) * _U * 1.01 * float(abs_h[g]) / m * (1 + 4 * _U) + 2 * _U * abs(s)
            inv_md = 1.0 / float(m * denom[g])
            q = float(t_sum[g]) * inv_md
            # T's float sum: h within u|h|, d within e_d, each product within u, summed within (m+2)u
            e_T = 1.01 * (float(h_e_d[g]) + (m + 5) * _U * float(t_abs[g]))
            per_group[2, g] = q
            per_group[3, g] = (e_T * abs(inv_md) + 3 * _U * abs(q)) * (1 + 4 * _U)

    undecided_total = 0
    # dx: the float64 value and its bound, rounded where the bound decides it (by cache-sized blocks)
    dx_out = np.full(x3.shape, math.nan)
    ok = np.zeros(x3.shape, dtype=bool)
    if ofmt is not FLOAT64:
        for sl in blocks(x3.shape):
            dx_b, delta_b = _dx_fast(d[sl], e_d[sl], h[sl], per_group[:, sl[1]], conv.centred, training)
            if extra3 is not None:  # an exact double added: one more rounding, within u|dx|
                with np.errstate(invalid="ignore", over="ignore"):
                    dx_b = dx_b + extra3[sl]
                    delta_b = delta_b + 2 * _U * np.abs(dx_b)
            dx_out[sl], ok[sl] = _decided(dx_b, delta_b, ofmt)
    nan_groups = ~np.array(finite, dtype=bool)  # no groups at all in an empty batch
    ok[:, nan_groups, :] = True
    dx_out[:, nan_groups, :] = math.nan  # statistics not finite, or var + eps == 0
    pending = np.nonzero(~ok)
    undecided_total += len(pending[0])
    if len(pending[0]):
        exact_group = _exact_s_t(x3, dy3, gamma, plan.mean, np.unique(pending[1]), fmt) if training else {}
        for i, g, k in zip(*(p.tolist() for p in pending), strict=True):
            hx = Fraction(float(dy3[i, g, k])) * Fraction(float(gamma[i, g, k]))
            if training:
                S, T = exact_group[g]
                c = S / m if conv.centred else Fraction(0)
                A = hx - c - (Fraction(float(x3[i, g, k])) - plan.mean[g]) * T / (m * denom[g])
            else:
                A = hx
            B = Fraction(0) if extra3 is None else Fraction(float(extra3[i, g, k]))
            dx_out[i, g, k] = round_sqrt_form(A, B, denom[g], ofmt)
    dx = store(dx_out, ofmt).reshape(xa.shape)

    # dweight, dbias: per parameter, over the values it scales
    p_n = math.prod(pshape)
    if p_n == 0 or xa.size == 0 or not parameters:  # (a caller that only wants dx gets zeros)
        z = np.zeros(pshape)
        return Gradients(dx, z.astype(numpy_dtype(pfmt)), z.astype(numpy_dtype(pfmt)), undecided_total)
    pidx = np.broadcast_to(
        _spread(np.arange(p_n, dtype=np.float64).reshape(pshape), 0.0, conv.layer, x3.shape, xa.shape), x3.shape
    ).astype(np.int64)
    gidx = np.broadcast_to(np.arange(g_n).reshape(1, g_n, 1), x3.shape)
    flat_p = pidx.ravel()
    counts = np.bincount(flat_p, minlength=p_n).astype(np.float64)
    db = np.bincount(flat_p, weights=dy3.ravel(), minlength=p_n)
    db_abs = np.bincount(flat_p, weights=np.abs(dy3).ravel(), minlength=p_n)
    dbias, ok_b = _decided(db, (counts + 2) * _U * 1.01 * db_abs + 2.0**-1060, pfmt)
    # dweight: terms dy (x - mu) r, each within (|dy| e_d + 4u |term|) |r|-relative, summed within (n+2)u
    r3 = rs.reshape(1, g_n, 1)
    with np.errstate(invalid="ignore", over="ignore"):
        term = dy3 * d * r3
        e_term = np.abs(dy3) * e_d * np.abs(r3) + 4 * _U * np.abs(term)
    dw = np.bincount(flat_p, weights=term.ravel(), minlength=p_n)
    dw_err = np.bincount(flat_p, weights=e_term.ravel(), minlength=p_n)
    dw_abs = np.bincount(flat_p, weights=np.abs(term).ravel(), minlength=p_n)
    del d, e_d, term, e_term
    dweight, ok_w = _decided(dw, 2 * (dw_err + (counts + 2) * _U * 1.01 * dw_abs) + 2.0**-1060, pfmt)
    in_bad_group = np.broadcast_to(nan_groups.reshape(1, g_n, 1), x3.shape).ravel()
    bad_params = np.bincount(flat_p, weights=in_bad_group, minlength=p_n) > 0
    dweight[bad_params], ok_w[bad_params] = math.nan, True
    if pfmt is FLOAT64:
        ok_b[:], ok_w[~bad_params] = False, False
    todo_b, todo_w = np.flatnonzero(~ok_b), np.flatnonzero(~ok_w)
    undecided_total += len(todo_b) + len(todo_w)
    if len(todo_b) or len(todo_w):
        members = _members(flat_p, np.concatenate([todo_b, todo_w]))
        flat_x, flat_dy, flat_g = x3.ravel(), dy3.ravel(), gidx.ravel()
        roots: dict[tuple[int, int, int], int] = {}
        for j in todo_b:
            idx = members[int(j)]
            dbias[j] = round_fraction(sum((Fraction(float(v)) for v in flat_dy[idx]), Fraction(0)), pfmt)
        for j in todo_w:
            idx = members[int(j)]
            by_group: dict[int, Fraction] = {}
            for e in idx:
                ge = int(flat_g[e])
                by_group[ge] = by_group.get(ge, Fraction(0)) + Fraction(float(flat_dy[e])) * (
                    Fraction(float(flat_x[e])) - plan.mean[ge]
                )
            dweight[j] = round_sqrt_sum([(A, denom[ge]) for ge, A in by_group.items()], pfmt, roots)
    return Gradients(
        dx,
        dweight.astype(numpy_dtype(pfmt)).reshape(pshape),
        dbias.astype(numpy_dtype(pfmt)).reshape(pshape),
        undecided_total,
    )


def _members(flat_p: np.ndarray, wanted: np.ndarray) -> dict[int, np.ndarray]:
    mask = np.isin(flat_p, wanted)
    where = np.flatnonzero(mask)
    vals = flat_p[where]
    return {int(j): where[vals == j] for j in np.unique(wanted)}


def _exact_s_t(
    x3: np.ndarray, dy3: np.ndarray, gamma: np.ndarray, mean: list[Fraction], groups: np.ndarray, fmt: Format
) -> dict[int, tuple[Fraction, Fraction]]:
    """Exact ``S = sum h`` and ``T = sum h (x - mean)`` of the given groups, ``h = dy * gamma``.

    For inputs of at most 26 significant bits ``h`` is an exact double, and after Veltkamp's
    split ``h = hh + hl`` (26 bits each) so are ``hh x`` and ``hl x``; the oracle's exact sums
    (:func:`~normspec.oracle.exact.exact_sums`) add them.  Wider inputs take Fraction arithmetic.
    """
    gs = [int(g) for g in groups]
    if fmt.p > 26:
        out = {}
        for g in gs:
            S = T = Fraction(0)
            for xv, dv, gv in zip(x3[:, g, :].ravel(), dy3[:, g, :].ravel(), gamma[:, g, :].ravel(), strict=True):
                hv = Fraction(float(dv)) * Fraction(float(gv))
                S += hv
                T += hv * (Fraction(float(xv)) - mean[g])
            out[g] = (S, T)
        return out
    x = x3[:, gs, :].astype(np.float64)
    h = dy3[:, gs, :] * gamma[:, gs, :]  # exact
    t = 134217729.0 * h
    hh = t - (t - h)
    hl = h - hh
    sums = [exact_sums(v, fmt_bits=53, second=False)[0] for v in (h, hh * x, hl * x)]
    return {g: (S, a + b - mean[g] * S) for g, S, a, b in zip(gs, *sums, strict=True)}


# ---------------------------------------------------------------- the layers


def batch_norm_backward(
    x: Any,
    dy: Any,
    weight: Any = None,
    running_mean: Any = None,
    running_var: Any = None,
    *,
    training: bool = True,
    eps: float | None = 1e-5,
    convention: str | Convention = "torch",
    axis: int = 1,
) -> Gradients:
    """BatchNorm's ``(dx, dweight, dbias)``, each correctly rounded (see the module docstring):
    in training the batch statistics depend on x; in evaluation the running statistics do not."""
    conv = get_convention(convention, layer="batch_norm")
    xa, dya = _array(x, "x"), _array(dy, "dy")
    view, w, _ = _layout(xa, conv, weight, None, axis=axis)
    rm, rv = _running_params(conv, view.channels, running_mean, running_var, training)
    return _backward(
        xa, dya, conv, view, w, (view.channels,), eps=eps, training=training, running_mean=rm, running_var=rv
    )


def layer_norm_backward(
    x: Any,
    dy: Any,
    normalized_ndim: int = 1,
    weight: Any = None,
    *,
    eps: float | None = None,
    convention: str | Convention = "torch_layer_norm",
) -> Gradients:
    """LayerNorm's ``(dx, dweight, dbias)`` over the trailing ``normalized_ndim`` axes, each
    correctly rounded; ``dweight``/``dbias`` have the normalized shape."""
    conv = get_convention(convention, layer="layer_norm")
    xa, dya = _array(x, "x"), _array(dy, "dy")
    view, w, _ = _layout(xa, conv, weight, None, normalized_ndim=normalized_ndim)
    pshape = xa.shape[xa.ndim - int(normalized_ndim) :]
    return _backward(xa, dya, conv, view, w, pshape, eps=eps, training=True, running_mean=None, running_var=None)


def rms_norm_backward(
    x: Any,
    dy: Any,
    normalized_ndim: int = 1,
    weight: Any = None,
    *,
    eps: float | None = None,
    convention: str | Convention = "torch_rms_norm",
    residual: Any = None,
    dresidual: Any = None,
) -> Gradients:
    """RMSNorm's ``(dx, dweight, dbias)``; ``dbias`` is the gradient a bias would get (sum dy).

    Under a profile that casts the normalized value (``hf_llama_rms_norm``) the gradient is the one
    autograd takes through that code, exact between the roundings it makes (see ``_cast_backward``);
    ``gemma_rms_norm`` scales by ``1 + weight`` in float32, whose gradient is the plain one.

    A profile with a fused residual add (``fused_add_rms_norm`` and its kin) takes the forward's
    ``residual`` and ``dresidual``, the upstream gradient of the new residual stream it returned
    (zeros when omitted).  The sum ``h = x + residual`` passes its gradient to both inputs, so
    ``dx`` is also the residual's gradient: the exact gradient of the normalized value at ``h``
    plus ``dresidual``, rounded once to x's dtype (the rounding of ``h`` is an identity here, as
    autograd treats it).  ``dweight`` is taken at ``h``.

    >>> import numpy as np, ml_dtypes
    >>> bf16 = ml_dtypes.bfloat16
    >>> x, r = np.array([[1.0, -2.0, 3.0, 0.5]], bf16), np.array([[0.5, 0.5, -1.0, 0.25]], bf16)  # h = x + r
    >>> g = rms_norm_backward(x, np.ones((1, 4), bf16), 1, np.ones(4, bf16), convention="fused_add_rms_norm",
    ...                       residual=r, dresidual=np.full((1, 4), 0.25, bf16))
    >>> g.dx.astype(np.float32).tolist()
    [[0.61328125, 1.21875, 0.51171875, 0.76171875]]
    """
    conv = get_convention(convention, layer="rms_norm")
    xa, dya = _array(x, "x"), _array(dy, "dy")
    _, hv = _fused_inputs(xa, residual, conv)
    extra = None
    if dresidual is not None:
        if not conv.residual:
            raise InvalidArgumentError(expected(f"no dresidual (profile {conv.name!r} adds no residual)",
                                                "dresidual", "given"))  # fmt: skip
        dra = _array(dresidual, "dresidual")
        if dra.dtype != xa.dtype:
            raise ShapeError(expected(f"dresidual of x's dtype {xa.dtype.name}", "dresidual.dtype", dra.dtype.name))
        extra = _upstream(xa, dra, "dresidual")
    view, w, _ = _layout(xa, conv, weight, None, normalized_ndim=normalized_ndim)
    view = dataclasses.replace(view, x3=hv.reshape(view.x3.shape))
    pshape = xa.shape[xa.ndim - int(normalized_ndim) :]
    fmt = format_of(xa.dtype, "x")
    if conv.cast_at("normalized") is not None:
        return _cast_backward(xa, hv, dya, conv, w, int(normalized_ndim), pshape, eps, extra)
    return _backward(hv, dya, conv, view, w, pshape, eps=eps, training=True, running_mean=None, running_var=None,
                     out_fmt=fmt, extra=extra)  # fmt: skip


def _cast_backward(
    xa: np.ndarray,
    hv: np.ndarray,
    dya: np.ndarray,
    conv: Convention,
    w: np.ndarray | None,
    k: int,
    pshape: tuple[int, ...],
    eps: float | None,
    extra: np.ndarray | None = None,
) -> Gradients:
    """``y = round(w * c(xhat))`` with ``c`` the cast of the normalized value (LlamaRMSNorm): the
    gradient autograd takes, exact between the roundings it makes.  The cast passes the gradient
    through; the gradient reaching ``c(xhat)`` is ``dy * w`` rounded to the input's dtype (autograd
    forms that product in it); ``dx`` is the exact RMSNorm backward of that gradient (plus ``extra``,
    a fused add's residual gradient), rounded once; ``dweight`` the exact sum of the products
    ``dy * c(xhat)``, each rounded to the input's dtype as autograd forms them, the sum rounded once
    to the weight's dtype.  ``hv`` is the value normalized (x, or a fused add's sum)."""
    fmt = format_of(xa.dtype, "x")
    dyd = _upstream(xa, dya)
    pfmt = format_of(w.dtype, "weight") if w is not None else (FLOAT64 if fmt is FLOAT64 else FLOAT32)
    plain = dataclasses.replace(conv, cast_points=(), weight_format=None, residual=False)
    wd = np.ones(pshape) if w is None else w.astype(np.float64)
    with np.errstate(invalid="ignore", over="ignore"):
        # dy and w have at most 24 significant bits each: their product is exact in float64
        g = store(round_array(dyd * wd, fmt), fmt)
    dx = _backward(hv, g, plain, _layout(hv, plain, None, None, normalized_ndim=k)[0], None, pshape, eps=eps,
                   training=True, running_mean=None, running_var=None, parameters=False, out_fmt=fmt,
                   extra=extra).dx  # fmt: skip
    xr = _rms_forward(xa, hv, conv, None, k, eps).y.astype(np.float64)
    rows = math.prod(xa.shape[: xa.ndim - k])
    # autograd forms dy * c(xhat) in the input's dtype too (a rounding of each exact product), then sums
    with np.errstate(invalid="ignore", over="ignore"):
        products = round_array(dyd * xr, fmt)
    dweight, undecided_w = _column_sums(products.reshape(rows, -1), pfmt)
    dbias, undecided_b = _column_sums(dyd.reshape(rows, -1), pfmt)
    return Gradients(
        dx,
        dweight.astype(numpy_dtype(pfmt)).reshape(pshape),
        dbias.astype(numpy_dtype(pfmt)).reshape(pshape),
        undecided_w + undecided_b,
    )


def _column_sums(terms: np.ndarray, fmt: Format) -> tuple[np.ndarray, int]:
    """Each column's sum of exact float64 terms, correctly rounded to ``fmt`` (a float64 sum within
    its error bound where that decides the rounding, exact rationals elsewhere)."""
    n = terms.shape[0]
    with np.errstate(invalid="ignore", over="ignore"):
        total, magnitude = terms.sum(axis=0), np.abs(terms).sum(axis=0)
    out, ok = _decided(total, (n + 2) * _U * 1.01 * magnitude + 2.0**-1060, fmt)
    if fmt is FLOAT64:
        ok[:] = False
    todo = np.flatnonzero(~ok & np.isfinite(total))
    for j in todo:
        out[j] = round_fraction(sum((Fraction(float(v)) for v in terms[:, j]), Fraction(0)), fmt)
    return out, len(todo)


def group_norm_backward(
    x: Any,
    dy: Any,
    num_groups: int,
    weight: Any = None,
    *,
    eps: float | None = None,
    convention: str | Convention = "torch_group_norm",
) -> Gradients:
    """GroupNorm's ``(dx, dweight, dbias)``, parameters per channel (or per group where the
    convention says so), each correctly rounded."""
    conv = get_convention(convention, layer="group_norm")
    xa, dya = _array(x, "x"), _array(dy, "dy")
    view, w, _ = _layout(xa, conv, weight, None, groups=num_groups)
    pshape = (num_groups,) if conv.affine == "per_group" else (xa.shape[1],)
    return _backward(xa, dya, conv, view, w, pshape, eps=eps, training=True, running_mean=None, running_var=None)


def instance_norm_backward(
    x: Any,
    dy: Any,
    weight: Any = None,
    running_mean: Any = None,
    running_var: Any = None,
    *,
    training: bool = True,
    eps: float | None = None,
    convention: str | Convention = "torch_instance_norm",
) -> Gradients:
    """InstanceNorm's ``(dx, dweight, dbias)``; in evaluation (a convention with running
    statistics) the running statistics are constants."""
    conv = get_convention(convention, layer="instance_norm")
    xa, dya = _array(x, "x"), _array(dy, "dy")
    view, w, _ = _layout(xa, conv, weight, None)
    rm, rv = _running_params(conv, view.channels, running_mean, running_var, training)
    return _backward(
        xa, dya, conv, view, w, (xa.shape[1],), eps=eps, training=training, running_mean=rm, running_var=rv
    )
