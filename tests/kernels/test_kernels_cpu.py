"""CPU kernels against the oracle: within 1 ULP everywhere, conventions as the spec records them."""

import numpy as np
import pytest
from hypothesis import given
from hypothesis import strategies as st

pytest.importorskip("numba", reason="numba is the kernels extra: pip install 'normspec[kernels]'")

import bn_cases
from normspec.kernels import batch_norm, batch_norm_backward
from normspec.kernels import batchnorm as kb
from normspec.kernels._profiles import PROFILES
from normspec.oracle import batch_norm as oracle
from normspec.oracle import ulp_distance
from normspec.spec.conventions import get_convention

from normspec.errors import DegenerateInputError, DTypeError, NormspecError, ShapeError

F32 = np.float32


def check(*args, **kw):
    return bn_cases.check(batch_norm, *args, **kw)[1]


@given(bn_cases.cases(), st.booleans())
@bn_cases.adversarial_examples
def test_correctly_rounded_against_the_oracle(case, training):
    x, w, b, rm, rv, eps = case
    check(x, w, b, rm, rv, training, eps=eps)


@pytest.mark.parametrize("kind", ["normal", "large_mean", "wide"])
def test_larger_tensors_correctly_rounded(kind):
    rng = np.random.default_rng(4)
    x = {
        "normal": rng.standard_normal((16, 8, 24, 24)),
        "large_mean": 1e4 + rng.random((16, 8, 24, 24)),
        "wide": rng.standard_normal((16, 8, 24, 24)) * 10.0 ** rng.integers(-15, 15, (16, 8, 24, 24)),
    }[kind]
    x = x.astype(F32)
    w, b = rng.standard_normal(8).astype(F32), rng.standard_normal(8).astype(F32)
    d = check(x, w, b, np.zeros(8, F32), np.ones(8, F32), True)
    assert (d == 0).all()  # check() asserts it too: every element correctly rounded


@pytest.mark.parametrize("layout", bn_cases.LAYOUTS)
def test_layouts(layout):
    bn_cases.check_layout(batch_norm, layout)


def test_out_overlapping_x_is_refused():
    x = np.random.default_rng(6).standard_normal((4, 3, 5)).astype(F32)
    before = x.copy()
    with pytest.raises(ShapeError, match="out not overlapping x"):
        batch_norm(x, None, None, None, None, True, out=x)
    assert np.array_equal(x, before)


def test_inputs_are_not_modified_and_out_is_used():
    x = np.random.default_rng(6).standard_normal((4, 3, 5)).astype(F32)
    rm, rv = np.zeros(3, F32), np.ones(3, F32)
    copies = (x.copy(), rm.copy(), rv.copy())
    out = np.empty_like(x)
    y, nrm, _ = batch_norm(x, None, None, rm, rv, True, out=out)
    assert y is out and nrm is not rm
    assert all((a == b).all() for a, b in zip((x, rm, rv), copies, strict=True))


@pytest.mark.parametrize("name", list(PROFILES))
def test_profiles_agree_with_the_spec(name):
    k, s = PROFILES[name], get_convention(name)
    assert k.new_weight == (s.momentum_direction == "new") and k.momentum == s.momentum_default
    assert k.eps == s.eps_default and k.correction == s.running_var_correction
    assert k.one_value == s.one_value and k.zero_var_guard == s.zero_var_guard
    assert (k.eps_min or None) == s.eps_min and k.eps_float32 == (s.eps_cast == "float32")
    assert k.eps_zero_refused == s.refuses_nonpositive_eps_in_training


@pytest.mark.parametrize("convention", ["torch", "keras3", "tf_keras2_fused", "paddle_cpu", "onnx_bn15"])
def test_conventions_running_statistics(convention):
    rng = np.random.default_rng(7)
    x = rng.standard_normal((5, 3, 4)).astype(F32)
    check(
        x,
        None,
        None,
        rng.standard_normal(3).astype(F32),
        (1 + rng.random(3)).astype(F32),
        True,
        convention=convention,
        momentum=0.25,
    )


@pytest.mark.parametrize(
    "convention,outcome", [("torch", "error"), ("torch_raw", "nan"), ("keras3", "finite"), ("paddle_cpu", "identity")]
)
def test_one_value_per_channel(convention, outcome):
    x = np.array([[3.0, -2.0]], F32)
    args = (x, None, np.array([0.5, 0.25], F32), np.zeros(2, F32), np.ones(2, F32), True, None, None, convention)
    if outcome == "error":
        with pytest.raises(DegenerateInputError):
            batch_norm(*args)
        return
    y, _, nrv = batch_norm(*args)
    if outcome == "identity":
        assert (y == x).all() and (nrv == 1).all()
    else:
        assert (y == np.array([[0.5, 0.25]], F32)).all() and np.isnan(nrv).all() == (outcome == "nan")


@pytest.mark.parametrize(
    "call,exc",
    [
        (lambda: batch_norm(np.ones((4, 3), np.float64)), DTypeError),
        (lambda: batch_norm(np.ones((4, 3), F32), np.ones(2, F32)), ShapeError),
        (lambda: batch_norm(np.ones(4, F32)), ShapeError),
        (lambda: batch_norm(np.ones((4, 3), F32), convention="pytorch"), NormspecError),
        (lambda: batch_norm(np.ones((4, 3), F32), eps=-1.0), NormspecError),
        (lambda: batch_norm(np.ones((0, 3), F32)), DegenerateInputError),
        (lambda: batch_norm(np.ones((4, 3), F32), training=False), ShapeError),
    ],
)
def test_bad_input(call, exc):
    with pytest.raises(exc):
        call()


def test_exact_fallback_is_exercised_and_correct():
    """An output that cancels to far below its terms: the certificate fails and the exact path decides."""
    x = np.array([[[0.0, 1.0, 2.0, 3.0]]], F32)  # mean 1.5, var 1.25
    s = 1 / np.sqrt(1.25 + 1e-5)
    b = np.array([-(1.5 * s)], F32)  # y at x = 3 is 1.5 s + b: tiny
    check(x, None, b, np.zeros(1, F32), np.ones(1, F32), True)
    assert kb.last_run.fallback_elements + kb.last_run.refined_channels > 0


def test_backward_within_one_ulp_of_the_term_magnitude():
    bn_cases.check_backward(batch_norm_backward)


def test_eval_backward_is_gamma_invstd_dy():
    bn_cases.check_eval_backward(batch_norm_backward)


@pytest.mark.parametrize("fmt", ["float16", "bfloat16"])
@pytest.mark.parametrize("kind", ["normal", "large_mean", "tiny", "overflow", "cancel"])
def test_narrow_inputs_correctly_rounded_in_their_format(fmt, kind):
    """float16/bfloat16 x with float32 parameters and statistics: y in x's format, correctly rounded."""
    dtype = np.dtype(np.float16) if fmt == "float16" else np.dtype(pytest.importorskip("ml_dtypes").bfloat16)
    rng = np.random.default_rng(12)
    x = {
        "normal": rng.standard_normal((6, 3, 7)),
        "large_mean": 1000 + rng.random((6, 3, 7)),
        "tiny": rng.standard_normal((6, 3, 7)) * 1e-6,  # tiny inputs, and (gamma below) subnormal outputs
        "overflow": rng.standard_normal((6, 3, 7)),
        "cancel": rng.standard_normal((6, 3, 7)),
    }[kind].astype(dtype)
    big = 3e4 if fmt == "float16" else 3e38  # |y| past the format's largest finite value
    w = np.full(3, {"overflow": big, "tiny": 1e-6}.get(kind, 1.5), F32)
    b = rng.standard_normal(3).astype(F32) if kind != "tiny" else np.zeros(3, F32)
    if kind == "cancel":  # y of x[0, c, 0] is about 0
        xs = x.astype(np.float64)
        b = (-(xs[0, :, 0] - xs.mean(axis=(0, 2))) / np.sqrt(xs.var(axis=(0, 2)) + 1e-5) * 1.5).astype(F32)
    rm, rv = np.zeros(3, F32), np.ones(3, F32)
    y, nrm, nrv = batch_norm(x, w, b, rm, rv, True)
    o = oracle(x, w, b, rm, rv, training=True)
    assert y.dtype == dtype and o.y.dtype == dtype
    if kind == "overflow":
        assert np.isinf(o.y.astype(np.float32)).any()
    if kind == "tiny" and fmt == "float16":
        assert (np.abs(o.y.astype(np.float32)) < np.finfo(np.float16).tiny).any()  # subnormal outputs
    d = ulp_distance(y, o.y)
    assert d.max() == 0, f"{d.max()} ULP"
    assert ulp_distance(nrm, o.running_mean).max() == 0 and ulp_distance(nrv, o.running_var).max() == 0
    out = np.empty(x.shape, dtype)
    assert batch_norm(x, w, b, rm, rv, True, out=out)[0] is out and (out.view(np.uint16) == y.view(np.uint16)).all()
