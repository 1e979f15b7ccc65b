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

import math
from pathlib import Path

from normspec.errors import InvalidArgumentError, expected
from normspec.vectors.check import Target, check_case, load_cases
from normspec.vectors.generate import VectorCase, build_cases

__all__ = ["cases", "assert_batch_norm_matches", "BatchNormMismatchError"]


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
