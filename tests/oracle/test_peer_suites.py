"""Other libraries' own test suites, run through the oracle (issue: every input a peer's suite uses
is expressible).

Every case of PyTorch's OpInfo samples and ONNX's backend node tests for the normalization
operators must (1) be accepted by the oracle, (2) give outputs with the peer's shapes, and (3) be
bit for bit the independent exact computation of ``tests/independent.py``.  Where the peer itself
is more than 1 ULP from the exact value, that is the peer's finding: it is recorded (printed at
the end of the run, with the exact value) and does not fail the test.
"""

from __future__ import annotations

import numpy as np
import peer_suites
import pytest
from normspec.oracle.ulp import ulp_distance

from normspec import oracle


def _same_bits(a: np.ndarray, b: np.ndarray) -> bool:
    if a.shape != b.shape or a.dtype != b.dtype:
        return False
    u = {2: np.uint16, 4: np.uint32, 8: np.uint64}[a.dtype.itemsize]
    nan = np.isnan(a.astype(np.float64)) & np.isnan(b.astype(np.float64))
    return bool(((a.view(u) == b.view(u)) | nan).all())


def _cases(collect, module):
    pytest.importorskip(module, reason=f"{module} is not installed (pip install 'normspec[all]')")
    if module == "torch":
        pytest.importorskip(
            "expecttest", reason="torch's OpInfo database needs expecttest (pip install 'normspec[test]')"
        )
    return collect()


@pytest.fixture(scope="module")
def torch_cases():
    return {c.name: c for c in _cases(peer_suites.torch_cases, "torch")}


@pytest.fixture(scope="module")
def onnx_cases():
    return {c.name: c for c in _cases(peer_suites.onnx_cases, "onnx")}


def _check(case) -> None:
    r = getattr(oracle, case.layer)(**case.args)  # (1) expressible: no exception
    ref = case.reference()
    assert case.peer, f"{case.name}: no output collected from the peer"
    for out, theirs in case.peer.items():
        ours = getattr(r, out)
        assert ours is not None, f"{case.name}: the oracle has no {out}"
        theirs = np.asarray(theirs).astype(ours.dtype)
        assert ours.shape == theirs.shape, f"{case.name}: {out} has shape {ours.shape}, the peer's {theirs.shape}"
        if out in ref:  # (3) exact: the independent computation, bit for bit
            assert _same_bits(ours, ref[out]), f"{case.name}: {out} differs from the independent exact value"
        if ours.size == 0:
            continue
        both_nan = np.isnan(ours.astype(np.float64)) & np.isnan(theirs.astype(np.float64))
        dist = np.where(both_nan, 0.0, np.abs(ulp_distance(theirs, ours)))
        worst = int(np.argmax(dist))
        if dist.flat[worst] > 1:
            peer_suites.FINDINGS.append(
                {
                    "suite": case.suite,
                    "case": case.name,
                    "output": out,
                    "ulp": float(dist.flat[worst]),
                    "peer": float(theirs.flat[worst]),
                    "exact": float(ours.flat[worst]),
                }
            )
    # the statistics the reference has must also agree where the peer returned none
    for out in ("mean", "rstd", "running_mean", "running_var"):
        if out in ref and out not in case.peer and getattr(r, out) is not None:
            assert _same_bits(getattr(r, out), ref[out]), f"{case.name}: {out} differs from the independent exact value"


def _names(collect, module):
    try:
        __import__(module)
        if module == "torch":
            __import__("expecttest")
    except ImportError:
        return ["unavailable"]
    return [c.name for c in collect()]


@pytest.mark.parametrize("name", _names(peer_suites.onnx_cases, "onnx"))
def test_onnx_node_tests_are_exact(onnx_cases, name):
    _check(onnx_cases[name])


def test_onnx_collection_covers_every_operator(onnx_cases):
    ops = {c.layer for c in onnx_cases.values()}
    assert ops == {"batch_norm", "layer_norm", "group_norm", "instance_norm", "rms_norm", "mean_variance_norm"}
    assert any("mean" in c.peer and "rstd" in c.peer for c in onnx_cases.values())  # LayerNormalization's 3 outputs


def test_torch_opinfo_covers_every_operator(torch_cases):
    ops = {name.split("[")[0].split(".without")[0] for name in torch_cases}
    assert ops >= set(peer_suites.TORCH_OPS)
    assert any(c.args["x"].size == 0 and c.args["x"].ndim == 1 for c in torch_cases.values())  # BN's (0,) input
    assert any((c.args.get("eps") or 0) < 0 for c in torch_cases.values())


def test_torch_opinfo_samples_are_exact(torch_cases):
    # one test for the whole database (loading it takes seconds); every failing sample is listed
    failures = []
    for case in torch_cases.values():
        try:
            _check(case)
        except Exception as err:  # an oracle error is a failure to express the case
            failures.append(f"{case.name}: {type(err).__name__}: {err}")
    assert not failures, f"{len(failures)} of {len(torch_cases)} samples:\n" + "\n".join(failures)
