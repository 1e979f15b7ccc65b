"""Soundness: exact emulations of each algorithm never exceed the derived bound; bad input is refused."""

import json

import mpmath
import numpy as np
import pytest
from emulate import emulate
from hypothesis import example, given
from hypothesis import strategies as st
from hypothesis.extra import numpy as hnp
from normspec.budgets import ALGORITHMS, Algorithm, budget_for_batch_norm, get_algorithm
from normspec.oracle import batch_norm

from normspec.cli import main
from normspec.errors import InputFileError, InvalidArgumentError, NormspecError

F32 = np.float32
EPS = [2.0**-17, 2.0**-7, 0.5]  # exactly representable in every compute precision used here


def exact_values(x, gamma, beta, eps, training, rm=None, rv=None):
    r = batch_norm(x, gamma, beta, rm, rv, training=training, eps=eps, convention="torch_raw")
    return r, [r.exact.y(i, prec=120) for i in np.ndindex(x.shape)]


def check_sound(alg, x, gamma, beta, eps, training=True, rm=None, rv=None):
    budget = budget_for_batch_norm(alg, x, gamma, beta, eps, training=training, running_mean=rm, running_var=rv)
    y = emulate(alg, x, gamma, beta, eps, training, rm, rv)
    _, ex = exact_values(x, gamma, beta, eps, training, rm, rv)
    for k, idx in enumerate(np.ndindex(x.shape)):
        got = float(y[idx])
        if not np.isfinite(got):
            assert budget[idx] == np.inf, f"{idx}: non-finite {got} under a finite budget {budget[idx]}"
            continue
        with mpmath.workprec(120):
            err = abs(mpmath.mpf(got) - ex[k])
        assert err <= budget[idx], f"{idx}: error {float(err):.3g} > budget {budget[idx]:.3g} ({alg})"
    return budget, y


@st.composite
def inputs(draw):
    n, c, length = draw(st.integers(1, 5)), draw(st.integers(1, 2)), draw(st.integers(1, 5))
    if n * length < 2:
        length = 2
    base = draw(hnp.arrays(F32, (n, c, length), elements=st.floats(-3, 3, width=32)))
    shift = draw(st.sampled_from([0.0, 100.0, 1e4, -1e6, 1.2345678e7]))
    scale = draw(st.sampled_from([1.0, 1e-2, 1e-5, 0.0]))
    x = (base.astype(np.float64) * scale + shift).astype(F32)
    gamma = np.array(draw(st.lists(st.sampled_from([1.0, -0.5, 2.0, 0.125]), min_size=c, max_size=c)), F32)
    beta = np.array(draw(st.lists(st.sampled_from([0.0, 1.0, -3.0, 0.25]), min_size=c, max_size=c)), F32)
    return x, gamma, beta, draw(st.sampled_from(EPS))


# the float32 inputs below reach 1.2e7, outside float16: algorithms computing in float16 get float16 inputs
FLOAT32_RANGE = [n for n, a in ALGORITHMS.items() if "float16" not in (a.accumulator, a.compute)]


@pytest.mark.parametrize("name", FLOAT32_RANGE)
@given(case=inputs())
@example(case=(np.full((2, 1, 3), 1.2345678e7, F32), np.ones(1, F32), np.zeros(1, F32), 2.0**-17))
@example(
    case=(np.array([[[1e-45, 3e-45, -4e-45]], [[2e-45, 0.0, 7e-45]]], F32), np.ones(1, F32), np.zeros(1, F32), 2.0**-17)
)
@example(case=((1e4 + np.arange(12) / 16).reshape(4, 1, 3).astype(F32), np.ones(1, F32), np.array([1.0], F32), 0.5))
def test_emulated_error_never_exceeds_the_bound(name, case):
    x, gamma, beta, eps = case
    check_sound(ALGORITHMS[name], x, gamma, beta, eps)


@given(case=inputs())
def test_plain_float16_is_sound_on_float16_inputs(case):
    x, gamma, beta, eps = case
    x16 = np.clip(x / 1024, -60000, 60000).astype(np.float16)  # inside float16's range
    check_sound(ALGORITHMS["plain_float16"], x16, gamma, beta, eps)


@pytest.mark.parametrize("name", ["naive_float32", "torch_cpu", "flax_fast_variance"])
def test_sound_in_evaluation_mode(name):
    rng = np.random.default_rng(3)
    x = (rng.standard_normal((4, 2, 5)) * 3 + 7).astype(F32)
    rm, rv = np.array([7.0, 1e3], F32), np.array([9.0, 0.25], F32)
    check_sound(ALGORITHMS[name], x, np.array([1.0, -2.0], F32), np.array([0.5, 0.0], F32), 2.0**-10, False, rm, rv)


def test_raw_moments_nan_is_covered_by_an_infinite_budget():
    x = np.array([[[10000.0]], [[10000.25]]], F32)  # the zoo's witness: E[x^2]-E[x]^2 < 0 in float32
    budget, y = check_sound(ALGORITHMS["raw_moments_float32"], x, np.ones(1, F32), np.zeros(1, F32), 2.0**-17)
    assert np.isnan(y).any() and np.isinf(budget).all()


def test_float64_inside_stays_near_half_an_ulp():
    rng = np.random.default_rng(5)
    x = (1e4 + rng.random((8, 2, 6))).astype(F32)
    budget, y = check_sound(ALGORITHMS["float64_inside"], x, np.ones(2, F32), np.zeros(2, F32), 2.0**-17)
    r = batch_norm(x, training=True, eps=2.0**-17, convention="torch_raw")
    ulp = np.spacing(np.abs(r.y)).astype(np.float64)
    # half an ULP for the final rounding plus the double-precision statistics: under 3/4 ULP here
    assert (budget / ulp).max() < 0.75
    assert (np.abs(y.astype(np.float64) - r.y.astype(np.float64)) <= ulp).all()


@pytest.mark.parametrize(
    "spec,error",
    [
        ({"variance": "median"}, InvalidArgumentError),
        ({"affine": "sideways"}, InvalidArgumentError),
        ({"accumulator": "int8"}, InvalidArgumentError),
        ({"colour": "red"}, InvalidArgumentError),
        ("no_such_algorithm", NormspecError),
        (3, NormspecError),
        ("{not json", InvalidArgumentError),
        ('{"variance": ' + "[" * 4900 + "]" * 4900 + "}", InvalidArgumentError),  # RecursionError inside json
        ('{"rsqrt_ulps": ' + "9" * 5000 + "}", InvalidArgumentError),  # past Python's digit limit
        ("{" + " " * 20_000 + "}", InvalidArgumentError),
        ('{"rsqrt_ulps": 1e999}', InvalidArgumentError),
        ('{"rsqrt_ulps": true}', InvalidArgumentError),
        ({"variance": ["two_pass"]}, InvalidArgumentError),
    ],
    ids=lambda v: v[:24] if isinstance(v, str) else None,
)
def test_unknown_algorithm_fields_are_refused(spec, error):
    with pytest.raises(error):
        get_algorithm(spec)


X43 = np.ones((4, 3), F32)
ZEROS3, ONES3 = np.zeros(3, F32), np.ones(3, F32)


@pytest.mark.parametrize(
    "alg,x,kwargs,pattern",
    [
        ("naive_float32", X43, {"training": True, "axis": 5}, "axis=5"),
        ("naive_float32", X43, {"training": True, "weight": np.ones(2, F32)}, r"weight.shape=\(2,\)"),
        ("naive_float32", X43, {"training": False}, "running_mean and running_var in evaluation"),
        ("naive_float32", np.ones(4, F32), {"training": True}, "axis=1"),
        ("no_such", X43, {"training": True}, "algorithm='no_such'"),
        (
            "naive_float32",
            X43,
            {"training": False, "running_mean": ZEROS3, "running_var": -ONES3},
            "running_var >= 0",
        ),
        ("naive_float32", X43, {"training": True, "weight": np.array([1, np.nan, 1], F32)}, "weight"),
    ],
    ids=["axis", "weight-shape", "no-running", "1-D", "algorithm", "negative-var", "nan-weight"],
)
def test_budget_for_batch_norm_refuses_bad_arguments_by_name(alg, x, kwargs, pattern):
    kwargs = {"weight": None, "bias": None, "eps": 1e-5, **kwargs}
    with pytest.raises(NormspecError, match=pattern):
        budget_for_batch_norm(alg, x, kwargs.pop("weight"), kwargs.pop("bias"), kwargs.pop("eps"), **kwargs)


def test_budget_of_non_finite_input_is_infinite():
    x = X43.copy()
    x[0, 1] = np.nan
    b = budget_for_batch_norm("naive_float32", x, None, None, 1e-5, training=True)
    assert np.isinf(b[:, 1]).all() and np.isfinite(b[:, [0, 2]]).all()


def test_budget_cli_classifies_and_handles_bad_files(tmp_path, capsys):
    rng = np.random.default_rng(7)
    x = (rng.standard_normal((6, 2, 4)) + 3).astype(F32)
    alg = ALGORITHMS["naive_float32"]
    y = emulate(alg, x, np.ones(2, F32), np.zeros(2, F32), 2.0**-17, True)
    y_nan = y.copy()
    y_nan[0, 0, 0] = np.nan
    np.savez(tmp_path / "obs.npz", x=x, y=y, y_nan=y_nan)
    assert (
        main(
            [
                "budget",
                str(tmp_path / "obs.npz"),
                "--algorithm",
                "naive_float32",
                "--training",
                "--eps",
                str(2.0**-17),
                "--json",
                "--plot",
                str(tmp_path / "h.png"),
            ]
        )
        == 0
    )
    out = json.loads(capsys.readouterr().out)
    assert out["counts"]["beyond budget"] == 0 and sum(out["counts"].values()) == x.size
    assert (tmp_path / "h.png").exists()
    assert (
        main(
            [
                "budget",
                str(tmp_path / "obs.npz"),
                "--algorithm",
                "naive_float32",
                "--training",
                "--eps",
                str(2.0**-17),
                "--observed",
                "y_nan",
                "--json",
            ]
        )
        == 1
    )
    assert json.loads(capsys.readouterr().out)["counts"]["non-finite"] == 1  # classified, not crashed
    np.savez(tmp_path / "evil.npz", x=np.array([{"a": 1}], dtype=object))
    assert main(["budget", str(tmp_path / "evil.npz"), "--algorithm", "naive_float32", "--training"]) == 2
    assert "unpickling" in capsys.readouterr().err
    np.savez(tmp_path / "bad.npz", x=x, y=y[:1])
    assert main(["budget", str(tmp_path / "bad.npz"), "--algorithm", "naive_float32", "--training"]) == 2
    assert "shape" in capsys.readouterr().err


def test_user_described_algorithm_as_json():
    alg = get_algorithm(
        json.dumps({"variance": "two_pass", "summation": "pairwise", "accumulator": "float64", "affine": "folded"})
    )
    assert isinstance(alg, Algorithm) and alg.summation == "pairwise"
    assert InputFileError  # the CLI's file errors share the hierarchy (see the CLI test above)


def test_torch_cpu_against_folded_and_unfolded_budgets():
    """PyTorch 2.13 CPU on the two killers: within the folded budget it declares, beyond the unfolded one."""
    torch = pytest.importorskip("torch", reason="torch is an optional extra: pip install 'normspec[torch]'")
    rng = np.random.default_rng(0)
    for x in ((1e4 + rng.random((16, 3, 8, 8))).astype(F32), np.full((4, 3, 4, 4), 1.2345678e7, F32)):
        y = torch.nn.functional.batch_norm(torch.from_numpy(x), None, None, training=True).numpy()
        r = batch_norm(x, training=True, convention="torch_raw")
        exact = np.array([float(r.exact.y(i, prec=80)) for i in np.ndindex(x.shape)]).reshape(x.shape)
        err = np.abs(y.astype(np.float64) - exact)
        folded = budget_for_batch_norm(ALGORITHMS["torch_cpu"], x, None, None, 1e-5, training=True)
        unfolded = budget_for_batch_norm(ALGORITHMS["two_pass_unfolded_f64acc"], x, None, None, 1e-5, training=True)
        assert (err <= folded).all()
        assert (err > unfolded).any()


@given(
    seq=hnp.arrays(F32, (3, 4, 2, 3), elements=st.floats(-3, 3, width=32)),
    shift=st.sampled_from([0.0, 100.0, 1e4]),
    momentum=st.sampled_from([0.1, 0.99, 0.5]),
    convention=st.sampled_from(["torch", "keras3"]),
)
def test_running_statistics_budget_is_sound(seq, shift, momentum, convention):
    """A float32 running update, computed as implementations do (weights formed in float32, either
    way round), stays within running_budget of the exact running statistics, step after step."""
    from normspec.budgets.derive import running_budget
    from normspec.spec import get_convention

    conv = get_convention(convention)
    x = (seq.astype(np.float64) + shift).astype(F32)
    rm0, rv0 = np.array([0.5, -1.0], F32), np.array([1.0, 2.0], F32)
    bm, bv = running_budget(ALGORITHMS["naive_float32"], conv, x, rm0, rv0, momentum, eps=2.0**-10)
    rm, rv, em, ev = rm0, rv0, rm0, rv0
    m32 = F32(momentum)
    for k, step in enumerate(x):
        n = step.size // step.shape[1]
        mean = step.mean(axis=(0, 2), dtype=F32)
        var = ((step - mean.reshape(1, -1, 1)) ** 2).mean(axis=(0, 2), dtype=F32)
        if conv.running_var_correction == "unbiased":
            var = (var * F32(n / (n - 1))).astype(F32)
        if conv.momentum_direction == "new":
            rm = (F32(1 - m32) * rm + m32 * mean).astype(F32)
            rv = (F32(1 - m32) * rv + m32 * var).astype(F32)
        else:  # Keras: both weights from the Python float, each rounded to float32
            rm = (F32(momentum) * rm + F32(1 - momentum) * mean).astype(F32)
            rv = (F32(momentum) * rv + F32(1 - momentum) * var).astype(F32)
        r = batch_norm(step, None, None, em, ev, training=True, momentum=momentum, eps=2.0**-10, convention=conv)
        em, ev = r.running_mean, r.running_var
        assert (np.abs(rm.astype(np.float64) - em.astype(np.float64)) <= bm[k]).all(), (k, rm, em, bm[k])
        assert (np.abs(rv.astype(np.float64) - ev.astype(np.float64)) <= bv[k]).all(), (k, rv, ev, bv[k])
