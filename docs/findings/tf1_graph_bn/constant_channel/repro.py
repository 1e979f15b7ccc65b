"""Standalone reproducer: tf1_graph_bn, case constant_channel (tf_keras 2.21.0).

8.39e+06 ULP at the terms' scale where the budget of plain_float32 (none declared) is unbounded, more than 64 times the plain formula's error on this case (0); worst y[0, 0, 0, 0] = -1.0, exact 0.0

Needs only tf_keras and NumPy.  Run from this folder: python repro.py
The exact output was computed by normspec's oracle under the profile tf_keras2_nonfused and stored in exact.npz.
"""
from __future__ import annotations

import os
os.environ.setdefault('TF_USE_LEGACY_KERAS', '1')
from collections.abc import Callable
from typing import Any

import numpy as np

Case = dict[str, Any]
Result = dict[str, np.ndarray]

def _tf1_graph(case: Case, update_ops: bool) -> Result:
    """TF1-style graph code: ``tf.compat.v1.layers.batch_normalization`` in a ``tf.compat.v1.Session``.
    Its moving averages update only through the ``UPDATE_OPS`` collection; ``update_ops`` says whether
    the fetched output depends on it, as a train op written with ``tf.control_dependencies`` does."""
    import tensorflow as tf

    v1 = tf.compat.v1
    x0 = case["x"][0]
    graph = tf.Graph()
    with graph.as_default():
        xp = v1.placeholder(tf.float32, x0.shape)
        y = v1.layers.batch_normalization(
            xp,
            axis=1,
            momentum=float(case["momentum"]),
            epsilon=float(case["eps"]),
            training=bool(case["training"]),
            fused=False,
            gamma_initializer=v1.constant_initializer(case["weight"]),
            beta_initializer=v1.constant_initializer(case["bias"]),
            moving_mean_initializer=v1.constant_initializer(case["running_mean"]),
            moving_variance_initializer=v1.constant_initializer(case["running_var"]),
        )
        if update_ops:
            with tf.control_dependencies(v1.get_collection(v1.GraphKeys.UPDATE_OPS)):
                y = tf.identity(y)
        moving = {v.name.split("/")[-1].split(":")[0]: v for v in v1.global_variables()}
        init = v1.global_variables_initializer()
    ys, rms, rvs = [], [], []
    with v1.Session(graph=graph) as sess:
        sess.run(init)
        for x in case["x"]:
            ys.append(sess.run(y, {xp: x}))
            rm, rv = sess.run([moving["moving_mean"], moving["moving_variance"]])
            rms.append(rm)
            rvs.append(rv)
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

observed = _tf1_graph(case, True)


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
