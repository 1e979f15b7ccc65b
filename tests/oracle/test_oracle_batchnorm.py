"""normspec.oracle.batch_norm: bit-for-bit against an independent exact computation,
plus the conventions' semantics."""

import math
from fractions import Fraction

import numpy as np
import pytest
from hypothesis import example, given
from hypothesis import strategies as st
from hypothesis.extra import numpy as hnp
from independent import reference_eval, reference_train
from normspec.oracle import batch_norm
from normspec.oracle.formats import bfloat16_dtype

from normspec.errors import DegenerateInputError, DomainError

UINT = {2: np.uint16, 4: np.uint32, 8: np.uint64}


def assert_bits_equal(got: np.ndarray, want: np.ndarray) -> None:
    """Same bit patterns (so +0 vs -0 differ), NaN equal to NaN."""
    assert got.dtype == want.dtype and got.shape == want.shape
    g, w = got.view(UINT[got.dtype.itemsize]), want.view(UINT[want.dtype.itemsize])
    nan = np.isnan(got.astype(np.float64)) & np.isnan(want.astype(np.float64))
    bad = (g != w) & ~nan
    assert not bad.any(), (
        f"{int(bad.sum())} mismatches, first at {np.argwhere(bad)[0].tolist()}: "
        f"got {got[bad][0]!r}, exact {want[bad][0]!r}"
    )


@st.composite
def bn_cases(draw, dtypes=(np.float16, np.float32, np.float64)):
    dtype = draw(st.sampled_from(dtypes))
    n = draw(st.integers(1, 3))
    c = draw(st.integers(1, 3))
    length = draw(st.integers(1, 4))
    width = np.finfo(dtype).bits
    scale = draw(st.sampled_from([1.0, 1e-3, 1e3, 1e-30 if dtype != np.float16 else 1e-5]))
    elems = st.floats(-4, 4, width=width, allow_subnormal=True).map(lambda v: v * scale)
    x = draw(hnp.arrays(dtype, (n, c, length), elements=elems))
    x = np.asarray(x, dtype=dtype)
    params = st.floats(-3, 3, width=width)
    gamma = draw(hnp.arrays(dtype, (c,), elements=params))
    beta = draw(hnp.arrays(dtype, (c,), elements=params))
    eps = draw(st.sampled_from([1e-5, 1e-3, 0.0, 2.0**-30]))
    return x, gamma, beta, eps


def _case(x, eps=1e-5, gamma=None, beta=None):
    x = np.asarray(x)
    c = x.shape[1]
    g = np.ones(c, x.dtype) if gamma is None else np.asarray(gamma, x.dtype)
    b = np.zeros(c, x.dtype) if beta is None else np.asarray(beta, x.dtype)
    return x, g, b, eps


_rng = np.random.default_rng(5)


@given(bn_cases())
@example(_case(np.full((2, 3, 4), 1.2345678e7, np.float32)))  # constant channel (pytorch#5410)
@example(_case(np.array([[[1.5]], [[2.5]]], np.float32)[:1]))  # one value per channel
@example(_case(np.array([[[1.0, 3.0]]], np.float32), gamma=[2.0], beta=[0.5]))  # two values
@example(_case((1e4 + _rng.random((3, 2, 5))).astype(np.float32)))  # large mean, tiny spread
@example(_case(np.array([[[1e-45, 3e-45, -2e-45]]], np.float32), eps=0.0))  # subnormals, eps 0
@example(_case(np.array([[[1e30, -1e30, 3e30]]], np.float32)))  # squares overflow float32
@example(_case(np.array([[[0.0, -0.0, 0.0]]], np.float32), beta=[-0.0]))  # signed zeros
@example(_case(np.full((1, 1, 3), 7.0, np.float32), eps=0.0, beta=[1.25]))  # 0/0 guard: y = beta
@example(_case(np.array([[[65504.0, -65504.0, 1.0]]], np.float16)))  # float16 extremes
@example(_case(np.array([[[1e308, -1e308]]], np.float64)))  # float64 slow path
def test_training_matches_independent_exact(case):
    x, gamma, beta, eps = case
    res = batch_norm(x, gamma, beta, training=True, eps=eps, convention="torch_raw")
    want, means, variances = reference_train(x, gamma, beta, eps)
    assert_bits_equal(res.y, want)
    assert list(res.exact.mean) == means and list(res.exact.var) == variances


@given(bn_cases(dtypes=(np.float16, np.float32)), st.data())
def test_evaluation_matches_independent_exact(case, data):
    x, gamma, beta, eps = case
    c = x.shape[1]
    stats = st.floats(0, 50, width=32)
    rmean = np.array(data.draw(st.lists(st.floats(-50, 50, width=32), min_size=c, max_size=c)), np.float32)
    rvar = np.array(data.draw(st.lists(stats, min_size=c, max_size=c)), np.float32)
    res = batch_norm(x, gamma, beta, rmean, rvar, training=False, eps=eps)
    assert_bits_equal(res.y, reference_eval(x, gamma, beta, rmean, rvar, eps))
    assert_bits_equal(res.running_mean, rmean)


@pytest.mark.parametrize("dtype", [np.float32, np.float64])
@pytest.mark.parametrize("kind", ["normal", "large_mean", "wide_range"])
def test_larger_tensors_match_independent_exact(kind, dtype):
    rng = np.random.default_rng({"normal": 1, "large_mean": 2, "wide_range": 3}[kind])
    shape = (6, 3, 7, 7)
    if kind == "normal":
        x = rng.standard_normal(shape)
    elif kind == "large_mean":
        x = 1e4 + rng.random(shape)
    else:
        x = rng.standard_normal(shape) * 10.0 ** rng.integers(-20, 20, shape)
    x = x.astype(dtype)
    gamma = rng.standard_normal(3).astype(dtype)
    beta = rng.standard_normal(3).astype(dtype)
    res = batch_norm(x, gamma, beta, training=True)
    assert_bits_equal(res.y, reference_train(x, gamma, beta, 1e-5)[0])


@pytest.mark.skipif(bfloat16_dtype() is None, reason="ml_dtypes (the bfloat16 extra) is not installed")
def test_bfloat16_matches_independent_exact():
    bf16 = bfloat16_dtype()
    rng = np.random.default_rng(11)
    x = (rng.standard_normal((4, 2, 6)) * 3 + 100).astype(bf16)
    gamma = np.array([1.5, -0.75]).astype(bf16)
    beta = np.array([0.25, 3.0]).astype(bf16)
    res = batch_norm(x, gamma, beta, training=True)
    assert res.y.dtype == bf16
    assert_bits_equal(res.y, reference_train(x, gamma, beta, 1e-5)[0])


def test_channels_last_axis_and_noncontiguous_input():
    rng = np.random.default_rng(3)
    x = rng.standard_normal((4, 3, 5, 5)).astype(np.float32)
    nchw = batch_norm(x, training=True).y
    nhwc = batch_norm(np.moveaxis(x, 1, -1), training=True, axis=-1).y
    assert_bits_equal(np.moveaxis(nhwc, -1, 1), nchw)
    strided = batch_norm(x[:, :, ::2, ::2], training=True).y
    assert_bits_equal(strided, batch_norm(np.ascontiguousarray(x[:, :, ::2, ::2]), training=True).y)


# ------------------------------------------------------------------ statistics and conventions


def test_running_statistics_are_exact_then_rounded_once():
    x = np.array([[1.0], [2.0], [3.0], [4.0]], np.float32)
    rm, rv = np.array([0.5], np.float32), np.array([2.0], np.float32)
    res = batch_norm(x, running_mean=rm, running_var=rv, training=True, momentum=0.1)
    m = Fraction(0.1)  # the exact double 0.1, not 1/10
    want_mean = (1 - m) * Fraction(0.5) + m * Fraction(5, 2)
    want_var = (1 - m) * Fraction(2) + m * Fraction(5, 4) * Fraction(4, 3)
    assert res.exact.running_mean == (want_mean,) and res.exact.running_var == (want_var,)
    assert res.running_mean[0] == np.float32(float(want_mean))
    assert res.running_var[0] == np.float32(float(want_var))
    assert res.mean[0] == np.float32(2.5) and res.var[0] == np.float32(1.25)
    assert res.num_batches_tracked == 1


@pytest.mark.parametrize(
    "convention,momentum,want_var",
    [
        ("torch", 1.0, Fraction(5, 3)),  # new-weight, unbiased: pytorch#19902
        ("keras3", 0.0, Fraction(5, 4)),  # old-weight, biased
        ("tf_keras2_fused", 0.0, Fraction(5, 3)),  # old-weight, n/max(n-1,1)
        ("mxnet_cpu", 0.0, Fraction(5, 4)),
        ("paddle_cpu", 0.0, Fraction(5, 4)),  # Paddle PR #68159
    ],
)
def test_bessel_and_momentum_direction(convention, momentum, want_var):
    x = np.array([[1.0], [2.0], [3.0], [4.0]], np.float32)
    res = batch_norm(
        x,
        running_mean=np.zeros(1, np.float32),
        running_var=np.ones(1, np.float32),
        training=True,
        momentum=momentum,
        convention=convention,
    )
    assert res.exact.running_var == (want_var,)
    assert res.exact.running_mean == (Fraction(5, 2),)


def test_cumulative_average_is_the_mean_of_batch_means():
    rm, rv, k = np.zeros(1, np.float32), np.ones(1, np.float32), 0
    for mean in (1.0, 11.0, 21.0):
        x = np.array([[mean - 1], [mean + 1]], np.float32)
        res = batch_norm(
            x, running_mean=rm, running_var=rv, training=True, momentum="cumulative", num_batches_tracked=k
        )
        rm, rv, k = res.running_mean, res.running_var, res.num_batches_tracked
    assert rm[0] == 11.0 and k == 3
    assert rv[0] == 2.0  # every unbiased batch variance is 2


@pytest.mark.parametrize(
    "convention,outcome",
    [
        ("torch", "error"),
        ("torch_raw", "nan"),
        ("tf_keras2_fused", "finite"),
        ("keras3", "finite"),
        ("paddle_cpu", "identity"),
    ],
)
def test_one_value_per_channel(convention, outcome):
    x = np.array([[3.0, -2.0]], np.float32)
    kw = {
        "running_mean": np.zeros(2, np.float32),
        "running_var": np.ones(2, np.float32),
        "training": True,
        "convention": convention,
        "bias": np.array([0.5, 0.25], np.float32),
    }
    if outcome == "error":
        with pytest.raises(DegenerateInputError, match="more than 1 value per channel"):
            batch_norm(x, **kw)
        return
    res = batch_norm(x, **kw)
    if outcome == "identity":
        assert_bits_equal(res.y, x)
        assert_bits_equal(res.running_var, np.ones(2, np.float32))
    else:
        assert_bits_equal(res.y, np.array([[0.5, 0.25]], np.float32))  # y = beta
        assert np.isnan(res.running_var).all() == (outcome == "nan")


def test_update_time_backward_only_and_flax_init():
    x = np.ones((4, 3, 2, 2), np.float32)
    rm, rv = np.zeros(3, np.float32), np.ones(3, np.float32)
    fwd_only = batch_norm(x, None, None, rm, rv, training=True, convention="mxnet_cpu", with_backward=False)
    assert_bits_equal(fwd_only.running_mean, rm)  # apache/mxnet#14357
    both = batch_norm(x, None, None, rm, rv, training=True, convention="mxnet_cpu")
    assert both.running_mean.tolist() == [np.float32(0.1)] * 3 and both.running_var.tolist() == [np.float32(0.9)] * 3
    init = batch_norm(x, None, None, rm, rv, training=True, convention="flax_linen", initializing=True)
    assert_bits_equal(init.running_mean, rm)


def test_eps_clamp_and_cast_follow_the_convention():
    x = np.array([[0.0], [2e-3]], np.float32)  # var 1e-6
    import dataclasses

    from normspec.spec import get_convention

    # a clamp as TensorFlow's fused path had it before 2.21 (docs/bug-corpus.md #24); 2.21 uses eps as given
    clamped = dataclasses.replace(get_convention("tf_fused_batch_norm_v3"), name="tf_clamped", eps_min=1.001e-5)
    tf = batch_norm(x, training=True, eps=1e-6, convention=clamped)
    assert tf.exact.eps == Fraction(float(np.float32(1.001e-5)))
    tf221 = batch_norm(x, training=True, eps=1e-6, convention="tf_fused_batch_norm_v3")
    assert tf221.exact.eps == Fraction(float(np.float32(1e-6)))
    keras = batch_norm(x, training=True, convention="keras3")
    assert keras.exact.eps == Fraction(float(np.float32(1e-3)))
    torch = batch_norm(x, training=True, eps=1e-6)
    assert torch.exact.eps == Fraction(1e-6)


def test_zero_variance_guard_and_its_absence():
    x = np.full((3, 1), 5.0, np.float32)
    guarded = batch_norm(x, bias=np.array([0.75], np.float32), training=True, eps=0.0)
    assert guarded.y.tolist() == [[0.75]] * 3
    plain = batch_norm(x, bias=np.array([0.75], np.float32), training=True, eps=0.0, convention="keras3")
    assert np.isnan(plain.y).all()
    ev = batch_norm(
        np.array([[4.0], [5.0], [6.0]], np.float32),
        running_mean=np.array([5.0], np.float32),
        running_var=np.zeros(1, np.float32),
        training=False,
        eps=0.0,
        convention="keras3",
    )
    assert ev.y[0, 0] == -np.inf and np.isnan(ev.y[1, 0]) and ev.y[2, 0] == np.inf


def test_non_finite_inputs_have_defined_results():
    x = np.array([[1.0, 1.0, np.inf], [2.0, np.nan, 3.0], [4.0, 2.0, 5.0]], np.float32)
    rm, rv = np.zeros(3, np.float32), np.ones(3, np.float32)
    tr = batch_norm(x, None, None, rm, rv, training=True)
    assert np.isfinite(tr.y[:, 0]).all()  # the clean channel is untouched
    assert np.isnan(tr.y[:, 1:]).all()
    assert np.isnan(tr.mean[1]) and tr.mean[2] == np.inf and np.isnan(tr.var[1:]).all()
    assert np.isnan(tr.running_mean[1]) and tr.running_mean[2] == np.inf and np.isnan(tr.running_var[1:]).all()
    ev = batch_norm(x, np.array([1.0, 1.0, -2.0], np.float32), None, rm, rv, training=False)
    assert ev.y[0, 2] == -np.inf and np.isnan(ev.y[1, 1]) and np.isfinite(ev.y[2]).all()


def test_exact_values_are_available():
    x = np.array([[1.0], [2.0], [4.0]], np.float32)
    res = batch_norm(x, np.array([2.0], np.float32), np.array([1.0], np.float32), training=True, eps=0.0)
    A, B, D = res.exact.parts((0, 0))
    assert ((Fraction(1) - Fraction(7, 3)) * 2, Fraction(1), Fraction(14, 9)) == (A, B, D)
    y = res.exact.y((0, 0), prec=200)
    assert abs(float(y) - (1 + float(A) / math.sqrt(14 / 9))) < 1e-15
    assert float(res.y[0, 0]) == float(np.float32(float(y)))


def test_float64_outputs_are_correctly_rounded():
    rng = np.random.default_rng(8)
    x = (1e6 + rng.standard_normal((5, 2, 3))).astype(np.float64)
    g, b = np.array([1.0, -3.0]), np.array([0.0, 1.0])
    assert_bits_equal(batch_norm(x, g, b, training=True).y, reference_train(x, g, b, 1e-5)[0])


def test_an_empty_batch_gives_empty_outputs_and_keeps_the_running_statistics():
    """As torch's F.batch_norm does for N = 0: y is empty, the batch statistics are 0/0 (NaN), and the
    running statistics come back unchanged, bit for bit."""
    rm, rv = np.array([0.5, -0.0, 2.0], np.float32), np.array([1.0, 3.0, 0.25], np.float32)
    r = batch_norm(np.ones((0, 3), np.float32), running_mean=rm, running_var=rv, training=True)
    assert r.y.shape == (0, 3) and r.y.dtype == np.float32
    assert np.isnan(r.mean).all() and np.isnan(r.var).all() and np.isnan(r.rstd).all()
    assert r.running_mean.tobytes() == rm.tobytes() and r.running_var.tobytes() == rv.tobytes()
    assert r.num_batches_tracked == 0


def test_negative_eps_is_computed_where_var_plus_eps_is_positive():
    x = np.array([[1.0, 0.0], [3.0, 0.0]], np.float32)  # channel variances 1 and 0
    r = batch_norm(x[:, :1], training=True, eps=-0.5)
    assert r.y.ravel().tolist() == [float(np.float32(-(2**0.5))), float(np.float32(2**0.5))]
    assert r.rstd.tolist() == [float(np.float32(2**0.5))]
    with pytest.raises(DomainError, match=r"var \+ eps at group \(1,\)=-0.5"):
        batch_norm(x, training=True, eps=-0.5)
