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
    round_bracket,
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


@pytest.mark.parametrize("fmt", [FLOAT16, BFLOAT16, FLOAT32])
@given(
    base=doubles,
    shift=st.sampled_from([0.0, 0.5, -0.5]),  # a format value, or a tie next to it
    nudge=st.integers(-(2**12), 2**12),
    width=st.integers(-60, -3),
    scale=st.sampled_from([1.0, 1.5]),
    t=st.fractions(-1, 1),
)
@example(base=1.0, shift=0.5, nudge=0, width=-40, scale=1.0, t=Fraction(0))  # an exact tie
@example(base=2.0**-126, shift=-0.5, nudge=1, width=-50, scale=1.0, t=Fraction(-1))  # below the normals
@example(base=65504.0, shift=0.5, nudge=-1, width=-30, scale=1.0, t=Fraction(1))  # the float16 overflow tie
@example(base=1.0, shift=0.0, nudge=0, width=-9, scale=1.5, t=Fraction(-1))  # bfloat16: reaching the binade below
@example(base=0.0, shift=0.5, nudge=0, width=-53, scale=1.0, t=Fraction(1))  # y + delta rounds back onto a tie
def test_round_bracket_decides_only_what_the_bracket_settles(fmt, base, shift, nudge, width, scale, t):
    """Every exact value in ``y +- delta`` rounds to ``r`` wherever the bracket is decided: values
    placed on and around ties and binade edges, brackets from 2**-60 to 2**-3 of |y|."""
    q = round_array(np.array([base]), fmt)[0]
    if not np.isfinite(q):
        return
    step = fmt.ulp(q) if q else fmt.ulp(2.0**fmt.emin)
    y = q + shift * step + nudge * 2.0**-20 * step
    delta = abs(y) * 2.0**width * scale + 2.0**-1074
    r, undecided = round_bracket(np.array([y]), np.array([delta]), fmt)
    v = Fraction(y) + t * Fraction(delta)
    exact = round_rational(v.numerator, v.denominator, fmt)
    if not undecided[0]:
        assert r[0] == exact or (r[0] == 0 and exact == 0)


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


def test_beta_rounding_to_zero_keeps_its_sign():
    """At x == mean, y = beta exactly: an exact 0 is +0, but a negative beta that rounds to zero
    in the output format is -0 (float16 here; the shortcut for x == mean had added 0.0)."""
    from normspec.oracle import batch_norm

    x = np.array([[[0.5, 0.5]]], np.float16)
    rm, rv = np.array([0.5], np.float32), np.array([4.0], np.float32)
    for beta, negative in ((-(2.0**-25), True), (-0.0, False)):
        b = np.array([beta], np.float32)
        y = np.asarray(batch_norm(x, None, b, rm, rv, training=False, eps=0.0, convention="torch_raw").y)
        assert (y == 0).all() and (np.signbit(y) == negative).all()


def test_round_fraction_overflow_and_underflow():
    assert round_fraction(Fraction(2**1024), FLOAT64) == float("inf")
    assert round_fraction(-Fraction(2**16), FLOAT16) == float("-inf")
    assert round_fraction(Fraction(1, 2**1080), FLOAT64) == 0.0
