"""Standalone reproducer: mxnet_cpu, case constant_channel (mxnet 1.9.1).

8.39e+06 ULP at the terms' scale where the budget of plain_float32 (none declared) is unbounded, more than 64 times the plain formula's error on this case (0); worst y[0, 0, 0, 0] = -0.9999949932098389, exact 0.0

Needs only mxnet and NumPy.  Run from this folder: python repro.py
The exact output was computed by normspec's oracle under the profile mxnet_cpu and stored in exact.npz.
"""
from __future__ import annotations

import os

from collections.abc import Callable
from typing import Any

import numpy as np

Case = dict[str, Any]
Result = dict[str, np.ndarray]

def _mxnet(case: Case) -> Result:
    import mxnet as mx
    from mxnet import autograd, gluon

    c = case["x"].shape[2]
    layer = gluon.nn.BatchNorm(axis=1, momentum=float(case["momentum"]), epsilon=float(case["eps"]), in_channels=c)
    layer.initialize()
    for param, key in (
        (layer.gamma, "weight"),
        (layer.beta, "bias"),
        (layer.running_mean, "running_mean"),
        (layer.running_var, "running_var"),
    ):
        param.set_data(mx.nd.array(case[key]))
    ys, rms, rvs = [], [], []
    for x in case["x"]:
        data = mx.nd.array(x)
        if bool(case["training"]):
            data.attach_grad()
            with autograd.record():
                y = layer(data)
            if bool(case.get("backward", True)):
                y.backward()
        else:
            y = layer(data)
        ys.append(y.asnumpy())
        rms.append(layer.running_mean.data().asnumpy())
        rvs.append(layer.running_var.data().asnumpy())
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

observed = _mxnet(case)


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
