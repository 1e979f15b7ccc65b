"""Standalone reproducer: paddle_cpu, case huge_magnitude (paddlepaddle 3.3.1).

24 element(s) beyond the budget of plain_float32 (none declared); worst y[0, 1, 2, 1] = 0.0, exact -2.5512792042047483, error 2.55 > budget 2.55e-06 (1e+06 times)

Needs only paddle and NumPy.  Run from this folder: python repro.py
The exact output was computed by normspec's oracle under the profile paddle_cpu and stored in exact.npz.
"""
from __future__ import annotations

import os

from collections.abc import Callable
from typing import Any

import numpy as np

Case = dict[str, Any]
Result = dict[str, np.ndarray]

def _paddle(case: Case) -> Result:
    import paddle
    import paddle.nn.functional as F  # noqa: N812 - Paddle's own spelling

    paddle.set_device("cpu")
    rm, rv = paddle.to_tensor(case["running_mean"]), paddle.to_tensor(case["running_var"])
    w, b = paddle.to_tensor(case["weight"]), paddle.to_tensor(case["bias"])
    ys, rms, rvs = [], [], []
    for x in case["x"]:
        x4 = x.reshape(x.shape[0], x.shape[1], -1, 1)  # NCHW, as Paddle's 2-D kernels want
        y = F.batch_norm(
            paddle.to_tensor(x4),
            rm,
            rv,
            weight=w,
            bias=b,
            training=bool(case["training"]),
            momentum=float(case["momentum"]),
            epsilon=float(case["eps"]),
            data_format="NCHW",
        )
        ys.append(y.numpy().reshape(x.shape))
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

observed = _paddle(case)


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
