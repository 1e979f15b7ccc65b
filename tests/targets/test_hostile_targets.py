"""A target that misbehaves is a finding, never an auditor crash (user targets through the CLI)."""

import math

import pytest
from normspec.targets.audit import run_audit

from normspec.cli import main
from normspec.errors import InvalidArgumentError

TARGETS = """
import numpy as np

def _exact(x, w, b, rm, rv, training, momentum, eps):
    from normspec.oracle import batch_norm
    r = batch_norm(x, w, b, rm, rv, training=training, momentum=momentum, eps=eps, convention="keras3")
    return r.y, r.running_mean, r.running_var

def chatty(*args):  # prints lines that look like the worker's protocol
    print("start epoch 1")
    print("done epoch 1")
    return _exact(*args)

def nones(*args):
    return None, None, None

def strings(*args):
    return "y", "mean", "var"

def wrong_shape(*args):
    y, rm, rv = _exact(*args)
    return y, np.zeros(7, np.float32), np.zeros(7, np.float32)
"""


@pytest.fixture
def impl(tmp_path):
    path = tmp_path / "targets.py"
    path.write_text(TARGETS)
    return path


def test_a_chatty_target_is_audited_as_usual(impl):
    rep = run_audit(f"python:{impl}:chatty", "keras3")
    assert not [f for f in rep.findings if f["kind"] == "crash"], rep.findings


@pytest.mark.parametrize("name", ["nones", "strings", "wrong_shape"])
def test_malformed_outputs_are_crash_findings(impl, name):
    rep = run_audit(f"python:{impl}:{name}", "keras3")
    crashes = [f for f in rep.findings if f["kind"] == "crash"]
    assert crashes and rep.exit_code() == 1, rep.findings
    what = {"nones": "not numbers", "strings": "not numbers", "wrong_shape": "running_mean shape (1, 7)"}[name]
    assert any(what in f["message"] for f in crashes), crashes


@pytest.mark.parametrize("timeout", [0, -1, math.nan, math.inf])
def test_timeouts_that_are_not_a_positive_finite_time_are_refused(impl, timeout, capsys):
    with pytest.raises(InvalidArgumentError, match="finite number of seconds > 0"):
        run_audit(f"python:{impl}:chatty", "keras3", timeout=timeout)
    assert main(["audit", f"python:{impl}:chatty", "--convention", "keras3", "--timeout", str(timeout)]) == 2
    assert "finite number of seconds" in capsys.readouterr().err
