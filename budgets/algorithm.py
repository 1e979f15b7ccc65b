"""A BatchNorm evaluation order, as data.

An :class:`Algorithm` says how an implementation computes: the variance
algorithm, how sums are formed and in which precision, the affine form, how
``1/sqrt`` is taken, and the precision of the elementwise stage.  Users
describe their own; targets declare theirs; the budget derivation reads
only these fields.

>>> get_algorithm("torch_cpu").affine
'folded'
>>> Algorithm(variance="median")  # doctest: +ELLIPSIS
Traceback (most recent call last):
...
normspec.errors.InvalidArgumentError: Expected variance in two_pass, ..., but got variance='median'
"""

from __future__ import annotations

import json
import math
from dataclasses import asdict, dataclass
from typing import Any

from normspec.errors import InvalidArgumentError, UnknownNameError, expected

__all__ = ["Algorithm", "ALGORITHMS", "get_algorithm", "plain_algorithm", "UNIT_ROUNDOFF"]

UNIT_ROUNDOFF = {"float16": 2.0**-11, "bfloat16": 2.0**-8, "float32": 2.0**-24, "float64": 2.0**-53}

_CHOICES = {
    "variance": ("two_pass", "welford", "raw_moments", "raw_moments_clamped"),
    "summation": ("recursive", "pairwise"),
    "accumulator": tuple(UNIT_ROUNDOFF),
    "affine": ("unfolded", "folded"),
    "inv_std": ("one_over_sqrt", "rsqrt"),
    "compute": tuple(UNIT_ROUNDOFF),
    "mean_rounding": ("none", *UNIT_ROUNDOFF),
    "subnormals": ("gradual", "flush"),
}


@dataclass(frozen=True)
class Algorithm:
    """How a BatchNorm is evaluated.

    * ``variance``: ``two_pass`` (sum of squared deviations from the computed
      mean), ``welford`` (West's update ``d = x - mean; mean += d/k;
      M += d (x - mean)``, sequential, so ``summation`` does not apply),
      ``raw_moments`` (``E[x^2] - E[x]^2``), ``raw_moments_clamped`` (the
      same, clamped at 0).
    * ``summation``/``accumulator``: recursive or pairwise sums, in that precision.
    * ``mean_rounding``: the precision the mean is rounded to before the
      elementwise stage (PyTorch rounds it to the input type), or ``none``.
    * ``affine``: ``unfolded`` ``(x - mean) * a + beta`` or ``folded``
      ``x * a + (beta - mean * a)``, with ``a = gamma * inv_std``.
    * ``inv_std``: ``one_over_sqrt`` (two correctly rounded operations) or
      ``rsqrt`` (one operation within ``rsqrt_ulps`` ULPs).
    * ``compute``: precision of the elementwise stage; the result is then
      rounded to the output type.
    """

    variance: str = "two_pass"
    summation: str = "recursive"
    accumulator: str = "float32"
    mean_rounding: str = "none"
    affine: str = "unfolded"
    inv_std: str = "one_over_sqrt"
    rsqrt_ulps: float = 2.0
    compute: str = "float32"
    # "flush": subnormal inputs are read as zero and subnormal results become zero (a CPU's
    # flush-to-zero / denormals-are-zero mode, TensorFlow's default)
    subnormals: str = "gradual"

    def __post_init__(self) -> None:
        for name, choices in _CHOICES.items():
            value = getattr(self, name)
            if value not in choices:
                raise InvalidArgumentError(expected(f"{name} in {', '.join(choices)}", name, value))
        ulps = self.rsqrt_ulps
        if isinstance(ulps, bool) or not (isinstance(ulps, (int, float)) and 0 <= ulps < math.inf):
            raise InvalidArgumentError(expected("a finite number rsqrt_ulps >= 0", "rsqrt_ulps", ulps))

    def as_dict(self) -> dict[str, Any]:
        return asdict(self)


ALGORITHMS: dict[str, Algorithm] = {
    # PyTorch 2.13 CPU, contiguous: two-pass in double, mean rounded to float32, folded affine in float32.
    "torch_cpu": Algorithm("two_pass", "recursive", "float64", "float32", "folded", "one_over_sqrt", 2.0, "float32"),
    # The same statistics as torch_cpu, but the unfolded affine: what the spec's order would allow.
    "two_pass_unfolded_f64acc": Algorithm(
        "two_pass", "recursive", "float64", "float32", "unfolded", "one_over_sqrt", 2.0, "float32"
    ),
    # Welford's one-pass update in float32 (PyTorch CUDA's per-thread statistics, sequentially).
    "welford_float32": Algorithm(
        "welford", "recursive", "float32", "none", "unfolded", "one_over_sqrt", 2.0, "float32"
    ),
    # The spec's formula in plain float32.
    "naive_float32": Algorithm("two_pass", "recursive", "float32", "none", "unfolded", "one_over_sqrt", 2.0, "float32"),
    "naive_float32_pairwise": Algorithm(
        "two_pass", "pairwise", "float32", "none", "unfolded", "one_over_sqrt", 2.0, "float32"
    ),
    # Keras 3 NumPy/torch backends, Paddle GPU: E[x^2]-E[x]^2 unclamped, folded.
    "raw_moments_float32": Algorithm(
        "raw_moments", "recursive", "float32", "none", "folded", "one_over_sqrt", 2.0, "float32"
    ),
    # Flax default (use_fast_variance): clamped raw moments, rsqrt, unfolded; XLA's CPU backend flushes
    # subnormals (jax 0.10.2: float32 1e-40 * 1.0 == 0).
    "flax_fast_variance": Algorithm(
        "raw_moments_clamped", "recursive", "float32", "none", "unfolded", "rsqrt", 2.0, "float32", subnormals="flush"
    ),
    # The audit's reference for a target that declares no algorithm: the spec's formula in plain float32
    # (two-pass, recursive sums, unfolded); subnormals may flush, a platform mode not charged to anyone.
    "plain_float32": Algorithm(
        "two_pass", "recursive", "float32", "none", "unfolded", "one_over_sqrt", 2.0, "float32", subnormals="flush"
    ),
    # The same in float16, for float16 inputs ("the input's precision").
    "plain_float16": Algorithm(
        "two_pass", "recursive", "float16", "none", "unfolded", "one_over_sqrt", 2.0, "float16", subnormals="flush"
    ),
    # TensorFlow's fused CPU kernel: two-pass in float32, (x - mean) * (rsqrt(var + eps) * gamma) + beta,
    # with subnormals flushed to zero (TensorFlow's CPU default; measured on 2.21).
    "tf_fused_cpu": Algorithm(
        "two_pass", "recursive", "float32", "none", "unfolded", "rsqrt", 2.0, "float32", subnormals="flush"
    ),
    # A float64-inside kernel (normspec.kernels without its certificate): everything in double, one final rounding.
    "float64_inside": Algorithm(
        "two_pass", "recursive", "float64", "none", "unfolded", "one_over_sqrt", 2.0, "float64"
    ),
}


def plain_algorithm(dtype: Any) -> str:
    """The name of the plain evaluation in an input dtype's precision (float32 for all but float16)."""
    return "plain_float16" if str(dtype) == "float16" else "plain_float32"


def get_algorithm(spec: str | Algorithm | dict[str, Any]) -> Algorithm:
    """A preset name, a JSON object string, a dict of fields, or an Algorithm."""
    if isinstance(spec, Algorithm):
        return spec
    if isinstance(spec, dict):
        fields = set(Algorithm.__dataclass_fields__)
        unknown = set(spec) - fields
        if unknown:
            raise InvalidArgumentError(
                expected(f"fields among {', '.join(sorted(fields))}", "field", sorted(unknown)[0])
            )
        return Algorithm(**spec)
    if isinstance(spec, str) and spec.strip().startswith("{"):
        if len(spec) > 10_000:  # an algorithm has nine short fields
            what = "a JSON object of at most 10000 characters"
            raise InvalidArgumentError(expected(what, "len(algorithm)", len(spec)))
        try:
            value = json.loads(spec)
        except json.JSONDecodeError as exc:
            raise InvalidArgumentError(f"Expected a JSON object for the algorithm: {exc}") from None
        except RecursionError:
            raise InvalidArgumentError("Expected a JSON object of fields, but got one nested too deeply") from None
        except ValueError as exc:  # a number of more digits than Python converts
            raise InvalidArgumentError(f"Expected a JSON object for the algorithm: {exc}") from None
        if not isinstance(value, dict):
            raise InvalidArgumentError(expected("a JSON object for the algorithm", "algorithm", spec))
        return get_algorithm(value)
    try:
        return ALGORITHMS[spec]
    except (KeyError, TypeError):
        raise UnknownNameError(
            expected("one of " + ", ".join(ALGORITHMS) + " or a JSON object", "algorithm", spec)
        ) from None
