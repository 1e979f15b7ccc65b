"""Standalone reproducer: onnx_reference_bn9, case probe_eval_statistics (onnx 1.23.2).

evaluation_uses: claimed 'running statistics', observed 'none of the known alternatives (observed 7.35282; running statistics: 9.99995; batch statistics: -1.34164)'

Needs only onnx and NumPy.  Run from this folder: python repro.py
The exact output was computed by normspec's oracle under the profile onnx_bn9 and stored in exact.npz.
"""
from __future__ import annotations

import os

from collections.abc import Callable
from typing import Any

import numpy as np

Case = dict[str, Any]
Result = dict[str, np.ndarray]

def _onnx(case: Case, opset: int, runtime: str) -> Result:
    rm, rv = case["running_mean"].copy(), case["running_var"].copy()
    ys, rms, rvs = [], [], []
    training = bool(case["training"])
    for x in case["x"]:
        model = _onnx_model(opset, training, x.shape, case["eps"], case["momentum"], x.dtype)
        feeds = {"X": x, "scale": case["weight"], "B": case["bias"], "mean": rm, "var": rv}
        if runtime == "reference":
            from onnx.reference import ReferenceEvaluator

            outs: list[Any] = list(ReferenceEvaluator(model).run(None, feeds))
        else:
            import onnxruntime as ort

            sess = ort.InferenceSession(model.SerializeToString(), providers=["CPUExecutionProvider"])
            outs = list(sess.run(None, feeds))
        ys.append(np.asarray(outs[0]))
        if training and len(outs) >= 3:  # as returned: the audit checks their dtype
            rm, rv = np.asarray(outs[1]), np.asarray(outs[2])
        rms.append(rm)
        rvs.append(rv)
    return _stack(ys, rms, rvs)


def _stack(ys: list[Any], rms: list[Any], rvs: list[Any]) -> Result:
    return {
        "y": np.stack([np.asarray(v) for v in ys]),
        "running_mean": np.stack([np.asarray(v) for v in rms]),
        "running_var": np.stack([np.asarray(v) for v in rvs]),
    }


def _onnx_model(
    opset: int, training: bool, shape: tuple[int, ...], eps: float, momentum: float, dtype: Any = np.float32
) -> Any:
    from onnx import TensorProto, helper

    c = shape[1]
    x_type = TensorProto.FLOAT
    if np.dtype(dtype) == np.float16:
        if opset < 15:  # one type T for X and its parameters: a float16 x needs float16 parameters
            raise NotImplementedError(f"BatchNormalization-{opset} takes X and its parameters in one type")
        x_type = TensorProto.FLOAT16  # BatchNormalization-15: X, Y in T; scale, B in T1; statistics in T2
    ins = ["X", "scale", "B", "mean", "var"]
    attrs: dict[str, Any] = {"epsilon": float(eps), "momentum": float(momentum)}
    if opset >= 14:
        attrs["training_mode"] = 1 if training else 0
    outs = ["Y", "running_mean", "running_var"] if (training and opset >= 14) else ["Y"]
    if training and opset < 14:
        outs = ["Y", "running_mean", "running_var", "saved_mean", "saved_var"]
    node = helper.make_node("BatchNormalization", ins, outs, **attrs)
    f = TensorProto.FLOAT
    inputs = [helper.make_tensor_value_info("X", x_type, list(shape))] + [
        helper.make_tensor_value_info(n, f, [c]) for n in ins[1:]
    ]
    outputs = [helper.make_tensor_value_info("Y", x_type, list(shape))] + [
        helper.make_tensor_value_info(n, f, None) for n in outs[1:]
    ]
    graph = helper.make_graph([node], "bn", inputs, outputs)
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", opset)])
    model.ir_version = 8
    return model


with np.load("case.npz", allow_pickle=False) as data:
    case = {k: data[k] for k in data.files}
case["training"], case["momentum"], case["eps"] = bool(case["training"]), float(case["momentum"]), float(case["eps"])
case["backward"] = bool(case.get("backward", True))
with np.load("exact.npz", allow_pickle=False) as data:
    exact = {k: data[k] for k in data.files}

observed = _onnx(case, 9, "reference")


def ulps(a, b):
    """Distance in representable steps between arrays of one float dtype (NaN: infinite)."""
    width = {2: np.int16, 4: np.int32, 8: np.int64}[a.dtype.itemsize]
    ia, ib = a.view(width).astype(np.int64), b.view(width).astype(np.int64)
    top = np.int64(np.iinfo(width).max)
    oa, ob = np.where(ia < 0, -(ia & top), ia), np.where(ib < 0, -(ib & top), ib)
    d = np.abs(oa - ob).astype(np.float64)
    return np.where(np.isnan(a) | np.isnan(b), np.inf, d)


for key in ("y", "running_mean", "running_var"):
    if key not in exact or key not in observed:
        continue
    want = exact[key]
    got = np.asarray(observed[key]).astype(want.dtype).reshape(want.shape)
    d = ulps(got, want)
    i = np.unravel_index(int(np.argmax(np.where(np.isnan(d), np.inf, d))), d.shape)
    kind = np.asarray(observed[key]).dtype
    print(f"{key} ({kind}, exact in {want.dtype}): worst element {tuple(int(v) for v in i)}: "
          f"observed {got[i]!r}, exact {want[i]!r}, {d[i]:.3g} ULP (max over all {d.size} elements)")
