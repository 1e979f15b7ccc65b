"""The SymPy spec: closed forms against SymPy's own derivatives, and against the oracle."""

from fractions import Fraction

import numpy as np
import pytest
import sympy as sp
from normspec.oracle import batch_norm
from normspec.spec import CONVENTIONS, LAYERS, get_convention
from normspec.spec.batchnorm import (
    backward_from_autodiff,
    batch_norm_backward,
    batch_norm_eval,
    batch_norm_train,
    running_update,
    running_var_input,
)
from normspec.spec.conventions import CAST_STAGES
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
    """One record type for every layer: each profile names its sources, and the fields a layer
    relies on are set and in range."""
    assert conv.sources, "every profile says where its facts come from"
    assert conv.layer in LAYERS
    assert conv.eps_default is None or conv.eps_default > 0
    assert conv.effective_eps(conv.default_eps(24)) > 0
    assert conv.one_value_outcome in ("error", "nan", "finite", "identity")
    if conv.running_stats:
        assert conv.momentum_direction in ("new", "old") and 0 <= conv.momentum_default <= 1
    assert conv.running_stats == (conv.layer == "batch_norm" or conv.name == "torch_instance_norm_tracked")
    assert conv.affine in ("per_channel", "per_element", "per_group", "none")
    assert (conv.affine == "per_element") == (conv.layer in ("layer_norm", "rms_norm"))
    assert all(stage in CAST_STAGES for stage, _ in conv.cast_points)
    assert conv.residual_sum in ("input", "float32") and (conv.residual or conv.residual_sum == "input")


def test_a_residual_sum_in_another_format_is_refused_by_name():
    import dataclasses

    from normspec.errors import DomainError

    with pytest.raises(DomainError, match="residual_sum='float16'"):
        dataclasses.replace(CONVENTIONS["fused_add_rms_norm"], residual_sum="float16")


def test_a_layer_refuses_another_layers_profile():
    from normspec.errors import UnknownConventionError

    with pytest.raises(UnknownConventionError, match=r"a layer_norm profile.*convention='torch'"):
        get_convention("torch", layer="layer_norm")
    assert get_convention("torch_layer_norm", layer="layer_norm").name == "torch_layer_norm"


def test_the_old_family_names_still_work_and_warn():
    import normspec.spec as spec

    with pytest.warns(DeprecationWarning, match="get_convention"):
        assert spec.get_family_convention("torch_layer_norm") is CONVENTIONS["torch_layer_norm"]
    with pytest.warns(DeprecationWarning, match="CONVENTIONS"):
        family = spec.FAMILY_CONVENTIONS
    assert set(family) == {n for n, c in CONVENTIONS.items() if c.layer != "batch_norm"}
    with pytest.warns(DeprecationWarning):
        assert spec.FamilyConvention is spec.Convention
