"""LayerNorm, RMSNorm and InstanceNorm, exactly, on the general core.

Each is a choice of which values share statistics and how the affine
parameters are laid out; the core (:mod:`normspec.oracle.core`) does the
rest with the same guarantee as BatchNorm: every output is the exact value
rounded once.

* ``layer_norm(x, normalized_ndim, weight, bias, eps)``: statistics over the
  trailing ``normalized_ndim`` axes; ``weight``/``bias`` have the shape of
  those axes (PyTorch, ONNX LayerNormalization-17 with axis = -normalized_ndim).
* ``rms_norm(x, normalized_ndim, weight, eps)``: ``x * weight / sqrt(mean(x^2) + eps)``,
  no centring; ``eps=None`` means ``finfo(x.dtype).eps`` (PyTorch ``nn.RMSNorm``).
* ``instance_norm(x, weight, bias, eps)``: GroupNorm with one channel per group.

>>> import numpy as np
>>> y = layer_norm(np.array([[40000.0, 40001.0, 40002.0, 40003.0]], np.float32), 1, eps=0.0)  # onnxruntime#28463
>>> y.tolist() == [[np.float32(v) for v in (-3 / 5**0.5, -1 / 5**0.5, 1 / 5**0.5, 3 / 5**0.5)]]
True
>>> y = rms_norm(np.array([[3.0, 4.0]], np.float32), 1, eps=0.0)  # sqrt(mean square) = sqrt(12.5)
>>> y.tolist() == [[np.float32(3 / 12.5**0.5), np.float32(4 / 12.5**0.5)]]
True
"""

from __future__ import annotations

import math
from fractions import Fraction
from typing import Any

import numpy as np
from normspec.oracle.core import GroupPlan, normalize
from normspec.oracle.exact import exact_sums
from normspec.oracle.formats import format_of
from normspec.oracle.groupnorm import group_norm
from normspec.spec.conventions import check_eps

from normspec.errors import DegenerateInputError, ShapeError, expected

__all__ = ["layer_norm", "rms_norm", "instance_norm", "instance_norm_tracked"]


def _rows(x: np.ndarray, normalized_ndim: int) -> tuple[np.ndarray, int, tuple[int, ...]]:
    if not isinstance(normalized_ndim, (int, np.integer)) or not 1 <= normalized_ndim <= x.ndim:
        raise ShapeError(expected(f"1 <= normalized_ndim <= {x.ndim}", "normalized_ndim", normalized_ndim))
    feat = x.shape[x.ndim - normalized_ndim :]
    rows = math.prod(x.shape[: x.ndim - normalized_ndim])
    n = math.prod(feat)
    if n == 0 or rows == 0:
        raise DegenerateInputError(expected("at least one value per row", "x.shape", x.shape))
    return x.reshape(1, rows, n), n, feat


def _params(value: Any, name: str, feat: tuple[int, ...], default: float) -> np.ndarray:
    if value is None:
        return np.full((1, 1, math.prod(feat)), default)
    arr = np.asarray(value, dtype=np.float64)
    if arr.shape != feat:
        raise ShapeError(expected(f"{name} of shape {feat}, the normalized shape", f"{name}.shape", arr.shape))
    return arr.reshape(1, 1, -1)


def _run(
    x3: np.ndarray, xa: np.ndarray, n: int, centred: bool, eps: float, w3: np.ndarray, b3: np.ndarray
) -> np.ndarray:
    fmt = format_of(xa.dtype, "x")
    s1, s2, nonfinite = exact_sums(x3, fmt_bits=fmt.p, first=centred)
    e = Fraction(float(eps))
    means, denom, special = [], [], []
    for g in range(x3.shape[1]):
        if nonfinite[g]:
            means.append(Fraction(0))
            denom.append(Fraction(1))
            special.append("nan")
            continue
        # One normalization per Fraction: s1 = p1/q1 and s2 = p2/q2 (q powers of two), e = pe/qe;
        # var + eps = (n p2 q1^2 - p1^2 q2) / (n^2 q1^2 q2) + pe/qe.
        p1, q1 = (s1[g].numerator, s1[g].denominator) if centred else (0, 1)
        p2, q2 = s2[g].numerator, s2[g].denominator
        den = n * n * q1 * q1 * q2
        d = Fraction((n * p2 * q1 * q1 - p1 * p1 * q2) * e.denominator + e.numerator * den, den * e.denominator)
        means.append(Fraction(p1, q1 * n))
        denom.append(d)
        special.append("" if d != 0 else "div0")
    y3, _ = normalize(x3, fmt, GroupPlan(means, denom, special), w3, b3)
    return y3.reshape(xa.shape)


def layer_norm(x: Any, normalized_ndim: int, weight: Any = None, bias: Any = None, *, eps: float = 1e-5) -> np.ndarray:
    """LayerNorm over the trailing ``normalized_ndim`` axes, correctly rounded to x's dtype."""
    xa = np.asarray(x)
    format_of(xa.dtype, "x")
    check_eps(eps)
    x3, n, feat = _rows(xa, normalized_ndim)
    return _run(x3, xa, n, True, eps, _params(weight, "weight", feat, 1.0), _params(bias, "bias", feat, 0.0))


def rms_norm(x: Any, normalized_ndim: int, weight: Any = None, *, eps: float | None = None) -> np.ndarray:
    """RMSNorm ``x * weight / sqrt(mean(x^2) + eps)`` over the trailing axes; ``eps=None`` is
    ``finfo(x.dtype).eps`` as in PyTorch."""
    xa = np.asarray(x)
    fmt = format_of(xa.dtype, "x")
    if eps is None:
        eps = math.ldexp(1.0, 1 - fmt.p)  # the dtype's machine epsilon
    check_eps(eps)
    x3, n, feat = _rows(xa, normalized_ndim)
    return _run(x3, xa, n, False, eps, _params(weight, "weight", feat, 1.0), np.zeros((1, 1, 1)))


def instance_norm(x: Any, weight: Any = None, bias: Any = None, *, eps: float = 1e-5) -> np.ndarray:
    """InstanceNorm of (N, C, ...): each (sample, channel) normalized over its spatial values."""
    xa = np.asarray(x)
    if xa.ndim < 3:
        raise ShapeError(expected("an array (N, C, spatial...)", "x.shape", xa.shape))
    return group_norm(xa, xa.shape[1], weight, bias, eps=eps).y


def instance_norm_tracked(
    x: Any,
    running_mean: Any,
    running_var: Any,
    *,
    training: bool,
    momentum: float = 0.1,
    eps: float = 1e-5,
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """InstanceNorm with running statistics (PyTorch ``track_running_stats=True``): ``(y, running_mean,
    running_var)``.

    Training normalizes each (sample, channel) by its own statistics and moves the running
    statistics (new-weight momentum) towards the *batch average* of the per-instance mean and
    unbiased variance; evaluation normalizes every instance with the running statistics.
    Running statistics are exact, then rounded once to their dtype.
    """
    from normspec.oracle.batchnorm import batch_norm
    from normspec.oracle.sqrtform import round_fraction

    xa = np.asarray(x)
    if xa.ndim < 3:
        raise ShapeError(expected("an array (N, C, spatial...)", "x.shape", xa.shape))
    rm, rv = np.asarray(running_mean), np.asarray(running_var)
    n, c = xa.shape[:2]
    if not training:
        res = batch_norm(xa, None, None, rm, rv, training=False, eps=eps, convention="torch_raw")
        return res.y, rm.copy(), rv.copy()
    y = instance_norm(xa, eps=eps)
    length = math.prod(xa.shape[2:])
    if length < 2:
        raise DegenerateInputError(expected("more than 1 value per instance", "x.shape", xa.shape))
    x3 = xa.reshape(1, n * c, length)
    fmt = format_of(xa.dtype, "x")
    s1, s2, _ = exact_sums(x3, fmt_bits=fmt.p)
    m = Fraction(float(momentum))
    sfmt = format_of(rm.dtype, "running_mean")
    new_m, new_v = np.empty(c), np.empty(c)
    for ch in range(c):
        means = [s1[i * c + ch] / length for i in range(n)]
        unbiased = [(s2[i * c + ch] / length - means[i] ** 2) * Fraction(length, length - 1) for i in range(n)]
        new_m[ch] = round_fraction((1 - m) * Fraction(float(rm[ch])) + m * sum(means, Fraction(0)) / n, sfmt)
        new_v[ch] = round_fraction((1 - m) * Fraction(float(rv[ch])) + m * sum(unbiased, Fraction(0)) / n, sfmt)
    return y, new_m.astype(rm.dtype), new_v.astype(rv.dtype)
