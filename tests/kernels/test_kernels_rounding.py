"""The CPU BatchNorm kernel is correctly rounded: every element of y and of the running
statistics is the exact value rounded once (ties to even), on the inputs that break float
arithmetic, in every code path (plain loop, streaming stores, channels last, narrow formats)."""

import numpy as np
import pytest

pytest.importorskip("numba", reason="numba is the kernels extra: pip install 'normspec[kernels]'")

import bn_cases
from normspec.kernels import _exact, batch_norm
from normspec.kernels import batchnorm as kb
from normspec.oracle import batch_norm as oracle
from normspec.oracle import ulp_distance

F32 = np.float32


def _adversarial(kind, shape, rng):
    if kind == "large_mean":  # 1e4 + U[0,1): the float32 folding loses half the bits
        return 1e4 + rng.random(shape)
    if kind == "constant_channel":  # one channel at 1.2345678e7, the others normal
        x = rng.standard_normal(shape)
        x[:, 1] = 1.2345678e7
        return x
    if kind == "huge":  # |x| near 1e30: squares far beyond float32
        return rng.standard_normal(shape) * 1e30
    return rng.standard_normal(shape)


@pytest.fixture(params=["loop", "streaming"])
def path(request, monkeypatch):
    if request.param == "streaming":  # the 16-lane streaming code, however small the output
        monkeypatch.setattr(kb, "_STREAM_BYTES", 0)
    return request.param


@pytest.mark.parametrize("kind", ["normal", "large_mean", "constant_channel", "huge"])
@pytest.mark.parametrize("training", [True, False])
def test_adversarial_inputs_correctly_rounded(path, kind, training):
    rng = np.random.default_rng(21)
    x = _adversarial(kind, (6, 4, 40), rng).astype(F32)
    w, b = rng.standard_normal(4).astype(F32), rng.standard_normal(4).astype(F32)
    rm, rv = rng.standard_normal(4).astype(F32), (rng.random(4) + 0.5).astype(F32)
    _, d = bn_cases.check(batch_norm, x, w, b, rm, rv, training)  # 0 ULP, running statistics too
    assert d.size == x.size


@pytest.mark.parametrize("kind", ["large_mean", "constant_channel", "huge"])
def test_channels_last_correctly_rounded(kind):
    rng = np.random.default_rng(22)
    x = np.moveaxis(_adversarial(kind, (5, 4, 6, 7), rng), 1, -1).astype(F32).copy()
    w, b = rng.standard_normal(4).astype(F32), rng.standard_normal(4).astype(F32)
    bn_cases.check(batch_norm, x, w, b, np.zeros(4, F32), np.ones(4, F32), True, axis=-1)


def _tie_case(beta, x_values):
    """Evaluation with running_var 0.25 and eps 0: y = 2 x + beta, exact in float64."""
    x = np.asarray(x_values, F32).reshape(1, 1, -1)
    return x, np.ones(1, F32), np.array([beta], F32), np.zeros(1, F32), np.full(1, 0.25, F32)


def test_exact_ties_go_to_even():
    """y = 1 + 2**-24 and 1 + 3 * 2**-24 sit exactly between two float32s: the certificate
    cannot decide them (y64 is exact, its bound is not 0), the fallback sees a rational y and
    rounds it to even: 1 and 1 + 2**-22."""
    x, w, b, rm, rv = _tie_case(1.0, [2.0**-25, 3 * 2.0**-25, 0.25])
    y, _, _ = batch_norm(x, w, b, rm, rv, False, eps=0.0)
    assert y.ravel().tolist() == [1.0, 1 + 2.0**-22, 1.5]
    assert kb.last_run.fallback_elements == 2
    bn_cases.check(batch_norm, x, w, b, rm, rv, False, eps=0.0)


def test_a_hair_from_a_tie_rounds_to_the_nearer_side():
    """y = 2x + 1 landing 2**-47 above and 2**-48 below the midpoint 1 + 2**-24: up to
    1 + 2**-23 and down to 1, as the exact values say."""
    x, w, b, rm, rv = _tie_case(1.0, [2.0**-25 * (1 + 2.0**-23), 2.0**-25 * (1 - 2.0**-24)])
    y, _, _ = batch_norm(x, w, b, rm, rv, False, eps=0.0)
    assert y.ravel().tolist() == [1 + 2.0**-23, 1.0]
    bn_cases.check(batch_norm, x, w, b, rm, rv, False, eps=0.0)


def test_fallback_rounding_matches_round_f32_on_rationals():
    """The exact fallback on a rational y is round_f32 of it; on an irrational one it agrees with
    the exact comparison against the neighbouring midpoints."""
    from fractions import Fraction

    y = _exact.y_correctly_rounded(3.0, Fraction(1), Fraction(4), 1.0, 1.0, False)  # 1 + 2/2 = 2
    assert y == F32(2.0)
    y = _exact.y_correctly_rounded(1.0, Fraction(0), Fraction(2), 1.0, 0.0, False)  # 1/sqrt(2)
    lo, hi = np.nextafter(y, F32(0)), np.nextafter(y, F32(1))
    for m, side in (((float(lo) + float(y)) / 2, 1), ((float(y) + float(hi)) / 2, -1)):
        assert _exact.y_compare(1.0, Fraction(0), Fraction(2), 1.0, 0.0, False, m) == side


@pytest.mark.parametrize("fmt", ["float16", "bfloat16"])
def test_narrow_ties_and_double_rounding(fmt):
    """x in float16/bfloat16, parameters in float32.  y = 1 + 2**-(p) exactly (a tie of the
    narrow format, p its precision): ties to even.  y a hair above that tie (running variance
    a hair below 0.25): rounding to float32 first lands on the tie and would round down; the
    kernel rounds up, as the exact value says."""
    dtype = np.dtype(np.float16) if fmt == "float16" else np.dtype(pytest.importorskip("ml_dtypes").bfloat16)
    p = 11 if fmt == "float16" else 8
    x = np.array([2.0 ** -(p + 1), 3 * 2.0 ** -(p + 1)], np.float64).astype(dtype).reshape(1, 1, 2)
    w, b, rm = np.ones(1, F32), np.ones(1, F32), np.zeros(1, F32)
    exact_tie, _, _ = batch_norm(x, w, b, rm, np.full(1, 0.25, F32), False, eps=0.0)
    assert exact_tie.astype(np.float64).ravel().tolist() == [1.0, 1 + 2.0 ** -(p - 2)]
    rv = np.full(1, np.nextafter(F32(0.25), F32(0)), F32)  # s a hair above 2: y a hair above the tie
    above, _, _ = batch_norm(x, w, b, rm, rv, False, eps=0.0)
    o = oracle(x, w, b, rm, rv, training=False, eps=0.0)
    assert ulp_distance(above, o.y).max() == 0
    assert above.astype(np.float64).ravel().tolist() == [1 + 2.0 ** -(p - 1), 1 + 2.0 ** -(p - 2)]
    double = (x.astype(np.float64) / np.sqrt(np.float64(rv[0])) + 1).astype(F32).astype(dtype)
    assert double.astype(np.float64).ravel()[0] == 1.0  # what rounding through float32 gives


@pytest.mark.parametrize("fmt", ["float16", "bfloat16"])
def test_narrow_adversarial_inputs_correctly_rounded(fmt):
    dtype = np.dtype(np.float16) if fmt == "float16" else np.dtype(pytest.importorskip("ml_dtypes").bfloat16)
    rng = np.random.default_rng(24)
    for kind in ("normal", "large_mean"):
        x = (_adversarial(kind, (8, 3, 50), rng) * (1 if kind == "normal" else 0.1)).astype(dtype)
        w, b = rng.standard_normal(3).astype(F32), rng.standard_normal(3).astype(F32)
        for training in (True, False):
            y, _, _ = batch_norm(x, w, b, np.zeros(3, F32), np.ones(3, F32), training)
            o = oracle(x, w, b, np.zeros(3, F32), np.ones(3, F32), training=training)
            assert ulp_distance(y, o.y).max() == 0, (kind, training)


@pytest.mark.parametrize("fmt", ["float16", "bfloat16"])
def test_narrow_conversions_by_bits_agree_with_numpy(fmt):
    """The kernels' own float16/bfloat16 conversions: widening every one of the 65536 bit patterns,
    and rounding random float32 bit patterns, scaled normals and the edges (the largest finite
    value plus half its ULP, the subnormal boundaries, zeros, infinities) as numpy does."""
    from normspec.kernels import _narrow

    dtype = np.dtype(np.float16) if fmt == "float16" else np.dtype(pytest.importorskip("ml_dtypes").bfloat16)
    every = np.arange(65536, dtype=np.uint16).view(dtype)
    wide, want = _narrow.widen(every), every.astype(F32)
    assert ((wide.view(np.uint32) == want.view(np.uint32)) | (np.isnan(wide) & np.isnan(want))).all()
    rng = np.random.default_rng(25)
    edges = np.array([65504, 65519.99, 65520, 65536, 2.0**-14, 2.0**-24, 2.0**-25, 3 * 2.0**-25, 0, np.inf], F32)
    values = np.concatenate([
        rng.integers(0, 2**32, 200_000, dtype=np.uint64).astype(np.uint32).view(F32),
        (rng.standard_normal(200_000) * 10.0 ** rng.integers(-9, 6, 200_000)).astype(F32),
        edges, -edges,
    ])  # fmt: skip
    with np.errstate(all="ignore"):
        want = values.astype(dtype)
    got = _narrow._round(values, dtype)
    nan = np.isnan(want.astype(F32))
    assert ((got.view(np.uint16) == want.view(np.uint16)) | (nan & np.isnan(got.astype(F32)))).all()
