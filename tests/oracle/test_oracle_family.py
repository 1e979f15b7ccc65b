"""LayerNorm, RMSNorm and InstanceNorm on the core, bit for bit against an independent exact computation."""

from fractions import Fraction

import mpmath
import numpy as np
import pytest
from hypothesis import example, given
from hypothesis import strategies as st
from hypothesis.extra import numpy as hnp
from independent import round_mpf
from normspec.oracle import FLOAT32, group_norm, instance_norm, layer_norm, rms_norm
from normspec.oracle.sqrtform import round_fraction, round_sqrt_form

from normspec.errors import DomainError, ShapeError

F32 = np.float32


def exact_rows(rows, gammas, betas, eps, centred, dtype):
    out = np.empty(rows.shape, dtype)
    for i, row in enumerate(rows):
        vals = [Fraction(float(v)) for v in row]
        n = len(vals)
        m = sum(vals, Fraction(0)) / n if centred else Fraction(0)
        D = sum(((v - m) ** 2 for v in vals), Fraction(0)) / n + Fraction(eps)
        for j, v in enumerate(vals):
            A, B = (v - m) * Fraction(float(gammas[j])), Fraction(float(betas[j]))
            if D == 0:
                out[i, j] = np.nan if A == 0 else np.copysign(np.inf, float(A))
                continue
            with mpmath.workprec(600):
                y = mpmath.mpf(B.numerator) / B.denominator + (mpmath.mpf(A.numerator) / A.denominator) / mpmath.sqrt(
                    mpmath.mpf(D.numerator) / D.denominator
                )
            out[i, j] = round_mpf(y, np.dtype(dtype), (A, B, D))
    return out


def same_bits(a, b):
    u = {2: np.uint16, 4: np.uint32, 8: np.uint64}[a.dtype.itemsize]
    nan = np.isnan(a.astype(float)) & np.isnan(b.astype(float))
    assert ((a.view(u) == b.view(u)) | nan).all()


@given(
    hnp.arrays(F32, st.tuples(st.integers(1, 3), st.integers(2, 6)), elements=st.floats(-3, 3, width=32)),
    st.sampled_from([0.0, 1e4, -1e3]),
    st.sampled_from([1e-5, 2.0**-10]),
)
@example(np.array([[0.0, 1.0, 2.0, 3.0]], F32), 40000.0, 1e-5)  # onnxruntime#28463's row
def test_layer_and_rms_norm_match_exact(x, shift, eps):
    x = (x.astype(np.float64) + shift).astype(F32)
    rng = np.random.default_rng(x.shape[1])
    g, b = rng.standard_normal(x.shape[1]).astype(F32), rng.standard_normal(x.shape[1]).astype(F32)
    same_bits(layer_norm(x, 1, g, b, eps=eps).y, exact_rows(x, g, b, eps, True, F32))
    same_bits(rms_norm(x, 1, g, eps=eps).y, exact_rows(x, g, np.zeros_like(g), eps, False, F32))


def test_rms_norm_default_eps_is_the_computation_types_machine_epsilon():
    """float32's for 16-bit inputs (PyTorch computes in float32; tests/test_llm_norm.py checks torch)."""
    x = np.array([[1e-4, -1e-4]], np.float16)
    eps = float(np.finfo(np.float32).eps)
    same_bits(rms_norm(x, 1).y, exact_rows(x, np.ones(2), np.zeros(2), eps, False, np.float16))
    x64 = np.array([[1e-9, -1e-9]], np.float64)
    eps64 = float(np.finfo(np.float64).eps)
    same_bits(rms_norm(x64, 1).y, exact_rows(x64, np.ones(2), np.zeros(2), eps64, False, np.float64))


def test_layer_norm_over_two_trailing_axes_and_instance_norm():
    rng = np.random.default_rng(2)
    x = (rng.standard_normal((2, 3, 4)) * 5 + 100).astype(F32)
    w = rng.standard_normal((3, 4)).astype(F32)
    same_bits(
        layer_norm(x, 2, w).y, exact_rows(x.reshape(2, 12), w.ravel(), np.zeros(12), 1e-5, True, F32).reshape(x.shape)
    )
    same_bits(
        instance_norm(x).y, exact_rows(x.reshape(6, 4), np.ones(4), np.zeros(4), 1e-5, True, F32).reshape(x.shape)
    )


@pytest.mark.parametrize(
    "call,error",
    [
        (lambda: layer_norm(np.ones((2, 3), F32), 3), ShapeError),
        (lambda: layer_norm(np.ones((2, 3), F32), 1, np.ones(4, F32)), ShapeError),
        (lambda: instance_norm(np.ones((2, 3), F32)), ShapeError),
    ],
)
def test_family_bad_input(call, error):
    with pytest.raises(error):
        call()


def test_instance_norm_tracked_running_statistics_exactly():
    from normspec.oracle import instance_norm_tracked

    rng = np.random.default_rng(4)
    x = (rng.standard_normal((3, 2, 5)) * 2 + 1).astype(F32)
    rm, rv = np.array([0.5, -1.0], F32), np.array([2.0, 1.0], F32)
    with pytest.warns(DeprecationWarning):
        y, nm, nv = instance_norm_tracked(x, rm, rv, training=True, momentum=0.25)
    same_bits(y, instance_norm(x).y)
    r = instance_norm(x, running_mean=rm, running_var=rv, momentum=0.25, convention="torch_instance_norm_tracked")
    assert r.running_mean.tobytes() == nm.tobytes() and r.running_var.tobytes() == nv.tobytes()
    m = Fraction(0.25)
    for c in range(2):
        inst = [[Fraction(float(v)) for v in x[i, c]] for i in range(3)]
        means = [sum(r, Fraction(0)) / 5 for r in inst]
        unb = [sum(((v - mu) ** 2 for v in r), Fraction(0)) / 4 for r, mu in zip(inst, means, strict=True)]
        want_m = (1 - m) * Fraction(float(rm[c])) + m * sum(means, Fraction(0)) / 3
        want_v = (1 - m) * Fraction(float(rv[c])) + m * sum(unb, Fraction(0)) / 3
        assert nm[c] == round_fraction(want_m, FLOAT32) and nv[c] == round_fraction(want_v, FLOAT32)
    with pytest.warns(DeprecationWarning):
        y_eval, rm2, _ = instance_norm_tracked(x, nm, nv, training=False)
    assert y_eval.dtype == F32 and (rm2 == nm).all()


def exact_group_stats(rows, centred):
    """Per-row exact mean and biased variance (mean square when not centred)."""
    out = []
    for row in rows:
        vals = [Fraction(float(v)) for v in row]
        m = sum(vals, Fraction(0)) / len(vals) if centred else Fraction(0)
        out.append((m, sum(((v - m) ** 2 for v in vals), Fraction(0)) / len(vals)))
    return out


@pytest.mark.parametrize("dtype", [F32, np.float16, np.float64])
def test_saved_statistics_are_correctly_rounded(dtype):
    """mean, var and rstd = 1/sqrt(var + eps), as torch's native_layer_norm / native_group_norm save them:
    float32 for float16 inputs, the input's format otherwise; keepdim shapes for LayerNorm, (N, G) for GroupNorm."""
    rng = np.random.default_rng(7)
    x = (rng.standard_normal((3, 4, 5)) * 3 + 1000).astype(dtype)
    sfmt = FLOAT32 if dtype != np.float64 else __import__("normspec.oracle", fromlist=["x"]).FLOAT64
    eps = 1e-5
    cases = [
        (layer_norm(x, 2, eps=eps), x.reshape(3, 20), True, (3, 1, 1)),
        (rms_norm(x, 1, eps=eps), x.reshape(12, 5), False, (3, 4, 1)),
        (group_norm(x, 2, eps=eps), x.reshape(6, 10), True, (3, 2)),
        (instance_norm(x, eps=eps), x.reshape(12, 5), True, (3, 4)),
    ]
    for res, rows, centred, shape in cases:
        assert res.mean.shape == res.var.shape == res.rstd.shape == shape
        assert res.rstd.dtype == np.dtype(sfmt.name)
        for (m, v), got_m, got_v, got_r in zip(
            exact_group_stats(rows, centred), res.mean.ravel(), res.var.ravel(), res.rstd.ravel(), strict=True
        ):
            assert got_m == round_fraction(m, sfmt) and got_v == round_fraction(v, sfmt)
            assert got_r == round_sqrt_form(Fraction(1), Fraction(0), v + Fraction(eps), sfmt)


def test_negative_eps_computes_where_var_plus_eps_is_positive():
    """PyTorch computes with eps < 0 (several of its own OpInfo samples do); so does the oracle, wherever
    var + eps > 0, and it names the group where it is not."""
    x = np.array([[1.0, 3.0], [1.0, 1.5]], F32)  # row variances 1 and 1/16
    y = layer_norm(x[:1], 1, eps=-0.5).y
    assert y.tolist() == [[round_sqrt_form(Fraction(-1), Fraction(0), Fraction(1, 2), FLOAT32),
                           round_sqrt_form(Fraction(1), Fraction(0), Fraction(1, 2), FLOAT32)]]  # fmt: skip
    with pytest.raises(DomainError, match=r"var \+ eps at group \(1, 0\)"):
        layer_norm(x, 1, eps=-0.5)


def test_empty_input_gives_empty_outputs():
    for res in (
        layer_norm(np.ones((0, 4), F32), 1),
        rms_norm(np.ones((2, 0), F32), 1),
        group_norm(np.ones((0, 4, 3), F32), 2),
        instance_norm(np.ones((0, 3, 2), F32)),
    ):
        assert res.y.size == 0 and res.y.dtype == F32
    r = rms_norm(np.ones((2, 0), F32), 1)
    assert r.rstd.shape == (2, 1) and np.isnan(r.var).all()  # statistics of no values: 0/0


def test_torch_tensors_are_taken_as_their_exact_values():
    """A tensor that requires grad, and a bfloat16 one (which numpy cannot hold), give what their
    numpy values give."""
    torch = pytest.importorskip("torch", reason="the torch extra is not installed")
    ml_dtypes = pytest.importorskip("ml_dtypes", reason="the bfloat16 extra is not installed")
    x = np.random.default_rng(9).standard_normal((3, 8)).astype(F32)
    same_bits(layer_norm(torch.tensor(x, requires_grad=True), 1).y, layer_norm(x, 1).y)
    xb = x.astype(ml_dtypes.bfloat16)
    got = rms_norm(torch.tensor(x).to(torch.bfloat16), 1).y
    assert got.dtype == xb.dtype
    same_bits(got, rms_norm(xb, 1).y)


def test_cast_points_round_between_stages_and_the_weight_offset_is_exact():
    """A convention that rounds x-hat to the input format before the weight (the HF Llama order) is
    the exact product of the rounded x-hat and the weight, rounded once; an offset weight (Gemma's
    1 + w) is the plain formula with w + 1."""
    from dataclasses import replace

    from normspec.spec import get_convention

    rng = np.random.default_rng(11)
    x = rng.standard_normal((4, 16)).astype(np.float16)
    w = rng.standard_normal(16).astype(np.float16)
    base = get_convention("torch_rms_norm")
    cast = replace(base, name="cast_normalized", cast_points=(("normalized", "input"),))
    xhat = rms_norm(x, 1, eps=1e-6).y
    # a product of two float16 values is exact in float64, and numpy converts float64 to float16 in one rounding
    prod = xhat.astype(np.float64) * w.astype(np.float64)
    assert all(
        Fraction(float(p)) == Fraction(float(a)) * Fraction(float(b))
        for p, a, b in zip(prod.ravel(), xhat.ravel(), np.tile(w, 4), strict=True)
    )
    got = rms_norm(x, 1, w, eps=1e-6, convention=cast).y
    assert got.dtype == np.float16
    same_bits(got, prod.astype(np.float16))
    assert (got != rms_norm(x, 1, w, eps=1e-6).y).any()  # a different function from rounding once
    offset = replace(base, name="offset", weight_offset=1.0)
    w32 = w.astype(F32)
    same_bits(rms_norm(x, 1, w32, eps=1e-6, convention=offset).y, rms_norm(x, 1, w32 + 1, eps=1e-6).y)


@pytest.mark.parametrize("fmt_name", ["bfloat16", "float16"])
def test_the_16_bit_tier_flags_values_a_float32_unit_beside_a_tie(fmt_name, monkeypatch):
    """The tier's float32 product x * fl32(s) may land a unit or two from a narrow tie with the exact
    value on the other side (fl32(s) errs by half a unit relative, the product by half a unit more).
    Rows [x0, -x0] (mean square x0**2) with gammas found so: the tier must flag them, and a flag
    narrowed to the tie itself misrounds at least one (checked, so the cases keep their point)."""
    import ml_dtypes
    from normspec.oracle import core

    dtype = np.dtype(ml_dtypes.bfloat16) if fmt_name == "bfloat16" else np.dtype(np.float16)
    p = np.finfo(dtype).nmant + 1
    eps = 2.0**-20
    found = []
    for x0 in (np.arange(129, 255) / 128).astype(dtype).astype(np.float64):
        rs = 1 / np.sqrt(x0 * x0 + eps)
        for t in (1 + 2.0**-p, 1 + 3 * 2.0**-p, 1.5 + 2.0**-p):
            g = np.float32(t / (x0 * rs)) + np.arange(-64, 64) * np.float32(2.0**-23)
            y32 = (F32(x0) * (g.astype(np.float64) * rs).astype(F32)).astype(F32)
            units = y32.view(np.int32).astype(np.int64) - int(np.array([t], F32).view(np.int32)[0])
            across = np.sign(x0 * g.astype(np.float64) * rs - t) != np.sign(y32.astype(np.float64) - t)
            found += [(x0, gg) for gg in g[across & (np.abs(units) >= 1)]]
    assert found, "no float32 product a unit beside a tie with the exact value across it"
    x = np.array([[x0, -x0] for x0, _ in found], dtype)
    want = [exact_rows(x[i : i + 1].astype(F32), np.array([g, g], F32), np.zeros(2, F32), eps, False, dtype)
            for i, (_, g) in enumerate(found)]  # fmt: skip

    def oracle_rows():
        return [
            rms_norm(x[i : i + 1], 1, np.array([g, g], F32), eps=eps, y_dtype=dtype).y for i, (_, g) in enumerate(found)
        ]

    for a, b in zip(oracle_rows(), want, strict=True):
        same_bits(a, b)
    monkeypatch.setattr(core, "_TIE_UNITS", 1)  # flag the tie itself only
    assert any((a.view(np.uint16) != b.view(np.uint16)).any() for a, b in zip(oracle_rows(), want, strict=True))


@pytest.mark.parametrize("fmt_name", ["bfloat16", "float16"])
def test_rms_norm_to_16_bits_decides_ties_range_edges_and_special_rows_exactly(fmt_name, monkeypatch):
    """RMSNorm rounded to float16/bfloat16 takes a float32 tier that reads the rounding off the bits
    and flags what it cannot decide.  Rows of +-1 with eps = 0 make y = +-gamma exactly, so gammas on
    the narrow format's ties, 1 to 8 float32 units beside them, at its overflow threshold and among
    its subnormals test each decision; random rows cover the rest.  Every element is compared, bit
    for bit, with an independent 600-bit evaluation, and the tier is checked to have run."""
    import ml_dtypes
    from normspec.oracle import core

    dtype = np.dtype(ml_dtypes.bfloat16) if fmt_name == "bfloat16" else np.dtype(np.float16)
    p, top = np.finfo(dtype).nmant + 1, float(np.finfo(dtype).max)
    calls = []
    tier = core._scaled_half_block
    monkeypatch.setattr(core, "_scaled_half_block", lambda *a: calls.append(1) or tier(*a))

    def near(v, spacing):  # v and float32 neighbours of it 1, 2, 3 and 8 units away
        return [v + k * spacing for k in (0, 1, -1, 2, -2, 3, -3, 8)]

    rng = np.random.default_rng(5)
    n = 16
    signs = np.where(rng.random((2, n)) < 0.5, -1.0, 1.0)
    ties = near(1 + 2.0**-p, 2.0**-23) + near(1 + 3 * 2.0**-p, 2.0**-23)  # to even: down, then up
    # rows with 4 on the diagonal and zeros elsewhere: ms = 1, so y = 4 gamma on the diagonal
    threshold = top + 2.0 ** (np.finfo(dtype).maxexp - p - 1)  # halfway from the largest finite to 2**emax
    over = near(threshold / 4, 2.0 ** (np.finfo(dtype).maxexp - 26)) + near(
        top / 4, 2.0 ** (np.finfo(dtype).maxexp - 26)
    )
    # a row of 4 and values a few smallest-subnormals wide: ms just above 1, y among the subnormals
    sub = np.r_[4.0, (rng.integers(1, 64, n - 1) + 0.5) * 2.0 ** (np.finfo(dtype).minexp - p + 1)]
    cases = {
        "ties": (ties, np.vstack([signs, rng.standard_normal((2, n)), np.r_[0, rng.random(n - 1)]])),
        "overflow": (over, 4 * np.eye(n) * signs[0]),
        "subnormal": (1 + rng.integers(-8, 8, n) * 2.0**-23, np.vstack([sub, -sub])),
    }
    # eps > 0 makes 1/sqrt(1 + eps) irrational and the float32 product inexact: gammas placing y
    # within a few float32 units of a tie are what the tier must flag rather than read off the bits
    # (the gammas whose float32 product lands on a tie itself, where the exact value does not: for
    # some of them rounding the float32 product again goes the wrong way, and the tier must flag them)
    wrong_way = 0
    for eps in (2.0**-20, 3 * 2.0**-22, 5 * 2.0**-21, 7 * 2.0**-23):
        rs = 1 / np.sqrt(1 + eps)
        on_tie = []
        for t, even_is_up in ((1 + 2.0**-p, False), (1 + 3 * 2.0**-p, True)):
            g = np.float32(t / rs) + np.arange(-256, 256) * np.float32(2.0**-23)
            hit = g[((g * rs).astype(F32) == t) & (g.astype(np.float64) * rs != t)]
            wrong_way += int(np.sum((hit.astype(np.float64) * rs > t) != even_is_up))
            on_tie += hit.tolist()
        cases[f"near ties, eps={eps}"] = (np.resize(on_tie, n), signs)
    assert wrong_way, "no case where rounding the float32 product again goes the wrong way"
    for name, (g, rows) in cases.items():
        gamma, x = np.array(g, F32), np.array(rows, F32)
        eps = float(name.split("eps=")[1]) if "eps=" in name else 0.0
        calls.clear()
        got = rms_norm(x, 1, gamma, eps=eps, y_dtype=dtype).y
        assert calls, f"the float32 tier did not run on the {name} rows"
        assert got.dtype == dtype
        same_bits(got, exact_rows(x, gamma, np.zeros_like(gamma), eps, False, dtype))
    lead = rms_norm(np.ones((1, 2), F32), 1, np.array([1 + 2.0**-p, 1 + 3 * 2.0**-p], F32), eps=0.0, y_dtype=dtype)
    assert lead.y.astype(np.float64).tolist() == [[1.0, 1 + 2.0 ** (2 - p)]]  # ties go to even, down and up
    # special rows keep IEEE's answers through the tier: a NaN row is NaN, an infinite one 0 and NaN
    x2 = rng.standard_normal((2, 8)).astype(F32)
    x2[0, 3], x2[1, 5] = np.nan, np.inf
    special = rms_norm(x2, 1, np.ones(8, F32), eps=1e-6, y_dtype=dtype).y.astype(np.float64)
    assert np.isnan(special[0]).all()
    assert np.isnan(special[1, 5]) and (special[1, np.arange(8) != 5] == 0).all()
