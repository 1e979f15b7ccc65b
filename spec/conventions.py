"""What each implementation computes, as data: one :class:`Convention` record per implementation.

Every normalization layer (BatchNorm, LayerNorm, RMSNorm, GroupNorm,
InstanceNorm) is described by the same record type; the oracle reads its
fields and never branches on a framework's name.  Each record lists its
``sources`` with a provenance tag (docs/conventions.md explains them and
gives the public links): [S] read in source, [R] run, [D] documentation,
[I] issue thread; ``unverified`` lists fields whose source is only a
recollection and should be re-checked before a verdict leans on them.

Notation: ``m`` is the momentum argument, ``b`` a batch statistic, ``r`` a
running statistic.  ``"new"`` weight: ``r <- (1-m) r + m b``; ``"old"``
weight: ``r <- m r + (1-m) b``.

>>> get_convention("torch").momentum_direction
'new'
>>> get_convention("keras3").running_var_correction
'none'
>>> get_convention("torch_layer_norm").layer, get_convention("torch_layer_norm").affine
('layer_norm', 'per_element')
>>> get_convention("keras3").effective_eps(1e-3) == float(np.float32(1e-3))  # held in float32
True
"""

from __future__ import annotations

import dataclasses
import math
from dataclasses import dataclass, field
from fractions import Fraction
from numbers import Real
from typing import Any, Literal

import numpy as np

from normspec.errors import DomainError, UnknownConventionError, expected

__all__ = [
    "Convention",
    "CONVENTIONS",
    "LAYERS",
    "CAST_STAGES",
    "get_convention",
    "convention_names",
    "check_eps",
    "running_update",
]

Layer = Literal["batch_norm", "layer_norm", "rms_norm", "group_norm", "instance_norm", "mean_variance_norm"]
LAYERS: tuple[str, ...] = ("batch_norm", "layer_norm", "rms_norm", "group_norm", "instance_norm", "mean_variance_norm")
Affine = Literal["per_channel", "per_element", "per_group", "none"]
MomentumDirection = Literal["new", "old"]
VarCorrection = Literal["none", "unbiased", "unbiased_clamped"]
UpdateTime = Literal["forward", "backward", "forward_not_at_init"]
OneValue = Literal["error", "compute", "identity"]
Cast = Literal["float64", "float32"]
EpsPlacement = Literal["inside", "outside"]
# Where an implementation rounds an intermediate (the output itself is always rounded to its dtype):
#   "weight": the effective weight (w + weight_offset), "normalized": x-hat before the affine step.
CAST_STAGES: tuple[str, ...] = ("weight", "normalized")


def running_update(old: Any, batch: Any, momentum: Any, direction: str = "new") -> Any:
    """The running update, the only copy in the package: ``"new"`` weighs the batch statistic by
    ``momentum``, ``"old"`` weighs the running one.  Written once for every number type it meets:
    SymPy expressions (the spec and its proofs), Fractions (the oracle: exact for a rational
    ``batch``, IEEE arithmetic for a NaN or infinite one) and mpmath numbers (the bug zoo).

    Hazard: ``momentum`` means the weight of the *new* value in PyTorch and cuDNN but of the *old*
    value in Keras, Flax, MXNet, ONNX and Paddle, so PyTorch 0.1 is Keras 0.9 (microsoft/onnxscript
    PR #1289: an exporter that forgot).

    >>> r, b = Fraction(0), Fraction(1)
    >>> running_update(r, b, Fraction(1, 10), "new"), running_update(r, b, Fraction(9, 10), "old")
    (Fraction(1, 10), Fraction(1, 10))
    >>> import sympy as sp
    >>> r, b, m = sp.symbols("r b m")
    >>> running_update(r, b, m, "new"), running_update(r, b, m, "old")
    (b*m + r*(1 - m), b*(1 - m) + m*r)
    """
    if direction == "new":
        return (1 - momentum) * old + momentum * batch
    return momentum * old + (1 - momentum) * batch


@dataclass(frozen=True)
class Convention:
    """The contract of one implementation of one normalization layer.

    **What is normalized together** (``layer``): ``batch_norm`` (every axis but the channel
    axis), ``layer_norm``/``rms_norm`` (the trailing axes; RMSNorm does not centre),
    ``group_norm`` (each sample's channels in ``groups`` groups), ``instance_norm`` (each
    sample's channel on its own), ``mean_variance_norm`` (any set of axes, no affine: ONNX
    MeanVarianceNormalization).

    **Affine form**: ``affine`` is ``per_channel``, ``per_element`` (the normalized shape),
    ``per_group`` (one scale per group: ONNX GroupNormalization-18, MXNet 1.x) or ``none``;
    ``weight_offset`` is added to the stored weight (Gemma's ``1 + w``: 1.0).

    **eps**: ``eps_default`` (None: the machine epsilon of the computation type, the input's or
    float32 for 16-bit inputs, PyTorch RMSNorm),
    ``eps_min`` (raised to at least this: TensorFlow's fused path up to 2.x releases that
    applied cuDNN's 1.001e-5 everywhere; TF 2.21 no longer does), ``eps_cast`` (the dtype it is held in;
    the oracle uses the exact value of that cast), ``eps_placement``: ``"inside"`` the square
    root, ``1/sqrt(var + eps)`` (every layer but one), or ``"outside"``, ``1/(sqrt(var) + eps)``
    (ONNX MeanVarianceNormalization; elsewhere that placement is a bug, docs/bug-corpus.md).

    **Running statistics** (``running_stats``; BatchNorm, InstanceNorm with
    ``track_running_stats``): ``momentum_direction``/``momentum_default`` (see the module
    docstring), ``cumulative_average`` (``momentum="cumulative"``: PyTorch ``momentum=None``),
    ``momentum_cast``, ``running_var_correction`` (``"none"`` biased, ``"unbiased"`` n/(n-1)
    with NaN at n = 1, ``"unbiased_clamped"`` n/max(n-1, 1)), ``update_time`` (``"forward"``,
    ``"backward"``: only a backward pass updates (MXNet CPU), ``"forward_not_at_init"``: Flax
    linen skips it while initializing), ``running_mean_init``/``running_var_init``.

    **Edges**: ``one_value`` at one value per channel in training: ``"error"``, ``"compute"``
    (the formula: y = beta), ``"identity"`` (y = x, statistics untouched: Paddle CPU);
    ``zero_var_guard``: ``var + eps == 0`` gives ``invstd = 0`` (y = beta) instead of 0/0;
    ``refuses_nonpositive_eps_in_training``: the implementation raises for eps <= 0 in training
    (PyTorch 2.13 ``F.batch_norm``: "eps must be positive during training"); the oracle still
    computes it wherever ``var + eps >= 0``.

    **Cast points** (``cast_points``): ``(stage, format)`` pairs, stage one of
    :data:`CAST_STAGES`, format a format name or ``"input"`` (the input's dtype): the
    implementation rounds that intermediate, and the oracle evaluates exactly between cast
    points and rounds once at each.  ``weight_format``: the dtype the weight is stored in
    (``"input"``: the input's, as a model's parameters in bfloat16 are; None: any), refused
    otherwise.  ``residual``: a fused residual add (``h = x + residual`` rounded to the input's
    dtype is returned as the new residual stream); ``residual_sum`` says which sum is normalized:
    ``"input"``, that rounded h (vLLM's CUDA kernel), or ``"float32"``, the sum rounded to float32
    only (vLLM's ``forward_native``, FlashInfer's fused kernel).  ``narrow_inputs``: the
    implementation takes float16 and bfloat16 inputs (computing in float32), so its audit battery
    and vectors add such cases (as do profiles whose weight is stored in the input's dtype).
    ``stats_format`` is the format
    of the saved statistics (mean, var, rstd): None means the input's, float32 for float16/bfloat16
    inputs.

    **Numerical fields** (what the float evaluation does; used by error budgets and audits,
    never by the exact oracle): ``affine_form``, ``variance_algorithm``, ``accumulator``.

    **Provenance**: ``sources`` (tagged as docs/conventions.md explains), ``unverified`` fields,
    and ``verified_on``: the installed versions (``"torch 2.13.0"``) on which ``normspec audit``'s
    probes agreed with every probed field; a later version that disagrees is profile drift.
    """

    name: str
    description: str
    layer: Layer = "batch_norm"
    affine: Affine = "per_channel"
    weight_offset: float = 0.0
    eps_default: float | None = 1e-5
    eps_min: float | None = None
    eps_cast: Cast = "float64"
    eps_placement: EpsPlacement = "inside"
    rms_scaling: bool = False
    running_stats: bool | None = None  # None: True for BatchNorm, False otherwise
    momentum_direction: MomentumDirection = "new"
    momentum_default: float | None = None
    cumulative_average: bool = False
    momentum_cast: Cast = "float64"
    running_var_correction: VarCorrection = "none"
    update_time: UpdateTime = "forward"
    one_value: OneValue = "compute"
    zero_var_guard: bool = False
    refuses_nonpositive_eps_in_training: bool = False
    default_axis: int = 1
    running_mean_init: float = 0.0
    running_var_init: float = 1.0
    cast_points: tuple[tuple[str, str], ...] = ()
    weight_format: str | None = None
    residual: bool = False
    residual_sum: str = "input"
    narrow_inputs: bool = False
    stats_format: str | None = None
    affine_form: Literal["folded", "unfolded", "unspecified"] = "unspecified"
    variance_algorithm: str = "unspecified"
    accumulator: str = "unspecified"
    sources: tuple[str, ...] = ()
    unverified: tuple[str, ...] = field(default=())
    verified_on: tuple[str, ...] = ()  # "distribution version" where the audit's probes agreed with the record

    def __post_init__(self) -> None:
        if self.layer not in LAYERS:
            raise DomainError(expected("one of " + ", ".join(LAYERS), "layer", self.layer))
        if self.running_stats is None:
            object.__setattr__(self, "running_stats", self.layer == "batch_norm")
        if self.eps_placement not in ("inside", "outside"):
            raise DomainError(expected("'inside' or 'outside'", "eps_placement", self.eps_placement))
        for stage, _fmt in self.cast_points:
            if stage not in CAST_STAGES:
                raise DomainError(expected("a cast stage in " + ", ".join(CAST_STAGES), "cast stage", stage))
        if self.residual_sum not in ("input", "float32"):
            raise DomainError(expected("'input' or 'float32'", "residual_sum", self.residual_sum))

    @property
    def centred(self) -> bool:
        """Whether the mean is subtracted (False for RMSNorm)."""
        return self.layer != "rms_norm"

    @property
    def one_value_outcome(self) -> str:
        """What happens at one value per channel: error, nan, finite or identity."""
        if self.one_value != "compute":
            return self.one_value
        return "nan" if self.running_stats and self.running_var_correction == "unbiased" else "finite"

    @property
    def momentum(self) -> float:
        """The default momentum of a profile with running statistics."""
        if self.momentum_default is None:
            raise DomainError(expected("a profile with a default momentum", "convention", self.name))
        return float(self.momentum_default)

    def cast_at(self, stage: str) -> str | None:
        """The format an intermediate is rounded to at ``stage``, or None."""
        return dict(self.cast_points).get(stage)

    def _cast(self, value: float, how: Cast) -> float:
        return float(np.float32(value)) if how == "float32" else float(value)

    def default_eps(self, mantissa_bits: int) -> float:
        """``eps_default``, or the machine epsilon of a format with that many significand bits."""
        # the machine epsilon of the type the implementation computes in: float32 for 16-bit inputs
        # (torch 2.13 F.rms_norm on bfloat16 with eps=None adds 2**-23, not bfloat16's 2**-7)
        return math.ldexp(1.0, 1 - max(mantissa_bits, 24)) if self.eps_default is None else self.eps_default

    def effective_eps(self, eps: float) -> float:
        """The eps the implementation really adds (clamped, then cast), as a double."""
        if self.eps_min is not None and eps < self.eps_min:
            eps = self.eps_min
        return self._cast(eps, self.eps_cast)

    def effective_momentum(self, momentum: float) -> float:
        return self._cast(momentum, self.momentum_cast)

    def running_update(self, old: Fraction, batch: Fraction | float, momentum: Fraction) -> Fraction | float:
        """:func:`running_update` in this convention's momentum direction."""
        return running_update(old, batch, momentum, self.momentum_direction)

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


_HF_LLAMA = _c(
    name="hf_llama_rms_norm",
    layer="rms_norm",
    description="Hugging Face LlamaRMSNorm (also Mistral, Qwen2, T5LayerNorm with half-precision weights)",
    eps_default=1e-06,
    affine="per_element",
    cast_points=(("normalized", "input"),),
    weight_format="input",
    accumulator="float32",
    sources=(
        "S transformers/models/llama/modeling_llama.py LlamaRMSNorm.forward: float32 variance and "
        "rsqrt, hidden_states.to(input_dtype), then self.weight * hidden_states in the input dtype",
        "S transformers/models/t5/modeling_t5.py T5LayerNorm: the same forward rounding when the weight is half; "
        "its backward differs (two gradient paths rounded to the input dtype, then added)",
        "R transformers 4.57.6 LlamaRMSNorm, MistralRMSNorm, T5LayerNorm in bfloat16: tests/test_llm_norm.py",
        "S vllm csrc/layernorm_kernels.cu rms_norm_kernel: ((scalar_t)(x * s_variance)) * weight, the same rounding",
    ),
    verified_on=("transformers 4.57.6",),
)

_FLASHINFER = _c(
    name="flashinfer_rms_norm",
    layer="rms_norm",
    description="FlashInfer rmsnorm: float32 sum of squares, x * rms_rcp * w in float32, one rounding",
    eps_default=1e-06,
    affine="per_element",
    weight_format="input",
    accumulator="float32",
    sources=(
        "S flashinfer include/flashinfer/norm.cuh RMSNormKernel: output_vec[j] = float(input_vec[j]) * rms_rcp "
        "* (weight_bias + float(weight_vec[j])), cast to T once; flashinfer/norm.py rmsnorm eps=1e-6",
        "S FusedAddRMSNormKernel normalizes the float sum of input and residual and stores only the residual "
        "rounded: flashinfer_fused_add_rms_norm",
    ),
    unverified=("runs on a CUDA GPU only: not run here",),
)

_GEMMA = _c(
    name="gemma_rms_norm",
    layer="rms_norm",
    description="Hugging Face GemmaRMSNorm: (1 + weight) in float32, one rounding at the end",
    eps_default=1e-06,
    affine="per_element",
    weight_offset=1.0,
    cast_points=(("weight", "float32"),),
    weight_format="input",
    accumulator="float32",
    sources=(
        "S transformers/models/gemma/modeling_gemma.py GemmaRMSNorm.forward: _norm(x.float()) * "
        "(1.0 + self.weight.float()), then type_as(x)",
        "R transformers 4.57.6 GemmaRMSNorm in bfloat16: tests/test_llm_norm.py",
    ),
    verified_on=("transformers 4.57.6",),
)

_PROFILES = [
    _c(
        name="torch",
        layer="batch_norm",
        description="PyTorch nn.BatchNorm*d / F.batch_norm, CPU native (2.13)",
        momentum_direction="new",
        momentum_default=0.1,
        eps_default=1e-5,
        running_var_correction="unbiased",
        one_value="error",
        zero_var_guard=True,
        cumulative_average=True,
        refuses_nonpositive_eps_in_training=True,
        affine_form="folded",
        variance_algorithm="two_pass",
        accumulator="float64 (contiguous path)",
        sources=(
            "S aten/src/ATen/native/Normalization.cpp",
            "R torch 2.13: x=[1,2,3,4], m=1 -> 1.6667",
            "R torch 2.13: F.batch_norm(training=True, eps=0 or -1e-5) raises 'eps must be positive during training'",
            "S aten/src/ATen/native/cpu/batch_norm_kernel.cpp",
        ),
        verified_on=("torch 2.13.0",),
    ),
    _c(
        name="torch_raw",
        layer="batch_norm",
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
        verified_on=("torch 2.13.0",),
    ),
    _c(
        name="torch_cuda",
        layer="batch_norm",
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
        layer="batch_norm",
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
            "R keras 3.15.1 numpy backend: E[x^2]-E[x]^2 NaN (docs/bug-corpus.md #38)",
        ),
        verified_on=("keras 3.15.1",),
    ),
    _c(
        name="tf_keras2_fused",
        layer="batch_norm",
        description="tf.keras 2.15 BatchNormalization, fused path (rank 4/5, axis 1/3 or 1/4)",
        momentum_direction="old",
        momentum_default=0.99,
        eps_default=1e-3,
        running_var_correction="unbiased_clamped",
        eps_cast="float32",
        momentum_cast="float32",
        default_axis=-1,
        affine_form="unfolded",
        variance_algorithm="two_pass",
        accumulator="float32",
        sources=(
            "S tensorflow/core/kernels/fused_batch_norm_op.cc (n/max(n-1,1))",
            "R tensorflow 2.21: fused_batch_norm with eps = 1e-6 normalizes with 1e-6 (the 1.001e-5 clamp of "
            "earlier releases, docs/bug-corpus.md #24, is gone)",
        ),
        verified_on=("tf_keras 2.21.0",),
    ),
    _c(
        name="tf_keras2_nonfused",
        layer="batch_norm",
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
        verified_on=("tf_keras 2.21.0", "tensorflow 2.21.0"),
    ),
    _c(
        name="tf_fused_batch_norm_v3",
        layer="batch_norm",
        description="tf.raw_ops.FusedBatchNormV3 / tf.compat.v1.nn.fused_batch_norm",
        momentum_direction="new",
        momentum_default=1.0,
        eps_default=1e-3,
        running_var_correction="unbiased_clamped",
        eps_cast="float32",
        momentum_cast="float32",
        default_axis=-1,
        affine_form="unfolded",
        variance_algorithm="two_pass",
        accumulator="float32",
        sources=(
            "S tensorflow/core/kernels/fused_batch_norm_op.cc (exponential_avg_factor)",
            "R tensorflow 2.21: no eps clamp (eps = 1e-6 is used as given)",
        ),
        verified_on=("tensorflow 2.21.0",),
    ),
    _c(
        name="flax_linen",
        layer="batch_norm",
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
        verified_on=("flax 0.12.8",),
    ),
    _c(
        name="flax_nnx",
        layer="batch_norm",
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
        verified_on=("flax 0.12.8",),
    ),
    _c(
        name="mxnet_cpu",
        layer="batch_norm",
        description="MXNet 1.9 Gluon BatchNorm, CPU native / oneDNN",
        momentum_direction="old",
        momentum_default=0.9,
        eps_default=1e-5,
        running_var_correction="none",
        update_time="backward",
        affine_form="unfolded",
        variance_algorithm="two_pass",
        accumulator="float32 for float16/float32, float64 for float64",
        sources=(
            "S src/operator/nn/batch_norm.cc",
            "I apache/mxnet#18751, #14357",
            "R mxnet 1.9.1: forward-only training leaves 0/1",
            "R mxnet 1.9.1: var = eps = 0 gives NaN (no 0/0 guard)",
        ),
        verified_on=("mxnet 1.9.1",),
    ),
    _c(
        name="mxnet_cudnn",
        layer="batch_norm",
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
        layer="batch_norm",
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
        layer="batch_norm",
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
        verified_on=("onnx 1.23.2",),
    ),
    _c(
        name="onnx_bn15",
        layer="batch_norm",
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
        verified_on=("onnx 1.23.2", "onnxruntime 1.32.0"),
    ),
    _c(
        name="paddle_cpu",
        layer="batch_norm",
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
        verified_on=("paddlepaddle 3.3.1",),
    ),
    _c(
        name="cudnn",
        layer="batch_norm",
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
    _c(
        name="torch_layer_norm",
        layer="layer_norm",
        description="torch.nn.LayerNorm / F.layer_norm, CPU",
        eps_default=1e-05,
        affine="per_element",
        variance_algorithm="welford (vectorized, cascade merge)",
        accumulator="float32 opmath",
        narrow_inputs=True,
        sources=(
            "S aten/src/ATen/native/cpu/moments_utils.h",
            "R torch 2.13 bfloat16/float16 input and parameters: float32 statistics, y rounded once",
        ),
        verified_on=("torch 2.13.0",),
    ),
    _c(
        name="torch_rms_norm",
        layer="rms_norm",
        description="torch.nn.RMSNorm / F.rms_norm",
        eps_default=None,
        affine="per_element",
        sources=(
            "R torch 2.13: eps=None",
            "D torch.nn.RMSNorm: eps defaults to finfo(x.dtype).eps",
            "S aten/src/ATen/native/layer_norm.cpp rms_norm: eps.value_or(numeric_limits<opmath_t>::epsilon()); "
            "R torch 2.13 bfloat16 input: eps=None adds float32's 2**-23, not the documented finfo(bfloat16).eps; "
            "float32 math, one rounding at type_as(input)",
        ),
        unverified=("evaluation order x * rsqrt(mean(x^2) + eps) * w",),
        narrow_inputs=True,
        verified_on=("torch 2.13.0",),
    ),
    _HF_LLAMA,
    _GEMMA,
    _c(
        name="liger_rms_norm_llama",
        layer="rms_norm",
        description="Liger-Kernel RMSNorm, casting_mode='llama', offset 0: LlamaRMSNorm's rounding; the weight "
        "(offset + w) and the product in float32, rounded once at the store",
        eps_default=1e-06,
        affine="per_element",
        cast_points=(("normalized", "input"), ("weight", "float32")),
        weight_format="input",
        accumulator="float32",
        sources=(
            "S Liger-Kernel src/liger_kernel/ops/rms_norm.py: casting_mode llama computes only rstd in float32, "
            "X_row.to(X_row_dtype) before Y_row = X_row * (offset + W_row) with a float32 offset",
        ),
        unverified=("runs on a CUDA GPU only (Triton): not run here",),
    ),
    # GemmaRMSNorm's rounding, in Liger's Triton kernel
    dataclasses.replace(
        _GEMMA,
        name="liger_rms_norm_gemma",
        description="Liger-Kernel RMSNorm, casting_mode='gemma', offset 1 (its Gemma modules): everything in "
        "float32, one rounding",
        sources=(
            "S Liger-Kernel src/liger_kernel/ops/rms_norm.py: casting_mode gemma casts W_row and X_row to float32, "
            "Y_row.to(X_row_dtype) at the end; transformers/rms_norm.py: Gemma variants use offset 1.0",
        ),
        unverified=("runs on a CUDA GPU only (Triton): not run here",),
        verified_on=(),
    ),
    _c(
        name="liger_rms_norm_none",
        layer="rms_norm",
        description="Liger-Kernel RMSNorm, casting_mode='none': eps, offset, rstd and both products in the input dtype",
        eps_default=1e-06,
        affine="per_element",
        eps_cast="float32",
        cast_points=(("normalized", "input"), ("weight", "input")),
        weight_format="input",
        accumulator="the input dtype (tl.sum of the input's type)",
        sources=(
            "S Liger-Kernel src/liger_kernel/ops/rms_norm.py: casting_mode none casts eps and offset to the input "
            "dtype; RSTD in X.dtype",
        ),
        unverified=(
            "runs on a CUDA GPU only (Triton): not run here",
            "eps held in the input dtype (recorded as float32: bfloat16 eps is not a cast the record has)",
            "how tl.sum accumulates the input dtype",
        ),
    ),
    _FLASHINFER,
    # LlamaRMSNorm of the rounded sum: the same record with a residual stream
    dataclasses.replace(
        _HF_LLAMA,
        name="fused_add_rms_norm",
        description="fused residual add + RMSNorm (vLLM fused_add_rms_norm): h = x + residual rounded to the "
        "input dtype is the new residual; y is LlamaRMSNorm of h",
        residual=True,
        sources=(
            "S vllm csrc/layernorm_kernels.cu fused_add_rms_norm_kernel: z = input + residual in scalar_t, "
            "stored as the residual; variance of (float) z; (scalar_t)(x * s_variance) * weight",
            "S vllm model_executor/layers/layernorm.py RMSNorm.forward_native differs: it normalizes the float32 "
            "sum before rounding and rounds only the returned residual (vllm_native_fused_add_rms_norm)",
        ),
    ),
    # the same two functions normalizing the float32 sum, the residual rounded only where it is stored
    dataclasses.replace(
        _HF_LLAMA,
        name="vllm_native_fused_add_rms_norm",
        description="vLLM RMSNorm.forward_native with a residual: h = float32(x) + float32(residual) rounded to "
        "float32 is normalized as LlamaRMSNorm normalizes; h rounded to the input dtype is the new residual",
        residual=True,
        residual_sum="float32",
        sources=(
            "S vllm model_executor/layers/layernorm.py RMSNorm.forward_native: x = x.to(float32); x = x + "
            "residual.to(float32); residual = x.to(orig_dtype); variance = x.pow(2).mean(-1); x = x * "
            "rsqrt(variance + eps); x = x.to(orig_dtype) * weight",
        ),
        unverified=("vLLM does not install on this CPU machine: the profile follows its source",),
        verified_on=(),
    ),
    dataclasses.replace(
        _FLASHINFER,
        name="flashinfer_fused_add_rms_norm",
        description="FlashInfer fused_add_rmsnorm: the float32 sum of input and residual is normalized and scaled "
        "in float32, rounded once; the sum rounded to the input dtype is the new residual",
        residual=True,
        residual_sum="float32",
        sources=(
            "S flashinfer include/flashinfer/norm.cuh FusedAddRMSNormKernel: x = float(input) + float(residual); "
            "residual stored as T(x); sum of squares of x in float; output float(x) * rms_rcp * (weight_bias + "
            "float(weight)) cast to T once",
        ),
    ),
    _c(
        name="torch_group_norm",
        layer="group_norm",
        description="torch.nn.GroupNorm / F.group_norm, CPU",
        eps_default=1e-05,
        affine="per_channel",
        variance_algorithm="welford (RowwiseMoments)",
        accumulator="float32 opmath",
        sources=("S aten/src/ATen/native/cpu/group_norm_kernel.cpp (folded scale/bias)",),
        verified_on=("torch 2.13.0",),
    ),
    _c(
        name="torch_instance_norm",
        layer="instance_norm",
        description="torch.nn.InstanceNorm*d (affine=False, track_running_stats=False)",
        eps_default=1e-05,
        affine="none",
        momentum_default=0.1,
        sources=("R torch 2.13 defaults", "S aten/src/ATen/native/Normalization.cpp instance_norm via batch_norm"),
        verified_on=("torch 2.13.0",),
    ),
    _c(
        name="torch_instance_norm_tracked",
        layer="instance_norm",
        description="torch.nn.InstanceNorm*d(track_running_stats=True)",
        eps_default=1e-05,
        affine="none",
        running_stats=True,
        momentum_direction="new",
        momentum_default=0.1,
        running_var_correction="unbiased",
        sources=("S Normalization.cpp: running stats = batch mean of per-instance updates (unbiased)",),
    ),
    _c(
        name="keras3_layer_norm",
        layer="layer_norm",
        description="keras.layers.LayerNormalization",
        eps_default=0.001,
        affine="per_element",
        eps_cast="float32",
        sources=("S keras/src/layers/normalization/layer_normalization.py",),
        verified_on=("keras 3.15.1",),
    ),
    _c(
        name="keras3_layer_norm_rms",
        layer="rms_norm",
        description="keras.layers.LayerNormalization(rms_scaling=True), Keras >= 3.11",
        eps_default=0.001,
        affine="per_element",
        eps_cast="float32",
        rms_scaling=True,
        sources=("S keras commit 764ed95 (PR #21352)",),
    ),
    _c(
        name="keras3_group_norm",
        layer="group_norm",
        description="keras.layers.GroupNormalization",
        eps_default=0.001,
        affine="per_channel",
        eps_cast="float32",
        sources=("S keras/src/layers/normalization/group_normalization.py",),
        verified_on=("keras 3.15.1",),
    ),
    _c(
        name="flax_layer_norm",
        layer="layer_norm",
        description="flax.linen.LayerNorm (use_fast_variance=True)",
        eps_default=1e-06,
        affine="per_element",
        eps_cast="float32",
        variance_algorithm="raw_moments_clamped",
        accumulator="float32",
        sources=("S flax/linen/normalization.py",),
        verified_on=("flax 0.12.8",),
    ),
    _c(
        name="flax_group_norm",
        layer="group_norm",
        description="flax.linen.GroupNorm",
        eps_default=1e-06,
        affine="per_channel",
        eps_cast="float32",
        variance_algorithm="raw_moments_clamped",
        accumulator="float32",
        sources=("S flax/linen/normalization.py",),
        verified_on=("flax 0.12.8",),
    ),
    _c(
        name="flax_rms_norm",
        layer="rms_norm",
        description="flax.linen.RMSNorm",
        eps_default=1e-06,
        affine="per_element",
        eps_cast="float32",
        sources=("S flax/linen/normalization.py",),
        verified_on=("flax 0.12.8",),
    ),
    _c(
        name="flax_rms_norm_dtype",
        layer="rms_norm",
        description="flax.linen.RMSNorm(dtype=x.dtype), float32 parameters: float32 math, y rounded once",
        eps_default=1e-06,
        affine="per_element",
        eps_cast="float32",
        weight_format="float32",
        narrow_inputs=True,
        accumulator="float32",
        sources=(
            "S flax/linen/normalization.py _compute_stats: statistics promoted to at least float32; _normalize: "
            "rsqrt(var + eps) * scale in float32, then jnp.asarray(y, dtype), the one rounding to the half format",
            "S flax/linen/dtypes.py canonicalize_dtype: dtype=None and a float32 scale give a float32 y",
            "R flax 0.12.8 bfloat16/float16 rows: tests/targets/test_audit_family.py",
        ),
        verified_on=("flax 0.12.8",),
    ),
    _c(
        name="flax_layer_norm_dtype",
        layer="layer_norm",
        description="flax.linen.LayerNorm(dtype=x.dtype), float32 parameters: float32 math, y rounded once",
        eps_default=1e-06,
        affine="per_element",
        eps_cast="float32",
        weight_format="float32",
        narrow_inputs=True,
        variance_algorithm="raw_moments_clamped",
        accumulator="float32",
        sources=(
            "S flax/linen/normalization.py _normalize: (x - mean) * (rsqrt(var + eps) * scale) + bias in float32, "
            "jnp.asarray(y, dtype) the one rounding",
            "R flax 0.12.8 bfloat16/float16 rows: tests/targets/test_audit_family.py",
        ),
        verified_on=("flax 0.12.8",),
    ),
    _c(
        name="keras3_rms_norm_mixed",
        layer="rms_norm",
        description="keras.layers.RMSNormalization under a mixed_bfloat16/mixed_float16 policy: the float32 scale "
        "autocast to the compute dtype, float32 math, y rounded once",
        eps_default=1e-06,
        affine="per_element",
        eps_cast="float32",
        cast_points=(("weight", "input"),),
        weight_format="float32",
        narrow_inputs=True,
        accumulator="float32",
        sources=(
            "S keras/src/layers/normalization/rms_normalization.py call: ops.rms_normalization(x, scale=self.scale) "
            "with the layer's autocast (the float32 variable read in the compute dtype)",
            "S keras/src/ops/nn.py _rms_normalization: x cast to float32, x * rsqrt(mean(x^2) + eps) * scale, "
            "cast back to the input dtype",
            "R keras 3.15.1 (NumPy backend) bfloat16/float16 rows: tests/targets/test_audit_family.py",
        ),
        verified_on=("keras 3.15.1",),
    ),
    _c(
        name="keras3_layer_norm_mixed",
        layer="layer_norm",
        description="keras.layers.LayerNormalization under a mixed_bfloat16/mixed_float16 policy: gamma and beta "
        "kept in float32 (no autocast), float32 math, y rounded once to the compute dtype",
        eps_default=0.001,
        affine="per_element",
        eps_cast="float32",
        weight_format="float32",
        narrow_inputs=True,
        variance_algorithm="raw_moments_float32",
        accumulator="float32",
        sources=(
            "S keras/src/layers/normalization/layer_normalization.py: autocast=False, inputs cast to float32 for "
            "the moments, the result cast to the compute dtype",
            "R keras 3.15.1 (NumPy backend) bfloat16/float16 rows: tests/targets/test_audit_family.py",
        ),
        verified_on=("keras 3.15.1",),
    ),
    _c(
        name="onnx_layer_norm17",
        layer="layer_norm",
        description="ONNX LayerNormalization-17 (stash_type=1: float32 first stage)",
        eps_default=1e-05,
        affine="per_element",
        eps_cast="float32",
        variance_algorithm="two_pass",
        accumulator="float32 (stash_type)",
        sources=("S onnx/reference/ops/op_layer_normalization.py",),
        verified_on=("onnx 1.23.2", "onnxruntime 1.32.0"),
    ),
    _c(
        name="onnx_group_norm18",
        layer="group_norm",
        description="ONNX GroupNormalization-18 (deprecated): scale and bias per group",
        eps_default=1e-05,
        affine="per_group",
        eps_cast="float32",
        sources=("S onnx/defs/nn/old.cc", "docs/bug-corpus.md #49"),
    ),
    _c(
        name="onnx_group_norm21",
        layer="group_norm",
        description="ONNX GroupNormalization-21: scale and bias per channel",
        eps_default=1e-05,
        affine="per_channel",
        eps_cast="float32",
        sources=("S onnx/defs/nn/defs.cc",),
        verified_on=("onnx 1.23.2", "onnxruntime 1.32.0"),
    ),
    _c(
        name="onnx_instance_norm",
        layer="instance_norm",
        description="ONNX InstanceNormalization",
        eps_default=1e-05,
        affine="per_channel",
        eps_cast="float32",
        sources=("S onnx/defs/nn/defs.cc",),
        verified_on=("onnx 1.23.2", "onnxruntime 1.32.0"),
    ),
    _c(
        name="onnx_rms_norm23",
        layer="rms_norm",
        description="ONNX RMSNormalization-23 (stash_type=1: float32 first stage)",
        eps_default=1e-05,
        affine="per_element",
        eps_cast="float32",
        accumulator="float32 (stash_type)",
        sources=("S onnx/defs/nn/defs.cc", "S onnx/reference/ops/op_rms_normalization.py"),
    ),
    _c(
        name="onnx_rms_norm23_cast",
        layer="rms_norm",
        description="ONNX RMSNormalization-23 as its text defines it (stash_type=1): the first stage in float32, "
        "Normalized cast back to X's type, then Mul(Normalized, Scale) in that type",
        eps_default=1e-05,
        affine="per_element",
        eps_cast="float32",
        cast_points=(("normalized", "input"),),
        weight_format="input",
        narrow_inputs=True,
        accumulator="float32 (stash_type)",
        sources=(
            "D onnx/defs/nn/defs.cc RMSNormalization-23: 'casts all input variables to 32-bit float, perform the "
            "computation, and finally cast Normalized back to the original type of X', then Y = Mul(Normalized, "
            "Scale); Scale has X's type T",
            "R onnxruntime 1.32 CPU: float16 within 1 ULP of this reading, no bfloat16 kernel; onnx 1.23's "
            "reference evaluator computes in T despite stash_type=1: tests/targets/test_audit_family.py",
        ),
    ),
    _c(
        name="onnx_mvn13",
        layer="mean_variance_norm",
        description="ONNX MeanVarianceNormalization-13: (x - E[x]) / (sqrt(E[x^2] - E[x]^2) + 1e-9) over axes",
        eps_default=1e-09,
        affine="none",
        eps_cast="float32",
        eps_placement="outside",
        variance_algorithm="raw_moments",
        sources=("S onnx/defs/nn/defs.cc (function body: Epsilon = Constant 1e-09f, Add(Sqrt(Variance), Epsilon))",),
    ),
    _c(
        name="tf_keras2_layer_norm",
        layer="layer_norm",
        description="tf_keras 2 LayerNormalization (fused path: fused_batch_norm on a reshaped tensor)",
        eps_default=0.001,
        affine="per_element",
        eps_cast="float32",
        variance_algorithm="fused_batch_norm (Eigen, float32)",
        accumulator="float32",
        sources=("R tf_keras 2.21: signature epsilon=0.001; layer._fused is True for axis=-1",),
        verified_on=("tf_keras 2.21.0",),
    ),
    _c(
        name="tf_keras2_group_norm",
        layer="group_norm",
        description="tf_keras 2 GroupNormalization",
        eps_default=0.001,
        affine="per_channel",
        eps_cast="float32",
        sources=("R tf_keras 2.21: signature epsilon=0.001; gamma and beta of shape (C,)",),
        verified_on=("tf_keras 2.21.0",),
    ),
    _c(
        name="paddle_layer_norm",
        layer="layer_norm",
        description="paddle.nn.functional.layer_norm, CPU",
        eps_default=1e-05,
        affine="per_element",
        eps_cast="float32",
        sources=("R paddlepaddle 3.3.1: signature epsilon=1e-05",),
        verified_on=("paddlepaddle 3.3.1",),
    ),
    _c(
        name="paddle_group_norm",
        layer="group_norm",
        description="paddle.nn.functional.group_norm, CPU",
        eps_default=1e-05,
        affine="per_channel",
        eps_cast="float32",
        sources=("R paddlepaddle 3.3.1: signature epsilon=1e-05",),
        verified_on=("paddlepaddle 3.3.1",),
    ),
    _c(
        name="paddle_instance_norm",
        layer="instance_norm",
        description="paddle.nn.functional.instance_norm, CPU",
        eps_default=1e-05,
        affine="per_channel",
        eps_cast="float32",
        sources=("R paddlepaddle 3.3.1: signature eps=1e-05",),
        verified_on=("paddlepaddle 3.3.1",),
    ),
    _c(
        name="mxnet_layer_norm",
        layer="layer_norm",
        description="mxnet.nd.LayerNorm (gluon.nn.LayerNorm), MXNet 1.9.1 CPU",
        eps_default=1e-05,
        affine="per_element",
        eps_cast="float32",
        sources=("R mxnet 1.9.1: gluon.nn.LayerNorm epsilon=1e-05",),
        verified_on=("mxnet 1.9.1",),
    ),
    _c(
        name="mxnet_group_norm",
        layer="group_norm",
        description="mxnet.nd.GroupNorm (gluon.nn.GroupNorm), MXNet 1.9.1: gamma and beta per group",
        eps_default=1e-05,
        affine="per_group",
        eps_cast="float32",
        sources=(
            "R mxnet 1.9.1: gluon.nn.GroupNorm(num_groups=2) has gamma and beta of shape (2,)",
            "I apache/mxnet#17139; fixed by #18199 on master (2.0) only",
        ),
        verified_on=("mxnet 1.9.1",),
    ),
    _c(
        name="mxnet_instance_norm",
        layer="instance_norm",
        description="mxnet.nd.InstanceNorm (gluon.nn.InstanceNorm), MXNet 1.9.1 CPU",
        eps_default=1e-05,
        affine="per_channel",
        eps_cast="float32",
        sources=("R mxnet 1.9.1: gluon.nn.InstanceNorm epsilon=1e-05",),
        verified_on=("mxnet 1.9.1",),
    ),
]

CONVENTIONS: dict[str, Convention] = {c.name: c for c in _PROFILES}


def convention_names(layer: str | None = None) -> list[str]:
    """Every profile's name, or those of one layer."""
    return [c.name for c in CONVENTIONS.values() if layer is None or c.layer == layer]


def get_convention(convention: str | Convention, layer: str | None = None) -> Convention:
    """Look a profile up by name (a :class:`Convention` passes through); with ``layer``, the
    profile must describe that layer.

    >>> get_convention("pytorch")  # doctest: +ELLIPSIS
    Traceback (most recent call last):
    ...
    normspec.errors.UnknownConventionError: Expected one of torch, torch_raw, ..., but got convention='pytorch'
    >>> get_convention("torch", layer="layer_norm")  # doctest: +ELLIPSIS
    Traceback (most recent call last):
    ...
    normspec.errors.UnknownConventionError: Expected a layer_norm profile (...), but got convention='torch'
    """
    if isinstance(convention, Convention):
        conv = convention
    else:
        try:
            conv = CONVENTIONS[convention]
        except (KeyError, TypeError):
            raise UnknownConventionError(
                expected("one of " + ", ".join(CONVENTIONS), "convention", convention)
            ) from None
    if layer is not None and conv.layer != layer:
        names = ", ".join(convention_names(layer))
        raise UnknownConventionError(expected(f"a {layer} profile ({names})", "convention", conv.name))
    return conv


def check_eps(eps: object) -> float:
    """eps as a float: any finite real number (numpy scalars too).  A negative eps is the
    caller's to allow: the oracle computes wherever ``var + eps > 0`` and names the group
    where it is not.

    >>> check_eps(np.float32(1e-5)) == float(np.float32(1e-5))
    True
    """
    if isinstance(eps, bool) or not isinstance(eps, (Real, np.floating, np.integer)):
        raise DomainError(expected("a finite real eps", "eps", eps))
    value = float(eps)
    if not math.isfinite(value):
        raise DomainError(expected("a finite real eps", "eps", eps))
    return value
