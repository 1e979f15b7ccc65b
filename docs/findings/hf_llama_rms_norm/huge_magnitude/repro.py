"""Standalone reproducer: hf_llama_rms_norm, case huge_magnitude (transformers 4.57.6).

48 element(s) beyond the budget of plain_float32 (none declared); worst y[3, 2] = 0.0, exact 1.7672784988356156, error 1.77 > budget 1.52e-06 (1.16e+06 times)

Needs only transformers and NumPy.  Run from this folder: python repro.py
The exact output was computed by normspec's oracle under the profile hf_llama_rms_norm and stored in exact.npz.
"""
from __future__ import annotations

import os

from collections.abc import Callable
from typing import Any

import numpy as np

Case = dict[str, Any]
Result = dict[str, np.ndarray]

def _transformers(module: str, name: str) -> Callable[[Case], dict[str, np.ndarray]]:
    """A Hugging Face RMSNorm module itself, in the case's dtype (bfloat16 as a model loads it)."""

    def run(case: Case) -> dict[str, np.ndarray]:
        import importlib

        import torch

        cls = getattr(importlib.import_module(f"transformers.models.{module}"), name)
        x, w = np.ascontiguousarray(case["x"][0]), np.asarray(case["weight"])
        eps = float(case["eps"])
        layer = cls(x.shape[-1], eps=1e-6 if np.isnan(eps) else eps).to(_tensor(x).dtype)
        with torch.no_grad():
            layer.weight.copy_(_tensor(w))
            y = layer(_tensor(x))
        return _y(_host(y, x))

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

observed = _transformers(module='llama.modeling_llama', name='LlamaRMSNorm')(case)


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
