"""BatchNorm, exactly: the oracle's public entry point.

See :func:`batch_norm`.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from dataclasses import dataclass
from fractions import Fraction
from typing import Any

import mpmath
import numpy as np
from normspec.oracle.core import GroupPlan, normalize
from normspec.oracle.exact import exact_sums
from normspec.oracle.formats import Format, format_of, numpy_dtype, round_array
from normspec.oracle.sqrtform import round_fraction
from normspec.spec.conventions import Convention, check_eps, get_convention

from normspec.errors import (
    DegenerateInputError,
    DomainError,
    DTypeError,
    InvalidArgumentError,
    ShapeError,
    expected,
)

__all__ = ["batch_norm", "BatchNormResult", "ExactBatchNorm"]

Stat = Fraction | float  # a float only where the value is NaN or infinite


@dataclass(frozen=True)
class ExactBatchNorm:
    """The exact values behind a :class:`BatchNormResult`.

    ``mean``/``var`` are the statistics used to normalize (``var`` biased),
    ``eps`` the effective epsilon, ``running_mean``/``running_var`` the
    updated running statistics, all as :class:`fractions.Fraction` (a float
    only where the value is NaN or infinite).  Each output element is
    ``y = B + A / sqrt(D)`` with the rationals that :meth:`parts` returns;
    :meth:`y` evaluates it to any precision with mpmath.
    """

    x: np.ndarray
    axis: int
    weight: np.ndarray
    bias: np.ndarray
    n: int
    mean: tuple[Stat, ...]
    var: tuple[Stat, ...]
    eps: Fraction
    running_mean: tuple[Stat, ...] | None
    running_var: tuple[Stat, ...] | None
    identity: bool = False

    def parts(self, index: tuple[int, ...]) -> tuple[Fraction, Fraction, Fraction]:
        """``(A, B, D)`` with ``y[index] = B + A / sqrt(D)`` exactly.

        Raises :class:`DomainError` where the statistics are not finite.
        """
        c = index[self.axis]
        mean, var = self.mean[c], self.var[c]
        if not isinstance(mean, Fraction) or not isinstance(var, Fraction):
            raise DomainError(expected("finite statistics", f"mean[{c}]", mean))
        x = Fraction(float(self.x[index]))
        if self.identity:
            return Fraction(0), x, Fraction(1)
        A = (x - mean) * Fraction(float(self.weight[c]))
        return A, Fraction(float(self.bias[c])), var + self.eps

    def y(self, index: tuple[int, ...], prec: int = 113) -> mpmath.mpf:
        """``y[index]`` to ``prec`` bits with mpmath (one rounding per operation)."""
        A, B, D = self.parts(index)
        with mpmath.workprec(prec + 20):
            if D == 0:
                val = mpmath.mpf(B.numerator) / B.denominator
            else:
                val = mpmath.mpf(B.numerator) / B.denominator + (mpmath.mpf(A.numerator) / A.denominator) / mpmath.sqrt(
                    mpmath.mpf(D.numerator) / D.denominator
                )
        with mpmath.workprec(prec):
            return +val


@dataclass(frozen=True)
class BatchNormResult:
    """What :func:`batch_norm` returns.

    ``y`` has the dtype of ``x``; ``mean``/``var`` (the statistics used to
    normalize: biased batch statistics in training, the running ones in
    evaluation) have the dtype of ``running_mean`` when given, else that of
    ``x``; ``running_mean``/``running_var`` keep their own dtype and are
    None when not given.  ``undecided`` counts the elements whose rounding
    the fast path could not settle and exact arithmetic did.
    """

    y: np.ndarray
    mean: np.ndarray
    var: np.ndarray
    running_mean: np.ndarray | None
    running_var: np.ndarray | None
    num_batches_tracked: int
    convention: str
    undecided: int
    exact: ExactBatchNorm


def _as_param(value: Any, name: str, channels: int, default: float) -> np.ndarray:
    if value is None:
        return np.full(channels, default)
    arr = np.asarray(value)
    format_of(arr.dtype, name)
    if arr.shape != (channels,):
        raise ShapeError(expected(f"{name} of shape ({channels},), one value per channel", f"{name}.shape", arr.shape))
    if not np.isfinite(arr.astype(np.float64)).all():
        bad = arr[~np.isfinite(arr.astype(np.float64))][0]
        raise DomainError(expected(f"finite {name}", f"{name} element", float(bad)))
    return arr


def _fraction_stat(v: float) -> Stat:
    return Fraction(v) if math.isfinite(v) else v


def _round_stat(v: Stat, fmt: Format) -> float:
    if isinstance(v, Fraction):
        return round_fraction(v, fmt)
    return float(round_array(np.array([v]), fmt)[0])


def _round_stats(values: tuple[Stat, ...], dtype: Any) -> np.ndarray:
    fmt = format_of(dtype)
    return np.array([_round_stat(v, fmt) for v in values], dtype=np.float64).astype(numpy_dtype(fmt))


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
) -> BatchNormResult:
    """BatchNorm of ``x`` over every axis but ``axis``, exactly, rounded once.

    **Guarantee.**  Every output (``y``, ``mean``, ``var``, ``running_mean``,
    ``running_var``) is the exact mathematical value rounded once,
    correctly, to its dtype (float16, bfloat16, float32 or float64): round
    to nearest, ties to even, with gradual underflow and overflow to
    infinity as IEEE 754 specifies.  Inputs are taken at their exact binary
    values; Python floats ``eps`` and ``momentum`` at their exact double
    values unless the convention records a cast (Keras holds eps in
    float32).  Statistics are exact rational sums.  The rounding is decided
    by a float64 evaluation with a rigorous error bound where that bound
    allows, and by exact rational comparison of squares everywhere else; no
    tolerance enters.  A zero output is ``+0.0`` when the exact value is
    zero.

    **Semantics** come from the ``convention`` profile
    (:mod:`normspec.spec.conventions`): momentum direction and default,
    eps default, clamp and cast, Bessel correction of the running variance,
    update time, behaviour at one value per channel, and the ``var + eps
    == 0`` guard.  ``momentum="cumulative"`` selects the cumulative average
    (PyTorch ``momentum=None``) where the profile has it; it uses
    ``num_batches_tracked`` (the count before this step).  ``with_backward``
    says whether the training step also ran a backward pass, which matters
    to conventions that update only there (MXNet CPU); ``initializing``
    marks Flax's ``init`` call, which does not update.

    **Non-finite inputs.**  A NaN or infinity in ``x`` makes, in training,
    its channel's statistics non-finite (mean the IEEE sum's NaN or
    infinity, var NaN) and every output of that channel NaN; in evaluation
    the output at that element is what IEEE arithmetic gives for
    ``(x - mean) * (gamma / sqrt(var + eps)) + beta``.  Non-finite
    parameters are refused.

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
    conv = get_convention(convention)
    xa = np.asarray(x)
    fmt = format_of(xa.dtype, "x")
    if xa.ndim == 0:
        raise ShapeError(expected("an array with a channel axis", "x.shape", xa.shape))
    if not isinstance(axis, (int, np.integer)) or not -xa.ndim <= axis < xa.ndim:
        raise ShapeError(expected(f"an axis in [-{xa.ndim}, {xa.ndim})", "axis", axis))
    axis = int(axis) % xa.ndim
    channels = xa.shape[axis]
    w = _as_param(weight, "weight", channels, 1.0)
    b = _as_param(bias, "bias", channels, 0.0)
    if weight is not None and bias is not None and w.dtype != b.dtype:
        raise DTypeError(expected(f"bias.dtype equal to weight.dtype={w.dtype.name}", "bias.dtype", b.dtype.name))
    if (running_mean is None) != (running_var is None):
        raise InvalidArgumentError(
            expected("running_mean and running_var both given or both None", "running_var is None", running_var is None)
        )
    tracked = running_mean is not None
    rm = rv = None
    if tracked:
        rm = _as_param(running_mean, "running_mean", channels, 0.0)
        rv = _as_param(running_var, "running_var", channels, 1.0)
        if rm.dtype != rv.dtype:
            raise DTypeError(
                expected(
                    f"running_var.dtype equal to running_mean.dtype={rm.dtype.name}", "running_var.dtype", rv.dtype.name
                )
            )
        if (rv.astype(np.float64) < 0).any():
            raise DomainError(expected("running_var >= 0", "running_var element", float(rv[rv < 0][0])))
    elif not training:
        raise InvalidArgumentError(expected("running_mean and running_var in evaluation", "running_mean", None))

    if eps is None:
        eps = conv.eps_default
    check_eps(eps)
    eps_q = Fraction(conv.effective_eps(float(eps)))
    cumulative = momentum == "cumulative"
    if cumulative:
        if not conv.cumulative_average:
            raise InvalidArgumentError(
                expected(f"a number (convention {conv.name!r} has no cumulative average)", "momentum", momentum)
            )
        mom_q = Fraction(1, num_batches_tracked + 1)
    else:
        mval = conv.momentum_default if momentum is None else momentum
        if isinstance(mval, str) or not math.isfinite(mval):
            raise DomainError(expected("a finite momentum or 'cumulative'", "momentum", momentum))
        mom_q = Fraction(conv.effective_momentum(float(mval)))

    x3 = xa.reshape(math.prod(xa.shape[:axis]), channels, math.prod(xa.shape[axis + 1 :]))
    n = x3.shape[0] * x3.shape[2]
    w3 = w.astype(np.float64).reshape(1, -1, 1)
    b3 = b.astype(np.float64).reshape(1, -1, 1)
    stats_dtype = rm.dtype if rm is not None else xa.dtype

    identity = False
    if training:
        if n == 0:
            raise DegenerateInputError(expected("at least one value per channel in training", "x.shape", xa.shape))
        if n == 1 and conv.one_value == "error":
            raise DegenerateInputError(
                expected("more than 1 value per channel when training", "x.shape", xa.shape)
                + f" (convention {conv.name!r} refuses n=1)"
            )
        identity = n == 1 and conv.one_value == "identity"
        s1, s2, nonfinite = exact_sums(x3, fmt_bits=fmt.p, progress=progress)
        mean: list[Stat] = []
        var: list[Stat] = []
        for c in range(channels):
            if nonfinite[c]:
                with np.errstate(invalid="ignore", over="ignore"):
                    mean.append(float(x3[:, c, :].astype(np.float64).sum()) / n)
                var.append(math.nan)
            else:
                mean.append(s1[c] / n)
                var.append(s2[c] / n - (s1[c] / n) ** 2)
    else:
        assert rm is not None and rv is not None
        mean = [Fraction(float(v)) for v in rm]
        var = [Fraction(float(v)) for v in rv]

    special, denom, means = [], [], []
    for c in range(channels):
        mc, vc = mean[c], var[c]
        if not isinstance(mc, Fraction) or not isinstance(vc, Fraction):
            special.append("nan")
            means.append(Fraction(0))
            denom.append(Fraction(1))
            continue
        d = vc + eps_q
        means.append(mc)
        denom.append(d)
        special.append("" if d != 0 else "guard" if conv.zero_var_guard else "div0")
    if identity:
        y = xa.copy()
        undecided = 0
        if progress is not None:
            progress(xa.size)
    else:
        y3, undecided = normalize(x3, fmt, GroupPlan(means, denom, special), w3, b3, progress=progress)
        y = y3.reshape(xa.shape)

    new_rm: tuple[Stat, ...] | None = None
    new_rv: tuple[Stat, ...] | None = None
    batches = num_batches_tracked
    updates = (
        training
        and tracked
        and not identity
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
        bessel = conv.bessel(n)
        direction_conv = conv if not cumulative else _NEW_WEIGHT
        rms, rvs = [], []
        for c in range(channels):
            old_m, old_v = Fraction(float(rm[c])), Fraction(float(rv[c]))
            # A non-finite batch statistic is a float: the update then
            # follows IEEE arithmetic (NaN and infinities propagate).
            rms.append(direction_conv.running_update(old_m, mean[c], mom_q))
            vc = var[c]
            rvs.append(math.nan if bessel is None else direction_conv.running_update(old_v, vc * bessel, mom_q))
        new_rm, new_rv = tuple(rms), tuple(rvs)

    exact = ExactBatchNorm(
        x=xa,
        axis=axis,
        weight=w,
        bias=b,
        n=n,
        mean=tuple(mean),
        var=tuple(var),
        eps=eps_q,
        running_mean=new_rm,
        running_var=new_rv,
        identity=identity,
    )
    # Statistics that were not recomputed come back as copies, bit for bit (-0.0 stays -0.0).
    out_rm = out_rv = None
    if rm is not None and rv is not None and new_rm is not None and new_rv is not None:
        out_rm = _round_stats(new_rm, rm.dtype) if updates else rm.copy()
        out_rv = _round_stats(new_rv, rv.dtype) if updates else rv.copy()
    return BatchNormResult(
        y=y,
        mean=_round_stats(tuple(mean), stats_dtype) if training or rm is None else rm.copy(),
        var=_round_stats(tuple(var), stats_dtype) if training or rv is None else rv.copy(),
        running_mean=out_rm,
        running_var=out_rv,
        num_batches_tracked=batches,
        convention=conv.name,
        undecided=undecided,
        exact=exact,
    )


_NEW_WEIGHT = Convention(
    name="_cumulative",
    description="cumulative average: new-weight update with factor 1/k",
    momentum_direction="new",
    momentum_default=0.0,
    eps_default=0.0,
    running_var_correction="none",
)
