"""Standalone reproducer: torch, case huge_magnitude (torch 2.13.0+cpu).

24 element(s) beyond the budget of torch_cpu; worst y[0, 1, 1, 2] = 0.0, exact -1.1626027026532362, error 1.16 > budget 4.2e-07 (2.77e+06 times)

Needs only torch and NumPy.  Run from this folder: python repro.py
The exact output was computed by normspec's oracle under the profile torch and stored in exact.npz.
"""
from __future__ import annotations

import os

from collections.abc import Callable
from typing import Any

import numpy as np

Case = dict[str, Any]
Result = dict[str, np.ndarray]

def _torch(case: Case, raw: bool = False) -> Result:
    import torch

    rm, rv = torch.tensor(case["running_mean"]), torch.tensor(case["running_var"])
    w, b = torch.tensor(case["weight"]), torch.tensor(case["bias"])
    ys, rms, rvs = [], [], []
    for x in case["x"]:
        xt = torch.from_numpy(np.ascontiguousarray(x))
        if raw:
            y = torch.batch_norm(
                xt, w, b, rm, rv, bool(case["training"]), float(case["momentum"]), float(case["eps"]), False
            )
        else:
            y = torch.nn.functional.batch_norm(
                xt,
                rm,
                rv,
                w,
                b,
                training=bool(case["training"]),
                momentum=float(case["momentum"]),
                eps=float(case["eps"]),
            )
        ys.append(y.numpy().copy())
        rms.append(rm.numpy().copy())
        rvs.append(rv.numpy().copy())
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

observed = _torch(case)


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
