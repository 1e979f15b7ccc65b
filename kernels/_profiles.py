"""The few convention fields the kernels need, per profile.

Kernels import nothing from spec/oracle (layering), so they keep this copy;
``tests/kernels`` checks every row against ``normspec.spec.conventions``.
"""

from __future__ import annotations

from dataclasses import dataclass
from fractions import Fraction

import numpy as np


@dataclass(frozen=True)
class KernelProfile:
    name: str
    new_weight: bool  # momentum weighs the new value
    momentum: float
    eps: float
    eps_min: float  # 0.0: no clamp
    eps_float32: bool
    momentum_float32: bool
    correction: str  # none | unbiased | unbiased_clamped
    one_value: str  # error | compute | identity
    zero_var_guard: bool
    eps_zero_refused: bool = False  # eps == 0 raises in training (PyTorch >= 2.13)

    def effective_eps(self, eps: float) -> float:
        eps = max(eps, self.eps_min)
        return float(np.float32(eps)) if self.eps_float32 else float(eps)

    def effective_momentum(self, m: float) -> float:
        return float(np.float32(m)) if self.momentum_float32 else float(m)

    def bessel(self, n: int) -> float:
        if self.correction == "none":
            return 1.0
        if self.correction == "unbiased":
            return n / (n - 1) if n > 1 else float("nan")
        return n / max(n - 1, 1)

    def bessel_exact(self, n: int) -> Fraction | None:
        """The same factor as an exact rational (None where it is NaN): n / (n - 1) rounded to
        float64 is exact only when n - 1 is a power of two."""
        if self.correction == "none":
            return Fraction(1)
        if self.correction == "unbiased":
            return Fraction(n, n - 1) if n > 1 else None
        return Fraction(n, max(n - 1, 1))


def _p(
    name: str,
    new: bool,
    m: float,
    eps: float,
    corr: str,
    *,
    eps_min: float = 0.0,
    f32: bool = False,
    one: str = "compute",
    guard: bool = False,
    eps0: bool = False,
) -> KernelProfile:
    return KernelProfile(name, new, m, eps, eps_min, f32, f32, corr, one, guard, eps0)


PROFILES = {
    p.name: p
    for p in [
        _p("torch", True, 0.1, 1e-5, "unbiased", one="error", guard=True, eps0=True),
        _p("torch_raw", True, 0.1, 1e-5, "unbiased", guard=True),
        _p("torch_cuda", True, 0.1, 1e-5, "unbiased", one="error", guard=True),
        _p("keras3", False, 0.99, 1e-3, "none", f32=True),
        _p("tf_keras2_fused", False, 0.99, 1e-3, "unbiased_clamped", f32=True),
        _p("tf_keras2_nonfused", False, 0.99, 1e-3, "none", f32=True),
        _p("tf_fused_batch_norm_v3", True, 1.0, 1e-3, "unbiased_clamped", f32=True),
        _p("flax_nnx", False, 0.99, 1e-5, "none", f32=True),
        _p("mxnet_cudnn", False, 0.9, 1e-5, "unbiased"),
        _p("onnx_bn14", False, 0.9, 1e-5, "none", f32=True),
        _p("onnx_bn15", False, 0.9, 1e-5, "none", f32=True),
        _p("paddle_cpu", False, 0.9, 1e-5, "none", f32=True, one="identity"),
        _p("cudnn", True, 1.0, 1e-5, "unbiased"),
    ]
}
