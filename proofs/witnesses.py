"""Witnesses for the bug zoo: small inputs that tell each variant apart from the spec.

:func:`find_witness` walks a fixed, ordered list of candidate cases (the
smallest and simplest first: a handful of small integers or dyadic values,
float32-exact eps and momentum so no cast can blur the comparison) and
returns the first on which the variant's behaviour and the oracle's
correctly rounded output differ, with the distance in float32 ULPs.  The
search is deterministic, so a witness is the same on every machine.

>>> w = find_witness("momentum_swapped")
>>> w.field, w.ulps > 0
('running_mean', True)
"""

from __future__ import annotations

import math
from collections.abc import Iterator
from dataclasses import dataclass
from typing import Any

import numpy as np
from normspec.oracle import NormResult, forward, ulp_distance
from normspec.spec.bugzoo import Case, Variant, get_variant
from normspec.spec.conventions import get_convention

from normspec.errors import NormspecError

__all__ = ["Witness", "find_witness", "candidate_cases", "separation", "reference"]

_F32 = np.float32
F32 = _F32


@dataclass(frozen=True)
class Witness:
    variant: str
    case: Case
    field: str
    index: tuple[int, ...]
    exact: float  # the oracle's correctly rounded value
    observed: float  # the variant's value
    ulps: float  # float32 ULPs between them (inf when one is NaN)

    def summary(self) -> str:
        x = self.case["x"]
        return (
            f"x={x.ravel().tolist()} shape={list(x.shape)} eps={self.case['eps']!r} "
            f"momentum={self.case['momentum']!r}: {self.field}{list(self.index)} "
            f"spec {self.exact!r} vs variant {self.observed!r} ({_ulps(self.ulps)})"
        )


def _ulps(u: float) -> str:
    return "NaN where the spec is finite" if math.isinf(u) else f"{u:.0f} ULP"


def _case(
    x: Any,
    *,
    training: bool,
    eps: float,
    momentum: float = 0.25,
    weight: Any = None,
    bias: Any = None,
    running: tuple[float, float] = (0.0, 1.0),
) -> Case:
    xa = np.asarray(x, _F32)
    c = xa.shape[1]
    return {
        "x": xa,
        "weight": np.asarray(np.ones(c) if weight is None else weight, _F32),
        "bias": np.asarray(np.zeros(c) if bias is None else bias, _F32),
        "running_mean": np.full(c, running[0], _F32),
        "running_var": np.full(c, running[1], _F32),
        "training": training,
        "momentum": momentum,
        "eps": eps,
    }


def candidate_cases(variant: Variant) -> Iterator[Case]:
    """Candidates in the order the search tries them: simple first."""
    if variant.operator == "layer_norm":
        rows = [
            ([[1.0, 2.0, 4.0]], np.float32, 2.0**-10),
            ([[40000.0, 40001.0, 40002.0, 40003.0]], np.float32, 1e-5),  # onnxruntime#28463, tvm#19592
            ([[80000.0, 80001.0, 80002.0, 80003.0]], np.float32, 1e-5),
            ([[2000.25, 1999.5, 2001.0, 2000.0]], np.float32, 1e-5),  # pytorch#51102: randn + 2000
            ([[0.5, 0.5, 0.5, 0.5]], np.float16, 1e-12),  # TF PR #24979
        ]
        if variant.kind == "numerical":  # float-order bugs: the large-mean rows first, so the witness is the classic
            rows = rows[1:] + rows[:1]
        for row_values, dtype, eps_row in rows:
            xa = np.asarray(row_values, dtype=dtype)
            c = xa.shape[-1]
            yield {
                "x": xa,
                "weight": np.ones(c, F32),
                "bias": np.zeros(c, F32),
                "running_mean": np.zeros(c, F32),
                "running_var": np.ones(c, F32),
                "training": True,
                "momentum": 0.25,
                "eps": eps_row,
            }
        return
    if variant.operator == "group_norm":
        for weight in ([1.0, 2.0, 3.0, 4.0], [1.0, 1.0, -1.0, 0.5]):
            case = _case(
                np.arange(12.0).reshape(1, 4, 3), training=True, eps=2.0**-10, weight=weight, bias=[0.0, 0.5, 1.0, 1.5]
            )
            case["groups"] = 2
            yield case
        return
    epsilons = [2.0**-17, 2.0**-10, 0.5]  # float32-exact; 2**-17 is below TF's clamp
    small = [
        [[[0.0, 1.0]]],
        [[[1.0]], [[3.0]]],
        [[[0.0, 0.0, 0.0, 2.0**-8]]],
        [[[1.0, 2.0]], [[3.0, 4.0]]],
    ]
    if variant.kind == "numerical":
        yield _case(np.full((2, 1, 4), 1.2345678e7), training=True, eps=1e-5)
        for base in (1e2, 1e3, 1e4):  # large mean, spread in quarter steps
            for step in (1.0, 0.25):
                for eps in (1e-5, 1e-3):
                    yield _case((base + step * np.arange(2.0)).reshape(2, 1, 1), training=True, eps=eps)
    if variant.precondition.endswith("n = 1"):
        yield _case([[[3.0]]], training=True, eps=2.0**-17, running=(0.0, 1.0))
    for x in small:
        for eps in epsilons:
            for running in ((0.0, 1.0), (0.5, 2.0)):
                yield _case(x, training=variant.training, eps=eps, running=running)


def reference(variant: Variant, case: Case) -> NormResult:
    """The oracle's result for a zoo case under the variant's reference convention."""
    conv = get_convention(variant.convention)
    stateful = (
        {k: case[k] for k in ("running_mean", "running_var", "training", "momentum")} if conv.running_stats else {}
    )
    groups = case.get("groups")
    return forward(conv, case["x"], case["weight"], case["bias"], eps=case["eps"], groups=groups, **stateful)


def separation(variant: Variant, case: Case) -> tuple[str, tuple[int, ...], float, float, float] | None:
    """Where the variant and the oracle differ on ``case`` (field, index, spec, variant, ULPs), or None.

    The oracle runs the variant's reference convention with the case's
    momentum and eps.  Differences count only where the spec's value is
    finite, and for ``witness_wants="nan"`` only where the variant gives NaN.
    """
    try:
        spec = reference(variant, case)
    except NormspecError:
        return None
    got = variant.behaviour(case)[variant.output]
    want = getattr(spec, variant.output)
    with np.errstate(invalid="ignore", over="ignore"):
        dist = ulp_distance(got.astype(want.dtype), want)
    ok = np.isfinite(want.astype(np.float64))
    if variant.witness_wants == "nan":
        ok &= np.isnan(got)
    dist = np.where(ok, dist, 0.0)
    if not (dist > 0).any():
        return None
    idx = tuple(int(i) for i in np.unravel_index(int(np.argmax(dist)), dist.shape))
    return variant.output, idx, float(want[idx]), float(got[idx]), float(dist[idx])


def find_witness(name: str) -> Witness:
    """The first candidate case that separates variant ``name`` from the spec."""
    variant = get_variant(name)
    for case in candidate_cases(variant):
        hit = separation(variant, case)
        if hit is not None:
            field, idx, exact, observed, ulps = hit
            return Witness(name, case, field, idx, exact, observed, ulps)
    raise NormspecError(f"no witness found for variant {name!r} among the candidate cases")
