"""The SymPy spec: closed forms against SymPy's own derivatives, and against the oracle."""

from fractions import Fraction

import numpy as np
import pytest
import sympy as sp
from normspec.oracle import batch_norm
from normspec.spec import CONVENTIONS
from normspec.spec.batchnorm import (
    backward_from_autodiff,
    batch_norm_backward,
    batch_norm_eval,
    batch_norm_train,
    running_update,
    running_var_input,
)
from normspec.spec.core import biased_var, mean, unbiased_var

g, b, e = sp.symbols("gamma beta epsilon", positive=True)


@pytest.mark.parametrize("n", [2, 3, 4])
def test_backward_closed_form_equals_autodiff(n):
    xs = sp.symbols(f"x0:{n}", real=True)
    dys = sp.symbols(f"dy0:{n}", real=True)
    dx, dgamma, dbeta = batch_norm_backward(xs, dys, g, e)
    ad_dx, ad_dgamma, ad_dbeta = backward_from_autodiff(xs, dys, g, b, e)
    assert all(sp.simplify(p - q) == 0 for p, q in zip(dx, ad_dx, strict=True))
    assert sp.simplify(dgamma - ad_dgamma) == 0 and sp.simplify(dbeta - ad_dbeta) == 0


def test_backward_closed_form_is_not_the_naive_one():
    """The check above can fail: dx = gamma * dy / sigma (statistics held fixed) is refuted."""
    xs, dys = sp.symbols("x0:3", real=True), sp.symbols("dy0:3", real=True)
    sigma = sp.sqrt(biased_var(xs) + e)
    naive = [g * d / sigma for d in dys]
    ad_dx = backward_from_autodiff(xs, dys, g, b, e)[0]
    point = {**dict(zip(xs, [1, 2, 4], strict=True)), **dict(zip(dys, [1, 0, 0], strict=True)), g: 1, e: 1}
    assert sp.N((naive[0] - ad_dx[0]).subs(point)) != 0


def test_training_output_has_mean_beta_and_variance_gamma2_var_over_var_plus_eps():
    xs = sp.symbols("x0:3", real=True)
    ys = batch_norm_train(xs, g, b, e)
    assert sp.simplify(mean(ys) - b) == 0
    v = biased_var(xs)
    assert sp.simplify(biased_var(ys) - g**2 * v / (v + e)) == 0


def test_variances_and_running_update():
    vals = [sp.Integer(v) for v in (1, 2, 3, 4)]
    assert biased_var(vals) == sp.Rational(5, 4) and unbiased_var(vals) == sp.Rational(5, 3)
    assert unbiased_var([sp.Integer(7)]) is sp.nan
    assert running_var_input([sp.Integer(7)], "unbiased_clamped") == 0
    r, bb, m = sp.symbols("r b m")
    assert sp.expand(running_update(r, bb, m, "new") - running_update(r, bb, 1 - m, "old")) == 0


def test_spec_and_oracle_agree_exactly():
    """The oracle's exact parts reproduce the SymPy formula at a rational point."""
    x = np.array([[1.0], [2.5], [-4.0]], np.float32)
    res = batch_norm(x, np.array([1.5], np.float32), np.array([0.25], np.float32), training=True, eps=2.0**-10)
    xs = [sp.Rational(Fraction(float(v))) for v in x[:, 0]]
    ys = batch_norm_train(xs, sp.Rational(3, 2), sp.Rational(1, 4), sp.Rational(1, 2**10))
    for i in range(3):
        A, B, D = res.exact.parts((i, 0))
        oracle_y = sp.Rational(B) + sp.Rational(A) / sp.sqrt(sp.Rational(D))
        assert sp.simplify(oracle_y - ys[i]) == 0
        assert float(res.y[i, 0]) == float(np.float32(float(sp.N(ys[i], 50))))
    ev = batch_norm_eval(sp.Integer(3), sp.Integer(1), sp.Integer(3), 2, 1, sp.Integer(1))
    assert ev == 3


@pytest.mark.parametrize("conv", list(CONVENTIONS.values()), ids=list(CONVENTIONS))
def test_every_profile_is_complete_data(conv):
    assert conv.sources, "every profile says where its facts come from"
    assert conv.momentum_direction in ("new", "old") and 0 <= conv.momentum_default <= 1
    assert conv.eps_default > 0
    assert conv.one_value_outcome in ("error", "nan", "finite", "identity")
    assert conv.effective_eps(conv.eps_default) > 0


@pytest.mark.parametrize("name", sorted(__import__("normspec.spec", fromlist=["x"]).FAMILY_CONVENTIONS))
def test_every_family_profile_is_complete_data(name):
    from normspec.spec import get_family_convention

    f = get_family_convention(name)
    assert f.sources and f.layer in ("layer_norm", "rms_norm", "group_norm", "instance_norm")
    assert f.eps_default is None or f.eps_default > 0
    assert (f.momentum_default is not None) == (f.layer == "instance_norm" and f.name.startswith("torch"))
