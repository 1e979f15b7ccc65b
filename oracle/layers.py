"""Every normalization layer, exactly: one engine, one result type.

A layer is a choice of which values share statistics and how the affine
parameters are laid out; both come from the layer's
:class:`~normspec.spec.conventions.Convention` record.  Each layer views
``x`` as an (A, G, B) array whose G groups own a mean and a variance (the
reduction runs over axes 0 and 2), and the general core
(:mod:`normspec.oracle.core`) normalizes it.  Nothing here branches on a
framework's name.

==============  ==========================================  ==================
layer           groups (statistics shape)                   affine per
==============  ==========================================  ==================
batch_norm      channels, ``(C,)``                          channel
layer_norm      rows, ``x.shape[:-k] + (1,) * k``           element of the row
rms_norm        rows, as LayerNorm (no centring)            element of the row
group_norm      (sample, group), ``(N, G)``                 channel or group
instance_norm   (sample, channel), ``(N, C)``               channel
mean_variance   the kept axes, keepdim over ``axes``        (none)
==============  ==========================================  ==================

**Guarantee.**  Every output (``y``, the saved statistics ``mean``, ``var``
and ``rstd = 1/sqrt(var + eps)``, the running statistics) is the exact value
rounded once, correctly (ties to even, gradual underflow, overflow to
infinity) to its format; where the convention records a cast point, the
exact value between cast points is rounded once at each.  No tolerance
enters: the core decides each rounding with a rigorous float64 bound or
exact rational comparison.

**Domain.**  eps may be any finite number, negative included, as long as
``var + eps >= 0`` in every group; a group where it is negative is refused by
index and value.  ``var + eps == 0`` follows the convention's guard (y =
beta) or IEEE division (NaN or a signed infinity).  An empty input gives
empty outputs; statistics over no values are NaN (0/0).

>>> import numpy as np
>>> r = layer_norm(np.array([[40000.0, 40001.0, 40002.0, 40003.0]], np.float32), 1, eps=0.0)
>>> r.y.tolist() == [[np.float32(v) for v in (-3 / 5**0.5, -1 / 5**0.5, 1 / 5**0.5, 3 / 5**0.5)]]
True
>>> r.mean.tolist(), r.var.tolist(), r.rstd.dtype  # saved statistics, keepdim as in torch
([[40001.5]], [[1.25]], dtype('float32'))
"""

from __future__ import annotations

import dataclasses
import math
from collections.abc import Callable
from dataclasses import dataclass
from fractions import Fraction
from typing import Any

import mpmath
import numpy as np
from normspec.oracle.core import GroupPlan, _bslice, _split, _two_prod, _two_sum, half_bits, normalize
from normspec.oracle.exact import blocks, exact_sums
from normspec.oracle.formats import (
    FLOAT32,
    FLOAT64,
    FORMATS,
    Format,
    bfloat16_dtype,
    format_of,
    numpy_dtype,
    round_array,
    round_bracket,
    store,
)
from normspec.oracle.sqrtform import eps_outside_parts, round_fraction, round_sqrt_form
from normspec.spec.conventions import Convention, check_eps, get_convention, running_update

from normspec.errors import (
    DegenerateInputError,
    DomainError,
    DTypeError,
    InvalidArgumentError,
    ShapeError,
    expected,
)

__all__ = [
    "NormResult",
    "ExactNorm",
    "forward",
    "batch_norm",
    "layer_norm",
    "rms_norm",
    "group_norm",
    "instance_norm",
    "mean_variance_norm",
    "Stat",
    "host_array",
]

Stat = Fraction | float  # a float only where the value is NaN or infinite


# ---------------------------------------------------------------- the view of x


@dataclass(frozen=True)
class _View:
    """``x`` as (A, G, B), with the affine parameters laid out to broadcast against it."""

    x3: np.ndarray
    stats_shape: tuple[int, ...]  # the shape of mean/var/rstd (its size is G)
    gamma3: np.ndarray  # float64, exact values of the effective weight
    beta3: np.ndarray
    channel: np.ndarray  # group -> running-statistics channel
    channels: int  # number of running-statistics channels


def _param(value: Any, name: str, shape: tuple[int, ...], what: str) -> np.ndarray | None:
    if value is None:
        return None
    arr = _array(value, name)
    if arr.shape != shape:
        raise ShapeError(expected(f"{name} of shape {shape}, {what}", f"{name}.shape", arr.shape))
    wide = arr.astype(np.float64)
    if not np.isfinite(wide).all():
        raise DomainError(expected(f"finite {name}", f"{name} element", float(wide[~np.isfinite(wide)][0])))
    return arr


def _effective_weight(w: np.ndarray | None, conv: Convention, x_fmt: Format) -> np.ndarray | None:
    """``w + weight_offset``, rounded where the convention casts it; else exact in float64."""
    offset = conv.weight_offset
    cast = conv.cast_at("weight")
    if w is None:
        return None if offset == 0 and cast is None else np.full((), 1.0 + offset)
    wide = w.astype(np.float64)
    if offset == 0 and cast is None:
        return wide
    if cast is not None:
        fmt = x_fmt if cast == "input" else FORMATS[cast]
        return np.array([round_fraction(Fraction(float(v)) + Fraction(offset), fmt) for v in wide.ravel()]).reshape(
            wide.shape
        )
    eff = wide + offset
    bad = [
        float(v)
        for v, e in zip(wide.ravel(), eff.ravel(), strict=True)
        if Fraction(e) != Fraction(v) + Fraction(offset)
    ]
    if bad:
        raise DomainError(expected(f"weight + {offset} exact in float64 (no cast recorded)", "weight element", bad[0]))
    return eff


def _layout(
    xa: np.ndarray,
    conv: Convention,
    weight: Any,
    bias: Any,
    *,
    axis: int | None = None,
    normalized_ndim: int | None = None,
    groups: int | None = None,
) -> tuple[_View, np.ndarray | None, np.ndarray | None]:
    """The (A, G, B) view of ``x`` for ``conv.layer``; returns the view and the validated raw parameters."""
    layer = conv.layer
    shape = xa.shape
    stats_shape: tuple[int, ...]
    pshape: tuple[int, ...]
    if layer == "batch_norm" and not (xa.ndim == 1 and xa.size == 0 and axis == 1):
        assert axis is not None
        if xa.ndim == 0:
            raise ShapeError(expected("an array with a channel axis", "x.shape", shape))
        if isinstance(axis, bool) or not isinstance(axis, (int, np.integer)) or not -xa.ndim <= axis < xa.ndim:
            raise ShapeError(expected(f"an axis in [-{xa.ndim}, {xa.ndim})", "axis", axis))
        k = int(axis) % xa.ndim
        c = shape[k]
        x3 = xa.reshape(math.prod(shape[:k]), c, math.prod(shape[k + 1 :]))
        pshape, what, stats_shape = (c,), "one value per channel", (c,)
        channel, channels = np.arange(c), c
    elif layer == "batch_norm":
        # PyTorch reads C = size(1) as 0 on an empty 1-D input (an OpInfo sample): empty in, empty out
        x3 = xa.reshape(0, 0, 1)
        pshape, what, stats_shape = (0,), "one value per channel", (0,)
        channel, channels = np.arange(0), 0
    elif layer in ("layer_norm", "rms_norm", "mean_variance_norm"):
        k = normalized_ndim if normalized_ndim is not None else 1
        if isinstance(k, bool) or not isinstance(k, (int, np.integer)) or not 1 <= k <= xa.ndim:
            raise ShapeError(expected(f"1 <= normalized_ndim <= {xa.ndim}", "normalized_ndim", normalized_ndim))
        lead = shape[: xa.ndim - k]
        x3 = xa.reshape(1, math.prod(lead), math.prod(shape[xa.ndim - k :]))
        pshape, what = shape[xa.ndim - k :], "the normalized shape"
        stats_shape = lead + (1,) * k
        channel, channels = np.zeros(x3.shape[1], dtype=np.int64), 0
    else:
        if xa.ndim < (3 if layer == "instance_norm" else 2):
            raise ShapeError(expected("an array (N, C, spatial...)", "x.shape", shape))
        n, c = shape[0], shape[1]
        g_arg = c if layer == "instance_norm" else groups
        if isinstance(g_arg, bool) or not isinstance(g_arg, (int, np.integer)) or g_arg < 1 or c % g_arg:
            raise ShapeError(expected(f"a number of groups dividing C={c}", "num_groups", groups))
        g = int(g_arg)
        per, length = c // g, math.prod(shape[2:])
        x3 = xa.reshape(1, n * g, per * length)
        stats_shape = (n, g)
        pshape, what = ((g,), "one value per group") if conv.affine == "per_group" else ((c,), "one value per channel")
        channel, channels = np.tile(np.arange(g), n), g
    w = _param(weight, "weight", pshape, what)
    b = _param(bias, "bias", pshape, what)
    if w is not None and conv.weight_format is not None:
        stored = xa.dtype.name if conv.weight_format == "input" else conv.weight_format
        if w.dtype.name != stored:
            raise DTypeError(
                expected(f"weight.dtype={stored} (profile {conv.name!r} stores its weight in the "
                         f"{'input' if conv.weight_format == 'input' else stored} dtype)", "weight.dtype", w.dtype.name)
            )  # fmt: skip
    gw = _effective_weight(w, conv, format_of(xa.dtype, "x"))
    gamma3 = _spread(gw, 1.0, layer, x3.shape, shape)
    beta3 = _spread(None if b is None else b.astype(np.float64), 0.0, layer, x3.shape, shape)
    return _View(x3, stats_shape, gamma3, beta3, channel, channels), w, b


def _spread(
    p: np.ndarray | None, default: float, layer: str, s3: tuple[int, ...], shape: tuple[int, ...]
) -> np.ndarray:
    """A parameter laid out to broadcast against the (A, G, B) view of x."""
    if p is None or p.ndim == 0:
        return np.full((1, 1, 1), default if p is None else float(p))
    if layer == "batch_norm":
        return p.reshape(1, -1, 1)
    if layer in ("layer_norm", "rms_norm", "mean_variance_norm"):
        return p.reshape(1, 1, -1)
    n, groups = shape[0], s3[1] // max(shape[0], 1)
    if n == 0:  # an empty batch: nothing to scale
        return np.zeros((1, 0, s3[2]))
    per = p.size // groups  # 1 for per-group parameters and for InstanceNorm
    if per == 1:
        return np.tile(p, n).reshape(1, s3[1], 1)
    length = s3[2] // per
    return np.broadcast_to(p.reshape(1, groups, per, 1), (n, groups, per, length)).reshape(1, s3[1], s3[2]).copy()


# ---------------------------------------------------------------- results


@dataclass(frozen=True)
class ExactNorm:
    """The exact values behind a :class:`NormResult`.

    ``mean``/``var`` are the per-group statistics used to normalize (``var`` biased; for
    RMSNorm ``mean`` is 0 and ``var`` the mean square), ``eps`` the effective epsilon,
    ``running_mean``/``running_var`` the updated running statistics, all as
    :class:`fractions.Fraction` (a float only where the value is NaN or infinite).  Each
    output element is ``y = B + A / sqrt(D)`` with the rationals :meth:`parts` returns (where
    the convention has a cast point, these are the exact parts of the first stage; where eps
    sits outside the square root, ``eps_outside``, the parts of ``(x - mean) * gamma /
    (sqrt(var) + eps) + beta`` rewritten in that form).
    """

    x: np.ndarray
    x3: np.ndarray
    gamma3: np.ndarray
    beta3: np.ndarray
    n: int
    mean: tuple[Stat, ...]
    var: tuple[Stat, ...]
    eps: Fraction
    running_mean: tuple[Stat, ...] | None
    running_var: tuple[Stat, ...] | None
    identity: bool = False
    eps_outside: bool = False
    perm: tuple[int, ...] | None = None  # x3 views x transposed by perm (MeanVarianceNormalization)

    def group_of(self, index: tuple[int, ...]) -> tuple[int, int, int]:
        """The (A, G, B) position of ``x[index]``."""
        if self.perm is None:
            flat = int(np.ravel_multi_index(index, self.x.shape))
        else:
            flat = int(
                np.ravel_multi_index(tuple(index[p] for p in self.perm), tuple(self.x.shape[p] for p in self.perm))
            )
        a, g, b = (int(v) for v in np.unravel_index(flat, self.x3.shape))
        return a, g, b

    def parts(self, index: tuple[int, ...]) -> tuple[Fraction, Fraction, Fraction]:
        """``(A, B, D)`` with ``y[index] = B + A / sqrt(D)`` exactly.

        Raises :class:`DomainError` where the statistics are not finite.
        """
        a, g, b = self.group_of(index)
        mean, var = self.mean[g], self.var[g]
        if not isinstance(mean, Fraction) or not isinstance(var, Fraction):
            raise DomainError(expected("finite statistics", f"mean[{g}]", mean))
        x = Fraction(float(self.x[index]))
        if self.identity:
            return Fraction(0), x, Fraction(1)
        pos = (a, g, b)
        gamma = float(self.gamma3[tuple(i if s != 1 else 0 for i, s in zip(pos, self.gamma3.shape, strict=True))])
        beta = float(self.beta3[tuple(i if s != 1 else 0 for i, s in zip(pos, self.beta3.shape, strict=True))])
        if self.eps_outside:
            parts = eps_outside_parts((x - mean) * Fraction(gamma), Fraction(beta), var, self.eps)
            if parts is None:
                raise DomainError(expected("sqrt(var) + eps != 0", f"sqrt(var) + eps at group {g}", 0.0))
            return parts
        return (x - mean) * Fraction(gamma), Fraction(beta), var + self.eps

    def y(self, index: tuple[int, ...], prec: int = 113) -> mpmath.mpf:
        """``y[index]`` to ``prec`` bits with mpmath (one rounding per operation)."""
        A, B, D = self.parts(index)
        with mpmath.workprec(prec + 20):
            val = mpmath.mpf(B.numerator) / B.denominator
            if D != 0:
                val += (mpmath.mpf(A.numerator) / A.denominator) / mpmath.sqrt(mpmath.mpf(D.numerator) / D.denominator)
        with mpmath.workprec(prec):
            return +val


@dataclass(frozen=True)
class NormResult:
    """What every layer's forward returns.

    ``y`` has the dtype of ``x``.  ``mean``, ``var`` (biased; RMSNorm: the mean square, with
    ``mean`` 0) and ``rstd = 1/sqrt(var + eps)`` are the statistics used to normalize, in the
    statistics shape of the layer (see the module docstring), each correctly rounded to the
    statistics format: the running statistics' dtype where the layer was given them, else the
    convention's ``stats_format``, else x's dtype with float32 for float16 and bfloat16.
    ``running_mean``/``running_var`` keep their own dtype and are None when not given.
    ``undecided`` counts the elements whose rounding the fast path could not settle and exact
    arithmetic did; ``exact`` holds the rationals behind every output.
    """

    y: np.ndarray
    mean: np.ndarray
    var: np.ndarray
    rstd: np.ndarray
    running_mean: np.ndarray | None
    running_var: np.ndarray | None
    num_batches_tracked: int
    convention: str
    undecided: int
    exact: ExactNorm
    residual: np.ndarray | None = None  # the new residual stream of a fused residual add (``Convention.residual``)


def _round_stat(v: Stat, fmt: Format) -> float:
    if isinstance(v, Fraction):
        return round_fraction(v, fmt)
    return float(round_array(np.array([v]), fmt)[0])


def _round_stats(values: tuple[Stat, ...] | list[Stat], fmt: Format, shape: tuple[int, ...]) -> np.ndarray:
    """Each value rounded once to ``fmt``.  A rational's nearest double (CPython divides integers
    correctly rounded) is within half a unit of it, which brackets it for the narrower formats;
    the few brackets left open are rounded exactly."""
    rationals = [(i, v) for i, v in enumerate(values) if isinstance(v, Fraction)]
    near: np.ndarray | None = None
    if rationals and fmt.p < 53:
        try:
            near = np.array([v.numerator / v.denominator for _, v in rationals], dtype=np.float64)
        except OverflowError:
            near = None
    brackets = None if near is None else (near, 2.0**-52 * np.abs(near) + 2.0**-1074)
    out = _bracketed(len(values), [i for i, _ in rationals], brackets, fmt, lambda i: _round_stat(values[i], fmt))
    return store(out, fmt).reshape(shape)


def _bracketed(
    n: int,
    items: list[int],
    brackets: tuple[np.ndarray, np.ndarray] | None,
    fmt: Format,
    exact: Callable[[int], float],
) -> np.ndarray:
    """n values rounded to ``fmt``: ``items`` (indices) from float64 values and bounds on their
    errors (``brackets``) where :func:`~normspec.oracle.formats.round_bracket` decides them,
    ``exact(i)`` for every other index."""
    out = np.empty(n, dtype=np.float64)
    todo = np.ones(n, dtype=bool)
    if items and brackets is not None:
        r, undecided = round_bracket(brackets[0], brackets[1], fmt)
        out[items] = r
        todo[np.asarray(items)[~undecided]] = False
    for i in np.flatnonzero(todo):
        out[i] = exact(int(i))
    return out


def _rstd(mean: Stat, denom: Fraction, kind: str, fmt: Format, eps_outside: Fraction | None = None) -> float:
    """``1/sqrt(denom)``, or ``1/(sqrt(denom) + eps_outside)`` where eps sits outside the root."""
    if kind == "nan" or not isinstance(mean, Fraction):
        return math.nan
    if kind == "guard":
        return 0.0
    if kind == "div0":
        return math.inf
    if eps_outside is not None:
        parts = eps_outside_parts(Fraction(1), Fraction(0), denom, eps_outside)
        assert parts is not None  # "div0" above
        return round_sqrt_form(*parts, fmt)
    return round_sqrt_form(Fraction(1), Fraction(0), denom, fmt)


def _rstds(mean: list[Stat], plan: GroupPlan, fmt: Format, eps_outside: Fraction | None) -> np.ndarray:
    """:func:`_rstd` of every group: where eps sits inside the root, ``1/sqrt(denom)`` to within
    ``2**-104`` (:meth:`~normspec.oracle.core.GroupPlan.rsqrt`) rounds by a certified bracket, and
    only the groups it leaves open (and the special ones) are rounded exactly."""
    denom, special = plan.denom, plan.special
    plain = [g for g, k in enumerate(special) if k == "" and isinstance(mean[g], Fraction)]
    brackets = None
    if plain and eps_outside is None and fmt.p < 53:
        hi, lo = np.array([plan.rsqrt(g) for g in plain], dtype=np.float64).reshape(-1, 2).T
        brackets = (hi, np.abs(lo) + 2.0**-100 * hi)
    return _bracketed(
        len(denom), plain, brackets, fmt, lambda g: _rstd(mean[g], denom[g], special[g], fmt, eps_outside)
    )


def _stats_format(conv: Convention, x_fmt: Format, running: np.ndarray | None) -> Format:
    if running is not None:
        return format_of(running.dtype, "running_mean")
    if conv.stats_format is not None:
        return x_fmt if conv.stats_format == "input" else FORMATS[conv.stats_format]
    return FLOAT32 if x_fmt.p < 24 else x_fmt


# ---------------------------------------------------------------- the engine


def _group_stats(
    x3: np.ndarray, fmt: Format, centred: bool, progress: Callable[[int], None] | None
) -> tuple[list[Stat], list[Stat]]:
    """Exact per-group mean and biased variance (RMSNorm: 0 and the mean square)."""
    m = x3.shape[0] * x3.shape[2]
    g_n = x3.shape[1]
    if m == 0:
        return [math.nan] * g_n, [math.nan] * g_n
    s1, s2, nonfinite = exact_sums(x3, fmt_bits=fmt.p, first=centred, progress=progress)
    mean: list[Stat] = []
    var: list[Stat] = []
    for g in range(g_n):
        if nonfinite[g]:
            values = x3[:, g, :].astype(np.float64)
            with np.errstate(invalid="ignore", over="ignore"):
                total = float(values.sum())
            mean.append(total / m if centred else Fraction(0))
            # RMSNorm of infinities without NaN: the mean square is +inf and IEEE's 1/sqrt(inf) is 0
            var.append(math.inf if not centred and not np.isnan(values).any() else math.nan)
            continue
        # one normalization per Fraction: s1 = p1/q1, s2 = p2/q2
        p2, q2 = s2[g].numerator, s2[g].denominator
        if not centred:  # the mean square
            mean.append(_ZERO)
            var.append(Fraction(p2, q2 * m))
            continue
        p1, q1 = s1[g].numerator, s1[g].denominator
        mean.append(Fraction(p1, q1 * m))
        var.append(Fraction(m * p2 * q1 * q1 - p1 * p1 * q2, m * m * q1 * q1 * q2))
    return mean, var


_ZERO = Fraction(0)


def _plan(
    mean: list[Stat], var: list[Stat], eps: Fraction, guard: bool, stats_shape: tuple[int, ...]
) -> tuple[GroupPlan, list[Fraction]]:
    special, denom, means = [], [], []
    for g, (mc, vc) in enumerate(zip(mean, var, strict=True)):
        if not isinstance(mc, Fraction) or not isinstance(vc, Fraction):
            # an infinite mean square (RMSNorm) has the scale 0, as in IEEE; other non-finite statistics: NaN
            special.append("guard" if vc == math.inf and mc == 0 else "nan")
            means.append(Fraction(0))
            denom.append(Fraction(1))
            continue
        d = vc + eps
        if d.numerator < 0:
            where = np.unravel_index(g, stats_shape) if stats_shape else ()
            raise DomainError(
                expected(
                    f"var + eps >= 0 in every group (var = {float(vc)!r}, eps = {float(eps)!r})",
                    f"var + eps at group {tuple(int(i) for i in where)}",
                    float(d),
                )
            )
        means.append(mc)
        denom.append(d)
        special.append("" if d.numerator else "guard" if guard else "div0")
    return GroupPlan(means, denom, special), denom


def _plan_outside(mean: list[Stat], var: list[Stat], eps: Fraction) -> tuple[GroupPlan, list[Fraction]]:
    """The plan where eps sits outside the root: ``denom`` holds ``var``; ``sqrt(var) + eps == 0``
    (only at ``var == eps**2`` with ``eps <= 0``) follows IEEE division."""
    special, denom, means = [], [], []
    for mc, vc in zip(mean, var, strict=True):
        if not isinstance(mc, Fraction) or not isinstance(vc, Fraction):
            special.append("nan")
            means.append(Fraction(0))
            denom.append(Fraction(1))
            continue
        means.append(mc)
        denom.append(vc)
        special.append("div0" if vc == eps * eps and eps <= 0 else "")
    return GroupPlan(means, denom, special), denom


def _normalize_outside(
    x3: np.ndarray, fmt: Format, plan: GroupPlan, gamma3: np.ndarray, beta3: np.ndarray, eps: Fraction
) -> np.ndarray:
    """``(x - mean) * gamma / (sqrt(var) + eps) + beta``, each element decided exactly
    (:func:`~normspec.oracle.sqrtform.eps_outside_parts`); no fast path, so for small inputs."""
    out = np.empty(x3.shape, dtype=np.float64)
    g3, b3 = np.broadcast_to(gamma3, x3.shape), np.broadcast_to(beta3, x3.shape)
    for idx in np.ndindex(x3.shape):
        g = idx[1]
        if plan.special[g] == "nan":
            out[idx] = math.nan
            continue
        A = (Fraction(float(x3[idx])) - plan.mean[g]) * Fraction(float(g3[idx]))
        B = Fraction(float(b3[idx]))
        parts = None if plan.special[g] == "div0" else eps_outside_parts(A, B, plan.denom[g], eps)
        if parts is None:
            out[idx] = (math.nan if A == 0 else math.copysign(math.inf, A)) + float(B)
            continue
        out[idx] = round_sqrt_form(*parts, fmt)
    return out.astype(numpy_dtype(fmt))


def _fits(values: np.ndarray, bits: int) -> bool:
    """Whether every finite value has at most ``bits`` significant bits (and none underflows to a
    subnormal double, whose products could round)."""
    finite = values[np.isfinite(values) & (values != 0)]
    if finite.size == 0:
        return True
    if np.abs(finite).min() < 2.0**-800:
        return False
    m, _ = np.frexp(finite)
    scaled = np.ldexp(m, bits)
    return bool(np.all(scaled == np.round(scaled)))


def _affine_cast(xr: np.ndarray, gamma3: np.ndarray, beta3: np.ndarray, out_fmt: Format) -> np.ndarray:
    """``round(xr * gamma + beta)`` exactly, once: xr is a cast x-hat, gamma and beta exact doubles."""
    bits = format_of(xr.dtype, "x").p
    g64 = np.asarray(gamma3, np.float64)
    with np.errstate(over="ignore"):
        g32 = g64.astype(np.float32)
    if (
        out_fmt.p in (8, 11)
        and not np.any(beta3)
        and _fits(g64, 24 - bits)
        and np.array_equal(g32.astype(np.float64), g64, equal_nan=True)
    ):
        # a 16-bit x-hat times a weight of at most 24 - bits significant bits (exact in float32) is exact
        # in float32 in the narrow format's normal range: the product's bits round once; the rest in float64
        out = np.empty(xr.shape, dtype=numpy_dtype(out_fmt))
        for sl in blocks(xr.shape):
            with np.errstate(over="ignore", invalid="ignore"):
                prod = xr[sl].astype(np.float32) * _bslice(g32, sl)
            edge = half_bits(prod, out_fmt, out[sl], zeros=True)  # a zero product keeps IEEE's sign
            if edge.any():
                at = np.nonzero(edge)
                with np.errstate(over="ignore", invalid="ignore"):
                    exact = xr[sl][at].astype(np.float64) * np.broadcast_to(_bslice(g64, sl), prod.shape)[at]
                out[sl][at] = store(round_array(exact, out_fmt), out_fmt)
        return out
    xf = xr.astype(np.float64)
    if bits <= 24 and not np.any(beta3) and _fits(g64, 53 - bits):
        # each product of a value of at most 24 significant bits (at least 2**-149 in magnitude) and a
        # weight of at most 53 - bits is exact in float64: one rounding of it is the answer
        with np.errstate(invalid="ignore", over="ignore"):
            return store(round_array(xf * gamma3, out_fmt), out_fmt)
    g = np.broadcast_to(gamma3, xr.shape)
    b = np.broadcast_to(beta3, xr.shape)
    with np.errstate(invalid="ignore", over="ignore"):
        # where the float64 product and sum are exact (Dekker's product error and TwoSum's error are 0),
        # rounding s once is the answer, ties included
        p, p_err = _two_prod(xf, *_split(g), g)
        s, s_err = _two_sum(p, b)
        exact = (p_err == 0) & (s_err == 0)
        out = round_array(s, out_fmt).astype(np.float64)  # non-finite s: IEEE's own result
        rest = ~exact & np.isfinite(s)
        # elsewhere: decided where a bracket of s agrees, exactly otherwise
        sr, pr = s[rest], p[rest]
        delta = 2.0**-51 * np.abs(sr) + 2.0**-51 * np.abs(pr) + 2.0**-1070
        lo, hi = round_array(sr - delta, out_fmt), round_array(sr + delta, out_fmt)
    out[rest] = hi
    undecided = np.zeros(xr.shape, dtype=bool)
    undecided[rest] = ~((lo == hi) & (np.signbit(lo) == np.signbit(hi)))
    for idx in zip(*np.nonzero(undecided), strict=True):
        v = Fraction(float(xf[idx])) * Fraction(float(g[idx])) + Fraction(float(b[idx]))
        out[idx] = round_fraction(v, out_fmt)
    return store(out, out_fmt)


def _forward(
    xa: np.ndarray,
    conv: Convention,
    view: _View,
    *,
    eps: float | None,
    training: bool,
    momentum: float | str | None,
    running_mean: np.ndarray | None,
    running_var: np.ndarray | None,
    num_batches_tracked: int,
    with_backward: bool,
    initializing: bool,
    progress: Callable[[int], None] | None,
    y_format: Format | None = None,
    input_format: Format | None = None,
) -> NormResult:
    fmt = format_of(xa.dtype, "x")  # of the values normalized (the statistics' inputs)
    in_fmt = input_format or fmt  # the layer's input (a fused residual add may normalize a wider sum)
    out_fmt = y_format or in_fmt  # y's format; a cast point at "input" still means the input's
    x3 = view.x3
    m = x3.shape[0] * x3.shape[2]
    eps_v = conv.default_eps(in_fmt.p) if eps is None else check_eps(eps)
    eps_q = Fraction(conv.effective_eps(eps_v))
    tracked = running_mean is not None
    rm, rv = running_mean, running_var

    identity = False
    if training:
        if m == 1 and conv.one_value == "error" and xa.size:
            raise DegenerateInputError(
                expected("more than 1 value per channel when training", "x.shape", xa.shape)
                + f" (convention {conv.name!r} refuses n=1)"
            )
        identity = m == 1 and conv.one_value == "identity"
        mean, var = _group_stats(x3, fmt, conv.centred, progress)
    else:
        assert rm is not None and rv is not None
        mean = [Fraction(float(rm[c])) for c in view.channel]
        var = [Fraction(float(rv[c])) for c in view.channel]
    outside = conv.eps_placement == "outside"
    if outside:
        plan, _ = _plan_outside(mean, var, eps_q)
    else:
        plan, _ = _plan(mean, var, eps_q, conv.zero_var_guard, view.stats_shape)

    if identity:
        y, undecided = xa.copy(), 0
        if progress is not None:
            progress(xa.size)
    elif outside:
        y3 = _normalize_outside(x3, out_fmt, plan, view.gamma3, view.beta3, eps_q)
        y, undecided = y3.reshape(xa.shape), x3.size
        if progress is not None:
            progress(xa.size)
    else:
        cast = conv.cast_at("normalized")
        if cast is None:
            y3, undecided = normalize(x3, out_fmt, plan, view.gamma3, view.beta3, progress=progress)
        else:
            cfmt = in_fmt if cast == "input" else FORMATS[cast]
            xr, undecided = normalize(x3, cfmt, plan, np.ones((1, 1, 1)), np.zeros((1, 1, 1)), progress=progress)
            y3 = _affine_cast(xr, view.gamma3, view.beta3, out_fmt)
        y = y3.reshape(xa.shape)

    # running statistics
    new_rm: tuple[Stat, ...] | None = None
    new_rv: tuple[Stat, ...] | None = None
    batches = num_batches_tracked
    updates = (
        training
        and tracked
        and not identity
        and m > 0
        and (
            conv.update_time == "forward"
            or (conv.update_time == "backward" and with_backward)
            or (conv.update_time == "forward_not_at_init" and not initializing)
        )
    )
    if tracked:
        assert rm is not None and rv is not None
        new_rm = tuple(Fraction(float(v)) for v in rm)
        new_rv = tuple(Fraction(float(v)) for v in rv)
    if updates:
        assert rm is not None and rv is not None
        batches += 1
        mom_q, direction = _momentum(conv, momentum, num_batches_tracked)
        bessel = conv.bessel(m)
        new_rm, new_rv = _running(mean, var, bessel, view, rm, rv, mom_q, direction)

    stats_fmt = _stats_format(conv, fmt, rm)
    exact = ExactNorm(
        xa, x3, view.gamma3, view.beta3, m, tuple(mean), tuple(var), eps_q, new_rm, new_rv, identity, outside
    )
    out_rm = out_rv = None
    if rm is not None and rv is not None and new_rm is not None and new_rv is not None:
        # statistics that were not recomputed come back as copies, bit for bit (-0.0 stays -0.0)
        out_rm = _round_stats(new_rm, format_of(rm.dtype), rm.shape) if updates else rm.copy()
        out_rv = _round_stats(new_rv, format_of(rv.dtype), rv.shape) if updates else rv.copy()
    shape = view.stats_shape
    if training or rm is None:
        mean_out = _round_stats(mean, stats_fmt, shape)
        var_out = _round_stats(var, stats_fmt, shape)
    else:
        assert rv is not None
        mean_out = rm[view.channel].reshape(shape).copy()
        var_out = rv[view.channel].reshape(shape).copy()
    eps_out = eps_q if outside else None
    rstd = _rstds(mean, plan, stats_fmt, eps_out)
    return NormResult(
        y=y,
        mean=mean_out,
        var=var_out,
        rstd=rstd.astype(numpy_dtype(stats_fmt)).reshape(shape),
        running_mean=out_rm,
        running_var=out_rv,
        num_batches_tracked=batches,
        convention=conv.name,
        undecided=undecided,
        exact=exact,
    )


def _momentum(conv: Convention, momentum: float | str | None, num_batches_tracked: int) -> tuple[Fraction, str]:
    if isinstance(momentum, str) and momentum == "cumulative":
        if not conv.cumulative_average:
            raise InvalidArgumentError(
                expected(f"a number (convention {conv.name!r} has no cumulative average)", "momentum", momentum)
            )
        if (
            isinstance(num_batches_tracked, bool)
            or not isinstance(num_batches_tracked, (int, np.integer))
            or (num_batches_tracked < 0)
        ):
            raise InvalidArgumentError(expected("an integer >= 0", "num_batches_tracked", num_batches_tracked))
        return Fraction(1, int(num_batches_tracked) + 1), "new"
    mval = conv.momentum_default if momentum is None else momentum
    if isinstance(mval, (str, bool)) or mval is None or not isinstance(mval, (int, float, np.floating, np.integer)):
        raise DomainError(expected("a finite momentum or 'cumulative'", "momentum", momentum))
    if not math.isfinite(float(mval)):
        raise DomainError(expected("a finite momentum or 'cumulative'", "momentum", momentum))
    return Fraction(conv.effective_momentum(float(mval))), conv.momentum_direction


def _running(
    mean: list[Stat],
    var: list[Stat],
    bessel: Fraction | None,
    view: _View,
    rm: np.ndarray,
    rv: np.ndarray,
    mom: Fraction,
    direction: str,
) -> tuple[tuple[Stat, ...], tuple[Stat, ...]]:
    """Running statistics after one training step: each channel moves towards the average over its
    groups (one group per channel in BatchNorm; the N instances of a channel in InstanceNorm)."""
    members: list[list[int]] = [[] for _ in range(len(rm))]
    for g, c in enumerate(view.channel):
        members[int(c)].append(g)
    rms: list[Stat] = []
    rvs: list[Stat] = []
    for c, gs in enumerate(members):
        old_m, old_v = Fraction(float(rm[c])), Fraction(float(rv[c]))
        bm: Stat = _average([mean[g] for g in gs])
        bv: Stat = math.nan if bessel is None else _average([var[g] for g in gs])
        if isinstance(bv, Fraction) and bessel is not None:
            bv = bv * bessel
        # A non-finite batch statistic is a float: the update then follows IEEE arithmetic.
        rms.append(running_update(old_m, bm, mom, direction))
        rvs.append(running_update(old_v, bv, mom, direction))
    return tuple(rms), tuple(rvs)


def _average(values: list[Stat]) -> Stat:
    if len(values) == 1:
        return values[0]
    if all(isinstance(v, Fraction) for v in values):
        return sum(values, Fraction(0)) / len(values)
    with np.errstate(invalid="ignore", over="ignore"):
        return float(np.mean([float(v) for v in values]))


def _running_params(
    conv: Convention, channels: int, running_mean: Any, running_var: Any, training: bool
) -> tuple[np.ndarray | None, np.ndarray | None]:
    if (running_mean is None) != (running_var is None):
        raise InvalidArgumentError(
            expected("running_mean and running_var both given or both None", "running_var is None", running_var is None)
        )
    if running_mean is None:
        if not training:
            raise InvalidArgumentError(expected("running_mean and running_var in evaluation", "running_mean", None))
        return None, None
    if not conv.running_stats:
        raise InvalidArgumentError(
            expected(f"no running statistics (convention {conv.name!r} keeps none)", "running_mean", "given")
        )
    rm = _param(running_mean, "running_mean", (channels,), "one value per channel")
    rv = _param(running_var, "running_var", (channels,), "one value per channel")
    assert rm is not None and rv is not None
    if rm.dtype != rv.dtype:
        raise DTypeError(
            expected(
                f"running_var.dtype equal to running_mean.dtype={rm.dtype.name}", "running_var.dtype", rv.dtype.name
            )
        )
    if (rv.astype(np.float64) < 0).any():
        raise DomainError(expected("running_var >= 0", "running_var element", float(rv[rv.astype(np.float64) < 0][0])))
    return rm, rv


def host_array(value: Any, name: str = "x") -> np.ndarray:
    """An input as a numpy array of a supported format: torch tensors are detached and moved to the
    host (bfloat16 through ml_dtypes), ragged sequences and other dtypes refused by name."""
    return _array(value, name)


def _array(value: Any, name: str) -> np.ndarray:
    """An input as a numpy array of a supported format (a torch tensor is moved to the host)."""
    if hasattr(value, "detach") and hasattr(value, "numpy"):  # a torch tensor
        value = value.detach().cpu()
        if str(value.dtype) == "torch.bfloat16":  # numpy has no bfloat16: reinterpret the bits
            import torch

            bf = bfloat16_dtype()
            if bf is None:
                raise DTypeError("bfloat16 needs the ml_dtypes package: pip install 'normspec[bfloat16]'")
            return value.view(torch.int16).numpy().view(bf)
        value = value.numpy()
    try:
        arr = np.asarray(value)
    except ValueError as err:  # ragged nested lists
        raise ShapeError(expected("a rectangular array", name, type(value).__name__)) from err
    format_of(arr.dtype, name)
    return arr


# ---------------------------------------------------------------- the layers


def batch_norm(
    x: Any,
    weight: Any = None,
    bias: Any = None,
    running_mean: Any = None,
    running_var: Any = None,
    *,
    training: bool,
    momentum: float | str | None = None,
    eps: float | None = None,
    convention: str | Convention = "torch",
    axis: int = 1,
    num_batches_tracked: int = 0,
    with_backward: bool = True,
    initializing: bool = False,
    progress: Callable[[int], None] | None = None,
) -> NormResult:
    """BatchNorm of ``x`` over every axis but ``axis``, exactly, rounded once.

    **Guarantee.**  Every output (``y``, ``mean``, ``var``, ``rstd``, ``running_mean``,
    ``running_var``) is the exact mathematical value rounded once, correctly, to its dtype
    (float16, bfloat16, float32 or float64): round to nearest, ties to even, with gradual
    underflow and overflow to infinity as IEEE 754 specifies.  Inputs are taken at their exact
    binary values; Python floats ``eps`` and ``momentum`` at their exact double values unless
    the convention records a cast (Keras holds eps in float32).  Statistics are exact rational
    sums.  The rounding is decided by a float64 evaluation with a rigorous error bound where
    that bound allows, and by exact rational comparison of squares everywhere else; no
    tolerance enters.  A zero output is ``+0.0`` when the exact value is zero.

    **Semantics** come from the ``convention`` profile (:mod:`normspec.spec.conventions`):
    momentum direction and default, eps default, clamp and cast, Bessel correction of the
    running variance, update time, behaviour at one value per channel, and the ``var + eps ==
    0`` guard.  ``momentum="cumulative"`` selects the cumulative average (PyTorch
    ``momentum=None``) where the profile has it; it uses ``num_batches_tracked`` (the count
    before this step).  ``with_backward`` says whether the training step also ran a backward
    pass, which matters to conventions that update only there (MXNet CPU); ``initializing``
    marks Flax's ``init`` call, which does not update.  An empty batch gives an empty ``y``,
    NaN batch statistics and unchanged running statistics.

    **Non-finite inputs.**  A NaN or infinity in ``x`` makes, in training, its channel's
    statistics non-finite (mean the IEEE sum's NaN or infinity, var NaN) and every output of
    that channel NaN; in evaluation the output at that element is what IEEE arithmetic gives
    for ``(x - mean) * (gamma / sqrt(var + eps)) + beta``.  Non-finite parameters are refused.

    >>> import numpy as np
    >>> x = np.full((2, 3, 4, 4), 1.2345678e7, dtype=np.float32)  # pytorch#5410
    >>> r = batch_norm(x, training=True)
    >>> float(np.abs(r.y).max()), r.y.dtype
    (0.0, dtype('float32'))
    >>> r = batch_norm(np.array([[1.0], [2.0], [3.0], [4.0]], np.float32),
    ...                running_mean=np.zeros(1, np.float32), running_var=np.ones(1, np.float32),
    ...                training=True, momentum=1.0)
    >>> r.running_var  # unbiased: 5/3, correctly rounded to float32
    array([1.6666666], dtype=float32)
    """
    conv = get_convention(convention, layer="batch_norm")
    xa = _array(x, "x")
    view, w, b = _layout(xa, conv, weight, bias, axis=axis)
    if w is not None and b is not None and w.dtype != b.dtype:
        raise DTypeError(expected(f"bias.dtype equal to weight.dtype={w.dtype.name}", "bias.dtype", b.dtype.name))
    rm, rv = _running_params(conv, view.channels, running_mean, running_var, training)
    return _forward(
        xa, conv, view, eps=eps, training=training, momentum=momentum, running_mean=rm, running_var=rv,
        num_batches_tracked=num_batches_tracked, with_backward=with_backward, initializing=initializing,
        progress=progress,
    )  # fmt: skip


def layer_norm(
    x: Any,
    normalized_ndim: int = 1,
    weight: Any = None,
    bias: Any = None,
    *,
    eps: float | None = None,
    convention: str | Convention = "torch_layer_norm",
    y_dtype: Any = None,
    progress: Callable[[int], None] | None = None,
) -> NormResult:
    """LayerNorm over the trailing ``normalized_ndim`` axes (PyTorch; ONNX LayerNormalization with
    ``axis = -normalized_ndim``); ``weight``/``bias`` have the normalized shape.  ``eps=None`` is
    the convention's default.  ``y_dtype`` as in :func:`rms_norm`.  Same guarantee as :func:`batch_norm`."""
    conv = get_convention(convention, layer="layer_norm")
    xa = _array(x, "x")
    view, _, _ = _layout(xa, conv, weight, bias, normalized_ndim=normalized_ndim)
    return _forward(
        xa, conv, view, eps=eps, training=True, momentum=None, running_mean=None, running_var=None,
        num_batches_tracked=0, with_backward=True, initializing=False, progress=progress,
        y_format=_y_format(y_dtype),
    )  # fmt: skip


def _y_format(y_dtype: Any) -> Format | None:
    if y_dtype is None:
        return None
    return FORMATS.get(str(y_dtype)) or format_of(y_dtype, "y_dtype")


def rms_norm(
    x: Any,
    normalized_ndim: int = 1,
    weight: Any = None,
    *,
    eps: float | None = None,
    convention: str | Convention = "torch_rms_norm",
    residual: Any = None,
    y_dtype: Any = None,
    progress: Callable[[int], None] | None = None,
) -> NormResult:
    """RMSNorm ``x * weight / sqrt(mean(x^2) + eps)`` over the trailing axes; ``eps=None`` is the
    convention's default (PyTorch: ``finfo(x.dtype).eps``).  ``mean`` is 0 and ``var`` the mean
    square.  Same guarantee as :func:`batch_norm`.

    The LLM profiles round where their code rounds, once at each cast point, exactly in between:
    ``hf_llama_rms_norm`` rounds the normalized value to the input's dtype and multiplies by a
    weight stored in that dtype; ``gemma_rms_norm`` scales by ``1 + weight`` held in float32 and
    rounds once; ``fused_add_rms_norm`` takes ``residual`` and normalizes ``h = x + residual``
    rounded to the input's dtype, returning ``h`` as ``result.residual``
    (``vllm_native_fused_add_rms_norm`` and ``flashinfer_fused_add_rms_norm`` return that ``h``
    too but normalize the sum rounded to float32 only, see :func:`residual_sums`).  ``y_dtype`` rounds
    ``y`` to another format (a cast point at the input's dtype stays there): what a reference
    computed in float32 and rounded again would start from.

    >>> import numpy as np, ml_dtypes
    >>> bf16 = ml_dtypes.bfloat16
    >>> x = np.array([[1.0, 2.0, 3.0, 4.0]], bf16)
    >>> w = np.array([1.0, 1.5, 2.0, 0.5], bf16)
    >>> rms_norm(x, 1, w, convention="hf_llama_rms_norm").y.astype(np.float32).tolist()
    [[0.365234375, 1.09375, 2.1875, 0.73046875]]
    >>> r = rms_norm(x, 1, w, convention="fused_add_rms_norm", residual=np.full((1, 4), 0.5, bf16))
    >>> r.residual.astype(np.float32).tolist()
    [[1.5, 2.5, 3.5, 4.5]]
    """
    conv = get_convention(convention, layer="rms_norm")
    x0 = _array(x, "x")
    stream, xa = _fused_inputs(x0, residual, conv)
    res = _rms_forward(x0, xa, conv, weight, normalized_ndim, eps, y_format=_y_format(y_dtype), progress=progress)
    return dataclasses.replace(res, residual=stream) if conv.residual else res


def _rms_forward(
    x0: np.ndarray,
    xa: np.ndarray,
    conv: Convention,
    weight: Any,
    normalized_ndim: int,
    eps: float | None,
    *,
    y_format: Format | None = None,
    progress: Callable[[int], None] | None = None,
) -> NormResult:
    """RMSNorm of ``xa``, the value normalized (x itself, or a fused add's sum), for the input ``x0``:
    its layout and dtype (casts "to the input's dtype" mean x's, whatever is normalized)."""
    view, _, _ = _layout(x0, conv, weight, None, normalized_ndim=normalized_ndim)
    view = dataclasses.replace(view, x3=xa.reshape(view.x3.shape))
    return _forward(
        xa, conv, view, eps=eps, training=True, momentum=None, running_mean=None, running_var=None,
        num_batches_tracked=0, with_backward=True, initializing=False, progress=progress,
        y_format=y_format, input_format=format_of(x0.dtype, "x"),
    )  # fmt: skip


def _fused_inputs(xa: np.ndarray, residual: Any, conv: Convention) -> tuple[np.ndarray, np.ndarray]:
    """(new residual stream, value normalized) of a profile with a fused residual add, the residual
    checked against x; ``(x, x)`` for a profile without one (which refuses a residual)."""
    if not conv.residual:
        if residual is not None:
            raise InvalidArgumentError(expected(f"no residual (profile {conv.name!r} adds none)", "residual", "given"))
        return xa, xa
    if residual is None:
        raise InvalidArgumentError(expected(f"a residual (profile {conv.name!r} adds one)", "residual", None))
    ra = _array(residual, "residual")
    if ra.shape != xa.shape or ra.dtype != xa.dtype:
        raise ShapeError(
            expected(f"a residual of x's shape {xa.shape} and dtype {xa.dtype.name}", "residual",
                     f"{ra.dtype.name}{list(ra.shape)}")
        )  # fmt: skip
    return residual_sums(xa, ra, conv)


def residual_sums(x: np.ndarray, residual: np.ndarray, conv: Convention) -> tuple[np.ndarray, np.ndarray]:
    """A fused residual add's (new residual stream, value normalized): ``x + residual`` correctly
    rounded to their dtype, and the value the profile normalizes: that same rounding, or under
    ``residual_sum="float32"`` the sum rounded to float32 only (exact for most pairs of
    bfloat16/float16 values, whose sum fits in float32's 24 bits unless their exponents lie far
    apart)."""
    stream = _round_sum(x, residual)
    if conv.residual_sum == "float32" and format_of(x.dtype, "x").p < FLOAT32.p:
        return stream, _round_sum(x, residual, FLOAT32)
    return stream, stream


def _round_sum(a: np.ndarray, b: np.ndarray, to: Format | None = None) -> np.ndarray:
    """``a + b`` correctly rounded to their dtype (or to ``to``), by cache-sized blocks.

    Two float16/bfloat16 values (``p <= 11`` bits): their float32 sum ``s``, its rounding read off
    its bits (:func:`~normspec.oracle.core.half_bits`) wherever ``s`` is in the narrow format's
    normal range.  That is the rounding of the exact sum: with ``|a| >= |b|``, the sum is a
    multiple of b's quantum below ``2**(e_a + 2)``, so it fits in float32's 24 bits unless
    ``e_a - e_b >= 24 - p``; then ``|b| < 2**(e_a - 23 + p) <= 2**(e_a - p - 1)``, the least
    distance from ``a`` to a narrow midpoint ``m`` (below a power of two), so ``a + b`` lies
    between ``a`` and the midpoint ``m`` on b's side, more than half a float32 spacing from ``m``;
    ``a`` and ``m`` are float32 values, so ``s`` lies in ``[a, m)`` too, and both round to ``a``.
    Into float32 or float64 from values no wider: IEEE addition in that format, correctly rounded
    by itself.  Elsewhere (the narrow sums outside the normal range) the float64 sum where TwoSum's
    error is zero, exact rationals past that.  Zeros keep IEEE's signs (``-0 + -0 = -0``)."""
    fmt = to or format_of(a.dtype, "x")
    if fmt.p in (FLOAT32.p, FLOAT64.p) and format_of(a.dtype, "x").p <= fmt.p:
        dt = numpy_dtype(fmt)
        with np.errstate(invalid="ignore", over="ignore"):
            return np.add(a.astype(dt), b.astype(dt))
    # two 16-bit values into their own format
    a1, b1 = a.reshape(1, 1, -1), b.reshape(1, 1, -1)
    out = np.empty(a1.shape, dtype=numpy_dtype(fmt))
    inexact: list[int] = []
    for sl in blocks(a1.shape):  # a1 is (1, 1, n): blocks split its last axis
        with np.errstate(invalid="ignore", over="ignore"):  # (a signalling NaN's cast)
            s32 = a1[sl].astype(np.float32) + b1[sl].astype(np.float32)
        edge = half_bits(s32, fmt, out[sl], zeros=True)  # a zero sum is exact, with IEEE's sign
        if edge.any():
            at = np.nonzero(edge)
            with np.errstate(invalid="ignore", over="ignore"):
                s64, err = _two_sum(a1[sl][at].astype(np.float64), b1[sl][at].astype(np.float64))
            inexact.extend((sl[2].start + at[2][np.isfinite(s64) & (err != 0)]).tolist())
            out[sl][at] = store(round_array(s64, fmt), fmt)
    flat_a, flat_b, flat_out = a1.ravel(), b1.ravel(), out.reshape(-1)
    for k in inexact:
        flat_out[k] = round_fraction(Fraction(float(flat_a[k])) + Fraction(float(flat_b[k])), fmt)  # (exact value)
    return out.reshape(a.shape)


def group_norm(
    x: Any,
    num_groups: int,
    weight: Any = None,
    bias: Any = None,
    *,
    eps: float | None = None,
    convention: str | Convention = "torch_group_norm",
    progress: Callable[[int], None] | None = None,
) -> NormResult:
    """GroupNorm of ``x`` (N, C, ...) with ``num_groups`` groups; ``weight``/``bias`` per channel,
    or per group where the convention says so (ONNX GroupNormalization-18, MXNet 1.x).  Same
    guarantee as :func:`batch_norm`.

    >>> import numpy as np
    >>> x = np.arange(8, dtype=np.float32).reshape(1, 4, 2)
    >>> y = group_norm(x, 2, eps=0.0).y  # each group of 4 values normalized on its own
    >>> y[0, :2].tolist() == y[0, 2:].tolist(), float(y[0, 0, 0]) == float(np.float32(-3 / 5**0.5))
    (True, True)
    """
    conv = get_convention(convention, layer="group_norm")
    xa = _array(x, "x")
    view, _, _ = _layout(xa, conv, weight, bias, groups=num_groups)
    return _forward(
        xa, conv, view, eps=eps, training=True, momentum=None, running_mean=None, running_var=None,
        num_batches_tracked=0, with_backward=True, initializing=False, progress=progress,
    )  # fmt: skip


def instance_norm(
    x: Any,
    weight: Any = None,
    bias: Any = None,
    running_mean: Any = None,
    running_var: Any = None,
    *,
    training: bool = True,
    momentum: float | None = None,
    eps: float | None = None,
    convention: str | Convention = "torch_instance_norm",
    progress: Callable[[int], None] | None = None,
) -> NormResult:
    """InstanceNorm of (N, C, spatial...): each (sample, channel) normalized over its spatial
    values.  With running statistics (a convention that keeps them, as PyTorch's
    ``track_running_stats=True``: ``convention="torch_instance_norm_tracked"``), training moves
    them towards the batch average of the per-instance mean and corrected variance, and
    evaluation normalizes every instance with them."""
    conv = get_convention(convention, layer="instance_norm")
    xa = _array(x, "x")
    view, _, _ = _layout(xa, conv, weight, bias)
    rm, rv = _running_params(conv, view.channels, running_mean, running_var, training)
    return _forward(
        xa, conv, view, eps=eps, training=training, momentum=momentum, running_mean=rm, running_var=rv,
        num_batches_tracked=0, with_backward=True, initializing=False, progress=progress,
    )  # fmt: skip


def mean_variance_norm(
    x: Any,
    axes: Any = (0, 2, 3),
    *,
    eps: float | None = None,
    convention: str | Convention = "onnx_mvn13",
    progress: Callable[[int], None] | None = None,
) -> NormResult:
    """``(x - mean) / (sqrt(var) + eps)`` over ``axes`` (ONNX MeanVarianceNormalization; its default
    axes ``(0, 2, 3)``, eps the float32 constant ``1e-9`` outside the root).  ``var`` is the biased
    variance, which ONNX writes ``E[x^2] - E[x]^2``: equal in exact arithmetic.  The statistics have
    x's shape with 1 at ``axes``; ``rstd`` is ``1/(sqrt(var) + eps)``.  Same guarantee as
    :func:`batch_norm`; every element goes through exact arithmetic (meant for test-sized inputs).

    >>> import numpy as np
    >>> r = mean_variance_norm(np.array([[1.0, 3.0]], np.float32), axes=(1,), eps=0.0)
    >>> r.y.tolist(), r.mean.shape
    ([[-1.0, 1.0]], (1, 1))
    """
    conv = get_convention(convention, layer="mean_variance_norm")
    xa = _array(x, "x")
    try:
        red = sorted({int(a) % xa.ndim for a in axes}) if xa.ndim else []
        ok = len(red) == len(tuple(axes)) and len(red) > 0 and all(-xa.ndim <= int(a) < xa.ndim for a in axes)
    except (TypeError, ValueError):
        ok = False
    if not ok or any(isinstance(a, bool) or not isinstance(a, (int, np.integer)) for a in axes):
        raise ShapeError(expected(f"distinct axes in [-{xa.ndim}, {xa.ndim}), at least one", "axes", axes))
    kept = [i for i in range(xa.ndim) if i not in red]
    xt = np.ascontiguousarray(np.transpose(xa, kept + red))
    view, _, _ = _layout(xt, conv, None, None, normalized_ndim=len(red))
    r = _forward(
        xt, conv, view, eps=eps, training=True, momentum=None, running_mean=None, running_var=None,
        num_batches_tracked=0, with_backward=True, initializing=False, progress=progress,
    )  # fmt: skip
    stats_shape = tuple(1 if i in red else n for i, n in enumerate(xa.shape))
    back = np.argsort(kept + red)
    return NormResult(
        y=np.transpose(r.y, back),
        mean=r.mean.reshape(stats_shape),
        var=r.var.reshape(stats_shape),
        rstd=r.rstd.reshape(stats_shape),
        running_mean=None,
        running_var=None,
        num_batches_tracked=0,
        convention=r.convention,
        undecided=r.undecided,
        exact=dataclasses.replace(r.exact, x=xa, perm=tuple(kept + red)),
    )


# One table from a layer to its function: the only dispatch on a layer's name.
_LAYERS: dict[str, Callable[..., NormResult]] = {
    "batch_norm": batch_norm,
    "layer_norm": layer_norm,
    "rms_norm": rms_norm,
    "group_norm": group_norm,
    "instance_norm": instance_norm,
    "mean_variance_norm": mean_variance_norm,
}


def forward(
    convention: str | Convention,
    x: Any,
    weight: Any = None,
    bias: Any = None,
    *,
    eps: float | None = None,
    groups: int | None = None,
    normalized_ndim: int = 1,
    **kwargs: Any,
) -> NormResult:
    """Any layer by its convention: the protocol of the family vectors and audits,
    ``f(x, weight, bias, eps, groups)``.  LayerNorm and RMSNorm normalize the trailing
    ``weight.ndim`` axes (``normalized_ndim`` when weight is None); GroupNorm takes ``groups``;
    BatchNorm passes ``kwargs`` (``training``, running statistics, ...) through.

    >>> import numpy as np
    >>> x = np.array([[1.0, 2.0, 3.0, 4.0]], np.float32)
    >>> forward("torch_layer_norm", x).y.tolist() == layer_norm(x, 1).y.tolist()
    True
    """
    conv = get_convention(convention)
    fn = _LAYERS[conv.layer]
    if conv.layer in ("layer_norm", "rms_norm"):
        k = np.ndim(weight) if weight is not None else normalized_ndim
        args = (x, k, weight) if conv.layer == "rms_norm" else (x, k, weight, bias)
        if conv.layer == "rms_norm" and bias is not None:
            raise InvalidArgumentError(expected("no bias (RMSNorm has none)", "bias", "given"))
        return fn(*args, eps=eps, convention=conv, **kwargs)
    if conv.layer == "group_norm":
        return fn(x, groups, weight, bias, eps=eps, convention=conv, **kwargs)
    if conv.layer == "mean_variance_norm":
        if weight is not None or bias is not None:
            raise InvalidArgumentError(
                expected("no weight or bias (MeanVarianceNormalization has none)", "weight", "given")
            )
        return fn(x, eps=eps, convention=conv, **kwargs)
    return fn(x, weight, bias, eps=eps, convention=conv, **kwargs)


def instance_norm_tracked(
    x: Any,
    running_mean: Any,
    running_var: Any,
    *,
    training: bool,
    momentum: float = 0.1,
    eps: float = 1e-5,
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Deprecated: ``instance_norm(x, running_mean=..., running_var=...,
    convention="torch_instance_norm_tracked")``, which returns a :class:`NormResult`."""
    import warnings

    warnings.warn(
        "instance_norm_tracked is deprecated; use instance_norm(..., convention='torch_instance_norm_tracked')",
        DeprecationWarning,
        stacklevel=2,
    )
    r = instance_norm(
        x,
        running_mean=running_mean,
        running_var=running_var,
        training=training,
        momentum=momentum,
        eps=eps,
        convention="torch_instance_norm_tracked",
    )
    assert r.running_mean is not None and r.running_var is not None
    return r.y, r.running_mean, r.running_var
