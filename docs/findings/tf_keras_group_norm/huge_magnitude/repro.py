"""Standalone reproducer: tf_keras_group_norm, case huge_magnitude (tf_keras 2.21.0).

120 element(s) beyond the budget of plain_float32 (none declared); worst y[2, 2, 0] = 1.516427755355835, exact 0.11645196246660042, error 1.4 > budget 2.05e-06 (6.83e+05 times)

Needs only tf_keras and NumPy.  Run from this folder: python repro.py
The exact output was computed by normspec's oracle under the profile tf_keras2_group_norm and stored in exact.npz.
"""
from __future__ import annotations

import os

from collections.abc import Callable
from typing import Any

import numpy as np

Case = dict[str, Any]
Result = dict[str, np.ndarray]

def _tf_keras(layer: str) -> Callable[[Case], dict[str, np.ndarray]]:
    def run(case: Case) -> dict[str, np.ndarray]:
        import tf_keras

        x = case["x"][0]
        eps = float(case["eps"])
        lay: Any
        if layer == "layer_norm":
            lay = tf_keras.layers.LayerNormalization(axis=-1, epsilon=eps)
        else:
            lay = tf_keras.layers.GroupNormalization(groups=int(case["groups"]), axis=1, epsilon=eps)
        lay.build(x.shape)
        lay.set_weights([case["weight"], case["bias"]])
        return _y(np.asarray(lay(x)))

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

observed = _tf_keras(layer='group_norm')(case)


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
