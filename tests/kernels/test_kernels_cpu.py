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
    """An output that cancels exactly: var + eps = 4, so y at x = 3 is 1.5 / 2 - 0.75 = 0.  No
    bound, float64 or double-double, puts a bracket around 0 inside 0's rounding interval, so
    the channel gets exact statistics and the element the exact path.  An output that cancels
    to far below its terms without being 0 is decided by the double-double recheck (tier 2)."""
    x = np.array([[[0.0, 1.0, 2.0, 3.0]]], F32)  # mean 1.5, var 1.25
    check(x, None, np.array([-0.75], F32), np.zeros(1, F32), np.ones(1, F32), True, eps=2.75)
    assert kb.last_run.refined_channels == 1 and kb.last_run.fallback_elements >= 1
    s = 1 / np.sqrt(1.25 + 1e-5)
    b = np.array([-(1.5 * s)], F32)  # y at x = 3 is 1.5 s + b: tiny
    check(x, None, b, np.zeros(1, F32), np.ones(1, F32), True)
    assert kb.last_run.resummed_channels == 1 and kb.last_run.refined_channels == 0


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


_U = 2.0**-53


def _row_values(draw_kind, rng, n):
    """Rows that stress a shifted sum: cancellation around a large mean, exponents far apart,
    and plain normal values."""
    if draw_kind == "large_mean":
        return (1e4 + rng.random(n)).astype(F32)
    if draw_kind == "wide":
        return (rng.standard_normal(n) * 10.0 ** rng.integers(-20, 20, n)).astype(F32)
    if draw_kind == "cancel":
        v = rng.standard_normal(n).astype(F32) * F32(1e6)
        v[1::2] = -v[::2][: v[1::2].size] + F32(1e-3)
        return v
    return rng.standard_normal(n).astype(F32)


@given(
    st.integers(1, 4),  # vectors of 16 in the block
    st.sampled_from(["normal", "large_mean", "wide", "cancel"]),
    st.sampled_from(["zero", "first", "far"]),
    st.integers(0, 2**32 - 1),
)
def test_error_free_block_sums_within_their_bound(nv, kind, shift_kind, seed):
    """block_sums16_eft's pairs against exact rationals: S1 + S1_lo within (2k + 8)(k + 5) u**2
    sum|d| of the exact shifted sum and S2 + S2_lo within ((2k + 10)(k + 7) + 1) u**2 sum d**2 of
    the exact sum of squares (k = nv terms per lane); _tail_sums' within (k + 1)**2 and
    (k + 2)(k + 3) + 1 (k = 6 values).  The plain block's S2 errs within its own bound."""
    from fractions import Fraction

    from normspec.kernels import _numba_cpu as cpu

    rng = np.random.default_rng(seed)
    row = _row_values(kind, rng, 16 * nv + 6)
    shift = {"zero": 0.0, "first": float(row[0]) * (1 + 2.0**-30), "far": 1e5}[shift_kind]
    slack = Fraction(1 + 1e-14) * Fraction(_U * _U)
    for lo_i, hi_i, coef1, coef2, got in (
        (0, 16 * nv, (2 * nv + 8) * (nv + 5), (2 * nv + 10) * (nv + 7) + 1, cpu._block(row, 0, nv, shift, True)),
        (16 * nv, 16 * nv + 6, 49, 73, cpu._tail_sums(row[16 * nv :], shift, True)),
    ):
        d = [Fraction(float(v)) - Fraction(shift) for v in row[lo_i:hi_i]]
        s1, s1_lo, s2, s2_lo = (Fraction(v) for v in got)
        total1, total2 = sum(abs(t) for t in d), sum(t * t for t in d)
        assert abs(s1 + s1_lo - sum(d)) <= coef1 * slack * total1
        assert abs(s2 + s2_lo - total2) <= coef2 * slack * total2
    plain = cpu._block(row, 0, nv, shift, False)
    d = [Fraction(float(v)) - Fraction(shift) for v in row[: 16 * nv]]
    total2 = sum(t * t for t in d)
    assert plain[1] == plain[3] == 0.0
    assert abs(Fraction(plain[2]) - total2) <= Fraction((nv + 6) * _U * 1.01) * total2


def test_plain_block_sums_can_miss_the_error_free_bound():
    """The bound above tells the two sums apart: where the subtraction rounds, the plain S1 errs
    by more."""
    from fractions import Fraction

    from normspec.kernels import _numba_cpu as cpu

    row = _row_values("wide", np.random.default_rng(1), 64)
    d = [Fraction(float(v)) - Fraction(0.1) for v in row]  # x - 0.1 rounds in float64
    exact, total = sum(d), sum(abs(t) for t in d)
    plain, eft = cpu._block(row, 0, 4, 0.1, False), cpu._block(row, 0, 4, 0.1, True)
    assert abs(Fraction(plain[0]) - exact) > Fraction(144 * _U * _U) * total
    assert abs(Fraction(eft[0]) + Fraction(eft[1]) - exact) <= Fraction(144 * _U * _U) * total


@pytest.mark.parametrize("kind", ["normal", "large_mean", "wide", "constant"])
def test_error_free_resum_plan_holds_the_exact_mean(kind):
    """stats_channels_eft and plan_from_sums(eft=True): the mean pair mu + mu_lo is within the
    plan's mu_err of the exact mean, and that bound is far below the plain one (on normal data
    by more than 1e6: the gain that closes elements near y = 0).  dd_plan: its mean pair within
    its bound, and s = gamma / sqrt(var + eps) as a pair within its relative bound of the exact
    value (200-bit mpmath from the exact variance)."""
    from fractions import Fraction

    import mpmath
    from normspec.kernels import _exact
    from normspec.kernels import _numba_cpu as cpu

    rng = np.random.default_rng(3)
    shape = (6, 3, 200)
    x = _row_values(kind if kind != "constant" else "normal", rng, int(np.prod(shape))).reshape(shape)
    if kind == "constant":
        x[:] = F32(1.2345678e7)
        x[0, :, 5] = np.nextafter(F32(1.2345678e7), F32(np.inf))
    n, a_n, b_n = shape[0] * shape[2], shape[0], shape[2]
    eft_st = np.empty((3, cpu.EFT_COLUMNS))
    cpu.stats_channels_eft(x, np.arange(3, dtype=np.int64), eft_st)
    plain_st, m_plain, chunk = kb._stats(x, cpu)
    for c in range(3):
        mean, _ = _exact.channel_stats(x, c)
        eft_plan, plain_plan = np.empty(cpu.PLAN_COLUMNS), np.empty(cpu.PLAN_COLUMNS)
        cpu.plan_from_sums(
            *eft_st[c, :5], n, cpu.neumaier_terms(a_n, b_n, 1), cpu.ROW_BOUND, True, 1.0, 0.0, 1e-5, False, eft_plan
        )
        cpu.plan_from_sums(*plain_st[c], n, m_plain, chunk, False, 1.0, 0.0, 1e-5, False, plain_plan)
        for p in (eft_plan, plain_plan):
            assert abs(Fraction(p[0]) + Fraction(p[5]) - mean) <= Fraction(p[6])
        if kind == "normal":
            assert eft_plan[6] * 1e6 < plain_plan[6]
        dd = np.empty(cpu.DD_COLUMNS)
        gamma, eps = 1.7, 1e-5
        cpu.dd_plan(eft_st[c], n, cpu.neumaier_terms(a_n, b_n, 1), gamma, 0.0, eps, dd)
        assert abs(Fraction(dd[0]) + Fraction(dd[1]) - mean) <= Fraction(dd[4])
        _, var = _exact.channel_stats(x, c)
        with mpmath.workprec(200):
            s_exact = mpmath.mpf(gamma) / mpmath.sqrt(mpmath.mpf(var.numerator) / var.denominator + mpmath.mpf(eps))
            assert abs(mpmath.mpf(dd[2]) + mpmath.mpf(dd[3]) - s_exact) <= dd[5] * s_exact
        if kind in ("normal", "large_mean"):  # wide values: the bounds scale with sum|x - shift|
            assert dd[5] < 1e-25 and dd[4] <= 1e-25 * max(abs(float(mean)), 1.0)


@pytest.mark.parametrize("affine,seed", [(False, 6), (True, 6)])
def test_error_free_resum_closes_open_channels(affine, seed, monkeypatch):
    """Normal data on which the float64 bounds leave an element open in one channel even under
    the recheck's bracket (seeds where it happens): tier 2 re-sums the channel error-free and
    decides it, with no exact statistics; y and the running statistics are the oracle's.  With a
    random affine, the open elements are near y = 0 with beta != 0, where |y| is far below the
    terms that cancel: the double-double recheck decides those."""
    rng = np.random.default_rng(seed)
    x = rng.standard_normal((8, 16, 4096), dtype=F32)
    w, b = (rng.standard_normal(16).astype(F32) for _ in range(2)) if affine else (None, None)
    check(x, w, b, np.zeros(16, F32), np.ones(16, F32), True)
    assert kb.last_run.resummed_channels >= 1
    assert kb.last_run.refined_channels == 0 and kb.last_run.fallback_elements == 0
    if affine:  # without the double-double step, the channel needs exact statistics
        monkeypatch.setattr(kb, "_certify_dd", lambda *args: None)
        check(x, w, b, np.zeros(16, F32), np.ones(16, F32), True)
        assert kb.last_run.refined_channels == 1


@given(
    st.floats(-(2.0**-120), 2.0**-120) | st.floats(-1e30, 1e30),
    st.integers(-3, 3),  # ULPs of float64 away from a float32 midpoint or value
    st.sampled_from([0.0, 2.0**-53, 2.0**-48, 2.0**-30]),
    st.sampled_from([0.0, 2.0**-160, 2.0**-70, 1e-20]),
    st.booleans(),
)
def test_recheck_bracket_is_inside_the_rounding_interval(v, nudge, big_k, g, at_midpoint):
    """_decided (the host's recheck) against exact rationals: when it passes, both ends of the
    bracket |yv - y*| <= K|yv| + G round to r (so every point between does); values near float32
    midpoints and powers of two included.  Whatever the bulk pass's test passes, it passes too."""
    import math
    from fractions import Fraction

    from normspec.kernels import _exact
    from normspec.kernels import _numba_cpu as cpu

    yv = float(np.float32(v))
    if at_midpoint and np.isfinite(yv):
        yv = 0.5 * (yv + float(np.nextafter(np.float32(yv), np.float32(np.inf))))
    yv = float(yv + nudge * np.spacing(yv)) if yv != 0 else nudge * 2.0**-1074
    r = np.float32(yv)
    decided = cpu._decided(yv, r, big_k, 2 * g)
    floor = math.ldexp(1.0, math.frexp(yv)[1] - 1) if yv != 0 and abs(yv) >= 2.0**-1022 else 0.0
    bulk = not (abs(yv - float(r)) > floor * (cpu._HALF_GAP - 4 * big_k * (1 + 2.0**-40)) - 2 * g)
    if bulk:
        assert decided
    if decided:
        b = Fraction(big_k) * abs(Fraction(yv)) + Fraction(g)
        for end in (Fraction(yv) - b, Fraction(yv) + b):  # bits: the zero's sign counts too
            assert _exact.round_f32(end).view(np.uint32) == r.view(np.uint32)


def _same_bits(y, want):
    """y and the oracle's y agree bit for bit (the sign of a zero included)."""
    want = np.asarray(want, F32)
    assert np.array_equal(y.view(np.uint32), want.view(np.uint32)), (y.ravel(), want.ravel())


def test_zero_outputs_carry_the_exact_values_sign():
    """An output whose exact value is 0 is +0 and one just below 0 is -0, whichever tier decides
    it: here the mean is exactly -32, so y at x = -32 is exactly 0 while its float64 value and
    bound straddle 0 (tier 1 used to take the float64 value's sign); in evaluation, x = -0 with
    a running mean of 0 and beta = -0 gives an exact 0 that float64 arithmetic writes as -0."""
    x = np.array([[[-30, 49, -32, 46, 9]], [[45, 30, 25, 14, 44]], [[10, 11, 39, -29, -711]]], F32)
    w, b, rm, rv = np.array([1e-38], F32), np.zeros(1, F32), np.zeros(1, F32), np.ones(1, F32)
    y, _, _ = batch_norm(x, w, b, rm, rv, True, None, 1e-5, "torch_raw")
    _same_bits(y, oracle(x, w, b, rm, rv, training=True, eps=1e-5, convention="torch_raw").y)
    x0 = np.array([[[-0.0, 1.0]]], F32)
    b0 = np.array([-0.0], F32)
    y, _, _ = batch_norm(x0, None, b0, rm, rv, False, None, 1e-5, "torch_raw")
    _same_bits(y, oracle(x0, None, b0, rm, rv, training=False, eps=1e-5, convention="torch_raw").y)


def test_certificate_counts_the_error_of_s_on_the_folded_mean():
    """beta' = beta - mu_lo s carries s's relative error on mu_lo s; with |beta'| and the product
    far below |mu_lo s| (a mean of 0.75 + 2**-102, eps = 0, a beta near mu_lo s), the bound
    without that term let the recheck decide two outputs one ULP off (found in review)."""
    x = np.array([[[2.0**-100, 2.0, 1.0, 1.0]]], F32)
    w = np.array([1067734904], np.uint32).view(F32)
    b = np.array([216558090], np.uint32).view(F32)
    rm, rv = np.zeros(1, F32), np.ones(1, F32)
    y, _, _ = batch_norm(x, w, b, rm, rv, True, None, 0.0, "torch_raw")
    _same_bits(y, oracle(x, w, b, rm, rv, training=True, eps=0.0, convention="torch_raw").y)


@pytest.mark.parametrize(
    "x,rv_bits,convention,momentum",
    [
        ([0, 0, 0, 1], 1024037127, "torch", None),  # n = 4: n / (n - 1) = 4/3 is not a float64
        ([0, 0, 0, 0, 0, 0, 1], 0, "tf_keras2_fused", 0.1),
    ],
)
def test_running_variance_exact_path_uses_the_exact_bessel_factor(x, rv_bits, convention, momentum):
    """Running variances that land within ~1e-17 of a float32 midpoint go to the exact path,
    which must multiply by n / (n - 1) exactly, not by its float64 rounding (found in review:
    one ULP off on these)."""
    xs = np.array([[x]], F32)
    rm, rv = np.zeros(1, F32), np.array([rv_bits], np.uint32).view(F32)
    _, nrm, nrv = batch_norm(xs, None, None, rm, rv, True, momentum, None, convention)
    o = oracle(xs, None, None, rm, rv, training=True, momentum=momentum, convention=convention)
    _same_bits(nrv, o.running_var)
    _same_bits(nrm, o.running_mean)
