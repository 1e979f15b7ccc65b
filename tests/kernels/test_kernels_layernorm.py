"""LayerNorm/RMSNorm kernels against the oracle: correctly rounded everywhere."""

import numpy as np
import pytest
from hypothesis import example, given
from hypothesis import strategies as st
from hypothesis.extra import numpy as hnp

pytest.importorskip("numba", reason="numba is the kernels extra: pip install 'normspec[kernels]'")

from normspec.kernels import layer_norm, rms_norm
from normspec.oracle import layer_norm as exact_ln
from normspec.oracle import rms_norm as exact_rms
from normspec.oracle import ulp_distance

from normspec.errors import DTypeError, ShapeError

F32 = np.float32
EPS32 = float(np.finfo(F32).eps)


def exact(got, want):
    d = ulp_distance(got, want)
    finite = np.isfinite(want)
    assert d[finite].max(initial=0) == 0 and (np.isnan(got) == np.isnan(want)).all()
    return d


@given(
    hnp.arrays(F32, st.tuples(st.integers(1, 4), st.integers(1, 9)), elements=st.floats(-3, 3, width=32)),
    st.sampled_from([0.0, 1e4, -2000.0, 1.2345678e7]),
    st.sampled_from([1.0, 1e-3, 1e20, 1e30]),
    st.sampled_from([1e-5, 0.0, 2.0**-20]),
)
@example(np.array([[0.0, 1.0, 2.0, 3.0]], F32), 40000.0, 1.0, 1e-5)  # onnxruntime#28463, tvm#19592
@example(np.array([[1.0, 1.0, 1.0]], F32), 1.2345678e7, 1.0, 1e-5)  # a constant row
def test_correctly_rounded(x, shift, scale, eps):
    x = (x.astype(np.float64) * scale + shift).astype(F32)
    rng = np.random.default_rng(x.shape[1])
    g, b = rng.standard_normal(x.shape[1]).astype(F32), rng.standard_normal(x.shape[1]).astype(F32)
    exact(layer_norm(x, 1, g, b, eps=eps), exact_ln(x, 1, g, b, eps=eps).y)
    if eps > 0 or (x != 0).any():
        exact(rms_norm(x, 1, g, eps=eps), exact_rms(x, 1, g, eps=eps).y)


def test_larger_rows_correctly_rounded():
    rng = np.random.default_rng(1)
    x = (rng.standard_normal((32, 512)) + 2000).astype(F32)  # pytorch#51102's large-mean rows
    g, b = rng.standard_normal(512).astype(F32), rng.standard_normal(512).astype(F32)
    exact(layer_norm(x, 1, g, b), exact_ln(x, 1, g, b).y)
    exact(rms_norm(x, 1, g), exact_rms(x, 1, g, eps=EPS32).y)


def test_two_normalized_axes_and_default_eps():
    x = np.random.default_rng(2).standard_normal((3, 4, 5)).astype(F32)
    exact(layer_norm(x, 2), exact_ln(x, 2).y)
    exact(rms_norm(x), exact_rms(x, 1).y)  # eps=None: float32's machine epsilon on both sides


@pytest.mark.parametrize(
    "call,error",
    [
        (lambda: layer_norm(np.ones((2, 3), np.float64)), DTypeError),
        (lambda: layer_norm(np.ones((2, 3), F32), 1, np.ones(4, F32)), ShapeError),
        (lambda: rms_norm(np.ones((2, 3), F32), 3), ShapeError),
    ],
)
def test_bad_input(call, error):
    with pytest.raises(error):
        call()


def test_out_receives_the_result():
    rng = np.random.default_rng(3)
    x = (rng.standard_normal((5, 6, 7)) + 1e4).astype(F32)
    for fn, want in ((layer_norm, exact_ln(x, 2).y), (rms_norm, exact_rms(x, 2).y)):
        out = np.full(x.shape, np.nan, F32)
        assert fn(x, 2, out=out) is out
        exact(out, want)
    with pytest.raises(ShapeError, match="out of shape"):
        layer_norm(x, 1, out=np.empty((5, 6), F32))
    with pytest.raises(ShapeError, match="out not overlapping x"):
        rms_norm(x, 1, out=x)
