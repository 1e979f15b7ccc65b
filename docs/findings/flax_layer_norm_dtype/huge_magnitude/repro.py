"""Standalone reproducer: flax_layer_norm_dtype, case huge_magnitude (flax 0.12.8).

y[0, 0] = np.float32(nan) where the exact value is np.float32(-1.3949006)

Needs only flax and NumPy.  Run from this folder: python repro.py
The exact output was computed by normspec's oracle under the profile flax_layer_norm_dtype and stored in exact.npz.
"""
from __future__ import annotations

import os
os.environ.setdefault('JAX_PLATFORMS', 'cpu')
from collections.abc import Callable
from typing import Any

import numpy as np

Case = dict[str, Any]
Result = dict[str, np.ndarray]

def _flax(layer: str, x_dtype: bool = False) -> Callable[[Case], dict[str, np.ndarray]]:
    """flax.linen LayerNorm / RMSNorm; ``x_dtype``: with ``dtype=x.dtype`` (y in x's dtype, float32
    parameters), else flax's default (y in the promoted dtype)."""

    def run(case: Case) -> dict[str, np.ndarray]:
        import jax.numpy as jnp
        from flax import linen as nn

        x = jnp.asarray(case["x"][0])
        eps = float(case["eps"])
        dtype = x.dtype if x_dtype else None
        mod: Any
        if layer == "layer_norm":
            mod = nn.LayerNorm(epsilon=eps, dtype=dtype)
            params = {"params": {"scale": jnp.asarray(case["weight"]), "bias": jnp.asarray(case["bias"])}}
        else:
            mod = nn.RMSNorm(epsilon=eps, dtype=dtype)
            params = {"params": {"scale": jnp.asarray(case["weight"])}}
        return _y(np.asarray(mod.apply(params, x)))

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

observed = _flax(layer='layer_norm', x_dtype=True)(case)


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
