"""normspec identity: true identities proven, false ones refuted with valid counterexamples, bad input refused."""

import json
import subprocess
import sys

import pytest
import sympy as sp
from normspec.proofs.identity import ExpressionError, check_identity, parse_expression

from normspec.errors import NormspecError, UnknownNameError

POS = ["eps > 0", "var >= 0"]

TRUE = [
    (
        "batch_norm_eval(x, mean, var, gamma, beta, eps)",
        "x*gamma/sqrt(var + eps) + (beta - mean*gamma/sqrt(var + eps))",
        POS,
    ),
    ("running_update_new(r, b, m)", "running_update_old(r, b, 1 - m)", []),
    ("biased_var(a, b, c)", "mean(a**2, b**2, c**2) - mean(a, b, c)**2", []),
    ("unbiased_var(a, b, c)", "biased_var(a, b, c) * 3/2", []),
    ("batch_norm_train(0, gamma, beta, eps, x0)", "beta", ["eps > 0"]),
    ("normalize(x, mean, var, eps)", "(x - mean)/sqrt(var + eps)", POS),
]

FALSE = [
    (
        "eps outside sqrt",
        "eps_outside_sqrt(x, mean, var, gamma, beta, eps)",
        "batch_norm_eval(x, mean, var, gamma, beta, eps)",
        POS,
    ),
    ("momentum swapped", "running_update_new(r, b, m)", "running_update_old(r, b, m)", []),
    (
        "unbiased normalization",
        "batch_norm_train(0, gamma, beta, eps, x0, x1)",
        "beta + gamma*(x0 - mean(x0, x1))/sqrt(unbiased_var(x0, x1) + eps)",
        ["eps > 0"],
    ),
    (
        "folded form, wrong sign",
        "batch_norm_eval(x, mean, var, gamma, beta, eps)",
        "x*gamma/sqrt(var + eps) + (beta + mean*gamma/sqrt(var + eps))",
        POS,
    ),
    ("eps as a std floor", "sqrt(var + eps)", "sqrt(var + eps**2)", POS),
]


@pytest.mark.parametrize("lhs,rhs,assume", TRUE)
def test_true_identities_are_proven(lhs, rhs, assume):
    res = check_identity(lhs, rhs, assume)
    assert res.status == "proven" and res.exit_code == 0 and res.method


@pytest.mark.parametrize("lhs,rhs,assume", [f[1:] for f in FALSE], ids=[f[0] for f in FALSE])
def test_false_identities_are_refuted_with_a_valid_counterexample(lhs, rhs, assume):
    res = check_identity(lhs, rhs, assume)
    assert res.status == "refuted" and res.exit_code == 1
    # re-check the counterexample independently: substitute and compare exactly
    symbols: dict = {}
    left, right = parse_expression(lhs, symbols), parse_expression(rhs, symbols)
    point = {symbols[k]: sp.Rational(v) for k, v in res.counterexample.items() if k in symbols}
    for a in assume:  # the point respects the assumptions
        name, op, val = a.split()
        if name in res.counterexample:
            assert {">": sp.Gt, ">=": sp.Ge}[op](sp.Rational(res.counterexample[name]), sp.Rational(val))
    lv, rv = left.subs(point), right.subs(point)
    assert sp.simplify(lv - rv) != 0 and abs(sp.N(lv - rv, 50)) > 1e-30


@pytest.mark.parametrize(
    "text,error,pattern",
    [
        ("__import__('os').system('true')", ExpressionError, "Attribute|Only calls"),
        ("__import__('os')", UnknownNameError, "'__import__'"),
        ("x.__class__", ExpressionError, "Attribute is not"),
        ("open('f')", UnknownNameError, "'open'"),
        ("(lambda: 1)()", ExpressionError, "Only calls to named functions"),
        ("[x][0]", ExpressionError, "Subscript is not"),
        ("x +", ExpressionError, "Malformed expression"),
        ("sqrt(x, y)", ExpressionError, r"Expected sqrt\(a\), but got 2"),
        ("batch_norm_eval(x)", ExpressionError, "but got 1 argument"),
        ("_secret", ExpressionError, "may not start with '_'"),
        ("'text'", ExpressionError, "Constant is not"),
        ("sqrt(x=1)", ExpressionError, "Keyword arguments"),
    ],
)
def test_bad_expressions_are_refused(text, error, pattern):
    with pytest.raises(error, match=pattern) as info:
        check_identity(text, "x")
    assert isinstance(info.value, NormspecError)


def run(*args):
    return subprocess.run(
        [sys.executable, "-m", "normspec", "identity", *args], capture_output=True, text=True, timeout=120
    )


def test_identity_cli_exit_codes_and_json():
    proven = run("running_update_new(r, b, m)", "running_update_old(r, b, 1 - m)")
    assert proven.returncode == 0 and proven.stdout.startswith("PROVEN")
    refuted = run("sqrt(var + eps)", "sqrt(var) + eps", "--assume", "eps > 0", "--assume", "var >= 0", "--json")
    assert refuted.returncode == 1
    data = json.loads(refuted.stdout)
    assert data["status"] == "refuted" and data["counterexample"] and data["lhs_value"] != data["rhs_value"]
    bad = run("os.system('x')", "1")
    assert bad.returncode == 2 and "Only calls to named functions" in bad.stderr
    unknown = run("frobnicate(x)", "x")
    assert unknown.returncode == 2 and "frobnicate" in unknown.stderr
    badassume = run("x", "x", "--assume", "eps")
    assert badassume.returncode == 2


def test_undecided_when_neither_proof_nor_counterexample():
    """With no sample budget a false identity that no rewrite reduces stays undecided (exit 3), not refuted."""
    res = check_identity("sqrt(var + eps)", "sqrt(var) + eps", POS, budget=0)
    assert res.status == "undecided" and res.exit_code == 3 and res.counterexample is None


SUM_999 = "+".join(["x"] * 999)
MINUS_1998 = "-" * 1998 + "x"
NAMES_300 = ", ".join(f"a{i}" for i in range(300))


@pytest.mark.parametrize(
    "lhs,assume,bound",
    [
        ("x**(10**10)", [], "an exponent of 10000000000"),
        ("2**(10**10)", [], "bits (the bound is 4096)"),
        ("10**10**10", [], "bits (the bound is 4096)"),
        ("9**9**9", [], "bits (the bound is 4096)"),
        ("sqrt(x)**(2**64)", [], "an exponent of 18446744073709551616"),
        ("((x**64)**64)**64", [], "degree 262144"),
        ("x", ["x > 2**(10**10)"], "bits (the bound is 4096)"),
        (SUM_999, [], "nested more than 200 deep"),
        (MINUS_1998, [], "nested"),
        (f"biased_var({NAMES_300})", [], "300 arguments"),
        ("+".join(["x*x"] * 400), [], "more than 1000 syntax nodes"),
        ("biased_var(" + ", ".join(f"a{i}" for i in range(70)) + ")", [], "70 arguments"),
        ("x", ["x > " + "1+" * 50_000 + "1"], "100005 characters"),
        ("x", ["x > 0"] * 51, "51 assumptions"),
        ("(x+y+z+w)**60", [], "the time limit of 2 s"),
    ],
    ids=lambda v: v[:30] if isinstance(v, str) else None,
)
def test_costly_input_is_undecided_naming_the_bound(lhs, assume, bound):
    """Every input past a bound answers quickly: undecided (exit 3), never a hang, a traceback or "refuted"."""
    res = check_identity(lhs, "x", assume, time_limit=2)
    assert res.status == "undecided" and res.exit_code == 3
    assert bound in res.limit and bound in res.steps[0]


def test_bounds_leave_room_for_real_identities():
    """Degree 64 in four names, a 64-term mean, 2**4000 and rational exponents stay decidable."""
    assert check_identity("(a + b)**2", "a**2 + 2*a*b + b**2").status == "proven"
    terms = ", ".join(f"a{i}" for i in range(64))
    assert check_identity(f"mean({terms})", "(" + " + ".join(f"a{i}" for i in range(64)) + ")/64").status == "proven"
    assert check_identity("2**4000 / 2**3999", "2").status == "proven"
    assert check_identity("sqrt(x)**3", "x**(3/2)", ["x >= 0"]).status == "proven"


@pytest.mark.parametrize(
    "text,pattern",
    [("1e999", "a finite number, but got inf"), ("x**y", "Exponents must be numbers, but got y")],
)
def test_non_numbers_where_numbers_belong_are_bad_input(text, pattern):
    with pytest.raises(ExpressionError, match=pattern):
        check_identity(text, "x")


@pytest.mark.parametrize("limit", [0, -1, float("nan"), float("inf"), "5"])
def test_time_limit_is_validated(limit):
    with pytest.raises(NormspecError, match="time limit"):
        check_identity("x", "x", time_limit=limit)


def test_identity_cli_bounds_exit_3_and_do_not_echo_huge_input():
    big = run("x", "x", "--assume", "x > " + "1+" * 50_000 + "1")
    assert big.returncode == 3 and big.stdout.startswith("UNDECIDED") and len(big.stdout) < 1000
    assert "the bound is 2000" in big.stdout
    deep = run("--", MINUS_1998, "x")
    assert deep.returncode == 3 and "nested" in deep.stdout
    slow = run("(x+y+z+w)**60", "x", "--time-limit", "1")
    assert slow.returncode == 3 and "time limit of 1 s" in slow.stdout
    assert run("x", "x", "--time-limit", "0").returncode == 2
