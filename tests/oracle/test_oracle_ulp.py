from fractions import Fraction

import numpy as np
import pytest
from hypothesis import given
from hypothesis import strategies as st
from normspec.oracle import relative_ulp_error, ulp_distance

F32 = np.float32


@pytest.mark.parametrize(
    "a,b,want",
    [
        (1.0, 1.0, 0),
        (0.0, -0.0, 0),  # the same number
        (1.4e-45, -1.4e-45, 2),  # across zero: -min, 0, +min
        (np.inf, float(np.finfo(F32).max), 1),
        (np.inf, -np.inf, 2 * (2**31 - 2**23)),
        (np.nan, np.nan, 0),
        (np.nan, 1.0, np.inf),
        (1.0, 2.0, 2**23),
    ],
)
def test_ulp_distance_table(a, b, want):
    assert ulp_distance(np.array([a], F32), np.array([b], F32))[0] == want


@given(st.floats(width=32, allow_nan=False, allow_infinity=False), st.integers(-300, 300))
def test_ulp_distance_counts_nextafter_steps(v, k):
    """nextafter steps from -0 straight to the smallest positive value, as ulp_distance counts."""
    a = b = F32(v)
    toward = F32(np.inf) if k > 0 else F32(-np.inf)
    with np.errstate(over="ignore"):
        for _ in range(abs(k)):
            b = np.nextafter(b, toward)
    if not np.isinf(b):
        assert ulp_distance(np.array([a]), np.array([b]))[0] == abs(k)


def test_float64_distance_beyond_int64():
    d = ulp_distance(np.array([-np.inf]), np.array([np.inf]))[0]
    assert d == float(2 * (2**63 - 2**52))


def test_relative_ulp_error_in_units_of_the_magnitude():
    obs = np.array([1e-3 + 2**-24, 5.0], F32)
    exact = np.array([Fraction(float(F32(1e-3))), Fraction(5)], dtype=object)
    got = relative_ulp_error(obs, exact, magnitude=[1.0, 1.0])
    assert got[1] == 0.0
    assert got[0] == float(abs(Fraction(float(obs[0])) - exact[0]) / Fraction(2**-23))
