"""BatchNorm cases shared by the CPU and CUDA kernel tests: the hypothesis strategy, the
adversarial-case builder and the check against the oracle (0 ULP: correctly rounded, NaN where
it is NaN)."""

from fractions import Fraction

import numpy as np
from hypothesis import example
from hypothesis import strategies as st
from hypothesis.extra import numpy as hnp
from normspec.oracle import batch_norm as oracle
from normspec.oracle import relative_ulp_error, ulp_distance

F32 = np.float32


def check(impl, x, w, b, rm, rv, training, convention="torch_raw", axis=1, eps=None, momentum=None):
    """Run ``impl`` (the kernels' batch_norm protocol) and the oracle; returns (y, ULP distances).
    Every finite y and running statistic must be the correctly rounded exact value."""
    y, nrm, nrv = impl(x, w, b, rm, rv, training, momentum, eps, convention, axis=axis)
    o = oracle(x, w, b, rm, rv, training=training, eps=eps, momentum=momentum, convention=convention, axis=axis)
    finite = np.isfinite(o.y)
    d = ulp_distance(y, o.y)
    assert d[finite].max(initial=0) == 0, f"y: {d.max()} ULP"
    assert (np.isnan(y) == np.isnan(o.y)).all()
    if rm is not None:
        for got, want in ((nrm, o.running_mean), (nrv, o.running_var)):
            assert ulp_distance(got, want)[np.isfinite(want)].max(initial=0) == 0
            assert (np.isnan(got) == np.isnan(want)).all()
    return y, d


@st.composite
def cases(draw, max_n=4, max_len=6):
    n, c, length = draw(st.integers(1, max_n)), draw(st.integers(1, 3)), draw(st.integers(1, max_len))
    scale = draw(st.sampled_from([1.0, 1e-3, 1e4, 1e-30, 1e30]))
    shift = draw(st.sampled_from([0.0, 1e4, -1e3, 1.2345678e7]))
    x = draw(hnp.arrays(F32, (n, c, length), elements=st.floats(-4, 4, width=32)))
    x = (x.astype(np.float64) * scale + shift).astype(F32)
    w = draw(hnp.arrays(F32, (c,), elements=st.floats(-3, 3, width=32)))
    b = draw(hnp.arrays(F32, (c,), elements=st.floats(-3, 3, width=32)))
    rm = draw(hnp.arrays(F32, (c,), elements=st.floats(-5, 5, width=32)))
    rv = draw(hnp.arrays(F32, (c,), elements=st.floats(0, 5, width=32)))
    eps = draw(st.sampled_from([1e-5, 1e-3, 0.0, 2.0**-40]))
    return x, w, b, rm, rv, eps


def case(x, w=None, b=None, eps=1e-5):
    """An explicit case in the strategy's form (unit gamma, zero beta unless given)."""
    x = np.asarray(x, F32)
    c = x.shape[1]
    return (
        x,
        np.ones(c, F32) if w is None else np.asarray(w, F32),
        np.zeros(c, F32) if b is None else np.asarray(b, F32),
        np.zeros(c, F32),
        np.ones(c, F32),
        eps,
    )


_rng = np.random.default_rng(0)
ADVERSARIAL = [
    case(np.full((2, 3, 4), 1.2345678e7)),  # constant channel
    case(1e4 + _rng.random((4, 2, 8))),  # large mean, small spread
    case(np.array([[[1e30, -1e30, 3e30, 2e30]]])),  # squares overflow float32
    case(np.array([[[1e-45, 3e-45, -2e-45]]]), eps=0.0),  # subnormals
    case(np.full((1, 1, 3), 7.0), b=[1.25], eps=0.0),  # the 0/0 guard
    case(np.array([[[1.0, 3.0]]]), w=[2.0], b=[-2.0 / np.sqrt(1 + 1e-5)]),  # y cancels to ~0
    case(np.array([[[1.0, np.nan, 2.0], [1.0, 2.0, 4.0]]])),  # NaN stays in its channel
    case(np.array([[[1.0, np.inf, 2.0], [1.0, 2.0, 4.0]]])),  # mean inf, variance NaN (not NaN and NaN)
    case(np.array([[[0.0, 1.0]]]), w=[3.4e38], b=[3e37], eps=0.0),  # y = 3.7e38 overflows to inf
    case(np.array([[[0.0, 1.0]]]), w=[3.4e38], b=[-1e37], eps=0.0),  # y near the largest float32
]


def adversarial_examples(test):
    """Pin the ADVERSARIAL cases (in training) as explicit examples of a (case, training) test."""
    for c in reversed(ADVERSARIAL):
        test = example(c, True)(test)
    return test


LAYOUTS = ["nchw", "nhwc", "2d", "noncontiguous", "readonly"]


def check_layout(impl, layout):
    """``impl`` on one of LAYOUTS (channels last through axis=-1), against the oracle."""
    rng = np.random.default_rng(5)
    x = rng.standard_normal((6, 5, 4, 3)).astype(F32)
    w, b = rng.standard_normal(5).astype(F32), rng.standard_normal(5).astype(F32)
    rm, rv = np.zeros(5, F32), np.ones(5, F32)
    if layout == "nhwc":
        check(impl, np.moveaxis(x, 1, -1).copy(), w, b, rm, rv, True, axis=-1)
    elif layout == "2d":
        check(impl, x[:, :, 0, 0].copy(), w, b, rm, rv, True)
    elif layout == "noncontiguous":
        check(impl, x[:, :, ::2, :], w, b, rm, rv, True)
    elif layout == "readonly":
        x.setflags(write=False)
        check(impl, x, w, b, rm, rv, True)
    else:
        check(impl, x, w, b, rm, rv, True)


def check_backward(impl):
    """``impl`` (the kernels' batch_norm_backward protocol) in training against exact sums:
    each dx within 1 ULP at the magnitude of its terms, dbias within 1 ULP at sum|dy|."""
    rng = np.random.default_rng(9)
    x = (rng.standard_normal((6, 2, 5)) * 3 + 1).astype(F32)
    dy = rng.standard_normal(x.shape).astype(F32)
    w = np.array([1.5, -0.5], F32)
    dx, _, db = impl(x, dy, w)
    for c in range(2):
        xs = [Fraction(float(v)) for v in x[:, c].ravel()]
        gs = [Fraction(float(v)) for v in dy[:, c].ravel()]
        n = len(xs)
        m = sum(xs) / n
        var = sum((v - m) ** 2 for v in xs) / n
        inv = 1 / np.sqrt(float(var + Fraction(1e-5)))  # float64 stand-in; the bound below is loose enough
        xhat = [float(v - m) * inv for v in xs]
        mdy = float(sum(gs) / n)
        mdx = sum(float(g) * h for g, h in zip(gs, xhat, strict=True)) / n
        exact = [float(w[c]) * inv * (float(g) - mdy - h * mdx) for g, h in zip(gs, xhat, strict=True)]
        mag = [
            abs(float(w[c])) * inv * (abs(float(g)) + abs(mdy) + abs(h) * abs(mdx))
            for g, h in zip(gs, xhat, strict=True)
        ]
        err = relative_ulp_error(np.asarray(dx)[:, c].ravel(), np.array(exact, dtype=object), np.array(mag))
        assert err.max() <= 1.0
        assert abs(float(db[c]) - float(sum(gs))) <= float(np.spacing(np.float32(sum(abs(float(g)) for g in gs))))


def check_eval_backward(impl):
    """Evaluation: dx = gamma invstd dy, exactly where that is representable."""
    x = np.ones((3, 2), F32)
    dy = np.array([[1, 2], [3, 4], [5, 6]], F32)
    dx, _, _ = impl(
        x, dy, np.array([2.0, 1.0], F32), np.zeros(2, F32), np.array([3.0, 0.0], F32), training=False, eps=1.0
    )
    assert dx[0, 0] == np.float32(2.0 / 2.0) and dx[2, 1] == np.float32(6.0)
