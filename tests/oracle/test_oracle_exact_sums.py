"""Exact per-group sums of values and squares (the statistics under every layer)."""

from fractions import Fraction

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from normspec.oracle.exact import blocks, exact_sums


@settings(max_examples=60, deadline=None)
@given(
    st.sampled_from(["float16", "bfloat16", "float32", "float64"]),
    st.tuples(st.integers(1, 3), st.integers(1, 5), st.integers(1, 40)),
    st.integers(0, 2**32 - 1),
    st.integers(0, 120),
)
def test_exact_sums_match_fractions_across_wide_exponent_ranges(dtype, shape, seed, spread):
    """Values whose exponents span up to 2**120 within a group put bits below the first grid of the
    pieces, several grids deep, and in several groups of a block at once: every sum is exact."""
    import ml_dtypes

    dt = np.dtype(ml_dtypes.bfloat16) if dtype == "bfloat16" else np.dtype(dtype)
    rng = np.random.default_rng(seed)
    limit = min(spread, {"float16": 20, "bfloat16": 100, "float32": 100, "float64": 120}[dtype])
    x = rng.standard_normal(shape) * np.exp2(rng.integers(-limit, 1, shape))
    with np.errstate(over="ignore"):
        x3 = x.astype(dt)
    s1, s2, nonfinite = exact_sums(x3)
    assert not nonfinite.any()
    for g in range(shape[1]):
        vals = [Fraction(float(v)) for v in x3[:, g, :].astype(np.float64).ravel()]
        assert s1[g] == sum(vals, Fraction(0))
        assert s2[g] == sum((v * v for v in vals), Fraction(0))


def test_exact_sums_over_many_blocks_with_tiny_values_in_each():
    """Blocks of 2**14 elements, each with a few values far below the group's largest (the ones
    that go on past the first grid)."""
    rng = np.random.default_rng(3)
    x = rng.standard_normal((1, 8, 8192)).astype(np.float32)
    x[0, :, ::997] *= np.float32(2.0**-60)
    assert len(list(blocks(x.shape))) > 1
    s1, s2, _ = exact_sums(x)
    for g in range(8):
        vals = [Fraction(float(v)) for v in x[0, g]]
        assert s1[g] == sum(vals, Fraction(0)) and s2[g] == sum((v * v for v in vals), Fraction(0))


@pytest.mark.parametrize("value", [np.nan, np.inf])
def test_exact_sums_mark_non_finite_groups(value):
    x = np.ones((1, 3, 4), np.float32)
    x[0, 1, 2] = value
    assert exact_sums(x)[2].tolist() == [False, True, False]
