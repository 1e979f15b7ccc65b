"""Standalone reproducer: onnxruntime_rms_norm23, case probe_rounding_float16 (onnxruntime 1.32.0).

rounding_float16: claimed normalized rounded to the input dtype, then scaled, observed scaled, rounded once (float16 row [1, 3], weights where the two rounding orders give different outputs; y = [0.4473, 1.3701])

Needs only onnxruntime and NumPy.  Run from this folder: python repro.py
The exact output was computed by normspec's oracle under the profile onnx_rms_norm23_cast and stored in exact.npz.
"""
from __future__ import annotations

import os

from collections.abc import Callable
from typing import Any

import numpy as np

Case = dict[str, Any]
Result = dict[str, np.ndarray]

def _onnx(layer: str, runtime: str) -> Callable[[Case], dict[str, np.ndarray]]:
    def run(case: Case) -> dict[str, np.ndarray]:
        from onnx import TensorProto, helper

        x = case["x"][0]
        f = {"float16": TensorProto.FLOAT16, "bfloat16": TensorProto.BFLOAT16}.get(x.dtype.name, TensorProto.FLOAT)
        if layer == "rms_norm":  # opset 23, stash_type 1 (its default): Scale in X's type
            node = helper.make_node("RMSNormalization", ["X", "scale"], ["Y"], axis=-1, epsilon=float(case["eps"]))
            opset, pshape = 23, [x.shape[-1]]
        elif layer == "layer_norm":
            node = helper.make_node(
                "LayerNormalization", ["X", "scale", "B"], ["Y"], axis=-1, epsilon=float(case["eps"])
            )
            opset, pshape = 17, [x.shape[-1]]
        elif layer == "instance_norm":
            node = helper.make_node("InstanceNormalization", ["X", "scale", "B"], ["Y"], epsilon=float(case["eps"]))
            opset, pshape = 17, [x.shape[1]]  # InstanceNormalization-6 is current at opset 17
        else:
            node = helper.make_node(
                "GroupNormalization",
                ["X", "scale", "B"],
                ["Y"],
                num_groups=int(case["groups"]),
                epsilon=float(case["eps"]),
            )
            opset, pshape = 21, [x.shape[1]]
        inputs = ["X", "scale"] if layer == "rms_norm" else ["X", "scale", "B"]
        graph = helper.make_graph(
            [node],
            "family",
            [helper.make_tensor_value_info(n, f, list(x.shape) if n == "X" else pshape) for n in inputs],
            [helper.make_tensor_value_info("Y", f, list(x.shape))],
        )
        model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", opset)])
        model.ir_version = 10
        feeds = dict(zip(inputs, (x, case["weight"], case["bias"]), strict=False))
        if runtime == "reference":
            from onnx.reference import ReferenceEvaluator

            outputs: Any = ReferenceEvaluator(model).run(None, feeds)
            out = outputs[0]
        else:
            import onnxruntime as ort

            out = ort.InferenceSession(model.SerializeToString(), providers=["CPUExecutionProvider"]).run(None, feeds)[
                0
            ]
        return _y(np.asarray(out))

    return run


def _y(y: Any) -> dict[str, np.ndarray]:
    arr = np.asarray(y)[None]
    return {"y": arr, "running_mean": np.zeros((1, 1), F32), "running_var": np.ones((1, 1), F32)}


F32 = np.float32


with np.load("case.npz", allow_pickle=False) as data:
    case = {k: data[k] for k in data.files}
case["training"], case["momentum"], case["eps"] = bool(case["training"]), float(case["momentum"]), float(case["eps"])
case["backward"] = bool(case.get("backward", True))
with np.load("exact.npz", allow_pickle=False) as data:
    exact = {k: data[k] for k in data.files}

observed = _onnx(layer='rms_norm', runtime='ort')(case)


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
