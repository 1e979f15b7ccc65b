"""Standalone reproducer: paddle_instance_norm, case huge_magnitude (paddlepaddle 3.3.1).

y[0, 0, 0] = np.float32(nan) where the exact value is np.float32(-2.441045)

Needs only paddle and NumPy.  Run from this folder: python repro.py
The exact output was computed by normspec's oracle under the profile paddle_instance_norm and stored in exact.npz.
"""
from __future__ import annotations

import os

from collections.abc import Callable
from typing import Any

import numpy as np

Case = dict[str, Any]
Result = dict[str, np.ndarray]

def _paddle(layer: str) -> Callable[[Case], dict[str, np.ndarray]]:
    def run(case: Case) -> dict[str, np.ndarray]:
        import paddle
        import paddle.nn.functional as F  # noqa: N812 - Paddle's own spelling

        paddle.set_device("cpu")
        x = paddle.to_tensor(case["x"][0])
        w, b, eps = paddle.to_tensor(case["weight"]), paddle.to_tensor(case["bias"]), float(case["eps"])
        if layer == "layer_norm":
            y = F.layer_norm(x, [x.shape[-1]], w, b, epsilon=eps)
        elif layer == "group_norm":
            y = F.group_norm(x, int(case["groups"]), epsilon=eps, weight=w, bias=b, data_format="NCL")
        else:
            y = F.instance_norm(x, weight=w, bias=b, eps=eps, data_format="NCL")
        return _y(y.numpy())

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

observed = _paddle(layer='instance_norm')(case)


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
