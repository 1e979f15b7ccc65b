"""The general core: normalize x over reduction axes with given exact statistics.

Every member of the family (BatchNorm, LayerNorm, GroupNorm, InstanceNorm)
views its input as an (A, G, B) array: ``G`` indexes the groups that own a
mean and a variance, and the reduction runs over axes 0 and 2.  BatchNorm
with channel axis ``k`` is ``(prod(shape[:k]), C, prod(shape[k+1:]))``.

The output is ``y = (x - mean) * gamma / sqrt(D) + beta`` with ``D = var + eps``,
rounded once, correctly, to the output format.  How:

1. A vectorized float64 evaluation with the mean held as a double-double
   computes ``y64`` and a rigorous bound ``delta`` on ``|y64 - y|``
   (derivation in :func:`_fast_block`).
2. Where ``y64 - delta`` and ``y64 + delta`` round to the same format value
   (bit for bit, so signed zeros count), rounding is monotone and that value
   is the correctly rounded ``y``.  This settles all but a tiny fraction of
   elements for float32, float16 and bfloat16 outputs.
3. The rest go to :func:`normspec.oracle.sqrtform.round_sqrt_form`, which
   decides with exact rational arithmetic.

float64 outputs use a double-double evaluation in step 1 (a double cannot
bound a double's rounding; :func:`_fast_block_dd`).
"""

from __future__ import annotations

import math
from collections.abc import Callable
from dataclasses import dataclass, field
from fractions import Fraction

import mpmath
import numpy as np
from normspec.oracle.exact import blocks
from normspec.oracle.formats import BFLOAT16, FLOAT64, Format, numpy_dtype, round_array, round_bracket, store
from normspec.oracle.sqrtform import round_fraction, round_sqrt_form

__all__ = ["GroupPlan", "normalize", "exact_rsqrt"]

_U = 2.0**-53


def exact_rsqrt(D: Fraction) -> tuple[float, float]:
    """``1/sqrt(D)`` as a double-double ``hi + lo`` within ``2**-105`` relative error (D > 0);
    ``hi`` alone is within ``2**-52``.

    Integer square root: with ``N = floor(q 4**k / p)`` of at least 238 bits, ``s = isqrt(N)``
    has ``s <= sqrt(q/p) 2**k < s + 1``, a relative error below ``2**-118``; ``float(s)`` is
    correctly rounded and ``s - float(s)`` exact.  Results near the ends of the float64 range
    (where scaling by ``2**-k`` could round twice) go through mpmath instead.
    """
    p, q = D.numerator, D.denominator
    k = (240 - (q.bit_length() - p.bit_length())) // 2 + 1
    big = (q << (2 * k)) // p if k >= 0 else q // (p << (-2 * k))
    root = math.isqrt(big)
    top = float(root)
    hi = math.ldexp(top, -k)
    if 2.0**-1000 < hi < 2.0**1000:
        return hi, math.ldexp(float(root - int(top)), -k)
    with mpmath.workprec(160):
        r = 1 / mpmath.sqrt(mpmath.mpf(p) / q)
        hi = float(r)
        return hi, float(r - hi)


def _split_fraction(m: Fraction) -> tuple[float, float, float]:
    """``(hi, lo, err)``: ``hi = fl(m)``, ``lo = fl(m - hi)``, and a bound on ``|m - hi - lo|``,
    by integer arithmetic (int / int is correctly rounded in CPython)."""
    num, den = m.numerator, m.denominator
    hi = num / den
    a, b = hi.as_integer_ratio()
    r_num, r_den = num * b - a * den, den * b
    lo = r_num / r_den
    c, d = lo.as_integer_ratio()
    rest = abs(r_num * d - c * r_den)
    if rest == 0:
        return hi, lo, 0.0
    return hi, lo, (rest / (r_den * d)) * (1 + 2**-50) + 2.0**-1074


# Error-free transformations (Knuth's TwoSum, Veltkamp/Dekker's product), vectorized.
_VELTKAMP = 134217729.0  # 2**27 + 1


def _two_sum(a: np.ndarray, b: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    s = a + b
    bb = s - a
    return s, (a - (s - bb)) + (b - bb)


def _split(a: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    t = _VELTKAMP * a
    hi = t - (t - a)
    return hi, a - hi


def _two_prod(a: np.ndarray, b_hi: np.ndarray, b_lo: np.ndarray, b: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """``a * b = p + err`` exactly (barring underflow and overflow); ``b`` comes pre-split."""
    p = a * b
    a_hi, a_lo = _split(a)
    return p, ((a_hi * b_hi - p) + a_hi * b_lo + a_lo * b_hi) + a_lo * b_lo


@dataclass
class GroupPlan:
    """Per-group exact inputs of the core.

    ``mean[g]``/``denom[g]`` are exact rationals; ``denom`` is ``var + eps``.
    ``special[g]`` marks groups the formula does not cover: ``"nan"`` (the
    group's statistics are not finite), ``"guard"`` (a scale of 0, so that
    ``y = beta`` and IEEE's NaN at an infinite ``x``: ``D == 0`` where the
    convention defines it so, or RMSNorm's infinite mean square, whose
    ``1/sqrt`` is 0), ``"div0"`` (``D == 0`` without the
    guard: the IEEE limit, NaN at ``x == mean`` and signed infinity
    elsewhere), or ``""``.
    """

    mean: list[Fraction]
    denom: list[Fraction]
    special: list[str]
    _roots: dict[int, tuple[float, float]] = field(default_factory=dict, init=False, repr=False, compare=False)

    def rsqrt(self, g: int) -> tuple[float, float]:
        """:func:`exact_rsqrt` of ``denom[g]``, computed once per plan (the core and the saved
        rstd both need it)."""
        got = self._roots.get(g)
        if got is None:
            got = self._roots[g] = exact_rsqrt(self.denom[g])
        return got


def _bslice(arr: np.ndarray, sl: tuple[slice, slice, slice]) -> np.ndarray:
    """Slice an array that broadcasts against (A, G, B)."""
    return arr[tuple(s if n != 1 else slice(None) for s, n in zip(sl, arr.shape, strict=True))]


def normalize(
    x3: np.ndarray,
    out_fmt: Format,
    plan: GroupPlan,
    gamma3: np.ndarray,
    beta3: np.ndarray,
    *,
    progress: Callable[[int], None] | None = None,
) -> tuple[np.ndarray, int]:
    """Correctly rounded ``(x - mean) * gamma / sqrt(D) + beta`` over an (A, G, B) array.

    ``gamma3``/``beta3`` are float64 arrays broadcastable to ``x3`` holding
    the parameters' exact values.  Returns ``y`` (in ``out_fmt``'s numpy
    dtype, shape of ``x3``) and the number of elements that needed the exact
    decision.
    """
    g_n = x3.shape[1]
    nan_groups = np.array([k == "nan" for k in plan.special])
    plain_groups = np.array([k in ("", "guard") for k in plan.special])
    per_group = []  # (mu_hi, mu_lo, mu_err, rs, rs_lo), built in Python lists: thousands of rows in LayerNorm
    for g, (m, kind) in enumerate(zip(plan.mean, plan.special, strict=True)):
        if kind == "nan":
            per_group.append((0.0, 0.0, 0.0, 0.0, 0.0))
        elif kind == "":
            per_group.append((*_split_fraction(m), *plan.rsqrt(g)))
        else:
            # D == 0: the guard's invstd is 0 (y = beta); without it, an infinite
            # scale makes the fast path give up and the exact path decide.
            per_group.append((*_split_fraction(m), 0.0 if kind == "guard" else math.inf, 0.0))
    mu_hi, mu_lo, mu_err, rs, rs_lo = np.array(per_group, dtype=np.float64).reshape(g_n, 5).T.copy()
    r3 = rs.reshape(1, -1, 1)
    e3 = (mu_err + 2.0**-52 * np.abs(mu_lo)).reshape(1, -1, 1)
    mu_hi3, mu_lo3 = mu_hi.reshape(1, -1, 1), mu_lo.reshape(1, -1, 1)
    if out_fmt is FLOAT64:  # s = gamma / sqrt(D) as a double-double, and its own error bound
        with np.errstate(invalid="ignore", over="ignore"):
            g_hi, g_lo = _split(np.asarray(gamma3, dtype=np.float64))
            s_hi, s_err = _two_prod(r3 + 0 * gamma3, g_hi, g_lo, np.asarray(gamma3, dtype=np.float64))
            s_lo = s_err + gamma3 * rs_lo.reshape(1, -1, 1)
            sh_hi, sh_lo = _split(s_hi)
            c64 = 2.0 * np.abs(s_hi) * (mu_err + 2.0**-52 * np.abs(mu_lo)).reshape(1, -1, 1) + 2.0**-1060
        c64 = np.where(np.isnan(c64), np.inf, c64)
        dd = (s_hi, s_lo, sh_hi, sh_lo, c64)

    plain_rms = not (mu_hi.any() or mu_lo.any() or mu_err.any() or np.any(beta3))
    # the float32 tier (below): x exact in float32, every scale 0 or a normal float32
    half_tier = (
        plain_rms
        and out_fmt.p in _HALF_FROM_FLOAT32
        and x3.dtype.itemsize <= 4
        and _float32_scales(np.asarray(gamma3, dtype=np.float64), rs)
    )
    out_dtype = numpy_dtype(out_fmt)
    y = np.empty(x3.shape, dtype=out_dtype)
    undecided_total = 0
    flagged: list[tuple[np.ndarray, ...]] = []
    for sl in blocks(x3.shape):
        if half_tier and not nan_groups[sl[1]].any():
            # RMSNorm to float16/bfloat16: float32 arithmetic decides all but a few elements
            with np.errstate(invalid="ignore"):
                s_b = _bslice(gamma3, sl) * r3[:, sl[1]]
            xr = x3[sl]
            flagged.append(_scaled_half_block(xr, s_b, out_fmt, y[sl], sl))
            if progress is not None:
                progress(xr.size)
            continue
        xb = x3[sl]
        if xb.dtype.kind != "f":  # bfloat16 (ml_dtypes): widen explicitly
            xb = xb.astype(np.float64)
        if out_fmt is FLOAT64:
            s_hi_b, s_lo_b, sh_hi_b, sh_lo_b, c64_b = (_bslice(a, sl) for a in dd)
            yb, undecided = _fast_block_dd(
                xb, mu_hi3[:, sl[1]], mu_lo3[:, sl[1]], s_hi_b, s_lo_b, sh_hi_b, sh_lo_b, c64_b, _bslice(beta3, sl)
            )
        else:
            # Per block (cache-sized, and no full-size temporaries when gamma varies within a group):
            # s = gamma / sqrt(D) within 2**-51 relative, and the per-group part c of the bound.
            beta_b = _bslice(beta3, sl)
            with np.errstate(invalid="ignore"):
                s_b = _bslice(gamma3, sl) * r3[:, sl[1]]
            if plain_rms and np.isfinite(r3[:, sl[1]]).all():
                # a mean of exactly 0 and no beta (RMSNorm): y = x s, and c is the underflow term alone
                yb, undecided = _fast_block(xb, out_fmt, None, None, s_b, None, 2.0**-1060)
            else:
                with np.errstate(invalid="ignore"):
                    c_b = 2.0 * np.abs(s_b) * e3[:, sl[1]] + (2.0**-49 * np.abs(beta_b) + 2.0**-1060)
                c_b[np.isnan(c_b)] = np.inf  # infinite scale (D == 0): no bound, the exact path decides
                yb, undecided = _fast_block(xb, out_fmt, mu_hi3[:, sl[1]], mu_lo3[:, sl[1]], s_b, beta_b, c_b)
        nan_here = nan_groups[sl[1]]
        if nan_here.any():  # non-finite statistics: the whole group is NaN
            yb[:, nan_here, :] = math.nan
            undecided[:, nan_here, :] = False
        if undecided.any():
            _exact_zero_offsets(xb, yb, undecided, sl, mu_hi, mu_lo, mu_err, plain_groups, beta3, out_fmt)
            idx = np.nonzero(undecided)
            undecided_total += len(idx[0])
            yb[idx] = [
                _exact_element(
                    float(xb[i, j, k]),
                    sl[1].start + j,
                    plan,
                    gamma3,
                    beta3,
                    (sl[0].start + i, sl[1].start + j, sl[2].start + k),
                    out_fmt,
                )
                for i, j, k in zip(*idx, strict=True)
            ]
        store(yb, out_fmt, out=y[sl])
        if progress is not None:
            progress(xb.size)
    if flagged:
        undecided_total += _settle_flagged(flagged, out_fmt, y, plan, gamma3, beta3)
    return y, undecided_total


# The float32 tier for float16/bfloat16 outputs of y = x s (RMSNorm: a mean of exactly 0, no beta).
# With s64 = gamma/sqrt(D) within 2**-51 relative, s32 = fl32(s64) and y32 = fl32(x s32) (x is exact
# in float32), |y32 - y| <= |y| ((1 + 2**-24)**2 (1 + 2**-51) - 1) < 2**-23 (1 + 2**-22) |y|, which is
# under 2.0001 units in the last place of y32 (|y| < 2**(E+1) (1 + 2**-22) where 2**E <= |y32|).  The
# narrow format's rounding boundaries are midpoints that sit on y32's grid, half = 2**(k-1) units
# past a narrow value (k = 24 - p bits are dropped), so where the dropped bits of y32 are more than 2
# units from half, y rounds as y32 does, ties included, and the rounding is read off the bits.
# Elsewhere (within 2 units of a midpoint, outside the narrow format's normal range, zero, NaN)
# the float64 bracket and then the exact path decide, element by element.
_HALF_FROM_FLOAT32 = {8: 0, 11: 112 << 10}  # p -> what to subtract from the shifted bits (exponent rebias)
_TIE_UNITS = 3  # flag |dropped - half| < 3 units of y32


def _float32_scales(gamma: np.ndarray, rs: np.ndarray) -> bool:
    """Whether every scale ``gamma * rs`` is 0 or, rounded to float32, a normal float32 (the tier's
    error bound needs it), judged from the extremes of both factors (``rs`` positive)."""
    if not rs.size or not gamma.size or not np.isfinite(gamma).all() or not np.isfinite(rs).all():
        return False
    g = np.abs(gamma)
    nz = g[g != 0]
    if not nz.size:
        return True
    return float(nz.max()) * float(rs.max()) < 2.0**127 and float(nz.min()) * float(rs.min()) >= 2.0**-125


def half_bits(y: np.ndarray, fmt: Format, out: np.ndarray, *, zeros: bool = False) -> np.ndarray:
    """Write float32 values ``y``, rounded to float16/bfloat16 (nearest, ties to even, from their
    bits), into ``out``; returns where that rounding does not hold: values outside the narrow
    format's normal range (its subnormals, overflow, zero, NaN and infinities).  ``zeros=True``
    leaves bfloat16's ±0 unflagged (their bits round to themselves), for a caller whose zero
    keeps its IEEE sign (a product's); an exact zero of the oracle is +0, so the default flags it."""
    k = 24 - fmt.p
    u = y.view(np.uint32)
    edge = u << np.uint32(1)  # the magnitude, shifted
    shift = (fmt.emin + 127) << 24
    edge -= np.uint32(shift)
    outside = edge >= np.uint32((fmt.emax - fmt.emin + 1) << 24)  # (wraps below the range)
    if zeros and fmt.p == BFLOAT16.p:  # ±0 (the shifted magnitude 0, wrapped): its bits round to ±0 below
        outside &= edge != np.uint32(-shift & 0xFFFFFFFF)
    r = u >> np.uint32(k)
    r &= np.uint32(1)
    r += np.uint32((1 << (k - 1)) - 1)
    r += u
    r >>= np.uint32(k)
    bits = out.view(np.uint16)
    if fmt.p == BFLOAT16.p:  # the sign came down with the rest
        bits[...] = r
    else:
        r -= np.uint32(_HALF_FROM_FLOAT32[fmt.p])  # rebias the exponent
        bits[...] = (r & np.uint32(0x7FFF)) | ((r >> np.uint32(3)) & np.uint32(0x8000))
    return outside


def _scaled_half_block(
    xr: np.ndarray, s: np.ndarray, fmt: Format, out: np.ndarray, sl: tuple[slice, slice, slice]
) -> tuple[np.ndarray, ...]:
    """Write ``round(x s)`` of one block into ``out`` (float16/bfloat16) by the float32 tier;
    returns the flagged elements as (global indices along the three axes, x, s)."""
    k = 24 - fmt.p
    half = 1 << (k - 1)
    with np.errstate(over="ignore", invalid="ignore"):
        y = xr.astype(np.float32)
        y *= s.astype(np.float32)
    u = y.view(np.uint32)
    near = u - np.uint32(half - _TIE_UNITS + 1)  # the dropped bits, less half, mod 2**k
    near &= np.uint32((1 << k) - 1)
    flag = near < np.uint32(2 * _TIE_UNITS - 1)  # within 2 units of half
    flag |= half_bits(y, fmt, out)
    flat = np.flatnonzero(flag)  # (numpy's nonzero on three axes costs ten times more)
    if not flat.size:
        return ()
    at = np.unravel_index(flat, flag.shape)
    xs = xr[at].astype(np.float64)
    ss = np.broadcast_to(s, xr.shape)[at]
    return (at[0] + sl[0].start, at[1] + sl[1].start, at[2] + sl[2].start, xs, ss)


def _settle_flagged(
    flagged: list[tuple[np.ndarray, ...]],
    fmt: Format,
    y: np.ndarray,
    plan: GroupPlan,
    gamma3: np.ndarray,
    beta3: np.ndarray,
) -> int:
    """The elements the float32 tier flagged, all at once: the float64 bracket, then exactly.
    Returns how many needed the exact decision."""
    parts = [f for f in flagged if f]
    if not parts:
        return 0
    i, j, k, xs, ss = (np.concatenate(c) for c in zip(*parts, strict=True))
    ys, open_ = _fast_block(xs, fmt, None, None, ss, None, 2.0**-1060)
    ys[open_ & (xs == 0)] = 0.0  # x == mean: y = beta = +0 exactly
    open_ &= xs != 0
    for n in np.flatnonzero(open_):
        index = (int(i[n]), int(j[n]), int(k[n]))
        ys[n] = _exact_element(float(xs[n]), index[1], plan, gamma3, beta3, index, fmt)
    y[i, j, k] = store(ys, fmt)
    return int(open_.sum())


def _exact_zero_offsets(
    xb: np.ndarray,
    yb: np.ndarray,
    undecided: np.ndarray,
    sl: tuple[slice, slice, slice],
    mu_hi: np.ndarray,
    mu_lo: np.ndarray,
    mu_err: np.ndarray,
    plain_groups: np.ndarray,
    beta3: np.ndarray,
    fmt: Format,
) -> None:
    """Settle undecided elements with ``x == mean`` exactly: there ``y = beta``.

    The fast path cannot tell the sign of a zero result (``beta = 0``); the
    exact value has none, so it is ``+0``.  A negative beta that rounds to zero in
    the output format keeps its sign (``-0``).  Updates ``yb`` and ``undecided``.
    """
    idx = np.nonzero(undecided)
    g = idx[1] + sl[1].start
    hit = (xb[idx] == mu_hi[g]) & (mu_lo[g] == 0) & (mu_err[g] == 0) & plain_groups[g]
    if hit.any():
        sub = tuple(i[hit] for i in idx)
        beta = np.broadcast_to(_bslice(beta3, sl), xb.shape)[sub]
        yb[sub] = np.where(beta == 0, 0.0, round_array(beta, fmt))
        undecided[sub] = False


def _fast_block(
    xb: np.ndarray,
    fmt: Format,
    mu_hi: np.ndarray | None,
    mu_lo: np.ndarray | None,
    s: np.ndarray,
    beta: np.ndarray | None,
    c: np.ndarray | float,
) -> tuple[np.ndarray, np.ndarray]:
    """float64 evaluation with a rigorous error bound: (rounded y, undecided mask).

    With u = 2**-53, d = x - mean exact, s* = gamma/sqrt(D) exact:
      t1 = fl(x - mu_hi),  t2 = fl(t1 - mu_lo): |t2 - d| <= e_mu + 2u(|t1| + |t2|)
      p  = fl(t2 * s), |s - s*| <= 2**-51 |s|:
           |p - d s*| <= |s| e_mu + 2**-52 |s||mu_lo| + (2**-51 + 3 * 2**-52)|p| (1 + O(u))
      y  = fl(p + beta):  |y - y*| <= |p - d s*| + 2**-52 |y|,  |y| <= (|p| + |beta|)(1 + u)
    so delta = 2**-47 |p| + c with c = 2|s|(e_mu + 2**-52 |mu_lo|) + 2**-49 |beta| + 2**-1060
    (``None`` for ``mu_hi``/``mu_lo``/``beta``: zero, skipped; y = p exactly)
    bounds the error with a factor of at least 2 to spare on every term,
    which also covers rounding in computing delta and y -/+ delta (and
    absolute underflow, at most 2**-1074 per operation).

    Every output format takes :func:`~normspec.oracle.formats.round_bracket`'s
    certificate on that bracket (the nearest value, decided when the bracket stays
    inside its rounding interval, from the bits of ``y``).  NaN
    results need no decision: they are what IEEE arithmetic on the unfolded
    form gives, which is the documented behaviour for non-finite input.
    """
    with np.errstate(invalid="ignore", over="ignore"):
        if mu_hi is None or mu_lo is None:  # a mean of exactly 0: p = x s
            p = xb * s
        else:
            p = xb - mu_hi
            p -= mu_lo
            p *= s
        if beta is None:
            yv, delta = p, np.abs(p)
        else:
            yv = p + beta
            delta = np.abs(p, out=p)
        delta *= 2.0**-47
        delta += c
        return round_bracket(yv, delta, fmt)


def _fast_block_dd(
    xb: np.ndarray,
    mu_hi: np.ndarray,
    mu_lo: np.ndarray,
    s_hi: np.ndarray,
    s_lo: np.ndarray,
    sh_hi: np.ndarray,
    sh_lo: np.ndarray,
    c: np.ndarray,
    beta: np.ndarray,
) -> tuple[np.ndarray, np.ndarray]:
    """Double-double evaluation for float64 outputs: (rounded y, undecided mask).

    t = x - mean as t_hi + t_lo (TwoSum, then mu_lo), p = t * s with an exact
    TwoProd of the leading parts, y = p + beta by TwoSum, renormalized so that
    y_hi = fl(y_hi + y_lo).  Every neglected term (t_lo * s_lo, roundings of
    the low-order sums, |s - s*| <= 2**-104 |s|, the TwoSum error of x -
    mu_hi after mu_lo) is at most 14 * 2**-106 (|p| + |y|) in total, so
    delta = 2**-100 (|p_hi| + |y_hi|) + c, c = 2|s|(e_mu + 2**-52 |mu_lo|)
    + 2**-1060, bounds |y_hi + y_lo - y*| with room to spare (underflow in
    the error-free steps costs at most 2**-1074 each).  y_hi is the
    correctly rounded y when |y_lo| + delta is less than half the gap from
    y_hi to its neighbour on y_lo's side.
    """
    x = np.asarray(xb, dtype=np.float64)
    with np.errstate(invalid="ignore", over="ignore"):
        d_hi, d_lo = _two_sum(x, -mu_hi)
        d_lo -= mu_lo
        t_hi, t_lo = _two_sum(d_hi, d_lo)
        p_hi, p_err = _two_prod(t_hi, sh_hi, sh_lo, s_hi)
        p_lo = p_err + (t_hi * s_lo + t_lo * s_hi)
        y_hi, y_err = _two_sum(p_hi, beta)
        y_hi, y_lo = _two_sum(y_hi, y_err + p_lo)
        delta = 2.0**-100 * (np.abs(p_hi) + np.abs(y_hi)) + c
        # half the gap to the neighbour on y_lo's side (representable, so the
        # comparison of the rounded sum is the comparison of the exact one)
        up = np.nextafter(y_hi, np.inf) - y_hi
        down = y_hi - np.nextafter(y_hi, -np.inf)
        decided = np.where(y_lo >= 0, y_lo + delta < 0.5 * up, delta - y_lo < 0.5 * down)
    return y_hi, ~decided


def _exact_element(
    x: float,
    g: int,
    plan: GroupPlan,
    gamma3: np.ndarray,
    beta3: np.ndarray,
    index: tuple[int, int, int],
    fmt: Format,
) -> float:
    pidx = tuple(i if n != 1 else 0 for i, n in zip(index, gamma3.shape, strict=True))
    bidx = tuple(i if n != 1 else 0 for i, n in zip(index, beta3.shape, strict=True))
    gamma = float(gamma3[pidx])
    beta = float(beta3[bidx])
    kind = plan.special[g]
    if kind == "nan":
        return math.nan
    if not math.isfinite(x):  # IEEE arithmetic on the unfolded form
        s = 0.0 if kind == "guard" else (math.copysign(math.inf, gamma) if kind == "div0" else gamma)
        with np.errstate(invalid="ignore"):
            return float(round_array(np.array([(x - float(plan.mean[g])) * s + beta]), fmt)[0])
    B = Fraction(beta)
    if kind == "guard":
        return round_fraction(B, fmt)
    A = (Fraction(x) - plan.mean[g]) * Fraction(gamma)
    if kind == "div0":
        return math.nan if A == 0 else math.copysign(math.inf, A)
    return round_sqrt_form(A, B, plan.denom[g], fmt)
