"""The core's per-group helpers: the double-double 1/sqrt(D) and the split of an exact mean."""

from fractions import Fraction

import mpmath
from hypothesis import example, given
from hypothesis import strategies as st
from normspec.oracle.core import _split_fraction, exact_rsqrt

positive = st.builds(
    lambda p, q, e: Fraction(p, q) * Fraction(2) ** e,
    st.integers(1, 2**200),
    st.integers(1, 2**200),
    st.integers(-1000, 1000),
)


@given(positive)
@example(Fraction(1))
@example(Fraction(1, 2**1074))  # 1/sqrt of the smallest subnormal
@example(Fraction(2**1023 * 3))  # result near the bottom of the normal range: the mpmath branch
def test_exact_rsqrt_is_a_double_double_within_2_pow_minus_105(d):
    hi, lo = exact_rsqrt(d)
    with mpmath.workprec(400):
        r = 1 / mpmath.sqrt(mpmath.mpf(d.numerator) / d.denominator)
        assert abs(mpmath.mpf(hi) + lo - r) <= abs(r) * mpmath.mpf(2) ** -105
        assert abs(mpmath.mpf(hi) - r) <= abs(r) * mpmath.mpf(2) ** -52


@given(st.integers(-(2**300), 2**300), st.integers(1, 2**200), st.integers(-1100, 600))  # means stay finite
@example(1, 3, 0)
@example(0, 1, 0)
def test_split_fraction_matches_fraction_arithmetic(p, q, e):
    m = Fraction(p, q) * Fraction(2) ** e
    hi, lo, err = _split_fraction(m)
    assert hi == float(m)
    assert lo == float(m - Fraction(hi))
    assert Fraction(err) >= abs(m - Fraction(hi) - Fraction(lo))
