"""What each implementation of the rest of the family computes, as data.

One :class:`FamilyConvention` per implementation of LayerNorm, RMSNorm,
GroupNorm and InstanceNorm; the same discipline as
:mod:`normspec.spec.conventions` (sources per record, ``unverified`` for what
rests on recollection).

>>> get_family_convention("torch_rms_norm").eps_default is None  # finfo(dtype).eps
True
>>> get_family_convention("onnx_group_norm18").affine
'per_group'
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Literal

from normspec.errors import UnknownConventionError, expected

__all__ = ["FamilyConvention", "FAMILY_CONVENTIONS", "get_family_convention"]

Layer = Literal["layer_norm", "rms_norm", "group_norm", "instance_norm"]


@dataclass(frozen=True)
class FamilyConvention:
    """One implementation of a family layer.

    * ``eps_default``: None means the input dtype's machine epsilon (PyTorch RMSNorm).
    * ``eps_cast``: the precision the implementation holds eps in.
    * ``affine``: ``per_element`` (over the normalized shape), ``per_channel``,
      ``per_group`` (ONNX GroupNormalization-18), or ``none``.
    * ``rms_scaling``: Keras's LayerNormalization option (divide by the root mean
      square, no centring; Keras <= 3.10 divided by the variance instead).
    * ``running_stats``: InstanceNorm with ``track_running_stats`` (PyTorch), default momentum.
    * Numerical fields (for budgets and audits): ``variance_algorithm``, ``accumulator``.
    """

    name: str
    layer: Layer
    description: str
    eps_default: float | None
    affine: Literal["per_element", "per_channel", "per_group", "none"]
    eps_cast: Literal["float64", "float32"] = "float64"
    rms_scaling: bool = False
    running_stats: bool = False
    momentum_default: float | None = None
    variance_algorithm: str = "unspecified"
    accumulator: str = "unspecified"
    sources: tuple[str, ...] = ()
    unverified: tuple[str, ...] = ()


_F = FamilyConvention
_PROFILES = [
    _F(
        "torch_layer_norm",
        "layer_norm",
        "torch.nn.LayerNorm / F.layer_norm, CPU",
        1e-5,
        "per_element",
        variance_algorithm="welford (vectorized, cascade merge)",
        accumulator="float32 opmath",
        sources=("S aten/src/ATen/native/cpu/moments_utils.h",),
    ),
    _F(
        "torch_rms_norm",
        "rms_norm",
        "torch.nn.RMSNorm / F.rms_norm",
        None,
        "per_element",
        sources=("R torch 2.13: eps=None", "D torch.nn.RMSNorm: eps defaults to finfo(x.dtype).eps"),
        unverified=("evaluation order x * rsqrt(mean(x^2) + eps) * w",),
    ),
    _F(
        "torch_group_norm",
        "group_norm",
        "torch.nn.GroupNorm / F.group_norm, CPU",
        1e-5,
        "per_channel",
        variance_algorithm="welford (RowwiseMoments)",
        accumulator="float32 opmath",
        sources=("S aten/src/ATen/native/cpu/group_norm_kernel.cpp (folded scale/bias)",),
    ),
    _F(
        "torch_instance_norm",
        "instance_norm",
        "torch.nn.InstanceNorm*d (affine=False, track_running_stats=False)",
        1e-5,
        "none",
        momentum_default=0.1,
        sources=("R torch 2.13 defaults", "S aten/src/ATen/native/Normalization.cpp instance_norm via batch_norm"),
    ),
    _F(
        "torch_instance_norm_tracked",
        "instance_norm",
        "torch.nn.InstanceNorm*d(track_running_stats=True)",
        1e-5,
        "none",
        running_stats=True,
        momentum_default=0.1,
        sources=("S Normalization.cpp: running stats = batch mean of per-instance updates (unbiased)",),
    ),
    _F(
        "keras3_layer_norm",
        "layer_norm",
        "keras.layers.LayerNormalization",
        1e-3,
        "per_element",
        eps_cast="float32",
        sources=("S keras/src/layers/normalization/layer_normalization.py",),
    ),
    _F(
        "keras3_layer_norm_rms",
        "rms_norm",
        "keras.layers.LayerNormalization(rms_scaling=True), Keras >= 3.11",
        1e-3,
        "per_element",
        eps_cast="float32",
        rms_scaling=True,
        sources=("S keras commit 764ed95 (PR #21352)",),
    ),
    _F(
        "keras3_group_norm",
        "group_norm",
        "keras.layers.GroupNormalization",
        1e-3,
        "per_channel",
        eps_cast="float32",
        sources=("S keras/src/layers/normalization/group_normalization.py",),
    ),
    _F(
        "flax_layer_norm",
        "layer_norm",
        "flax.linen.LayerNorm (use_fast_variance=True)",
        1e-6,
        "per_element",
        eps_cast="float32",
        variance_algorithm="raw_moments_clamped",
        accumulator="float32",
        sources=("S flax/linen/normalization.py",),
    ),
    _F(
        "flax_group_norm",
        "group_norm",
        "flax.linen.GroupNorm",
        1e-6,
        "per_channel",
        eps_cast="float32",
        variance_algorithm="raw_moments_clamped",
        accumulator="float32",
        sources=("S flax/linen/normalization.py",),
    ),
    _F(
        "flax_rms_norm",
        "rms_norm",
        "flax.linen.RMSNorm",
        1e-6,
        "per_element",
        eps_cast="float32",
        sources=("S flax/linen/normalization.py",),
    ),
    _F(
        "onnx_layer_norm17",
        "layer_norm",
        "ONNX LayerNormalization-17 (stash_type=1: float32 first stage)",
        1e-5,
        "per_element",
        eps_cast="float32",
        variance_algorithm="two_pass",
        accumulator="float32 (stash_type)",
        sources=("S onnx/reference/ops/op_layer_normalization.py",),
    ),
    _F(
        "onnx_group_norm18",
        "group_norm",
        "ONNX GroupNormalization-18 (deprecated): scale and bias per group",
        1e-5,
        "per_group",
        eps_cast="float32",
        sources=("S onnx/defs/nn/old.cc", "bugs.md #49"),
    ),
    _F(
        "onnx_group_norm21",
        "group_norm",
        "ONNX GroupNormalization-21: scale and bias per channel",
        1e-5,
        "per_channel",
        eps_cast="float32",
        sources=("S onnx/defs/nn/defs.cc",),
    ),
    _F(
        "onnx_instance_norm",
        "instance_norm",
        "ONNX InstanceNormalization",
        1e-5,
        "per_channel",
        eps_cast="float32",
        sources=("S onnx/defs/nn/defs.cc",),
    ),
    _F(
        "tf_keras2_layer_norm",
        "layer_norm",
        "tf_keras 2 LayerNormalization (fused path: fused_batch_norm on a reshaped tensor)",
        1e-3,
        "per_element",
        eps_cast="float32",
        variance_algorithm="fused_batch_norm (Eigen, float32)",
        accumulator="float32",
        sources=("R tf_keras 2.21: signature epsilon=0.001; layer._fused is True for axis=-1",),
    ),
    _F(
        "tf_keras2_group_norm",
        "group_norm",
        "tf_keras 2 GroupNormalization",
        1e-3,
        "per_channel",
        eps_cast="float32",
        sources=("R tf_keras 2.21: signature epsilon=0.001; gamma and beta of shape (C,)",),
    ),
    _F(
        "paddle_layer_norm",
        "layer_norm",
        "paddle.nn.functional.layer_norm, CPU",
        1e-5,
        "per_element",
        eps_cast="float32",
        sources=("R paddlepaddle 3.3.1: signature epsilon=1e-05",),
    ),
    _F(
        "paddle_group_norm",
        "group_norm",
        "paddle.nn.functional.group_norm, CPU",
        1e-5,
        "per_channel",
        eps_cast="float32",
        sources=("R paddlepaddle 3.3.1: signature epsilon=1e-05",),
    ),
    _F(
        "paddle_instance_norm",
        "instance_norm",
        "paddle.nn.functional.instance_norm, CPU",
        1e-5,
        "per_channel",
        eps_cast="float32",
        sources=("R paddlepaddle 3.3.1: signature eps=1e-05",),
    ),
    _F(
        "mxnet_layer_norm",
        "layer_norm",
        "mxnet.nd.LayerNorm (gluon.nn.LayerNorm), MXNet 1.9.1 CPU",
        1e-5,
        "per_element",
        eps_cast="float32",
        sources=("R mxnet 1.9.1: gluon.nn.LayerNorm epsilon=1e-05",),
    ),
    _F(
        "mxnet_group_norm",
        "group_norm",
        "mxnet.nd.GroupNorm (gluon.nn.GroupNorm), MXNet 1.9.1: gamma and beta per group",
        1e-5,
        "per_group",
        eps_cast="float32",
        sources=(
            "R mxnet 1.9.1: gluon.nn.GroupNorm(num_groups=2) has gamma and beta of shape (2,)",
            "I apache/mxnet#17139; fixed by #18199 on master (2.0) only",
        ),
    ),
    _F(
        "mxnet_instance_norm",
        "instance_norm",
        "mxnet.nd.InstanceNorm (gluon.nn.InstanceNorm), MXNet 1.9.1 CPU",
        1e-5,
        "per_channel",
        eps_cast="float32",
        sources=("R mxnet 1.9.1: gluon.nn.InstanceNorm epsilon=1e-05",),
    ),
]

FAMILY_CONVENTIONS: dict[str, FamilyConvention] = {c.name: c for c in _PROFILES}


def get_family_convention(name: str) -> FamilyConvention:
    try:
        return FAMILY_CONVENTIONS[name]
    except KeyError:
        raise UnknownConventionError(expected("one of " + ", ".join(FAMILY_CONVENTIONS), "convention", name)) from None
