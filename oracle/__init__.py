"""The exact oracle: evaluates the spec exactly and rounds once, correctly.

Layers, bottom up: :mod:`~normspec.oracle.formats` (formats, exact rounding
of rationals), :mod:`~normspec.oracle.sqrtform` (exact decision for
``B + A/sqrt(D)``), :mod:`~normspec.oracle.exact` (exact statistics),
:mod:`~normspec.oracle.core` (normalize over reduction axes), and the
operators on top (:func:`batch_norm`).
"""

from normspec.oracle.backward import batch_norm_backward
from normspec.oracle.batchnorm import BatchNormResult, ExactBatchNorm, batch_norm
from normspec.oracle.family import instance_norm, instance_norm_tracked, layer_norm, rms_norm
from normspec.oracle.formats import BFLOAT16, FLOAT16, FLOAT32, FLOAT64, FORMATS, Format, format_of
from normspec.oracle.groupnorm import GroupNormResult, group_norm
from normspec.oracle.ulp import relative_ulp_error, ulp_distance

__all__ = [
    "batch_norm",
    "batch_norm_backward",
    "BatchNormResult",
    "ExactBatchNorm",
    "group_norm",
    "GroupNormResult",
    "layer_norm",
    "rms_norm",
    "instance_norm",
    "instance_norm_tracked",
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
