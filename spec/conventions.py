"""What each implementation computes, as data.

One :class:`Convention` record per implementation.  The oracle reads these
fields; it never branches on a framework's name.  Provenance tags follow
``../shared/reference/conventions.md``: [S] read in source, [R] run,
[D] documentation, [I] issue thread; ``unverified`` lists fields whose
source is only a recollection and should be re-checked before a verdict
leans on them.

Notation: ``m`` is the momentum argument, ``b`` a batch statistic, ``r`` a
running statistic.  ``"new"`` weight: ``r <- (1-m) r + m b``; ``"old"``
weight: ``r <- m r + (1-m) b``.

>>> get_convention("torch").momentum_direction
'new'
>>> get_convention("keras3").running_var_correction
'none'
>>> get_convention("tf_fused_batch_norm_v3").effective_eps(1e-6) == float(np.float32(1.001e-5))
True
"""

from __future__ import annotations

from dataclasses import dataclass, field
from fractions import Fraction
from typing import Literal

import numpy as np

from normspec.errors import DomainError, UnknownConventionError, expected

__all__ = ["Convention", "CONVENTIONS", "get_convention", "convention_names"]

MomentumDirection = Literal["new", "old"]
VarCorrection = Literal["none", "unbiased", "unbiased_clamped"]
UpdateTime = Literal["forward", "backward", "forward_not_at_init"]
OneValue = Literal["error", "compute", "identity"]
Cast = Literal["float64", "float32"]


@dataclass(frozen=True)
class Convention:
    """The BatchNorm contract of one implementation.

    Mathematical fields (the oracle obeys them):

    * ``momentum_direction``/``momentum_default``: which statistic the
      momentum weighs (see module docstring) and its default.
    * ``cumulative_average``: ``momentum="cumulative"`` is accepted and
      means the running statistics are the plain average of all batches
      seen (PyTorch ``momentum=None``; factor ``1/num_batches_tracked``).
    * ``eps_default``, ``eps_min`` (the value is raised to at least this,
      TF fused), ``eps_cast``/``momentum_cast`` (the dtype the
      implementation holds them in; the oracle uses the exact value of that
      cast).
    * ``running_var_correction``: ``"none"`` (biased), ``"unbiased"``
      (``n/(n-1)``, NaN at n = 1), ``"unbiased_clamped"`` (``n/max(n-1, 1)``).
    * ``update_time``: ``"forward"``, ``"backward"`` (only a backward pass
      updates: MXNet CPU), ``"forward_not_at_init"`` (Flax linen skips the
      update while initializing).
    * ``one_value``: at one value per channel in training, ``"error"``
      (refuse), ``"compute"`` (evaluate the formula: y = beta, the running
      variance NaN or finite as the correction gives), ``"identity"``
      (y = x, running statistics untouched: Paddle CPU).
    * ``zero_var_guard``: ``var + eps == 0`` gives ``invstd = 0`` and so
      ``y = beta`` instead of 0/0.
    * ``refuses_zero_eps_in_training``: the implementation raises for
      ``eps == 0`` in training (PyTorch >= 2.13 ``F.batch_norm``); the
      oracle still computes it, audits expect the refusal.

    Numerical fields (what the float evaluation does; used by error budgets
    and audits, never by the exact oracle): ``affine_form``,
    ``variance_algorithm``, ``accumulator``.
    """

    name: str
    description: str
    momentum_direction: MomentumDirection
    momentum_default: float
    eps_default: float
    running_var_correction: VarCorrection
    update_time: UpdateTime = "forward"
    one_value: OneValue = "compute"
    zero_var_guard: bool = False
    cumulative_average: bool = False
    refuses_zero_eps_in_training: bool = False
    eps_min: float | None = None
    eps_cast: Cast = "float64"
    momentum_cast: Cast = "float64"
    default_axis: int = 1
    running_mean_init: float = 0.0
    running_var_init: float = 1.0
    affine_form: Literal["folded", "unfolded", "unspecified"] = "unspecified"
    variance_algorithm: Literal["two_pass", "welford", "raw_moments", "raw_moments_clamped", "unspecified"] = (
        "unspecified"
    )
    accumulator: str = "unspecified"
    sources: tuple[str, ...] = ()
    unverified: tuple[str, ...] = field(default=())

    @property
    def one_value_outcome(self) -> str:
        """What happens at one value per channel: error, nan, finite or identity."""
        if self.one_value != "compute":
            return self.one_value
        return "nan" if self.running_var_correction == "unbiased" else "finite"

    def _cast(self, value: float, how: Cast) -> float:
        return float(np.float32(value)) if how == "float32" else float(value)

    def effective_eps(self, eps: float) -> float:
        """The eps the implementation really adds (clamped, then cast), as a double."""
        if self.eps_min is not None and eps < self.eps_min:
            eps = self.eps_min
        return self._cast(eps, self.eps_cast)

    def effective_momentum(self, momentum: float) -> float:
        return self._cast(momentum, self.momentum_cast)

    def running_update(self, old: Fraction, batch: Fraction | float, momentum: Fraction) -> Fraction | float:
        """Running update with an exact momentum: exact for a rational ``batch``,
        IEEE arithmetic for a NaN or infinite one."""
        if self.momentum_direction == "new":
            return (1 - momentum) * old + momentum * batch
        return momentum * old + (1 - momentum) * batch

    def bessel(self, n: int) -> Fraction | None:
        """Factor applied to the biased batch variance before it enters the
        running variance; None where it is 0/0 (unbiased at n = 1)."""
        if self.running_var_correction == "none":
            return Fraction(1)
        if self.running_var_correction == "unbiased":
            return Fraction(n, n - 1) if n > 1 else None
        return Fraction(n, max(n - 1, 1))


def _c(**kw: object) -> Convention:
    return Convention(**kw)  # type: ignore[arg-type]


_PROFILES = [
    _c(
        name="torch",
        description="PyTorch nn.BatchNorm*d / F.batch_norm, CPU native (2.13)",
        momentum_direction="new",
        momentum_default=0.1,
        eps_default=1e-5,
        running_var_correction="unbiased",
        one_value="error",
        zero_var_guard=True,
        cumulative_average=True,
        refuses_zero_eps_in_training=True,
        affine_form="folded",
        variance_algorithm="two_pass",
        accumulator="float64 (contiguous path)",
        sources=(
            "S aten/src/ATen/native/Normalization.cpp",
            "R torch 2.13: x=[1,2,3,4], m=1 -> 1.6667",
            "S aten/src/ATen/native/cpu/batch_norm_kernel.cpp",
        ),
    ),
    _c(
        name="torch_raw",
        description="PyTorch raw torch.batch_norm op (no Python-side n=1 check)",
        momentum_direction="new",
        momentum_default=0.1,
        eps_default=1e-5,
        running_var_correction="unbiased",
        one_value="compute",
        zero_var_guard=True,
        cumulative_average=True,
        affine_form="folded",
        variance_algorithm="two_pass",
        accumulator="float64 (contiguous path)",
        sources=("R torch 2.13: n=1 -> running_var NaN (pytorch#1381, #77014)",),
    ),
    _c(
        name="torch_cuda",
        description="PyTorch CUDA native kernels (Welford, unfolded affine)",
        momentum_direction="new",
        momentum_default=0.1,
        eps_default=1e-5,
        running_var_correction="unbiased",
        one_value="error",
        zero_var_guard=True,
        cumulative_average=True,
        affine_form="unfolded",
        variance_algorithm="welford",
        accumulator="float32 for float/half, float64 for double",
        sources=("S aten/src/ATen/native/cuda/Normalization.cuh",),
        unverified=("running_var_correction (single-GPU update kernel)",),
    ),
    _c(
        name="keras3",
        description="Keras 3 BatchNormalization (all backends)",
        momentum_direction="old",
        momentum_default=0.99,
        eps_default=1e-3,
        running_var_correction="none",
        eps_cast="float32",
        momentum_cast="float32",
        default_axis=-1,
        affine_form="folded",
        variance_algorithm="unspecified",
        accumulator="float32 (inputs upcast to at least float32)",
        sources=(
            "S keras/src/layers/normalization/batch_normalization.py",
            "R keras 3.15.1 numpy backend: E[x^2]-E[x]^2 NaN (bugs.md #38)",
        ),
    ),
    _c(
        name="tf_keras2_fused",
        description="tf.keras 2.15 BatchNormalization, fused path (rank 4/5, axis 1/3 or 1/4)",
        momentum_direction="old",
        momentum_default=0.99,
        eps_default=1e-3,
        running_var_correction="unbiased_clamped",
        eps_min=1.001e-5,
        eps_cast="float32",
        momentum_cast="float32",
        default_axis=-1,
        affine_form="unfolded",
        variance_algorithm="two_pass",
        accumulator="float32",
        sources=(
            "S tensorflow/python/ops/nn_impl.py fused_batch_norm (eps clamp)",
            "S tensorflow/core/kernels/fused_batch_norm_op.cc (n/max(n-1,1))",
        ),
    ),
    _c(
        name="tf_keras2_nonfused",
        description="tf.keras 2.15 BatchNormalization, non-fused path (rank 2, renorm, masks)",
        momentum_direction="old",
        momentum_default=0.99,
        eps_default=1e-3,
        running_var_correction="none",
        eps_cast="float32",
        momentum_cast="float32",
        default_axis=-1,
        affine_form="folded",
        variance_algorithm="two_pass",
        accumulator="float32",
        sources=("S keras/layers/normalization/batch_normalization.py (v2.15)",),
    ),
    _c(
        name="tf_fused_batch_norm_v3",
        description="tf.raw_ops.FusedBatchNormV3 / tf.compat.v1.nn.fused_batch_norm",
        momentum_direction="new",
        momentum_default=1.0,
        eps_default=1e-3,
        running_var_correction="unbiased_clamped",
        eps_min=1.001e-5,
        eps_cast="float32",
        momentum_cast="float32",
        default_axis=-1,
        affine_form="unfolded",
        variance_algorithm="two_pass",
        accumulator="float32",
        sources=("S tensorflow/core/kernels/fused_batch_norm_op.cc (exponential_avg_factor)",),
    ),
    _c(
        name="flax_linen",
        description="flax.linen.BatchNorm (use_fast_variance=True default)",
        momentum_direction="old",
        momentum_default=0.99,
        eps_default=1e-5,
        running_var_correction="none",
        update_time="forward_not_at_init",
        eps_cast="float32",
        momentum_cast="float32",
        default_axis=-1,
        affine_form="unfolded",
        variance_algorithm="raw_moments_clamped",
        accumulator="float32",
        sources=("S flax/linen/normalization.py",),
    ),
    _c(
        name="flax_nnx",
        description="flax.nnx.BatchNorm (use_running_average=False by default)",
        momentum_direction="old",
        momentum_default=0.99,
        eps_default=1e-5,
        running_var_correction="none",
        eps_cast="float32",
        momentum_cast="float32",
        default_axis=-1,
        affine_form="unfolded",
        variance_algorithm="raw_moments_clamped",
        accumulator="float32",
        sources=("S flax/nnx/nn/normalization.py",),
    ),
    _c(
        name="mxnet_cpu",
        description="MXNet 1.9 Gluon BatchNorm, CPU native / oneDNN",
        momentum_direction="old",
        momentum_default=0.9,
        eps_default=1e-5,
        running_var_correction="none",
        update_time="backward",
        zero_var_guard=True,
        affine_form="unfolded",
        variance_algorithm="two_pass",
        accumulator="float32 for float16/float32, float64 for float64",
        sources=(
            "S src/operator/nn/batch_norm.cc",
            "I apache/mxnet#18751, #14357",
            "R mxnet 1.9.1: forward-only training leaves 0/1",
        ),
    ),
    _c(
        name="mxnet_cudnn",
        description="MXNet 1.9 Gluon BatchNorm, GPU cuDNN path",
        momentum_direction="old",
        momentum_default=0.9,
        eps_default=1e-5,
        running_var_correction="unbiased",
        update_time="forward",
        affine_form="unspecified",
        variance_algorithm="unspecified",
        accumulator="cuDNN",
        sources=("S src/operator/nn/cudnn/cudnn_batch_norm.cu", "I apache/mxnet#18751, #21111"),
    ),
    _c(
        name="onnx_bn9",
        description="ONNX BatchNormalization-9 (training outputs; semantics under-specified)",
        momentum_direction="old",
        momentum_default=0.9,
        eps_default=1e-5,
        running_var_correction="none",
        eps_cast="float32",
        momentum_cast="float32",
        affine_form="unfolded",
        variance_algorithm="two_pass",
        accumulator="float32",
        sources=("S onnx/defs/nn/old.cc",),
        unverified=("running_var_correction (the v9 text does not say)",),
    ),
    _c(
        name="onnx_bn14",
        description="ONNX BatchNormalization-14 (training_mode attribute)",
        momentum_direction="old",
        momentum_default=0.9,
        eps_default=1e-5,
        running_var_correction="none",
        eps_cast="float32",
        momentum_cast="float32",
        affine_form="unfolded",
        variance_algorithm="two_pass",
        accumulator="float32",
        sources=("S onnx/defs/nn/defs.cc (population variance, 'not N-1')",),
    ),
    _c(
        name="onnx_bn15",
        description="ONNX BatchNormalization-15 (separate input/param/stat types)",
        momentum_direction="old",
        momentum_default=0.9,
        eps_default=1e-5,
        running_var_correction="none",
        eps_cast="float32",
        momentum_cast="float32",
        affine_form="unfolded",
        variance_algorithm="two_pass",
        accumulator="float32",
        sources=("S onnx/defs/nn/defs.cc", "R onnx 1.23.2 reference evaluator"),
    ),
    _c(
        name="paddle_cpu",
        description="PaddlePaddle 3.x BatchNorm, CPU kernel",
        momentum_direction="old",
        momentum_default=0.9,
        eps_default=1e-5,
        running_var_correction="none",
        one_value="identity",
        eps_cast="float32",
        momentum_cast="float32",
        affine_form="folded",
        variance_algorithm="two_pass",
        accumulator="float32",
        sources=("S paddle/phi/kernels/cpu/batch_norm_kernel.cc", "I PaddlePaddle/Paddle#11445, PR #68159"),
        unverified=("running_mean_init/running_var_init",),
    ),
    _c(
        name="cudnn",
        description="cuDNN BatchNormalizationForwardTraining (exponentialAverageFactor)",
        momentum_direction="new",
        momentum_default=1.0,
        eps_default=1e-5,
        running_var_correction="unbiased",
        affine_form="unspecified",
        variance_algorithm="unspecified",
        accumulator="cuDNN internal",
        sources=(
            "D cudnn.h: factor=1 on first call; 1/(1+n) gives a cumulative average",
            "I ngraph PR #893, apache/mxnet#18751 (unbiased running variance)",
        ),
        unverified=("variance used to normalize (biased)", "eps_min (1e-5 in cuDNN <= 7; 0 in v8+)"),
    ),
]

CONVENTIONS: dict[str, Convention] = {c.name: c for c in _PROFILES}


def convention_names() -> list[str]:
    return list(CONVENTIONS)


def get_convention(convention: str | Convention) -> Convention:
    """Look a profile up by name (a :class:`Convention` passes through).

    >>> get_convention("pytorch")  # doctest: +ELLIPSIS
    Traceback (most recent call last):
    ...
    normspec.errors.UnknownConventionError: Expected one of torch, torch_raw, ..., but got convention='pytorch'
    """
    if isinstance(convention, Convention):
        return convention
    try:
        return CONVENTIONS[convention]
    except (KeyError, TypeError):
        raise UnknownConventionError(expected("one of " + ", ".join(CONVENTIONS), "convention", convention)) from None


def check_eps(eps: float) -> None:
    if not (isinstance(eps, (int, float)) and np.isfinite(eps) and eps >= 0):
        raise DomainError(expected("a finite eps >= 0", "eps", eps))
