"""Standalone reproducer: keras_numpy, case flax_trigger (keras 3.15.1).

y[0, 0, 1, 0] = np.float32(nan) where the exact value is np.float32(-0.41370538)

Needs only keras and NumPy.  Run from this folder: python repro.py
The exact output was computed by normspec's oracle under the profile keras3 and stored in exact.npz.
"""
from __future__ import annotations

import os
os.environ.setdefault('KERAS_BACKEND', 'numpy')
from collections.abc import Callable
from typing import Any

import numpy as np

Case = dict[str, Any]
Result = dict[str, np.ndarray]

def _keras(case: Case) -> Result:
    import keras

    x0 = case["x"][0]
    layer = keras.layers.BatchNormalization(axis=1, momentum=float(case["momentum"]), epsilon=float(case["eps"]))
    layer.build(x0.shape)
    layer.set_weights([case["weight"], case["bias"], case["running_mean"], case["running_var"]])
    ys, rms, rvs = [], [], []
    for x in case["x"]:
        y = layer(x, training=bool(case["training"]))
        ys.append(np.asarray(keras.ops.convert_to_numpy(y)))
        rms.append(np.asarray(keras.ops.convert_to_numpy(layer.moving_mean)))
        rvs.append(np.asarray(keras.ops.convert_to_numpy(layer.moving_variance)))
    return _stack(ys, rms, rvs)


def _stack(ys: list[Any], rms: list[Any], rvs: list[Any]) -> Result:
    return {
        "y": np.stack([np.asarray(v) for v in ys]),
        "running_mean": np.stack([np.asarray(v) for v in rms]),
        "running_var": np.stack([np.asarray(v) for v in rvs]),
    }


with np.load("case.npz", allow_pickle=False) as data:
    case = {k: data[k] for k in data.files}
case["training"], case["momentum"], case["eps"] = bool(case["training"]), float(case["momentum"]), float(case["eps"])
case["backward"] = bool(case.get("backward", True))
with np.load("exact.npz", allow_pickle=False) as data:
    exact = {k: data[k] for k in data.files}

observed = _keras(case)


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
