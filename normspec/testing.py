"""Exact BatchNorm expectations for other libraries' pytest suites.

>>> import numpy as np
>>> from normspec.testing import cases, assert_batch_norm_matches
>>> def mine(x, w, b, rm, rv, training, momentum, eps):  # a float64-inside implementation
...     from normspec.oracle import batch_norm
...     r = batch_norm(x, w, b, rm, rv, training=training, momentum=momentum, eps=eps)
...     return r.y, r.running_mean, r.running_var
>>> for case in cases(conventions=("torch",), dtypes=("float32",))[:3]:
...     assert_batch_norm_matches(mine, case)

In a test suite::

    import pytest
    from normspec.testing import cases, assert_batch_norm_matches

    CASES = cases(directory="tests/vectors")          # stored, hash-checked
    @pytest.mark.parametrize("case", CASES, ids=[c.name for c in CASES])
    def test_batch_norm(case):
        assert_batch_norm_matches(my_batch_norm, case, max_ulp=2)

``max_ulp`` counts ULPs of each output element against its correctly rounded
value; 0 (the default) asks for correct rounding.
"""

from __future__ import annotations

import dataclasses
import math
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from normspec.errors import DTypeError, InvalidArgumentError, NormspecError, ShapeError, expected
from normspec.vectors.check import Target, check_case, load_cases
from normspec.vectors.generate import VectorCase, build_cases

__all__ = [
    "cases",
    "assert_batch_norm_matches",
    "BatchNormMismatchError",
    "judge_norm",
    "assert_norm_matches",
    "NormVerdict",
    "NormMismatchError",
    "VERDICTS",
]


class BatchNormMismatchError(AssertionError):
    """An implementation's output is farther from the exact value than allowed."""


def cases(
    directory: str | Path | None = None,
    *,
    conventions: tuple[str, ...] = ("torch",),
    dtypes: tuple[str, ...] = ("float32",),
    seed: int = 0,
) -> list[VectorCase]:
    """Stored cases of ``directory`` (each file verified against the manifest), or
    cases generated in memory for the given conventions and dtypes."""
    if directory is not None:
        return list(load_cases(Path(directory)))
    out: list[VectorCase] = []
    for conv in conventions:
        out.extend(build_cases(conv, dtypes, seed))
    return out


def assert_batch_norm_matches(impl: Target, case: VectorCase, *, max_ulp: float = 0) -> None:
    """Run ``impl`` (the audit protocol) on ``case``; fail with the case, the exact
    value, the observed value and the distance when it is more than ``max_ulp`` away."""
    if isinstance(max_ulp, bool) or not isinstance(max_ulp, (int, float)) or not 0 <= max_ulp < math.inf:
        raise InvalidArgumentError(expected("a finite number of ULPs >= 0", "max_ulp", max_ulp))
    res = check_case(case, impl)
    if res.failed or res.max_ulp > max_ulp:
        raise BatchNormMismatchError(
            f"{case.name} ({case.convention}, {case.dtype}, {'training' if case.training else 'eval'}, "
            f"momentum={case.momentum}, eps={case.eps}): {res.status}, worst {res.max_ulp:g} ULP "
            f"(allowed {max_ulp:g}); {res.worst}; correctly rounded share of y {100 * res.correctly_rounded:.1f} %"
        )


# ---------------------------------------------------------------- kernels in mixed precision

VERDICTS = ("correctly rounded", "double rounding", "within budget", "beyond budget", "non-finite")


class NormMismatchError(AssertionError):
    """A kernel's output is not what the profile it claims allows (see :class:`NormVerdict`)."""


@dataclass
class NormVerdict:
    """Per-element verdicts of a kernel's output against the exact reference of one profile.

    ``counts`` has every word of :data:`VERDICTS`: *correctly rounded* (0 ULP); *double rounding*
    (1 ULP off, and exactly what rounding the exact value to float32 first, then to the output's
    dtype, gives: a tie decided differently); *within budget* (within the rigorous error bound of
    the declared algorithm); *beyond budget*; *non-finite* (where the exact value is finite).
    ``shares`` is the share of elements correctly rounded under the claimed profile and under
    each alternative tried; ``closest`` names an alternative that explains the output better
    than the claimed profile does (the ordering question: "closer to one reference than the
    other"), else None.  ``labels`` holds each element's verdict as an index into VERDICTS.
    """

    convention: str
    algorithm: str | None
    counts: dict[str, int]
    shares: dict[str, float]
    closest: str | None
    worst: str
    labels: np.ndarray
    residual_differs: int = 0

    @property
    def ok(self) -> bool:
        bad = self.counts["beyond budget"] + self.counts["non-finite"] + self.residual_differs
        return bad == 0 and self.closest is None

    def summary(self) -> str:
        words = ", ".join(f"{n} {word}" for word, n in self.counts.items() if n)
        budget = f" (budget: {self.algorithm})" if self.algorithm else " (no algorithm declared: no budget)"
        text = f"{self.convention}: {words}{budget}"
        if self.residual_differs:
            text += f"; the new residual differs at {self.residual_differs} element(s)"
        if self.closest is not None:
            text += (
                f"; closer to {self.closest} ({100 * self.shares[self.closest]:.1f} % correctly rounded) than to "
                f"{self.convention} ({100 * self.shares[self.convention]:.1f} %)"
            )
        return text


def judge_norm(
    output: Any,
    x: Any,
    weight: Any = None,
    bias: Any = None,
    *,
    convention: str,
    eps: float | None = None,
    residual: Any = None,
    output_residual: Any = None,
    algorithm: Any = None,
    alternatives: tuple[str, ...] | None = None,
) -> NormVerdict:
    """The verdict per element on a LayerNorm or RMSNorm kernel's ``output`` (numpy arrays or torch
    tensors; CUDA tensors are moved to the host) for inputs ``x``, ``weight``, ``bias`` (and the
    ``residual`` of a fused add, whose new value ``output_residual`` must be exact), under the
    profile ``convention`` it claims and the ``algorithm`` it declares (a budget preset name, a
    dict of fields, or None for no budget).  ``alternatives`` are the other profiles tried for
    ``closest`` (default: every profile of the layer with the same residual form), all at the
    claimed profile's eps so that only their rounding structure differs.
    """
    from normspec.budgets import get_algorithm
    from normspec.oracle import format_of, forward, host_array, residual_sums, round_array, ulp_distance
    from normspec.spec.conventions import CONVENTIONS, get_convention

    conv = get_convention(convention)
    if conv.layer not in ("layer_norm", "rms_norm"):
        raise InvalidArgumentError(expected("a layer_norm or rms_norm profile", "convention", conv.name))
    xa = host_array(x, "x")
    got = host_array(output, "output")
    if got.shape != xa.shape:
        raise ShapeError(expected(f"an output of x's shape {xa.shape}", "output.shape", got.shape))
    fmt = format_of(xa.dtype, "x")
    eps_used = conv.default_eps(fmt.p) if eps is None else eps
    alg = None if algorithm is None else get_algorithm(algorithm)
    k = np.ndim(weight) if weight is not None else 1
    extra = {"residual": residual} if conv.residual else {}
    ref = forward(conv, xa, weight, bias, eps=eps_used, normalized_ndim=k, **extra)
    if got.dtype != ref.y.dtype:
        raise DTypeError(expected(f"an output in x's dtype {ref.y.dtype.name}", "output.dtype", got.dtype.name))
    # what was normalized: x, or a fused add's sum (rounded to x's dtype, or only to float32)
    x_in = residual_sums(xa, host_array(residual, "residual"), conv)[1] if conv.residual else xa
    dist = ulp_distance(got, ref.y)
    want64, got64 = ref.y.astype(np.float64), got.astype(np.float64)
    labels = np.full(xa.shape, 3, dtype=np.int8)  # beyond budget unless shown otherwise
    labels[dist == 0] = 0
    if fmt.p < 24:  # narrower than float32: is a 1-ULP miss the double rounding through float32?
        via32 = forward(conv, xa, weight, bias, eps=eps_used, normalized_ndim=k, y_dtype="float32", **extra).y
        twice = round_array(via32.astype(np.float64), fmt).astype(np.float64)
        labels[(dist == 1) & (twice == got64)] = 1
    exact64 = forward(conv, xa, weight, bias, eps=eps_used, normalized_ndim=k, y_dtype="float64", **extra).y
    if alg is not None:  # a bound on |output - the profile's exact value| (exact64: within half a float64 ULP)
        from normspec.budgets import budget_for_layer

        # a fused add's sum is correctly rounded (output_residual is compared exactly below): the
        # budget is the norm's, on h
        budget = budget_for_layer(
            alg, dataclasses.replace(conv, residual=False), x_in, weight, bias, eps=eps_used, input_dtype=xa.dtype
        )
        with np.errstate(invalid="ignore", over="ignore"):
            inside = np.abs(got64 - exact64) <= budget + np.spacing(np.abs(exact64))
        labels[(labels == 3) & inside] = 2
    labels[np.isfinite(want64) & ~np.isfinite(got64)] = 4
    counts = {word: int(np.sum(labels == i)) for i, word in enumerate(VERDICTS)}
    shares = {conv.name: float(np.mean(dist == 0)) if dist.size else 1.0}
    closest = None
    if shares[conv.name] < 1.0:
        same_form = [n for n, c in CONVENTIONS.items() if c.layer == conv.layer and c.residual == conv.residual]
        names = alternatives or tuple(n for n in same_form if n != conv.name)
        for name in names:
            other = get_convention(name)
            try:
                y_alt = forward(other, xa, weight, bias, eps=eps_used, normalized_ndim=k, **extra).y
            except NormspecError:  # a weight format the alternative refuses: not a candidate
                continue
            shares[name] = float(np.mean(ulp_distance(got, y_alt) == 0))
        # the claimed profile explains its exact elements and its double roundings (ties decided
        # the other way); another profile is closer only if it explains more elements exactly
        explained = float(np.mean(labels <= 1))
        best = max(shares, key=lambda n: shares[n])
        closest = best if best != conv.name and shares[best] > explained else None
    residual_differs = 0
    if conv.residual and output_residual is not None:
        new_res = host_array(output_residual, "output_residual")
        if new_res.shape != xa.shape or new_res.dtype != xa.dtype:
            raise ShapeError(expected("a residual of x's shape and dtype", "output_residual", new_res.dtype.name))
        residual_differs = int(np.sum(ulp_distance(new_res, ref.residual) != 0))
    worst = _worst(xa, weight, got64, want64, dist, labels, exact64)
    return NormVerdict(conv.name, None if alg is None else str(algorithm), counts, shares, closest, worst, labels,
                       residual_differs)  # fmt: skip


def _worst(
    xa: np.ndarray,
    weight: Any,
    got64: np.ndarray,
    want64: np.ndarray,
    dist: np.ndarray,
    labels: np.ndarray,
    exact64: np.ndarray,
) -> str:
    """The worst element (worst verdict, then farthest), with the inputs of its row and its exact value."""
    if dist.size == 0:
        return "no elements"
    far = np.nan_to_num(dist, nan=np.finfo(np.float64).max, posinf=np.finfo(np.float64).max)
    order = np.lexsort((far.ravel(), labels.astype(np.int64).ravel()))
    i = np.unravel_index(int(order[-1]), xa.shape)
    row = np.asarray(xa[i[:-1]], np.float64)
    shown = ", ".join(f"{v:.6g}" for v in row[:8]) + (f", ... ({row.size} values)" if row.size > 8 else "")
    w = ""
    if weight is not None:
        w = f", weight[{int(i[-1])}] = {float(np.asarray(weight, np.float64).reshape(-1)[i[-1]]):.6g}"
    return (
        f"y{[int(v) for v in i]}: got {float(got64[i])!r}, correctly rounded {float(want64[i])!r} "
        f"(exact ~ {float(exact64[i]):.17g}), {dist[i]:g} ULP, {VERDICTS[labels[i]]}; x row [{shown}]{w}"
    )


def assert_norm_matches(output: Any, x: Any, weight: Any = None, bias: Any = None, **kwargs: Any) -> NormVerdict:
    """:func:`judge_norm`, failing with its summary and the worst element unless every element is
    correctly rounded, a double rounding or within the declared budget, the fused residual is
    exact, and no other profile explains the output better.  Drop it in where ``assert_close`` was."""
    verdict = judge_norm(output, x, weight, bias, **kwargs)
    if not verdict.ok:
        raise NormMismatchError(f"{verdict.summary()}\n  worst {verdict.worst}")
    return verdict
