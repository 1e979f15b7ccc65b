"""examples/mxnet_running_stats.py: MXNet's CPU BatchNorm on all-ones input, beside the cuDNN profile."""

import runpy
from pathlib import Path

import numpy as np
import pytest
from normspec.targets.audit import venv_root

EXAMPLE = Path(__file__).resolve().parents[2] / "examples" / "mxnet_running_stats.py"


def test_mxnet_cpu_moves_only_with_a_backward_pass(tmp_path, capsys):
    if not (venv_root() / "mxnet" / "bin" / "python").exists():
        pytest.skip("the mxnet target's virtual environment is missing: bash scripts/setup-target-venvs.sh mxnet")
    example = runpy.run_path(str(EXAMPLE))
    rows = example["experiment"]()
    still = rows["MXNet CPU, no backward"]
    assert np.all(still[0] == 0) and np.all(still[1] == 1)  # 100 forward passes: never moved
    moved = rows["MXNet CPU, with backward"]
    assert moved[0, -1] > 0.99 and moved[1, -1] < 1e-3  # converges towards mean 1, variance 0
    assert np.array_equal(still, rows["mxnet_cpu profile, no backward"])
    # within the float32 budget of the running update (normspec.budgets), step by step
    from normspec.budgets import get_algorithm
    from normspec.budgets.derive import running_budget

    x = np.ones((100, 8, 3), np.float32)
    zeros, ones = np.zeros(3, np.float32), np.ones(3, np.float32)
    bm, bv = running_budget(get_algorithm("plain_float32"), "mxnet_cpu", x, zeros, ones, 0.9, eps=1e-5)
    exact = rows["mxnet_cpu profile, with backward"]
    assert np.all(np.abs(moved[0] - exact[0]) <= bm[:, 0]) and np.all(np.abs(moved[1] - exact[1]) <= bv[:, 0])
    assert np.isnan(rows["mxnet_cudnn profile, batch of 1"][1]).all()  # unbiased variance of one value
    assert example["main"](["--out", str(tmp_path)]) == 0
    out = capsys.readouterr().out
    assert "MXNet CPU, no backward, against its profile: max 0 ULP" in out
