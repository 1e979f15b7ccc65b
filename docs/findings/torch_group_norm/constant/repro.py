"""Standalone reproducer: torch_group_norm, case constant (torch 2.13.0+cpu).

8.56e+08 ULP at the terms' scale where the budget of plain_float32 (none declared) is unbounded, more than 64 times the plain formula's error on this case (7.96e+06); worst y[0, 4, 0] = -202.99395751953125, exact 1.1466269493103027

Needs only torch and NumPy.  Run from this folder: python repro.py
The exact output was computed by normspec's oracle under the profile torch_group_norm and stored in exact.npz.
"""
from __future__ import annotations

import os

from collections.abc import Callable
from typing import Any

import numpy as np

Case = dict[str, Any]
Result = dict[str, np.ndarray]

def _torch(layer: str) -> Callable[[Case], dict[str, np.ndarray]]:
    def run(case: Case) -> dict[str, np.ndarray]:
        import torch.nn.functional as F  # noqa: N812 - torch's spelling

        x = _tensor(case["x"][0])
        w, b, eps = _tensor(case["weight"]), _tensor(case["bias"]), float(case["eps"])
        if layer == "layer_norm":
            y = F.layer_norm(x, (x.shape[-1],), w, b, eps)
        elif layer == "rms_norm":
            y = F.rms_norm(x, (x.shape[-1],), w, None if np.isnan(eps) else eps)
        elif layer == "group_norm":
            y = F.group_norm(x, int(case["groups"]), w, b, eps)
        else:
            y = F.instance_norm(x, eps=eps)
        return _y(_host(y, case["x"]))

    return run


def _y(y: Any) -> dict[str, np.ndarray]:
    arr = np.asarray(y)[None]
    return {"y": arr, "running_mean": np.zeros((1, 1), F32), "running_var": np.ones((1, 1), F32)}


F32 = np.float32


def _tensor(a: np.ndarray) -> Any:
    """A torch tensor of a host array; bfloat16 (ml_dtypes) travels as its bits."""
    import torch

    a = np.ascontiguousarray(a)
    if a.dtype.name == "bfloat16":
        return torch.from_numpy(a.view(np.int16)).view(torch.bfloat16)
    return torch.from_numpy(a)


def _host(t: Any, like: np.ndarray) -> np.ndarray:
    """A torch tensor back on the host; bfloat16 as ``like``'s bfloat16 dtype."""
    import torch

    t = t.detach().cpu()
    if t.dtype == torch.bfloat16:
        return np.asarray(t.view(torch.int16).numpy().view(like.dtype))
    return np.asarray(t.numpy())


with np.load("case.npz", allow_pickle=False) as data:
    case = {k: data[k] for k in data.files}
case["training"], case["momentum"], case["eps"] = bool(case["training"]), float(case["momentum"]), float(case["eps"])
case["backward"] = bool(case.get("backward", True))
with np.load("exact.npz", allow_pickle=False) as data:
    exact = {k: data[k] for k in data.files}

observed = _torch(layer='group_norm')(case)


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
