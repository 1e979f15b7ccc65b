"""Standalone reproducer: keras_layer_norm_mixed, case huge_magnitude (keras 3.15.1).

y[0, 0] = np.float32(nan) where the exact value is np.float32(-1.3949006)

Needs only keras and NumPy.  Run from this folder: python repro.py
The exact output was computed by normspec's oracle under the profile keras3_layer_norm_mixed and stored in exact.npz.
"""
from __future__ import annotations

import os
os.environ.setdefault('KERAS_BACKEND', 'numpy')
from collections.abc import Callable
from typing import Any

import numpy as np

Case = dict[str, Any]
Result = dict[str, np.ndarray]

def _keras_mixed(layer: str) -> Callable[[Case], dict[str, np.ndarray]]:
    """Keras 3 RMSNormalization / LayerNormalization under the mixed policy of x's dtype (its float32
    variables hold the case's float32 parameters)."""

    def run(case: Case) -> dict[str, np.ndarray]:
        import keras

        x = case["x"][0]
        lay: Any
        if layer == "rms_norm":
            lay = keras.layers.RMSNormalization(axis=-1, epsilon=float(case["eps"]), dtype=_policy(x))
            lay.build(x.shape)
            lay.set_weights([case["weight"]])
        else:
            lay = keras.layers.LayerNormalization(axis=-1, epsilon=float(case["eps"]), dtype=_policy(x))
            lay.build(x.shape)
            lay.set_weights([case["weight"], case["bias"]])
        return _y(keras.ops.convert_to_numpy(lay(x)))

    return run


def _y(y: Any) -> dict[str, np.ndarray]:
    arr = np.asarray(y)[None]
    return {"y": arr, "running_mean": np.zeros((1, 1), F32), "running_var": np.ones((1, 1), F32)}


F32 = np.float32


def _policy(x: np.ndarray) -> str:
    """The Keras dtype policy a model on these inputs runs under: mixed for 16-bit activations."""
    return {"bfloat16": "mixed_bfloat16", "float16": "mixed_float16"}.get(x.dtype.name, x.dtype.name)


with np.load("case.npz", allow_pickle=False) as data:
    case = {k: data[k] for k in data.files}
case["training"], case["momentum"], case["eps"] = bool(case["training"]), float(case["momentum"]), float(case["eps"])
case["backward"] = bool(case.get("backward", True))
with np.load("exact.npz", allow_pickle=False) as data:
    exact = {k: data[k] for k in data.files}

observed = _keras_mixed(layer='layer_norm')(case)


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
