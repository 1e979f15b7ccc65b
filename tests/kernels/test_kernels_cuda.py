"""CUDA kernels against the oracle: within 1 ULP everywhere, conventions as the spec records them.

Without a GPU these run under numba's CUDA simulator (tests/conftest.py sets
NUMBA_ENABLE_CUDASIM=1 when the machine has no NVIDIA device), on small shapes; on a GPU the
same tests run the real kernels, and the large-tensor tests below run too.
"""

import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

pytest.importorskip("numba", reason="numba is the kernels extra: pip install 'normspec[kernels]'")

import bn_cases
from normspec.kernels import cuda as kc
from normspec.oracle import batch_norm as oracle
from normspec.oracle import ulp_distance

from normspec.errors import DegenerateInputError, DTypeError, ShapeError

OK, WHY = kc.available()
SIM = os.environ.get("NUMBA_ENABLE_CUDASIM") == "1"
pytestmark = pytest.mark.skipif(not OK, reason=WHY)
F32 = np.float32
_rng = np.random.default_rng(3)


def check(*args, **kw):
    return bn_cases.check(kc.batch_norm, *args, **kw)[0]


# the simulator runs device code as numpy scalars, which warn where inf - inf gives NaN (a
# channel holding an infinity); on a GPU that is silent, and the result is checked either way
@pytest.mark.filterwarnings("ignore:invalid value encountered:RuntimeWarning")
@settings(max_examples=40 if SIM else 200, deadline=None)
@given(bn_cases.cases(max_n=3, max_len=5), st.booleans())
@bn_cases.adversarial_examples
def test_correctly_rounded_against_the_oracle(case, training):
    x, w, b, rm, rv, eps = case
    check(x, w, b, rm, rv, training, eps=eps)


@pytest.mark.parametrize("layout", bn_cases.LAYOUTS)
def test_layouts(layout):
    bn_cases.check_layout(kc.batch_norm, layout)


@pytest.mark.parametrize("sign", [1.0, -1.0])
def test_exact_tiers_are_exercised_and_correct(sign):
    # outputs that cancel to far below their terms: the certificate fails, the channel's exact
    # statistics come from the device's exponent-bin kernel, the rest is decided exactly
    x = (sign * (1e4 + _rng.random((3, 2, 40)))).astype(F32)
    mean = x.astype(np.float64).mean(axis=(0, 2))
    sd = np.sqrt(x.astype(np.float64).var(axis=(0, 2)) + 1e-5)
    w = np.ones(2, F32)
    b = (-(x[0, :, 0] - mean) / sd).astype(F32)  # y of x[0, c, 0] is about 0
    check(x, w, b, np.zeros(2, F32), np.ones(2, F32), True)
    assert kc.last_run.fallback_elements + kc.last_run.refined_channels > 0


def test_device_arrays_in_and_out():
    from numba import cuda

    x = _rng.standard_normal((2, 3, 6)).astype(F32)
    w, b = _rng.standard_normal(3).astype(F32), _rng.standard_normal(3).astype(F32)
    y_host, m_host, v_host = kc.batch_norm(x, w, b, np.zeros(3, F32), np.ones(3, F32))
    xd = cuda.to_device(x)
    y_dev, m_dev, v_dev = kc.batch_norm(xd, w, b, np.zeros(3, F32), np.ones(3, F32))
    assert not isinstance(y_dev, np.ndarray)
    assert (y_dev.copy_to_host() == y_host).all() and (m_dev == m_host).all() and (v_dev == v_host).all()
    assert (xd.copy_to_host() == x).all()  # the input is not modified


@pytest.mark.parametrize("convention", ["torch", "keras3", "tf_keras2_fused", "paddle_cpu", "onnx_bn15"])
def test_conventions_running_statistics(convention):
    x = (_rng.standard_normal((3, 2, 5)) * 2 + 1).astype(F32)
    w, b = np.array([1.5, -0.5], F32), np.array([0.25, 2.0], F32)
    rm, rv = np.array([0.5, -1.0], F32), np.array([2.0, 0.5], F32)
    check(x, w, b, rm, rv, True, convention=convention)
    check(x, w, b, rm, rv, False, convention=convention)


@pytest.mark.parametrize(
    ("convention", "outcome"),
    [("torch", "error"), ("torch_raw", "nan"), ("keras3", "finite"), ("paddle_cpu", "identity")],
)
def test_one_value_per_channel(convention, outcome):
    x = np.array([[3.0, -2.0]], F32)
    args = (x, None, np.array([0.5, 0.25], F32), np.zeros(2, F32), np.ones(2, F32), True, None, None, convention)
    if outcome == "error":
        with pytest.raises(DegenerateInputError):
            kc.batch_norm(*args)
        return
    y, _, nrv = kc.batch_norm(*args)
    if outcome == "identity":
        assert (y == x).all() and (nrv == 1).all()
    else:
        assert (y == np.array([[0.5, 0.25]], F32)).all() and np.isnan(nrv).all() == (outcome == "nan")


@pytest.mark.parametrize(
    ("call", "exc"),
    [
        (lambda: kc.batch_norm(np.zeros((2, 3, 4)), training=True), DTypeError),
        (lambda: kc.batch_norm(np.zeros((2, 3, 4), F32), np.ones(2, F32)), ShapeError),
        (lambda: kc.batch_norm(np.zeros(4, F32)), ShapeError),
        (lambda: kc.batch_norm(np.zeros((0, 3, 4), F32)), DegenerateInputError),
        (lambda: kc.batch_norm(np.zeros((2, 3, 4), F32), training=False), ShapeError),
        (lambda: kc.batch_norm(np.zeros((2, 70000), F32)), ShapeError),  # beyond the grid's second dimension
        (lambda: kc.batch_norm_backward(np.zeros((2, 3), F32), np.zeros((3, 2), F32)), ShapeError),
    ],
)
def test_bad_input(call, exc):
    with pytest.raises(exc):
        call()


def test_zero_channels():
    x = np.zeros((2, 0, 3), F32)
    y, m, v = kc.batch_norm(x, None, None, np.zeros(0, F32), np.ones(0, F32))
    assert y.shape == x.shape and m.shape == v.shape == (0,)
    assert kc.batch_norm_backward(x, x)[0].shape == x.shape


def test_every_kernel_compiles_for_the_gpu():
    """What the simulator cannot see: the CUDA target's own typing and lowering (this caught a
    min() of two ints that compiles for the CPU and the simulator but not for CUDA)."""
    script = Path(__file__).with_name("ptx_compile.py")
    out = subprocess.run([sys.executable, str(script)], capture_output=True, text=True, timeout=600)
    if out.returncode == 77:
        pytest.skip(out.stdout.strip() or "no NVVM (CUDA toolkit) on this machine")
    assert out.returncode == 0, out.stdout + out.stderr


def test_device_array_of_another_dtype_is_refused():
    from numba import cuda

    xd = cuda.to_device(np.zeros((2, 3), np.float64))
    with pytest.raises(DTypeError, match="float64"):
        kc.batch_norm_backward(xd, xd)


def test_non_contiguous_device_array_is_refused():
    from numba import cuda

    xd = cuda.to_device(np.zeros((4, 3), F32)).T
    with pytest.raises(ShapeError, match="C-contiguous"):
        kc.batch_norm(xd)


def test_backward_within_one_ulp_of_the_term_magnitude():
    bn_cases.check_backward(kc.batch_norm_backward)


def test_eval_backward_is_gamma_invstd_dy():
    bn_cases.check_eval_backward(kc.batch_norm_backward)


def test_backward_keeps_device_arrays():
    from numba import cuda

    x = (_rng.standard_normal((4, 3, 7)) * 2 - 1).astype(F32)
    dy = _rng.standard_normal(x.shape).astype(F32)
    w = _rng.standard_normal(3).astype(F32)
    dx, dw, db = kc.batch_norm_backward(cuda.to_device(x), cuda.to_device(dy), w)
    hdx, hdw, hdb = kc.batch_norm_backward(x, dy, w)
    assert not isinstance(dx, np.ndarray)
    assert (dx.copy_to_host() == hdx).all() and (dw == hdw).all() and (db == hdb).all()


@pytest.mark.skipif(SIM, reason="large tensors need a real GPU (the simulator runs a Python thread per CUDA thread)")
@pytest.mark.parametrize("kind", ["normal", "large_mean"])
def test_large_tensors_on_the_gpu(kind):
    rng = np.random.default_rng(11)
    shape = (32, 64, 28, 28)
    x = rng.standard_normal(shape) if kind == "normal" else 1e4 + rng.random(shape)
    x = x.astype(F32)
    w, b = rng.standard_normal(64).astype(F32), rng.standard_normal(64).astype(F32)
    y = check(x, w, b, np.zeros(64, F32), np.ones(64, F32), True, convention="torch")
    o = oracle(x, w, b, training=True)
    assert np.mean(ulp_distance(y, o.y) == 0) > 0.99


def test_exact_zero_output_is_positive_zero():
    """x = -0 with a running mean of 0 and beta = -0: the exact y is 0, which rounds to +0 (float64
    arithmetic gives -0 there, and with G = 0 nothing is flagged for the host)."""
    x = np.full((2, 1, 3), -0.0, F32)
    b, rm, rv = np.array([-0.0], F32), np.zeros(1, F32), np.ones(1, F32)
    for training in (True, False):
        y, _, _ = kc.batch_norm(x, None, b, rm, rv, training, None, 0.0, "torch_raw")
        want = np.asarray(oracle(x, None, b, rm, rv, training=training, eps=0.0, convention="torch_raw").y, F32)
        assert np.array_equal(np.asarray(y).view(np.uint32), want.view(np.uint32))
