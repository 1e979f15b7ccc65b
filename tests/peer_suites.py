"""Other libraries' own test inputs for the normalization operators, as cases for the oracle.

Two collections, read from the installed packages (nothing is copied into normspec):

- PyTorch's OpInfo sample inputs (``torch.testing._internal.common_methods_invocations.op_db``)
  for every normalization operator, on CPU in float32 and float64, run through torch itself;
- ONNX's backend node tests (``onnx.backend.test.case.node``) for BatchNormalization,
  LayerNormalization, GroupNormalization, InstanceNormalization, RMSNormalization and
  MeanVarianceNormalization, with the expected outputs ONNX ships.

Each case says how to call the oracle, what the peer returned under which output name, and how an
independent exact computation (``independent.reference_norm``) reaches the same values.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from fractions import Fraction
from typing import Any

import numpy as np
from independent import reference_eval, reference_norm, round_exact

# Cases where the peer is more than 1 ULP from the exact value: theirs, printed after the run.
FINDINGS: list[dict[str, Any]] = []


@dataclass
class PeerCase:
    suite: str  # "torch" or "onnx"
    name: str
    layer: str  # the oracle function
    args: dict[str, Any]  # keyword arguments of the oracle function (x first)
    peer: dict[str, np.ndarray]  # NormResult field -> what the peer returned
    reference: Callable[[], dict[str, np.ndarray]] = field(repr=False)


# ---------------------------------------------------------------- the independent side


def _update(old: np.ndarray, batch: list[Fraction | None], mom: Fraction, new_weight: bool) -> np.ndarray:
    out = np.empty_like(old)
    for c, (o, b) in enumerate(zip(old, batch, strict=True)):
        if b is None:
            out[c] = np.nan
            continue
        o = Fraction(float(o))
        out[c] = round_exact((1 - mom) * o + mom * b if new_weight else mom * o + (1 - mom) * b, old.dtype)
    return out


def _bn_reference(x, w, b, rm, rv, *, training, momentum, eps, unbiased, new_weight, stats_dtype):
    """BatchNorm over every axis but 1, written from the formula (not from the oracle)."""
    c = x.shape[1]
    gamma = np.ones(c) if w is None else w.astype(np.float64)
    beta = np.zeros(c) if b is None else b.astype(np.float64)
    shape = (1, c) + (1,) * (x.ndim - 2)
    red = [a for a in range(x.ndim) if a != 1]
    if not training:
        return {"y": reference_eval(x, gamma, beta, rm, rv, eps)}
    r = reference_norm(x, red, gamma.reshape(shape), beta.reshape(shape), eps, stats_dtype=stats_dtype)
    out = {"y": r["y"], "mean": r["mean"].reshape(c), "rstd": r["rstd"].reshape(c)}
    if rm is not None:
        n = x.size // c
        mom = Fraction(momentum)
        bessel = Fraction(n, n - 1) if unbiased and n > 1 else None if unbiased else Fraction(1)
        out["running_mean"] = _update(rm, r["means"], mom, new_weight)
        out["running_var"] = _update(rv, [None if bessel is None else v * bessel for v in r["vars"]], mom, new_weight)
    return out


def _trailing_reference(x, k, w, b, eps, *, centred):
    red = list(range(x.ndim - k, x.ndim))
    gamma = np.ones(x.shape[x.ndim - k :]) if w is None else w.astype(np.float64)
    beta = np.zeros(x.shape[x.ndim - k :]) if b is None else b.astype(np.float64)
    sd = np.float32 if x.dtype != np.float64 else np.float64
    r = reference_norm(x, red, gamma, beta, eps, centred=centred, stats_dtype=sd)
    return {"y": r["y"], "mean": r["mean"], "rstd": r["rstd"]}


def _group_reference(x, groups, w, b, eps):
    """GroupNorm with per-channel parameters: each sample's channels in ``groups`` blocks."""
    n, c = x.shape[:2]
    per, length = c // groups, int(np.prod(x.shape[2:], dtype=np.int64))
    xg = x.reshape(n, groups, per * length)
    wv = np.ones(c) if w is None else w.astype(np.float64)
    bv = np.zeros(c) if b is None else b.astype(np.float64)
    gamma = np.repeat(wv.reshape(groups, per), length, axis=1).reshape(1, groups, -1)
    beta = np.repeat(bv.reshape(groups, per), length, axis=1).reshape(1, groups, -1)
    r = reference_norm(xg, [2], gamma, beta, eps)
    return {"y": r["y"].reshape(x.shape), "mean": r["mean"].reshape(n, groups), "rstd": r["rstd"].reshape(n, groups)}


def _instance_reference(x, w, b, rm, rv, *, training, momentum, eps):
    n, c = x.shape[:2]
    shape = (1, c) + (1,) * (x.ndim - 2)
    gamma = np.ones(c) if w is None else w.astype(np.float64)
    beta = np.zeros(c) if b is None else b.astype(np.float64)
    if not training:  # every instance of a channel normalized with the channel's running statistics
        return {"y": reference_eval(x, gamma, beta, rm, rv, eps)}
    gamma, beta = gamma.reshape(shape), beta.reshape(shape)
    r = reference_norm(x, list(range(2, x.ndim)), gamma, beta, eps)
    out = {"y": r["y"]}
    if rm is not None:
        m = int(np.prod(x.shape[2:], dtype=np.int64))
        means = [sum((r["means"][i * c + ch] for i in range(n)), Fraction(0)) / n for ch in range(c)]
        bessel = Fraction(m, m - 1) if m > 1 else None
        vars_ = [
            None if bessel is None else sum((r["vars"][i * c + ch] for i in range(n)), Fraction(0)) / n * bessel
            for ch in range(c)
        ]
        out["running_mean"] = _update(rm, means, Fraction(momentum), True)
        out["running_var"] = _update(rv, vars_, Fraction(momentum), True)
    return out


# ---------------------------------------------------------------- PyTorch OpInfo

# op name -> (parameter names in torch's order, outputs in torch's order)
_TORCH_SIGNATURES: dict[str, tuple[tuple[str, ...], tuple[str, ...]]] = {
    "nn.functional.batch_norm": (
        ("x", "running_mean", "running_var", "weight", "bias", "training", "momentum", "eps"),
        ("y",),
    ),
    "native_batch_norm": (
        ("x", "weight", "bias", "running_mean", "running_var", "training", "momentum", "eps"),
        ("y", "mean", "rstd"),
    ),
    "_native_batch_norm_legit": (
        ("x", "weight", "bias", "running_mean", "running_var", "training", "momentum", "eps"),
        ("y", "mean", "rstd"),
    ),
    "_native_batch_norm_legit_nostats": (("x", "weight", "bias", "training", "momentum", "eps"), ("y", "mean", "rstd")),
    "_batch_norm_with_update": (
        ("x", "weight", "bias", "running_mean", "running_var", "momentum", "eps"),
        ("y", "mean", "rstd", None),
    ),
    "nn.functional.layer_norm": (("x", "normalized_shape", "weight", "bias", "eps"), ("y",)),
    "native_layer_norm": (("x", "normalized_shape", "weight", "bias", "eps"), ("y", "mean", "rstd")),
    "nn.functional.rms_norm": (("x", "normalized_shape", "weight", "eps"), ("y",)),
    "nn.functional.group_norm": (("x", "num_groups", "weight", "bias", "eps"), ("y",)),
    "native_group_norm": (("x", "weight", "bias", "N", "C", "HxW", "num_groups", "eps"), ("y", "mean", "rstd")),
    "nn.functional.instance_norm": (
        ("x", "running_mean", "running_var", "weight", "bias", "use_input_stats", "momentum", "eps"),
        ("y",),
    ),
}
_TORCH_DEFAULTS = {"weight": None, "bias": None, "running_mean": None, "running_var": None, "eps": 1e-5}
_TORCH_OP_DEFAULTS = {
    "nn.functional.batch_norm": {"training": False, "momentum": 0.1},
    "nn.functional.instance_norm": {"use_input_stats": True, "momentum": 0.1},
    "nn.functional.rms_norm": {"eps": None},  # None: the dtype's machine epsilon
}
TORCH_OPS = tuple(sorted({n for n in _TORCH_SIGNATURES if n != "_native_batch_norm_legit_nostats"}))


def _np(t: Any) -> Any:
    import torch

    return t.detach().clone().numpy() if isinstance(t, torch.Tensor) else t


def torch_cases() -> list[PeerCase]:
    """Every OpInfo sample of the operators above, CPU, float32 and float64, with torch's outputs."""
    import torch
    from torch.testing._internal.common_methods_invocations import op_db

    torch.manual_seed(0)
    cases = []
    for op in op_db:
        if op.name not in _TORCH_SIGNATURES:
            continue
        for dtype in (torch.float32, torch.float64):
            for i, sample in enumerate(op.sample_inputs("cpu", dtype, requires_grad=False)):
                name = f"{op.name}{'.' + op.variant_test_name if op.variant_test_name else ''}[{dtype}-{i}]"
                cases.append(_torch_case(op, sample, name))
    return cases


def _torch_case(op: Any, sample: Any, name: str) -> PeerCase:
    import torch

    sig_name = op.name
    if op.name == "_native_batch_norm_legit" and len(sample.args) == 5:
        sig_name = "_native_batch_norm_legit_nostats"
    params, outs = _TORCH_SIGNATURES[sig_name]
    bound = _TORCH_DEFAULTS | _TORCH_OP_DEFAULTS.get(op.name, {})
    bound.update(zip(params, (sample.input, *sample.args), strict=False))
    bound.update(sample.kwargs)
    a = {k: _np(v) for k, v in bound.items()}  # before torch mutates the running statistics
    args = tuple(t.clone() if isinstance(t, torch.Tensor) else t for t in sample.args)
    kwargs = {k: (v.clone() if isinstance(v, torch.Tensor) else v) for k, v in sample.kwargs.items()}
    got = op.op(sample.input.clone(), *args, **kwargs)
    got = got if isinstance(got, tuple) else (got,)
    peer = {o: _np(g) for o, g in zip(outs, got, strict=False) if o is not None}
    # the running statistics torch updated in place
    after = dict(zip(params, (sample.input, *args), strict=False)) | kwargs
    for key in ("running_mean", "running_var"):
        if isinstance(after.get(key), torch.Tensor):
            peer[key] = _np(after[key])
    # torch returns empty saved statistics where it computed none (evaluation)
    peer = {k: v for k, v in peer.items() if not (k in ("mean", "rstd") and v.size == 0 and a["x"].size)}
    x = a["x"]
    if op.name in ("nn.functional.layer_norm", "native_layer_norm", "nn.functional.rms_norm"):
        k = len(a["normalized_shape"])
        centred = op.name != "nn.functional.rms_norm"
        eps = a["eps"] if a["eps"] is not None else float(np.finfo(x.dtype).eps)
        call = {"x": x, "normalized_ndim": k, "weight": a["weight"], "eps": a["eps"]}
        if centred:
            call["bias"] = a["bias"]
        return PeerCase(
            "torch", name, "layer_norm" if centred else "rms_norm", call, peer,
            lambda: _trailing_reference(x, k, a["weight"], a.get("bias"), eps, centred=centred),
        )  # fmt: skip
    if op.name in ("nn.functional.group_norm", "native_group_norm"):
        call = {"x": x, "num_groups": a["num_groups"], "weight": a["weight"], "bias": a["bias"], "eps": a["eps"]}
        return PeerCase(
            "torch", name, "group_norm", call, peer,
            lambda: _group_reference(x, a["num_groups"], a["weight"], a["bias"], a["eps"]),
        )  # fmt: skip
    if op.name == "nn.functional.instance_norm":
        tracked = a.get("running_mean") is not None
        call = {
            "x": x, "weight": a["weight"], "bias": a["bias"], "running_mean": a.get("running_mean"),
            "running_var": a.get("running_var"), "training": bool(a["use_input_stats"]), "momentum": a["momentum"],
            "eps": a["eps"], "convention": "torch_instance_norm_tracked" if tracked else "torch_instance_norm",
        }  # fmt: skip
        return PeerCase(
            "torch", name, "instance_norm", call, peer,
            lambda: _instance_reference(
                x, a["weight"], a["bias"], a.get("running_mean"), a.get("running_var"),
                training=bool(a["use_input_stats"]), momentum=a["momentum"], eps=a["eps"],
            ),
        )  # fmt: skip
    training = True if op.name == "_batch_norm_with_update" else bool(a["training"])
    call = {
        "x": x, "weight": a["weight"], "bias": a["bias"], "running_mean": a.get("running_mean"),
        "running_var": a.get("running_var"), "training": training, "momentum": a["momentum"], "eps": a["eps"],
        # F.batch_norm is the torch profile; the native operators skip its Python-level checks
        "convention": "torch" if op.name == "nn.functional.batch_norm" else "torch_raw",
    }  # fmt: skip

    def ref() -> dict[str, np.ndarray]:
        if x.size == 0:
            return {"y": x.copy()} | {
                k: v.copy() for k in ("running_mean", "running_var") if (v := a.get(k)) is not None
            }
        return _bn_reference(
            x, a["weight"], a["bias"], a.get("running_mean"), a.get("running_var"), training=training,
            momentum=a["momentum"], eps=a["eps"], unbiased=True, new_weight=True, stats_dtype=x.dtype,
        )  # fmt: skip

    return PeerCase("torch", name, "batch_norm", call, peer, ref)


# ---------------------------------------------------------------- ONNX node tests

ONNX_OPS = (
    "BatchNormalization",
    "LayerNormalization",
    "GroupNormalization",
    "InstanceNormalization",
    "RMSNormalization",
    "MeanVarianceNormalization",
)
_ONNX_MODULES = (
    "batch_normalization",
    "layernormalization",
    "groupnormalization",
    "instance_normalization",
    "rmsnormalization",
    "meanvariancenormalization",
)


def onnx_cases() -> list[PeerCase]:
    """Every ONNX backend node test of the operators above, with the expected outputs ONNX ships
    (the generators are imported one by one: they draw their inputs when imported)."""
    import importlib

    import onnx
    from onnx.backend.test.case import node as node_cases

    np.random.seed(0)
    for mod in _ONNX_MODULES:
        importlib.import_module(f"onnx.backend.test.case.node.{mod}")
    cases = []
    for tc in node_cases._NodeTestCases:
        nodes = tc.model.graph.node
        if len(nodes) != 1 or nodes[0].op_type not in ONNX_OPS or nodes[0].domain not in ("", "ai.onnx"):
            continue  # the function-expanded variants test ONNX's decomposition, not the operator
        node = nodes[0]
        attrs = {a.name: onnx.helper.get_attribute_value(a) for a in node.attribute}
        inputs, outputs = tc.data_sets[0]
        cases.append(
            _onnx_case(tc.name, node.op_type, attrs, [np.asarray(v) for v in inputs], outputs, list(node.output))
        )
    return cases


def _onnx_case(name, op, attrs, ins, outs, out_names) -> PeerCase:
    x = ins[0]
    eps = float(attrs.get("epsilon", 1e-5))
    if op == "BatchNormalization":
        training = bool(attrs.get("training_mode", 0))
        momentum = float(attrs.get("momentum", np.float32(0.9)))
        w, b, rm, rv = ins[1:5]
        peer = dict(zip(("y", "running_mean", "running_var"), outs, strict=False))
        call = {"x": x, "weight": w, "bias": b, "running_mean": rm, "running_var": rv, "training": training,
                "momentum": momentum, "eps": eps, "convention": "onnx_bn15"}  # fmt: skip
        return PeerCase(
            "onnx", name, "batch_norm", call, peer,
            lambda: _bn_reference(x, w, b, rm, rv, training=training, momentum=Fraction(float(np.float32(momentum))),
                                  eps=float(np.float32(eps)), unbiased=False, new_weight=False, stats_dtype=x.dtype),
        )  # fmt: skip
    if op in ("LayerNormalization", "RMSNormalization"):
        axis = attrs.get("axis", -1) % x.ndim
        k = x.ndim - axis
        centred = op == "LayerNormalization"
        w = ins[1]
        b = ins[2] if centred and len(ins) > 2 else None
        peer = dict(zip(("y", "mean", "rstd"), outs, strict=False))
        call = {"x": x, "normalized_ndim": k, "weight": w, "eps": eps,
                "convention": "onnx_layer_norm17" if centred else "onnx_rms_norm23"}  # fmt: skip
        if centred:
            call["bias"] = b
        e32 = float(np.float32(eps))
        return PeerCase(
            "onnx", name, "layer_norm" if centred else "rms_norm", call, peer,
            lambda: _trailing_reference(x, k, w, b, e32, centred=centred),
        )  # fmt: skip
    if op == "GroupNormalization":
        groups = int(attrs["num_groups"])
        w, b = ins[1], ins[2]
        call = {"x": x, "num_groups": groups, "weight": w, "bias": b, "eps": eps, "convention": "onnx_group_norm21"}
        e32 = float(np.float32(eps))
        return PeerCase(
            "onnx", name, "group_norm", call, {"y": outs[0]}, lambda: {"y": _group_reference(x, groups, w, b, e32)["y"]}
        )
    if op == "InstanceNormalization":
        w, b = ins[1], ins[2]
        call = {"x": x, "weight": w, "bias": b, "eps": eps, "convention": "onnx_instance_norm"}
        e32 = float(np.float32(eps))
        return PeerCase(
            "onnx", name, "instance_norm", call, {"y": outs[0]},
            lambda: {"y": _instance_reference(x, w, b, None, None, training=True, momentum=0.0, eps=e32)["y"]},
        )  # fmt: skip
    assert op == "MeanVarianceNormalization", op
    axes = tuple(attrs.get("axes", (0, 2, 3)))
    e32 = float(np.float32(1e-9))
    return PeerCase(
        "onnx", name, "mean_variance_norm", {"x": x, "axes": axes}, {"y": outs[0]},
        lambda: {"y": reference_norm(x, axes, 1.0, 0.0, e32, eps_outside=True)["y"]},
    )  # fmt: skip
