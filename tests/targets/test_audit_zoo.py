"""Every formula bug of the zoo, implemented as a user's BatchNorm, draws a finding and exit status 1.

Each target computes its profile exactly (the oracle) and then behaves as the bug does where the bug
applies (``Variant.behaviour``): what a user who made that mistake would hand to ``normspec audit``.
"""

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
