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


@pytest.mark.parametrize("fmt", ["float16", "bfloat16"])
def test_narrow_inputs_correctly_rounded_in_their_format(fmt):
    """float16/bfloat16 rows (parameters in x's format or float32): y in x's format, correctly
    rounded, on LLM-like rows (4096 wide, small variance, an outlier) and on rows whose exact
    output sits 2**-30 above a tie of the format, where rounding through float32 goes wrong."""
    from fractions import Fraction

    dtype = np.dtype(np.float16) if fmt == "float16" else np.dtype(pytest.importorskip("ml_dtypes").bfloat16)
    p = 11 if fmt == "float16" else 8
    rng = np.random.default_rng(7)
    x = rng.standard_normal((6, 4096))
    x[1] = 0.5 + 1e-3 * x[1]
    x[2, 5] = 1e4 if fmt == "bfloat16" else 6e4
    x = x.astype(dtype)
    w, b = (1 + 0.1 * rng.standard_normal(4096)).astype(dtype), rng.standard_normal(4096).astype(F32)
    y = layer_norm(x, 1, w, b)
    assert y.dtype == dtype
    exact(y, exact_ln(x, 1, w.astype(F32), b).y)
    exact(rms_norm(x, 1, w, eps=1e-6), exact_rms(x, 1, w, eps=1e-6).y)
    # rows of +-1 (mean 0, mean square 1) scaled by 1 + 2**(1-p): y = target exactly, above the tie
    g = Fraction(1) + Fraction(1, 2 ** (p - 1))
    target = Fraction(1) + Fraction(1, 2**p) + Fraction(1, 2**30)
    eps = float(g**2 / target**2 - 1)
    rows = np.tile([1.0, -1.0], 32)[None, :].astype(dtype)
    wt = np.full(64, float(g), dtype)
    for got, want in (
        (rms_norm(rows, 1, wt, eps=eps), exact_rms(rows, 1, wt, eps=eps).y),
        (layer_norm(rows, 1, wt, eps=eps), exact_ln(rows, 1, wt, eps=eps).y),
    ):
        exact(got, want)
        assert float(got[0, 0]) == 1 + 2.0 ** (1 - p)  # up: through float32 it would be 1 (ties to even)


@pytest.mark.parametrize("fmt", ["float16", "bfloat16"])
@pytest.mark.parametrize("seed", range(6))
def test_narrow_rows_of_every_scale(fmt, seed):
    """The float16/bfloat16 kernel (bits in, bits out, ties settled in the kernel, flagged rows
    redone on the host) on rows scaled by 10**-6 .. 10**4 (bfloat16: 10**-20 .. 10**20), rows
    at the format's limits (float16's overflow to infinity included: RMSNorm over infinities
    gives IEEE's 0 and NaN, as the oracle does), constant rows, widths 1 to 4096; float32 too."""
    dtype = np.dtype(np.float16) if fmt == "float16" else np.dtype(pytest.importorskip("ml_dtypes").bfloat16)
    big, scales = (6e4, (-6, 4)) if fmt == "float16" else (1e30, (-20, 20))
    rng = np.random.default_rng(seed)
    r, f = [(3, 5), (17, 64), (8, 300), (4, 4096), (2, 1), (5, 17)][seed]
    x = rng.standard_normal((r, f)) * 10.0 ** rng.integers(*scales, (r, 1))
    if r > 2:
        x[1], x[2] = big * rng.standard_normal(f), 7.0
    w, b = (3 * rng.standard_normal(f)).astype(dtype), rng.standard_normal(f).astype(dtype)
    with np.errstate(over="ignore"):  # float16 rounds the largest of them to infinity
        xn = x.astype(dtype)
    for xs in (xn, xn.astype(F32)):
        ws, bs = w.astype(xs.dtype), b.astype(xs.dtype)
        for eps in (1e-5, 0.0):
            exact(layer_norm(xs, 1, ws, bs, eps=eps), exact_ln(xs, 1, ws, bs, eps=eps).y)
            exact(rms_norm(xs, 1, ws, eps=eps), exact_rms(xs, 1, ws, eps=eps).y)
