"""Facts are proven; the checker can fail; every zoo variant's witness separates it."""

import json
import math

import numpy as np
import pytest
import sympy as sp
from normspec.oracle import forward, ulp_distance
from normspec.proofs import checker
from normspec.proofs.facts import FACTS, Fact, FactCheckError
from normspec.proofs.witnesses import find_witness
from normspec.spec.bugzoo import VARIANTS
from normspec.spec.conventions import get_convention

from normspec.cli import main


@pytest.mark.parametrize("name", list(FACTS))
def test_every_fact_is_proven(name):
    res = checker.prove(name)
    assert res.status == "proven", [s.claim for s in res.steps if not s.ok] or res.numeric_error
    assert res.numeric_checks > 0 and all(s.ok for s in res.steps)


def _fake(steps, confirm=lambda rng: 1):
    return Fact("fake", "a false statement", (), "to show the checker can fail", steps, confirm)


def test_checker_fails_a_false_step(monkeypatch):
    x = sp.Symbol("x", real=True)
    monkeypatch.setitem(FACTS, "fake", _fake(lambda: [("sqrt(x^2) = x", sp.sqrt(x**2), x)]))
    res = checker.prove("fake")
    assert res.status == "failed" and not res.steps[0].ok


def test_checker_fails_a_failed_confirmation(monkeypatch):
    def bad(rng):
        raise FactCheckError("the oracle disagrees")

    x = sp.Symbol("x")
    monkeypatch.setitem(FACTS, "fake", _fake(lambda: [("x = x", x, x)], bad))
    res = checker.prove("fake")
    assert res.status == "failed" and res.numeric_error == "the oracle disagrees"


@pytest.mark.parametrize("name", list(VARIANTS))
def test_every_witness_separates_its_variant_through_the_oracle(name):
    variant = VARIANTS[name]
    w = find_witness(name)
    c = w.case
    # recompute both sides here, from the case alone, through the oracle's one dispatcher
    conv = get_convention(variant.convention)
    stateful = {k: c[k] for k in ("running_mean", "running_var", "training", "momentum")} if conv.running_stats else {}
    spec = forward(conv, c["x"], c["weight"], c["bias"], eps=c["eps"], groups=c.get("groups"), **stateful)
    want = getattr(spec, variant.output)
    got = variant.behaviour(c)[variant.output]
    assert np.isfinite(want.astype(np.float64)).all()
    with np.errstate(invalid="ignore"):
        dist = ulp_distance(got.astype(want.dtype), want)
    assert dist.max() > 0
    if variant.witness_wants == "nan":
        assert np.isnan(got).any()


def test_numerical_witnesses_are_the_classic_ones():
    raw = find_witness("raw_moments_float32")
    assert math.isnan(raw.observed) and math.isfinite(raw.exact)
    folded = find_witness("folded_affine_float32")
    assert folded.exact == 0.0 and 50 < abs(folded.observed) < 200  # pytorch#5410: |y| near 70, exact beta = 0
    assert float(folded.case["x"].ravel()[0]) == float(np.float32(1.2345678e7))


def test_prove_cli_table_and_json(capsys):
    assert main(["prove"]) == 0
    out = capsys.readouterr().out
    assert f"{len(FACTS)} of {len(FACTS)} proven" in out
    assert main(["prove", "momentum_maps", "--json"]) == 0
    data = json.loads(capsys.readouterr().out)
    assert data[0]["status"] == "proven" and data[0]["steps"][0]["ok"]
    assert main(["prove", "no_such_fact"]) == 2


def test_zoo_cli(capsys):
    assert main(["zoo", "--json"]) == 0
    data = json.loads(capsys.readouterr().out)
    assert {d["name"] for d in data} == set(VARIANTS)
    assert all(d["provenance"] and d["witness"]["ulps"] > 0 for d in data)
    assert main(["zoo", "onnx_bn9_blended"]) == 0
    assert "onnx/onnx#5799" in capsys.readouterr().out
