"""The bug zoo: known wrong BatchNorms, each beside the correct formula.

Every :class:`Variant` records where it was seen (rows of
``docs/bug-corpus.md``), its precondition, and how it behaves on
concrete input (:meth:`Variant.behaviour`): formula variants are evaluated
with 120-bit mpmath and rounded to float32, numerical variants *emulate the
float32 evaluation order exactly* with numpy float32 operations, so their
witnesses are real.  Formula variants also carry SymPy expressions
(:meth:`Variant.formulas`) for the identity checker.  Witnesses (small
inputs on which a variant and the correct formula differ) are found by
:mod:`normspec.proofs.witnesses`, which checks them against the oracle.

A case is a dict with keys ``x`` (float32 array, channel axis 1), ``weight``,
``bias``, ``running_mean``, ``running_var`` (float32 per channel),
``training`` (bool), ``momentum`` (PyTorch's new-weight momentum), ``eps``.
Behaviours return a dict with the outputs they change (``y``,
``running_mean``, ``running_var``), as float32 arrays.

>>> sorted(VARIANTS)[:3]
['batch_stats_at_eval', 'eps_outside_sqrt', 'folded_affine_float32']
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import Any, Literal

import mpmath
import numpy as np
import sympy as sp
from normspec.spec.conventions import running_update

from normspec.errors import UnknownNameError, expected

__all__ = ["Variant", "VARIANTS", "get_variant"]

Case = dict[str, Any]
Outputs = dict[str, np.ndarray]

_x, _m, _v, _g, _b, _e, _r, _bs, _mom = sp.symbols("x mean var gamma beta eps r b m", real=True)


def _axes(x: np.ndarray) -> tuple[int, ...]:
    return (0, *range(2, x.ndim))


def _bshape(x: np.ndarray) -> tuple[int, ...]:
    return (1, -1) + (1,) * (x.ndim - 2)


def _mp_stats(x: np.ndarray) -> tuple[list[mpmath.mpf], list[mpmath.mpf], int]:
    """Per-channel mean and biased variance at 120 bits (exact for small inputs)."""
    xs = np.moveaxis(x, 1, 0).reshape(x.shape[1], -1)
    means, variances = [], []
    with mpmath.workprec(400):
        for row in xs:
            vals = [mpmath.mpf(float(v)) for v in row]
            m = mpmath.fsum(vals) / len(vals)
            means.append(m)
            variances.append(mpmath.fsum((v - m) ** 2 for v in vals) / len(vals))
    return means, variances, xs.shape[1]


def _normalize(
    x: np.ndarray, case: Case, means: list, variances: list, denom: Callable[[mpmath.mpf, mpmath.mpf], mpmath.mpf]
) -> np.ndarray:
    """y = gamma (x - mean) / denom(var, eps) + beta at 120 bits, then float32."""
    xs = np.moveaxis(x, 1, 0)
    out = np.empty(xs.shape, dtype=np.float32)
    with mpmath.workprec(120):
        eps = mpmath.mpf(float(case["eps"]))
        for idx in np.ndindex(xs.shape):
            c = idx[0]
            y = mpmath.mpf(float(case["weight"][c])) * (mpmath.mpf(float(xs[idx])) - means[c]) / denom(
                variances[c], eps
            ) + mpmath.mpf(float(case["bias"][c]))
            out[idx] = np.float32(float(y))
    return np.moveaxis(out, 0, 1)


def _inside(v: mpmath.mpf, e: mpmath.mpf) -> mpmath.mpf:
    return mpmath.sqrt(v + e)


def _running(
    case: Case, means: list, variances: list, n: int, *, bessel: bool = True, direction: str = "new"
) -> Outputs:
    m = mpmath.mpf(float(case["momentum"]))
    rm, rv = [], []
    with mpmath.workprec(120):
        for c in range(len(means)):
            factor = mpmath.mpf(n) / (n - 1) if bessel and n > 1 else (mpmath.nan if bessel else 1)
            b_var = variances[c] * factor
            old_m, old_v = mpmath.mpf(float(case["running_mean"][c])), mpmath.mpf(float(case["running_var"][c]))
            rm.append(running_update(old_m, means[c], m, direction))
            rv.append(running_update(old_v, b_var, m, direction))
    return {
        "running_mean": np.array([float(v) for v in rm], dtype=np.float32),
        "running_var": np.array([float(v) for v in rv], dtype=np.float32),
    }


@dataclass(frozen=True)
class Variant:
    """One wrong BatchNorm.

    ``kind`` is ``"formula"`` (a different function) or ``"numerical"``
    (the right function, evaluated in a float32 order that loses it).
    ``output`` names the output the bug shows in; ``convention`` is the
    correct profile it is compared with.
    """

    name: str
    kind: Literal["formula", "numerical"]
    description: str
    provenance: tuple[str, ...]
    precondition: str
    output: Literal["y", "running_mean", "running_var"]
    training: bool
    behaviour: Callable[[Case], Outputs]
    formulas: Callable[[], tuple[sp.Expr, sp.Expr]] | None = None
    convention: str = "torch_raw"
    witness_wants: Literal["differs", "nan"] = "differs"
    operator: Literal["batch_norm", "group_norm", "layer_norm"] = "batch_norm"


# ------------------------------------------------------------------ formula variants


def _eps_outside(case: Case) -> Outputs:
    x = case["x"]
    if case["training"]:
        means, variances, _ = _mp_stats(x)
    else:
        means = [mpmath.mpf(float(v)) for v in case["running_mean"]]
        variances = [mpmath.mpf(float(v)) for v in case["running_var"]]
    return {"y": _normalize(x, case, means, variances, lambda v, e: mpmath.sqrt(v) + e)}


def _unbiased_normalize(case: Case) -> Outputs:
    means, variances, n = _mp_stats(case["x"])
    unb = [v * n / (n - 1) if n > 1 else mpmath.nan for v in variances]
    return {"y": _normalize(case["x"], case, means, unb, _inside)}


def _running_var_biased(case: Case) -> Outputs:
    means, variances, n = _mp_stats(case["x"])
    return _running(case, means, variances, n, bessel=False)


def _momentum_swapped(case: Case) -> Outputs:
    means, variances, n = _mp_stats(case["x"])
    return _running(case, means, variances, n, direction="old")


def _update_skipped(case: Case) -> Outputs:
    return {
        "running_mean": np.asarray(case["running_mean"], np.float32).copy(),
        "running_var": np.asarray(case["running_var"], np.float32).copy(),
    }


def _batch_stats_at_eval(case: Case) -> Outputs:
    means, variances, _ = _mp_stats(case["x"])
    return {"y": _normalize(case["x"], case, means, variances, _inside)}


def _running_stats_in_training(case: Case) -> Outputs:
    means = [mpmath.mpf(float(v)) for v in case["running_mean"]]
    variances = [mpmath.mpf(float(v)) for v in case["running_var"]]
    return {"y": _normalize(case["x"], case, means, variances, _inside)}


def _tf_eps_clamp(case: Case) -> Outputs:
    clamped = dict(case, eps=float(np.float32(max(float(case["eps"]), 1.001e-5))))
    means, variances, _ = _mp_stats(case["x"])
    return {"y": _normalize(case["x"], clamped, means, variances, _inside)}


def _onnx_bn9_blended(case: Case) -> Outputs:
    """Inference node normalizing with momentum-blended statistics (onnx#5799)."""
    means, variances, _ = _mp_stats(case["x"])
    m = mpmath.mpf(0.9)
    with mpmath.workprec(120):
        # the inference node blends the batch statistics into the running ones, old-weight
        rm = [mpmath.mpf(float(r)) for r in case["running_mean"]]
        rv = [mpmath.mpf(float(r)) for r in case["running_var"]]
        bm = [running_update(r, b, m, "old") for r, b in zip(rm, means, strict=True)]
        bv = [running_update(r, v, m, "old") for r, v in zip(rv, variances, strict=True)]
    return {"y": _normalize(case["x"], case, bm, bv, _inside)}


# ------------------------------------------------------------------ numerical variants


def _raw_moments_float32(case: Case) -> Outputs:
    """E[x^2] - E[x]^2 with float32 sums, no clamp (Keras 3 torch/NumPy backends)."""
    x = np.asarray(case["x"], np.float32)
    axes, shape = _axes(x), _bshape(x)
    with np.errstate(invalid="ignore", divide="ignore"):
        mean = np.mean(x, axis=axes, dtype=np.float32)
        mean_sq = np.mean(np.square(x), axis=axes, dtype=np.float32)
        var = mean_sq - np.square(mean)
        inv = np.float32(1) / np.sqrt(var + np.float32(case["eps"]))
        y = (x - mean.reshape(shape)) * (inv * case["weight"]).reshape(shape) + case["bias"].reshape(shape)
    return {"y": y.astype(np.float32)}


def _folded_affine_float32(case: Case) -> Outputs:
    """PyTorch CPU's order (pytorch#5410): float64 statistics, ``a = float32(gamma / sqrt(var + eps))``,
    ``shift = float32(beta - mean * a)``, then ``x * a + shift`` fused: the product and sum in float64
    (``x * a`` is exact there), one rounding to float32."""
    x = np.asarray(case["x"], np.float32)
    shape = _bshape(x)
    xd = x.astype(np.float64)
    mean = xd.mean(axis=_axes(x))
    var = ((xd - mean.reshape(shape)) ** 2).mean(axis=_axes(x))
    a = (np.asarray(case["weight"], np.float64) / np.sqrt(var + float(case["eps"]))).astype(np.float32)
    shift = (np.asarray(case["bias"], np.float64) - mean * a).astype(np.float32)
    return {"y": (xd * a.reshape(shape).astype(np.float64) + shift.reshape(shape)).astype(np.float32)}


def _n1_bessel_nan(case: Case) -> Outputs:
    means, variances, n = _mp_stats(case["x"])
    return _running(case, means, variances, n, bessel=True)


def _groupnorm18_per_group(case: Case) -> Outputs:
    """GroupNormalization-18: scale and bias per *group*; a per-channel model exported to it
    keeps one value per group (here the group's first channel)."""
    x = np.asarray(case["x"], np.float64)
    n, c = x.shape[0], x.shape[1]
    g = int(case["groups"])
    per = c // g
    xs = x.reshape(n, g, -1)
    out = np.empty(xs.shape, np.float32)
    with mpmath.workprec(120):
        eps = mpmath.mpf(float(case["eps"]))
        for i in range(n):
            for j in range(g):
                vals = [mpmath.mpf(float(v)) for v in xs[i, j]]
                m = mpmath.fsum(vals) / len(vals)
                var = mpmath.fsum((v - m) ** 2 for v in vals) / len(vals)
                scale = mpmath.mpf(float(case["weight"][j * per]))
                shift = mpmath.mpf(float(case["bias"][j * per]))
                for k, v in enumerate(vals):
                    out[i, j, k] = np.float32(float(scale * (v - m) / mpmath.sqrt(var + eps) + shift))
    return {"y": out.reshape(x.shape)}


def _ln_rows(case: Case) -> tuple[np.ndarray, Any]:
    x = np.asarray(case["x"])
    return x.reshape(-1, x.shape[-1]), x.dtype


def _keras_rms_scaling(case: Case) -> Outputs:
    """Keras <= 3.10 LayerNormalization(rms_scaling=True): x * gamma / sqrt(var + eps), the variance
    where the mean square belongs (keras 764ed95)."""
    rows, dt = _ln_rows(case)
    out = np.empty(rows.shape, np.float32)
    with mpmath.workprec(120):
        for i, row in enumerate(rows):
            vals = [mpmath.mpf(float(v)) for v in row]
            m = mpmath.fsum(vals) / len(vals)
            var = mpmath.fsum((v - m) ** 2 for v in vals) / len(vals)
            for j, v in enumerate(vals):
                out[i, j] = np.float32(
                    float(v * mpmath.mpf(float(case["weight"][j])) / mpmath.sqrt(var + mpmath.mpf(float(case["eps"]))))
                )
    return {"y": out.reshape(case["x"].shape).astype(dt)}


def _ln_raw_moments(case: Case) -> Outputs:
    """LayerNorm with E[x^2] - E[x]^2 in the input's precision (onnxruntime#28463, tvm#19592)."""
    rows, dt = _ln_rows(case)
    t = dt.type
    with np.errstate(all="ignore"):
        m = rows.mean(axis=1, keepdims=True, dtype=dt)
        var = (np.square(rows).mean(axis=1, keepdims=True, dtype=dt) - np.square(m)).astype(dt)
        y = (rows - m) / np.sqrt(var + t(case["eps"])) * case["weight"].astype(dt) + case["bias"].astype(dt)
    return {"y": y.astype(dt).reshape(case["x"].shape)}


def _ln_raw_moments_clamped(case: Case) -> Outputs:
    """LayerNorm with max(0, E[x^2] - E[x]^2) in float32: no NaN, but a variance cancelled to ~0
    blows the output up by 1/sqrt(eps) (pytorch#51102: output variance ~3e4 for rows of mean 2000)."""
    rows, dt = _ln_rows(case)
    t = dt.type
    with np.errstate(all="ignore"):
        m = rows.mean(axis=1, keepdims=True, dtype=dt)
        var = np.maximum(np.square(rows).mean(axis=1, keepdims=True, dtype=dt) - np.square(m), t(0)).astype(dt)
        y = (rows - m) / np.sqrt(var + t(case["eps"])) * case["weight"].astype(dt) + case["bias"].astype(dt)
    return {"y": y.astype(dt).reshape(case["x"].shape)}


def _ln_in_input_precision(case: Case) -> Outputs:
    """LayerNorm evaluated in the input's precision with eps cast to it: eps = 1e-12 is 0 in float16,
    so a constant row gives 0/0 (TF PR #24979)."""
    rows, dt = _ln_rows(case)
    t = dt.type
    with np.errstate(all="ignore"):
        m = rows.mean(axis=1, keepdims=True, dtype=dt)
        var = np.square(rows - m).mean(axis=1, keepdims=True, dtype=dt)
        y = (rows - m) / np.sqrt(var + t(case["eps"])) * case["weight"].astype(dt) + case["bias"].astype(dt)
    return {"y": y.astype(dt).reshape(case["x"].shape)}


def _eps_formulas() -> tuple[sp.Expr, sp.Expr]:
    return _g * (_x - _m) / sp.sqrt(_v + _e) + _b, _g * (_x - _m) / (sp.sqrt(_v) + _e) + _b


def _momentum_formulas() -> tuple[sp.Expr, sp.Expr]:
    return (1 - _mom) * _r + _mom * _bs, _mom * _r + (1 - _mom) * _bs


_VARIANTS = [
    Variant(
        "eps_outside_sqrt",
        "formula",
        "eps added to the standard deviation, outside the square root: (x - mean) / (sqrt(var) + eps)",
        (
            "docs/bug-corpus.md #32 keras-team/keras PR #10427 (CNTK backend)",
            "docs/bug-corpus.md #33 keras-applications#12",
        ),
        "var small against eps",
        "y",
        True,
        _eps_outside,
        _eps_formulas,
    ),
    Variant(
        "unbiased_normalize",
        "formula",
        "normalizes with the unbiased variance var * n / (n - 1)",
        ("docs/bug-corpus.md #11 pytorch#19902 (the documented confusion)", "docs/bug-corpus.md #37 keras#8982"),
        "n >= 2",
        "y",
        True,
        _unbiased_normalize,
        lambda: (
            _g * (_x - _m) / sp.sqrt(_v + _e) + _b,
            _g * (_x - _m) / sp.sqrt(_v * sp.Symbol("n") / (sp.Symbol("n") - 1) + _e) + _b,
        ),
    ),
    Variant(
        "running_var_biased",
        "formula",
        "feeds the biased batch variance to a running variance that should be unbiased (or the reverse)",
        (
            "docs/bug-corpus.md #53 Paddle PR #68159",
            "docs/bug-corpus.md #37 keras#10443",
            "docs/bug-corpus.md #1 apache/mxnet#18751",
        ),
        "training, n >= 2",
        "running_var",
        True,
        _running_var_biased,
    ),
    Variant(
        "momentum_swapped",
        "formula",
        "momentum weighs the old value where it should weigh the new one",
        ("docs/bug-corpus.md #48 microsoft/onnxscript PR #1289",),
        "training, momentum != 1/2",
        "running_mean",
        True,
        _momentum_swapped,
        _momentum_formulas,
    ),
    Variant(
        "running_update_skipped",
        "formula",
        "running statistics not updated by a training step (updated in backward only, or UPDATE_OPS not run)",
        (
            "docs/bug-corpus.md #2 apache/mxnet#14357",
            "docs/bug-corpus.md #27 tensorflow#11965",
            "docs/bug-corpus.md #39 keras-core#338",
        ),
        "training",
        "running_mean",
        True,
        _update_skipped,
    ),
    Variant(
        "batch_stats_at_eval",
        "formula",
        "evaluation normalizes with the batch statistics",
        ("docs/bug-corpus.md #36 keras#4762 (frozen BN kept batch statistics)",),
        "evaluation",
        "y",
        False,
        _batch_stats_at_eval,
    ),
    Variant(
        "running_stats_in_training",
        "formula",
        "training normalizes with the running statistics",
        ("docs/bug-corpus.md #36 keras PR #9965 (trainable=False redefined as inference)",),
        "training",
        "y",
        True,
        _running_stats_in_training,
    ),
    Variant(
        "n1_bessel_nan",
        "formula",
        "Bessel's n/(n-1) at one value per channel: NaN running variance",
        ("docs/bug-corpus.md #12 pytorch#1381, #77014", "docs/bug-corpus.md #57 FluxML/Flux.jl#1992"),
        "training, n = 1",
        "running_var",
        True,
        _n1_bessel_nan,
        convention="tf_fused_batch_norm_v3",
    ),
    Variant(
        "tf_eps_clamp",
        "formula",
        "eps silently raised to 1.001e-5 (TF fused batch norm)",
        ("docs/bug-corpus.md #24 tensorflow#8090",),
        "eps < 1.001e-5 and var small",
        "y",
        True,
        _tf_eps_clamp,
    ),
    Variant(
        "onnx_bn9_blended",
        "formula",
        "ONNX BatchNormalization-9 reference: a one-output inference node normalizes with momentum-blended "
        "statistics (momentum 0.9)",
        ("docs/bug-corpus.md #46 onnx/onnx#5799",),
        "evaluation",
        "y",
        False,
        _onnx_bn9_blended,
    ),
    Variant(
        "groupnorm18_per_group_affine",
        "formula",
        "GroupNorm with scale and bias per group instead of per channel (ONNX GroupNormalization-18, deprecated in 21;"
        " MXNet <= 1.9 GroupNorm)",
        (
            "docs/bug-corpus.md #49 ONNX GroupNormalization-18",
            "apache/mxnet#17139 (fixed by #18199 on master only; reproduced on mxnet 1.9.1)",
        ),
        "C/G > 1 and gamma varying within a group",
        "y",
        True,
        _groupnorm18_per_group,
        operator="group_norm",
        convention="torch_group_norm",
    ),
    Variant(
        "keras_rms_scaling_variance",
        "formula",
        "LayerNormalization(rms_scaling=True) scaled by the variance, not the mean square (Keras <= 3.10)",
        ("docs/bug-corpus.md #41 keras commit 764ed95 (PR #21352)",),
        "a row with nonzero mean",
        "y",
        True,
        _keras_rms_scaling,
        operator="layer_norm",
        convention="torch_layer_norm",
    ),
    Variant(
        "layer_norm_raw_moments",
        "numerical",
        "LayerNorm with E[x^2] - E[x]^2 in float32: negative variance, NaN",
        ("docs/bug-corpus.md #50 microsoft/onnxruntime#28463, #21935", "docs/bug-corpus.md #51 apache/tvm#19592"),
        "|mean| >> std within a row",
        "y",
        True,
        _ln_raw_moments,
        witness_wants="nan",
        operator="layer_norm",
        convention="torch_layer_norm",
    ),
    Variant(
        "layer_norm_large_mean_clamped",
        "numerical",
        "LayerNorm with max(0, E[x^2] - E[x]^2) in float32: rows of large mean come out scaled by 1/sqrt(eps)",
        ("docs/bug-corpus.md #14 pytorch#51102",),
        "|mean| >> std within a row",
        "y",
        True,
        _ln_raw_moments_clamped,
        operator="layer_norm",
        convention="torch_layer_norm",
    ),
    Variant(
        "layer_norm_fp16_tiny_eps",
        "numerical",
        "LayerNorm in float16 with eps = 1e-12, which rounds to 0: a constant row gives 0/0",
        ("docs/bug-corpus.md #26 tensorflow PR #24979",),
        "float16, a row of equal values",
        "y",
        True,
        _ln_in_input_precision,
        witness_wants="nan",
        operator="layer_norm",
        convention="torch_layer_norm",
    ),
    Variant(
        "raw_moments_float32",
        "numerical",
        "E[x^2] - E[x]^2 in float32 without a clamp: negative variance, NaN output",
        (
            "docs/bug-corpus.md #38 keras PR #18795",
            "docs/bug-corpus.md #43 google/flax#1491",
            "docs/bug-corpus.md #50 onnxruntime#28463",
        ),
        "|mean| >> std",
        "y",
        True,
        _raw_moments_float32,
        witness_wants="nan",
    ),
    Variant(
        "folded_affine_float32",
        "numerical",
        "the folded affine x * a + (beta - mean * a) in float32 cancels for large |mean|",
        ("docs/bug-corpus.md #13 pytorch#5410",),
        "|mean * a| >> |y|",
        "y",
        True,
        _folded_affine_float32,
    ),
]

VARIANTS: dict[str, Variant] = {v.name: v for v in _VARIANTS}


def get_variant(name: str) -> Variant:
    try:
        return VARIANTS[name]
    except KeyError:
        raise UnknownNameError(expected("one of " + ", ".join(VARIANTS), "variant", name)) from None
