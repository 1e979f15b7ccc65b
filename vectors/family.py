"""The family layers' battery and exact outputs, shared by the vectors and the family audit.

:func:`family_battery` names the cases (LayerNorm, RMSNorm, GroupNorm, InstanceNorm) that
``normspec vectors generate`` writes and ``normspec audit`` runs; :func:`exact_family_output`
is the correctly rounded ``y`` of one of them under a profile.  Here, below
:mod:`normspec.targets`, so that the vectors need not import the audit targets.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

import numpy as np

from normspec.errors import InvalidArgumentError, expected

if TYPE_CHECKING:
    from normspec.spec.conventions import Convention

__all__ = [
    "exact_family_gradients",
    "exact_family_output",
    "exact_family_outputs",
    "family_arguments",
    "family_backward",
    "family_battery",
    "family_forward",
    "per_channel_affine",
]

F32 = np.float32
Case = dict[str, Any]


def per_channel_affine(weight: Any, bias: Any, channels: int, groups: int) -> tuple[np.ndarray, np.ndarray]:
    """Scale and bias given one per group (ONNX GroupNormalization-18, MXNet 1.9) repeated over each
    group's channels: the same formula in the per-channel form the oracle takes."""
    return np.repeat(weight, channels // groups), np.repeat(bias, channels // groups)


def family_arguments(
    conv: Convention, x: Any, weight: Any, bias: Any, eps: float, groups: Any
) -> tuple[tuple[Any, ...], dict[str, Any]]:
    """The family protocol's ``(x, weight, bias, eps, groups)`` as the arguments of
    :func:`normspec.oracle.forward` under ``conv``: eps NaN stands for None (the profile's
    default); RMSNorm ignores the bias and MeanVarianceNormalization both parameters (the cases
    carry ones and zeros for them)."""
    layer = conv.layer
    args = (
        x,
        None if layer == "mean_variance_norm" else weight,
        None if layer in ("rms_norm", "mean_variance_norm") else bias,
    )
    eps_v = float(eps)
    return args, {
        "eps": None if np.isnan(eps_v) else eps_v,
        "groups": int(groups) if layer == "group_norm" else None,
    }


def family_forward(
    conv: Convention, x: Any, weight: Any, bias: Any, eps: float, groups: Any, residual: Any = None
) -> Any:
    """The family protocol ``f(x, weight, bias, eps, groups) -> y`` on the oracle, under ``conv``;
    a profile with a fused residual add takes ``residual`` too and returns ``(y, new residual)``."""
    from normspec.oracle import forward

    args, kwargs = family_arguments(conv, x, weight, bias, eps, groups)
    if conv.residual:
        res = forward(conv, *args, **kwargs, residual=residual)
        return res.y, res.residual
    return forward(conv, *args, **kwargs).y


def family_backward(
    conv: Convention,
    x: Any,
    weight: Any,
    bias: Any,
    eps: float,
    groups: Any,
    dy: Any,
    residual: Any = None,
    dresidual: Any = None,
) -> dict[str, np.ndarray]:
    """The exact gradients of the family protocol on the oracle, under ``conv`` (LayerNorm and
    RMSNorm profiles): ``dx`` and ``dweight``, and ``dbias`` for LayerNorm; each correctly rounded.
    Under a profile with cast points, the gradient autograd takes through the profile's
    formula, exact between the roundings it makes (``normspec.oracle.rms_norm_backward``); under
    one with a fused residual add, ``dx`` (also the residual's gradient) includes ``dresidual``,
    the upstream gradient of the new residual."""
    from normspec.oracle import layer_norm_backward, rms_norm_backward

    if conv.layer not in GRADIENT_LAYERS:
        raise InvalidArgumentError(expected("a LayerNorm or RMSNorm profile", "convention", conv.name))
    args, kwargs = family_arguments(conv, x, weight, bias, eps, groups)
    if conv.layer == "layer_norm":
        g = layer_norm_backward(x, dy, 1, args[1], eps=kwargs["eps"], convention=conv)
    else:
        g = rms_norm_backward(x, dy, 1, args[1], eps=kwargs["eps"], convention=conv, residual=residual,
                              dresidual=dresidual)  # fmt: skip
    out = {"dx": g.dx, "dweight": g.dweight}
    if conv.layer == "layer_norm":
        out["dbias"] = g.dbias
    return out


# the family layers whose vectors carry exact gradients
GRADIENT_LAYERS = ("layer_norm", "rms_norm")


def exact_family_gradients(
    conv: Convention, case: Case, dy: np.ndarray, dresidual: np.ndarray | None = None
) -> dict[str, np.ndarray]:
    """The exact gradients of a battery case for the upstream gradient ``dy`` (and, under a fused
    residual add, ``dresidual``) under ``conv``."""
    return family_backward(
        conv, case["x"][0], case["weight"], case["bias"], float(case["eps"]), case["groups"], dy,
        case.get("residual"), dresidual,
    )  # fmt: skip


def exact_family_output(conv: Convention, case: Case) -> np.ndarray:
    """The correctly rounded y of a battery case under ``conv`` (its eps precision and affine form)."""
    return exact_family_outputs(conv, case)["y"]


def exact_family_outputs(conv: Convention, case: Case) -> dict[str, np.ndarray]:
    """``{"y": ...}`` of a battery case, with ``"residual_out"`` (the new residual stream, correctly
    rounded) under a profile with a fused residual add."""
    got = family_forward(
        conv, case["x"][0], case["weight"], case["bias"], float(case["eps"]), case["groups"], case.get("residual")
    )
    return {"y": got[0], "residual_out": got[1]} if conv.residual else {"y": got}


def family_battery(conv: Convention, seed: int = 0) -> list[tuple[str, Case, str]]:
    """(name, case, note) for a family layer; under a profile with a fused residual add each case
    carries a ``residual`` of x's shape and dtype."""
    rng = np.random.default_rng(seed)
    eps = float("nan") if conv.eps_default is None else conv.eps_default  # NaN stands for "eps=None"
    nd = conv.layer in ("group_norm", "instance_norm", "mean_variance_norm")
    # MeanVarianceNormalization's default axes (0, 2, 3) need a 4-D input
    shape = (2, 3, 2, 4) if conv.layer == "mean_variance_norm" else (4, 6, 5) if nd else (6, 8)
    feat = shape[1] if nd else shape[-1]
    rows: list[tuple[str, np.ndarray, str]] = [
        ("random", rng.standard_normal(shape), "standard normal"),
        ("large_mean_rows", rng.standard_normal(shape) + 2000, "pytorch#51102: mean 2000"),
        (
            "raw_moments_trigger",
            np.broadcast_to(40000 + np.arange(shape[-1]) % 4, shape).astype(np.float64),
            "onnxruntime#28463, tvm#19592: [40000, 40001, 40002, 40003]",
        ),
        ("constant", np.full(shape, 1.2345678e7), "exact output beta"),
        ("huge_magnitude", rng.choice([-1.0, 1.0], shape) * 1e30 * (1 + rng.random(shape)), "squares overflow float32"),
    ]
    out = []
    for name, x, note in rows:
        case = {
            "x": x.astype(F32)[None],
            "weight": (1 + 0.5 * rng.standard_normal(feat)).astype(F32),
            "bias": rng.standard_normal(feat).astype(F32),
            "eps": np.array(eps),
            "training": np.array(True),
            "momentum": np.array(0.0),
            "running_mean": np.zeros(feat, F32),
            "running_var": np.ones(feat, F32),
            "groups": np.array(2 if conv.layer == "group_norm" else 1),
        }
        if conv.affine == "none":
            case["weight"], case["bias"] = np.ones(feat, F32), np.zeros(feat, F32)
        elif conv.layer == "rms_norm":  # RMSNorm has no bias: an implementation that adds one adds 0
            case["bias"] = np.zeros(feat, F32)
        elif conv.affine == "per_group":
            case["weight"], case["bias"] = case["weight"][: int(case["groups"])], case["bias"][: int(case["groups"])]
        out.append((name, case, note))
    if conv.layer in ("layer_norm", "rms_norm") and (conv.weight_format == "input" or conv.narrow_inputs):
        out.extend(_llm_rows(conv, eps, rng))
    if conv.residual:  # a fused add: a residual stream three times the activations, so that sums round
        for _, case, _ in out:
            x = case["x"][0]
            case["residual"] = (3 * rng.standard_normal(x.shape)).astype(x.dtype)
    return out


def _llm_rows(conv: Convention, eps: float, rng: np.random.Generator) -> list[tuple[str, Case, str]]:
    """Cases as LLM activations come: bfloat16 (and float16) rows of 4096 and 8192, a small variance,
    an outlier channel, all-equal rows; the parameters in the input's dtype, as a model stores them
    (or in the format the profile stores them in)."""
    from normspec.oracle.formats import bfloat16_dtype

    bf16 = bfloat16_dtype()
    rows: list[tuple[str, Any, np.ndarray, str]] = [
        ("f16_rows_4096", np.float16, rng.standard_normal((4, 4096)), "float16 rows of 4096"),
    ]
    if bf16 is not None:  # without ml_dtypes (the bfloat16 extra) only the float16 rows run
        outlier = rng.standard_normal((4, 4096))
        outlier[:, 17] = 1e4
        rows += [
            ("bf16_rows_4096", bf16, rng.standard_normal((4, 4096)), "bfloat16 rows of 4096"),
            ("bf16_rows_8192", bf16, rng.standard_normal((2, 8192)), "bfloat16 rows of 8192"),
            ("bf16_small_variance", bf16, 0.5 + 1e-3 * rng.standard_normal((4, 4096)), "pytorch#189581: small var"),
            ("bf16_outlier_channel", bf16, outlier, "one channel at 1e4, as LLM activations have"),
            ("bf16_all_equal", bf16, np.full((4, 4096), 2.0), "all-equal rows: exact output weight"),
        ]
    out = []
    for name, dtype, x, note in rows:
        feat = x.shape[-1]
        w = np.asarray(1 + 0.1 * rng.standard_normal(feat) - conv.weight_offset)  # Gemma's weights: centred
        bias = np.asarray(rng.standard_normal(feat) if conv.layer == "layer_norm" else np.zeros(feat))
        # parameters stored as the profile says (a float32 variable under a mixed policy), else in x's dtype
        pdtype = np.dtype(conv.weight_format) if conv.weight_format not in (None, "input") else dtype
        case = {
            "x": x.astype(dtype)[None],
            "weight": w.astype(pdtype),
            "bias": bias.astype(pdtype),
            "eps": np.array(eps),
            "training": np.array(True),
            "momentum": np.array(0.0),
            "running_mean": np.zeros(feat, F32),
            "running_var": np.ones(feat, F32),
            "groups": np.array(1),
        }
        out.append((name, case, note))
    return out
