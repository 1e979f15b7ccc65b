"""Every formula bug of the zoo, implemented as a user's BatchNorm, draws a finding and exit status 1.

Each target computes its profile exactly (the oracle) and then behaves as the bug does where the bug
applies (``Variant.behaviour``): what a user who made that mistake would hand to ``normspec audit``.
"""

import re

import pytest
from normspec.spec.bugzoo import VARIANTS

from normspec.cli import main

TEMPLATE = """
from normspec.oracle import batch_norm
from normspec.spec.bugzoo import VARIANTS

V = VARIANTS[{name!r}]

def f(x, w, b, rm, rv, training, momentum, eps):
    r = batch_norm(x, w, b, rm, rv, training=training, momentum=momentum, eps=eps, convention={conv!r})
    out = {{"y": r.y, "running_mean": r.running_mean, "running_var": r.running_var}}
    if training == V.training:
        case = {{"x": x, "weight": w, "bias": b, "running_mean": rm, "running_var": rv,
                 "training": training, "momentum": momentum, "eps": eps}}
        out.update(V.behaviour(case))
    return out["y"], out["running_mean"], out["running_var"]
"""

FORMULA_BUGS = [n for n, v in VARIANTS.items() if v.operator == "batch_norm" and v.kind == "formula"]


@pytest.mark.parametrize("name", FORMULA_BUGS)
def test_each_formula_bug_exits_1(name, tmp_path, capsys):
    impl = tmp_path / f"{name}.py"
    conv = VARIANTS[name].convention
    impl.write_text(TEMPLATE.format(name=name, conv=conv))
    code = main(["audit", f"python:{impl}:f", "--convention", conv, "--progress", "never"])
    out = capsys.readouterr().out
    assert code == 1, out
    assert any(f"[{kind}]" in out for kind in ("semantic", "accuracy", "non-finite")), out


@pytest.mark.parametrize("conv", sorted({VARIANTS[n].convention for n in FORMULA_BUGS}))
def test_the_same_target_without_the_bug_exits_0(conv, tmp_path, capsys):
    impl = tmp_path / "control.py"
    impl.write_text(TEMPLATE.format(name=FORMULA_BUGS[0], conv=conv).replace("if training == V.training:", "if False:"))
    code = main(["audit", f"python:{impl}:f", "--convention", conv, "--progress", "never"])
    assert code == 0, capsys.readouterr().out


WRONG = """
import numpy as np

def _train(x, w, b, rm, rv, momentum, eps, m, v, xhat):
    shape = (1, -1) + (1,) * (x.ndim - 2)
    n = x.size // x.shape[1]
    rm = ((1 - momentum) * rm + momentum * m).astype(np.float32)
    rv = ((1 - momentum) * rv + momentum * v * n / max(n - 1, 1)).astype(np.float32)
    return (xhat * w.reshape(shape) + b.reshape(shape)).astype(np.float32), rm, rv

def _stats(x, dtype):
    axes = (0, *range(2, x.ndim))
    xd = x.astype(dtype)
    m = xd.mean(axis=axes, dtype=dtype)
    return xd, m, ((xd - m.reshape((1, -1) + (1,) * (x.ndim - 2))) ** 2).mean(axis=axes, dtype=dtype)

def _evaluate(x, w, b, rm, rv, eps, inv=lambda d: 1 / np.sqrt(d)):
    shape = (1, -1) + (1,) * (x.ndim - 2)
    return (x - rm.reshape(shape)) * inv(rv.reshape(shape) + eps) * w.reshape(shape) + b.reshape(shape)

def wrong_axes(x, w, b, rm, rv, training, momentum, eps):  # statistics over the batch axis only
    if not training:
        return _evaluate(x, w, b, rm, rv, eps).astype(np.float32), rm, rv
    x64 = x.astype(np.float64)
    m, v = x64.mean(axis=0, keepdims=True), x64.var(axis=0, keepdims=True)
    xhat = (x64 - m) / np.sqrt(v + eps)
    axes = (0, *range(2, x.ndim))
    return _train(x, w, b, rm, rv, momentum, eps, x64.mean(axis=axes), x64.var(axis=axes), xhat)

def rsqrt_estimate(x, w, b, rm, rv, training, momentum, eps):  # a 12-bit reciprocal square root
    def est(d):
        r = 1 / np.sqrt(d.astype(np.float64))
        return (r * (1 + 2.0**-12)).astype(np.float32)
    if not training:
        return _evaluate(x, w, b, rm, rv, np.float32(eps), est).astype(np.float32), rm, rv
    xd, m, v = _stats(x, np.float32)
    shape = (1, -1) + (1,) * (x.ndim - 2)
    xhat = (xd - m.reshape(shape)) * est(v.reshape(shape) + np.float32(eps))
    return _train(x, w, b, rm, rv, momentum, eps, m, v, xhat)

def half_precision(x, w, b, rm, rv, training, momentum, eps):  # everything in float16
    with np.errstate(all="ignore"):
        if not training:
            y = _evaluate(x.astype(np.float16), w.astype(np.float16), b.astype(np.float16),
                          rm.astype(np.float16), rv.astype(np.float16), np.float16(eps))
            return y.astype(np.float32), rm, rv
        xd, m, v = _stats(x, np.float16)
        shape = (1, -1) + (1,) * (x.ndim - 2)
        xhat = (xd - m.reshape(shape)) / np.sqrt(v.reshape(shape) + np.float16(eps))
        return _train(x, w, b, rm, rv, momentum, eps, m.astype(np.float64), v.astype(np.float64), xhat)

def raw_moments(x, w, b, rm, rv, training, momentum, eps):  # E[x^2] - E[x]^2 in float32
    if not training:
        return _evaluate(x, w, b, rm, rv, np.float32(eps)).astype(np.float32), rm, rv
    axes = (0, *range(2, x.ndim))
    shape = (1, -1) + (1,) * (x.ndim - 2)
    with np.errstate(all="ignore"):
        m = x.mean(axis=axes, dtype=np.float32)
        v = (x * x).mean(axis=axes, dtype=np.float32) - m * m
        xhat = (x - m.reshape(shape)) / np.sqrt(v.reshape(shape) + np.float32(eps))
    return _train(x, w, b, rm, rv, momentum, eps, m, v, xhat)
"""


@pytest.mark.parametrize("bug", ["wrong_axes", "rsqrt_estimate", "half_precision", "raw_moments"])
def test_wrong_implementations_of_the_torch_profile_exit_1(bug, tmp_path, capsys):
    impl = tmp_path / "wrong.py"
    impl.write_text(WRONG)
    code = main(["audit", f"python:{impl}:{bug}", "--convention", "torch", "--progress", "never"])
    out = capsys.readouterr().out
    assert code == 1, out
    # a finding of its own, not only the overflow of squares at |x| ~ 1e30 that any float32 evaluation has
    assert re.search(r"\[(semantic|accuracy|non-finite)\] (?!huge_magnitude)", out), out


@pytest.mark.parametrize(("name", "probe"), [("momentum_swapped", "momentum"), ("running_var_biased", "running_var")])
def test_a_probed_difference_is_charged_once(name, probe, tmp_path, capsys):
    """The probe's finding names the difference; the other cases are judged under the observed
    behaviour, so a swapped momentum or a biased running variance is one finding, not twenty."""
    from normspec.targets.audit import run_audit
    from normspec.targets.verdict import FAILING

    impl = tmp_path / f"{name}.py"
    conv = VARIANTS[name].convention
    impl.write_text(TEMPLATE.format(name=name, conv=conv))
    rep = run_audit(f"python:{impl}:f", conv)
    weighty = [f for f in rep.findings if f["kind"] in FAILING]
    assert [(f["kind"], f["case"]) for f in weighty] == [("semantic", f"probe ({probe})")], rep.findings
    assert probe in rep.judged_under
