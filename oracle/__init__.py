"""The exact oracle: evaluates the spec exactly and rounds once, correctly.

Layers, bottom up: :mod:`~normspec.oracle.formats` (formats, exact rounding
of rationals), :mod:`~normspec.oracle.sqrtform` (exact decision for
``B + A/sqrt(D)``), :mod:`~normspec.oracle.exact` (exact statistics),
:mod:`~normspec.oracle.core` (normalize over reduction axes), and every
layer on top (:mod:`~normspec.oracle.layers`: one engine, one result type
:class:`NormResult`; :mod:`~normspec.oracle.backward`: one exact backward).
"""

from normspec.oracle.backward import (
    Gradients,
    batch_norm_backward,
    group_norm_backward,
    instance_norm_backward,
    layer_norm_backward,
    rms_norm_backward,
    round_sqrt_sum,
)
from normspec.oracle.formats import BFLOAT16, FLOAT16, FLOAT32, FLOAT64, FORMATS, Format, format_of, round_array
from normspec.oracle.layers import (
    ExactNorm,
    NormResult,
    batch_norm,
    forward,
    group_norm,
    host_array,
    instance_norm,
    instance_norm_tracked,
    layer_norm,
    mean_variance_norm,
    residual_sums,
    rms_norm,
)
from normspec.oracle.ulp import relative_ulp_error, ulp_distance

# The names of the BatchNorm-only and GroupNorm-only result types, kept: they are the one type now.
BatchNormResult = NormResult
ExactBatchNorm = ExactNorm
GroupNormResult = NormResult

__all__ = [
    "forward",
    "batch_norm",
    "layer_norm",
    "rms_norm",
    "group_norm",
    "instance_norm",
    "mean_variance_norm",
    "batch_norm_backward",
    "layer_norm_backward",
    "rms_norm_backward",
    "group_norm_backward",
    "instance_norm_backward",
    "Gradients",
    "round_sqrt_sum",
    "NormResult",
    "ExactNorm",
    "BatchNormResult",
    "ExactBatchNorm",
    "GroupNormResult",
    "instance_norm_tracked",
    "host_array",
    "residual_sums",
    "round_array",
    "ulp_distance",
    "relative_ulp_error",
    "Format",
    "FORMATS",
    "FLOAT16",
    "BFLOAT16",
    "FLOAT32",
    "FLOAT64",
    "format_of",
]
