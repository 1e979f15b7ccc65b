"""Exact rounding into float16/bfloat16/float32/float64."""

from fractions import Fraction

import numpy as np
import pytest
from hypothesis import example, given
from hypothesis import strategies as st
from normspec.oracle.formats import (
    BFLOAT16,
    FLOAT16,
    FLOAT32,
    FLOAT64,
    next_down,
    next_up,
    round_array,
    round_rational,
)
from normspec.oracle.sqrtform import round_fraction, round_sqrt_form

doubles = st.floats(allow_nan=False, allow_infinity=False)


def hardware(v, dtype):
    with np.errstate(over="ignore"):
        return float(dtype(v))


@given(doubles)
@example(2.0**-150)  # half the smallest float32 subnormal: ties to 0
@example(3 * 2.0**-151)
@example(float(np.finfo(np.float32).max) * (1 + 2.0**-25))  # exactly the overflow tie
@example(1 + 2.0**-24)  # tie between 1 and its successor: even is 1
@example(1 + 3 * 2.0**-24)
def test_round_rational_matches_hardware_float32(v):
    q = Fraction(v)
    assert round_rational(q.numerator, q.denominator, FLOAT32) == hardware(v, np.float32) or v == 0


@given(doubles)
@example(65504.0 + 16)  # the float16 overflow tie
@example(2.0**-25)  # half the smallest float16 subnormal
@example(1 + 2.0**-11)
def test_round_rational_matches_numpy_float16(v):
    q = Fraction(v)
    got = round_rational(q.numerator, q.denominator, FLOAT16)
    assert got == hardware(v, np.float16) or v == 0


@given(st.integers(-(2**80), 2**80), st.integers(1, 2**80))
def test_round_rational_is_nearest_ties_even(num, den):
    """Characterize the result without reference to any implementation."""
    for fmt in (FLOAT16, BFLOAT16, FLOAT32, FLOAT64):
        q = Fraction(num, den)
        r = round_rational(num, den, fmt)
        if abs(r) == float("inf"):
            assert abs(q) >= Fraction(fmt.max_finite) + Fraction(fmt.ulp(fmt.max_finite)) / 2
            continue
        up, down = next_up(r, fmt), next_down(r, fmt)
        d = abs(q - Fraction(r))
        for nb in (up, down):
            if abs(nb) != float("inf"):
                dn = abs(q - Fraction(nb))
                assert d <= dn
                if d == dn:  # a tie: r must be the even one
                    assert int(abs(r) / fmt.ulp(r) if r else 0) % 2 == 0 or r == 0


@pytest.mark.parametrize("fmt", [FLOAT16, BFLOAT16, FLOAT32])
@given(st.lists(doubles, min_size=1, max_size=20))
def test_round_array_agrees_with_round_rational(fmt, values):
    arr = np.array(values)
    got = round_array(arr, fmt)
    for v, g in zip(values, got, strict=True):
        q = Fraction(v)
        assert g == round_rational(q.numerator, q.denominator, fmt)


@pytest.mark.parametrize("dtype,fmt", [(np.float16, FLOAT16), (np.float32, FLOAT32), (np.float64, FLOAT64)])
@given(data=st.data())
def test_next_up_down_match_nextafter(dtype, fmt, data):
    v = data.draw(st.floats(width=np.finfo(dtype).bits, allow_nan=False, allow_infinity=False))
    t = dtype(v)
    with np.errstate(over="ignore"):  # max -> inf is the expected answer
        up, down = np.nextafter(t, dtype(np.inf)), np.nextafter(t, dtype(-np.inf))
    assert next_up(float(t), fmt) == float(up)
    assert next_down(float(t), fmt) == float(down)


def test_sqrt_form_exact_ties_go_to_even():
    # y = 1 + A/sqrt(4) with A = 2 * (tie offset): exactly a float32 midpoint
    assert round_sqrt_form(Fraction(1, 2**23), Fraction(1), Fraction(4), FLOAT32) == 1.0
    assert round_sqrt_form(Fraction(3, 2**23), Fraction(1), Fraction(4), FLOAT32) == 1 + 2.0**-22
    # a hair above the tie rounds up
    assert round_sqrt_form(Fraction(1, 2**23), Fraction(1), Fraction(4) - Fraction(1, 2**200), FLOAT32) == 1 + 2.0**-23


def test_sqrt_form_sign_of_zero():
    # exactly zero: +0; a negative value below half the smallest subnormal: -0
    assert str(round_sqrt_form(Fraction(-1), Fraction(1, 2), Fraction(4), FLOAT32)) == "0.0"
    assert str(round_sqrt_form(Fraction(-1), Fraction(1, 2) - Fraction(1, 2**200), Fraction(4), FLOAT32)) == "-0.0"


def test_round_fraction_overflow_and_underflow():
    assert round_fraction(Fraction(2**1024), FLOAT64) == float("inf")
    assert round_fraction(-Fraction(2**16), FLOAT16) == float("-inf")
    assert round_fraction(Fraction(1, 2**1080), FLOAT64) == 0.0
