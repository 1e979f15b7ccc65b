"""normspec diagnose: running statistics against the data they were trained on."""

import importlib.util
import json
import math
from fractions import Fraction

import numpy as np
import pytest
from normspec.diagnose import IID_ALPHA, diagnose, f_survival, read_batches
from normspec.diagnose.examples import shuffled, two_distributions

from normspec.cli import main
from normspec.errors import DomainError, InputFileError, InvalidArgumentError, ShapeError

F32 = np.float32


def test_two_distributions_are_not_iid_and_shuffled_batches_are():
    bad = diagnose(two_distributions(), "torch")
    assert bad.not_iid.all() and any("not i.i.d." in c for c in bad.causes), bad.causes
    # the running variance estimates the within-batch part only: about 2.5 of the data's 8.75
    for c in range(bad.channels):
        assert bad.population_var[c] == bad.within[c] + bad.between[c]
        assert float(bad.between[c] / bad.population_var[c]) > 0.6
        assert bad.eval_std[c] > 1.7  # evaluation-mode outputs of the training data: std 1.8, not 1
    good = diagnose(shuffled(), "torch")
    assert not good.not_iid.any() and not good.causes, good.causes
    assert np.all(np.abs(good.eval_std - 1) < 0.05) and np.all(np.abs(good.eval_mean) < 0.1)
    # the same images: the same data statistics, exactly
    assert good.population_mean == bad.population_mean and good.population_var == bad.population_var


def test_prediction_matches_torch_batchnorm_in_eval_mode():
    """torch's BatchNorm2d trained on the batches: its running statistics are within the float32
    budget of the trajectory the diagnosis computes, and its evaluation-mode outputs of the data
    have the mean and standard deviation the diagnosis predicts, within the budget of that forward."""
    if importlib.util.find_spec("torch") is None:
        pytest.skip("torch is not installed (pip install 'normspec[torch]')")
    import torch
    from normspec.budgets import budget_for_batch_norm, get_algorithm
    from normspec.budgets.derive import running_budget

    batches = list(two_distributions())
    diag = diagnose(batches, "torch")
    bn = torch.nn.BatchNorm2d(3)
    bn.train()
    with torch.no_grad():
        for xb in batches:
            bn(torch.from_numpy(xb))
    rm, rv = bn.running_mean.numpy().astype(np.float64), bn.running_var.numpy().astype(np.float64)
    alg = get_algorithm("torch_cpu")
    bm, bv = running_budget(alg, "torch", np.stack(batches), np.zeros(3, F32), np.ones(3, F32), 0.1, eps=1e-5)
    assert np.all(np.abs(rm - diag.running_mean[-1]) <= bm[-1]) and np.all(np.abs(rv - diag.running_var[-1]) <= bv[-1])
    data = np.concatenate(batches)
    bn.eval()
    with torch.no_grad():
        y = bn(torch.from_numpy(data)).numpy().astype(np.float64)
    budget = budget_for_batch_norm(alg, data, None, None, 1e-5, training=False, running_mean=rm.astype(F32),
                                   running_var=rv.astype(F32))  # fmt: skip
    for c in range(3):
        s = math.sqrt(rv[c] + 1e-5)
        # the diagnosis's prediction, moved to torch's running statistics (a first-order bound on the move)
        moved_mean = abs(rm[c] - diag.running_mean[-1, c]) / s + abs(float(diag.population_mean[c]) - rm[c]) * abs(
            rv[c] - diag.running_var[-1, c]
        ) / (2 * s**3)
        moved_std = math.sqrt(float(diag.population_var[c])) * abs(rv[c] - diag.running_var[-1, c]) / (2 * s**3)
        err = budget[:, c].ravel()
        measured_mean, measured_std = y[:, c].mean(), y[:, c].std()
        assert abs(measured_mean - diag.eval_mean[c]) <= err.mean() + moved_mean + 1e-12 * abs(measured_mean)
        assert abs(measured_std - diag.eval_std[c]) <= math.sqrt((err**2).mean()) + moved_std + 1e-12 * measured_std


def test_initial_weight_and_the_old_weight_momentum():
    x = np.random.default_rng(1).standard_normal((10, 16, 2)).astype(F32)
    keras = diagnose(x, "keras3")  # momentum 0.99 weighs the old value: 0.99**10 after 10 steps
    assert keras.initial_weight == pytest.approx(0.99**10) and keras.steps_to_one_percent == 459
    assert any("initial running values still weigh" in c for c in keras.causes)
    torch_like = diagnose(x, "torch", momentum="cumulative")
    assert torch_like.initial_weight == 0.0 and not any("initial" in c for c in torch_like.causes)


def test_mxnet_cpu_without_a_backward_pass_never_moves():
    ones = np.ones((100, 4, 2), F32)  # 100 all-ones batches of 4 samples
    cpu = diagnose(ones, "mxnet_cpu", backward=False)
    assert np.all(cpu.running_mean == 0) and np.all(cpu.running_var == 1)
    assert any("only in a backward pass" in c for c in cpu.causes)
    gpu = diagnose(ones, "mxnet_cudnn")  # updates in forward with the unbiased variance: converges to 1 and 0
    assert gpu.running_mean[-1, 0] == pytest.approx(1, abs=1e-4) and gpu.running_var[-1, 0] < 1e-4
    one = diagnose(np.ones((3, 1, 2), F32), "mxnet_cudnn")  # batch size 1: the unbiased variance is NaN
    assert np.isnan(one.running_var[-1]).all()


def test_observed_statistics_never_updated():
    x = np.random.default_rng(2).standard_normal((5, 8, 3)).astype(F32)
    stuck = diagnose(x, "tf_keras2_nonfused", observed={"running_mean": np.zeros(3), "running_var": np.ones(3)})
    assert stuck.observed["never_updated"] and "UPDATE_OPS" in stuck.causes[0]
    fine = diagnose(x, "tf_keras2_nonfused")
    moved = {"running_mean": fine.running_mean[-1], "running_var": fine.running_var[-1]}
    again = diagnose(x, "tf_keras2_nonfused", observed=moved)
    assert not again.observed["never_updated"] and max(again.observed["running_mean_ulp"]) == 0


def test_f_survival_against_closed_forms():
    # F(2, d2): P(F >= f) = (1 + 2 f / d2) ** (-d2 / 2); F(d1, 2): P(F >= f) = 1 - (d1 f / (d1 f + 2)) ** (d1 / 2)
    for f, d in ((0.5, 7), (3.0, 40), (11.0, 3)):
        assert f_survival(f, 2, d) == pytest.approx((1 + 2 * f / d) ** (-d / 2), rel=1e-12)
        assert f_survival(f, d, 2) == pytest.approx(1 - (d * f / (d * f + 2)) ** (d / 2), rel=1e-12)
    assert f_survival(math.inf, 3, 5) == 0.0 and f_survival(0.0, 3, 5) == 1.0


def test_bad_input_names_the_batch():
    good = np.zeros((2, 3), F32)
    with pytest.raises(ShapeError, match="batch 2 has shape"):
        diagnose([good, good, np.zeros((3, 3), F32)])
    with pytest.raises(InvalidArgumentError, match="no batches"):
        diagnose([])
    bad = good.copy()
    bad[1, 2] = np.nan
    with pytest.raises(DomainError, match=r"batch 1: x\[1, 2\] = .*nan"):
        diagnose([good, bad])
    with pytest.raises(InvalidArgumentError, match="batch 0"):  # torch refuses one value per channel
        diagnose([np.ones((1, 3), F32)], "torch")
    with pytest.raises(InvalidArgumentError, match="running statistics"):
        diagnose([good], "torch_layer_norm")


def test_readers_and_the_cli(tmp_path, capsys):
    batches = list(two_distributions())[:20]
    np.savez(tmp_path / "stacked.npz", x=np.stack(batches))
    folder = tmp_path / "many"
    folder.mkdir()
    for k, xb in enumerate(batches):
        np.savez(folder / f"batch{k:03d}.npz", xb)
    a, b = list(read_batches(tmp_path / "stacked.npz")), list(read_batches(folder))
    assert len(a) == len(b) == 20 and all(np.array_equal(p, q) for p, q in zip(a, b, strict=True))
    (tmp_path / "empty").mkdir()
    with pytest.raises(InputFileError, match=r"no \.npz files"):
        list(read_batches(tmp_path / "empty"))
    code = main(["diagnose", str(tmp_path / "stacked.npz"), "--json"])
    data = json.loads(capsys.readouterr().out)
    assert code == 1 and data["steps"] == 20 and all(ch["not_iid"] for ch in data["channels"])
    assert Fraction(data["channels"][0]["population_var"]) > 0
    code = main(["diagnose", "python:normspec.diagnose.examples:shuffled", "--progress", "never"])
    out = capsys.readouterr().out
    assert code == 0 and "no cause found" in out
    assert main(["diagnose", str(tmp_path / "nothing.npz")]) == 2
    if importlib.util.find_spec("matplotlib") is not None:
        assert main(["diagnose", str(folder), "--plot", str(tmp_path / "plots")]) == 1
        assert (tmp_path / "plots" / "running_statistics.png").exists()
        assert (tmp_path / "plots" / "variance_decomposition.png").exists()


def test_no_false_causes_on_iid_data_with_many_channels_or_matching_initial_values(tmp_path, capsys):
    rng = np.random.default_rng(5)
    wide = diagnose((rng.standard_normal((32, 1000)).astype(F32) for _ in range(50)), "torch")
    assert wide.alpha == pytest.approx(IID_ALPHA / 1000) and not wide.causes, wide.causes  # Bonferroni
    # 20 steps: the initial 0 and 1 still weigh 12 %, but they already describe N(0, 1) data
    near = diagnose(rng.standard_normal((20, 8, 3, 4)).astype(F32), "torch")
    assert near.initial_weight == pytest.approx(0.9**20) and not near.causes, near.causes
    far = diagnose(5 + rng.standard_normal((20, 8, 3, 4)).astype(F32), "torch")
    assert any("far enough from the data" in c for c in far.causes)


def test_batches_of_one_value_json_and_more_bad_input(tmp_path, capsys):
    ones = np.ones((5, 1, 3), F32)
    one = diagnose(ones, "mxnet_cudnn")
    assert any("NaN from step 1" in c for c in one.causes), one.causes
    np.savez(tmp_path / "one.npz", x=ones)
    assert main(["diagnose", str(tmp_path / "one.npz"), "--convention", "mxnet_cudnn", "--json"]) == 1
    text = capsys.readouterr().out
    data = json.loads(text, parse_constant=lambda name: pytest.fail(f"bare {name} in JSON"))
    assert data["channels"][0]["running_var"] is None  # strict JSON: null, not NaN
    with pytest.raises(ShapeError, match="batch 0 is empty"):
        diagnose([np.zeros((0, 3), F32)])
    with pytest.raises(InvalidArgumentError, match=r"momentum in \[0, 1\]"):
        diagnose([np.zeros((2, 3), F32)], momentum=1.5)
    with pytest.raises(InputFileError, match="lack running_var"):
        diagnose([np.ones((2, 3), F32)], observed={"running_mean": np.zeros(3)})
    folder = tmp_path / "natural"
    folder.mkdir()
    for k in (1, 2, 10):
        np.savez(folder / f"b{k}.npz", x=np.full((2, 1), k, F32))
    assert [float(b[0, 0]) for b in read_batches(folder)] == [1.0, 2.0, 10.0]  # b2 before b10
