"""The rest of the family, in SymPy: LayerNorm, RMSNorm, GroupNorm, InstanceNorm.

Same core as BatchNorm (:mod:`normspec.spec.core`); what differs is which
values share the statistics and how the affine parameters are laid out.

>>> import sympy as sp
>>> xs = sp.symbols("x0:3", real=True)
>>> e = sp.Symbol("eps", positive=True)
>>> sp.simplify(sum(layer_norm(xs, [1, 1, 1], [0, 0, 0], e)))  # a normalized row sums to 0
0
"""

from __future__ import annotations

from collections.abc import Sequence

import sympy as sp
from normspec.spec.core import affine, biased_var, mean, normalize

__all__ = ["layer_norm", "rms_norm", "group_norm", "instance_norm", "layer_norm_backward", "rms_norm_backward"]


def layer_norm(
    xs: Sequence[sp.Expr], gammas: Sequence[sp.Expr], betas: Sequence[sp.Expr], eps: sp.Expr
) -> list[sp.Expr]:
    """One row: ``y_i = gamma_i (x_i - mean) / sqrt(var + eps) + beta_i``, per-element affine.

    Hazard: ``E[x^2] - E[x]^2`` cancels for rows like [40000, 40001, 40002, 40003]
    (onnxruntime#28463, tvm#19592).
    """
    m, v = mean(xs), biased_var(xs)
    return [affine(normalize(x, m, v, eps), g, b) for x, g, b in zip(xs, gammas, betas, strict=True)]


def rms_norm(xs: Sequence[sp.Expr], gammas: Sequence[sp.Expr], eps: sp.Expr) -> list[sp.Expr]:
    """One row: ``y_i = gamma_i x_i / sqrt(mean(x^2) + eps)``: no centring.

    Hazard: Keras <= 3.10's ``rms_scaling`` divided by the variance's root instead
    (keras 764ed95): the same only on zero-mean rows.
    """
    ms = sp.Add(*[x * x for x in xs]) / len(xs)
    return [g * x / sp.sqrt(ms + eps) for x, g in zip(xs, gammas, strict=True)]


def group_norm(
    channels: Sequence[Sequence[sp.Expr]],
    groups: int,
    gammas: Sequence[sp.Expr],
    betas: Sequence[sp.Expr],
    eps: sp.Expr,
) -> list[list[sp.Expr]]:
    """One sample: channels split into ``groups`` consecutive groups sharing statistics, per-channel affine.

    Hazard: ONNX GroupNormalization-18 took scale and bias per *group* (fixed in 21).
    """
    per = len(channels) // groups
    out: list[list[sp.Expr]] = []
    for g in range(groups):
        block = [x for ch in channels[g * per : (g + 1) * per] for x in ch]
        m, v = mean(block), biased_var(block)
        for c in range(g * per, (g + 1) * per):
            out.append([affine(normalize(x, m, v, eps), gammas[c], betas[c]) for x in channels[c]])
    return out


def instance_norm(
    channels: Sequence[Sequence[sp.Expr]], gammas: Sequence[sp.Expr], betas: Sequence[sp.Expr], eps: sp.Expr
) -> list[list[sp.Expr]]:
    """One sample: each channel normalized over its own values (GroupNorm with one channel per group)."""
    out = []
    for ch, g, b in zip(channels, gammas, betas, strict=True):
        m, v = mean(ch), biased_var(ch)
        out.append([affine(normalize(x, m, v, eps), g, b) for x in ch])
    return out


def layer_norm_backward(
    xs: Sequence[sp.Expr], dys: Sequence[sp.Expr], gammas: Sequence[sp.Expr], eps: sp.Expr
) -> list[sp.Expr]:
    """Closed-form dx of one row: with ``g_i = gamma_i dy_i``,
    ``dx_i = (n g_i - sum(g) - xhat_i sum(g xhat)) / (n sigma)``."""
    n = len(xs)
    m, sigma = mean(xs), sp.sqrt(biased_var(xs) + eps)
    xhat = [(x - m) / sigma for x in xs]
    gs = [g * d for g, d in zip(gammas, dys, strict=True)]
    sg, sgx = sp.Add(*gs), sp.Add(*[g * h for g, h in zip(gs, xhat, strict=True)])
    return [(n * g - sg - h * sgx) / (n * sigma) for g, h in zip(gs, xhat, strict=True)]


def group_norm_backward(
    channels: Sequence[Sequence[sp.Expr]],
    dys: Sequence[Sequence[sp.Expr]],
    groups: int,
    gammas: Sequence[sp.Expr],
    eps: sp.Expr,
) -> list[list[sp.Expr]]:
    """Closed-form dx of one GroupNorm sample: each group is one LayerNorm row over its values,
    with each channel's gamma repeated over that channel's values.  InstanceNorm is the case
    ``groups == len(channels)``."""
    per = len(channels) // groups
    out: list[list[sp.Expr]] = []
    for g in range(groups):
        chans = range(g * per, (g + 1) * per)
        xs = [x for c in chans for x in channels[c]]
        ds = [d for c in chans for d in dys[c]]
        gs = [gammas[c] for c in chans for _ in channels[c]]
        flat = layer_norm_backward(xs, ds, gs, eps)
        k = 0
        for c in chans:
            out.append(flat[k : k + len(channels[c])])
            k += len(channels[c])
    return out


def rms_norm_backward(
    xs: Sequence[sp.Expr], dys: Sequence[sp.Expr], gammas: Sequence[sp.Expr], eps: sp.Expr
) -> list[sp.Expr]:
    """Closed-form dx of one RMSNorm row: with ``g_i = gamma_i dy_i`` and ``r = sqrt(mean(x^2) + eps)``,
    ``dx_i = g_i / r - x_i sum(g x) / (n r^3)``."""
    n = len(xs)
    r = sp.sqrt(sp.Add(*[x * x for x in xs]) / n + eps)
    gs = [g * d for g, d in zip(gammas, dys, strict=True)]
    sgx = sp.Add(*[g * x for g, x in zip(gs, xs, strict=True)])
    return [g / r - x * sgx / (n * r**3) for g, x in zip(gs, xs, strict=True)]
