"""The audit against real libraries (never mocks); each skips with the reason when its library is absent."""

import importlib.util
import json
import math

import numpy as np
import pytest
from normspec.targets.audit import run_audit, venv_root
from normspec.targets.verdict import FAILING

from normspec.cli import main


def need(module: str) -> None:
    if importlib.util.find_spec(module) is None:
        pytest.skip(f"{module} is not installed (pip install 'normspec[audit]')")


def need_venv(name: str) -> None:
    if not (venv_root() / name / "bin" / "python").exists():
        pytest.skip(f"the {name} target's virtual environment is missing: bash scripts/setup-target-venvs.sh {name}")


def kinds(report, case=None):
    return {f["kind"] for f in report.findings if case is None or f["case"] == case}


def case_row(report, name):
    return next(c for c in report.cases if c["case"] == name)


def test_torch_folded_affine_cancellation_pytorch_5410():
    need("torch")
    rep = run_audit("torch")
    assert rep.inferred["momentum"].endswith("as claimed") and rep.inferred["running_var"] == "unbiased"
    assert rep.inferred["one_value"] == "error" and rep.inferred["eps"] == "inside sqrt"
    row = case_row(rep, "constant_channel")
    # |y| near 70 where the exact value is 0: allowed by the folded algorithm torch declares (torch_cpu budget),
    assert row["max_ulp"] > 1e8 and row["budget_algorithm"] == "torch_cpu" and row["beyond_budget"] == 0
    # and the status says so: not "ok" at 1e9 ULP
    assert row["status"] == "within budget" and "within torch_cpu's budget" in row["verdict"], row
    # the overflow of squares at |x| near 1e30 (pytorch#162489) is beyond any budget: torch's one failing finding
    failing = {(f["kind"], f["case"]) for f in rep.findings if f["kind"] in FAILING}
    assert failing == {("accuracy", "huge_magnitude")}, rep.findings
    assert rep.exit_code() == 1


def test_torch_gradients_and_float16_against_the_exact_backward():
    need("torch")
    rep = run_audit("torch")
    grad = case_row(rep, "backward_random")
    assert grad["status"] == "no budget" and 1 < grad["dx_max_ulp"] < 1e3 and "dweight_max_ulp" in grad
    assert "ULP from the exact gradients" in grad["verdict"]
    assert case_row(rep, "float16_random")["status"] == "ok"


def test_our_kernels_have_exact_gradients_and_no_findings():
    need("numba")
    rep = run_audit("kernels")
    assert case_row(rep, "backward_large_mean")["dx_max_ulp"] <= 1
    half = case_row(rep, "float16_random")  # float16 x, y in float16: within 1 ULP of the exact value
    assert half["status"] == "ok" and half["max_ulp"] <= 1
    assert not rep.failed, rep.findings


def test_raw_torch_batch_norm_nan_running_var_at_one_value():
    need("torch")
    rep = run_audit("torch_raw", "torch")  # judged against what nn.BatchNorm promises
    assert rep.inferred["one_value"] == "nan"
    # F.batch_norm raises at n = 1 and at eps <= 0, the raw op computes: refusing versus computing
    assert any("one_value" in f["message"] and f["kind"] == "degenerate-input" for f in rep.findings)
    assert {f["case"] for f in rep.findings if f["kind"] == "degenerate-input"} >= {"eps_zero_constant", "eps_negative"}
    assert not any(f["kind"] == "semantic" for f in rep.findings)
    assert rep.exit_code(strict=True) == 1  # --strict counts them


def test_keras3_numpy_backend_nan_from_raw_moments():
    need("keras")
    rep = run_audit("keras_numpy")
    assert "non-finite" in kinds(rep, "keras_trigger")  # keras PR #18795, still in the NumPy backend
    assert rep.inferred["momentum"].endswith("as claimed") and rep.inferred["running_var"] == "none"


def test_flax_fast_variance_inaccuracy():
    need("flax")
    rep = run_audit("flax_linen")
    row = case_row(rep, "flax_trigger")  # google/flax#1491: mean 1e3, std 1e-2
    naive = run_audit("python:" + __file__ + ":_naive_float32", "flax_linen")  # the plain float32 formula, same case
    assert row["rel_ulp"] > 100 * case_row(naive, "flax_trigger")["rel_ulp"]


def test_onnx_reference_bn9_blended_statistics_onnx_5799():
    need("onnx")
    rep = run_audit("onnx_reference_bn9")
    assert rep.inferred["evaluation_uses"].startswith("none of the known alternatives (observed 7.35")
    assert rep.failed


def test_onnxruntime_follows_bn15():
    need("onnxruntime")
    need("onnx")
    rep = run_audit("onnxruntime_bn15")
    assert rep.inferred["running_var"] == "none" and rep.inferred["momentum"].endswith("as claimed")


def test_mxnet_cpu_forward_only_training_leaves_running_statistics():
    """The seed report of this project: apache/mxnet#18751, #14357."""
    need_venv("mxnet")
    rep = run_audit("mxnet_cpu")
    assert rep.inferred["updates_in_forward"] == "no" and rep.inferred["momentum"].endswith("as claimed")
    against_cudnn = run_audit("mxnet_cpu", "mxnet_cudnn")  # what the GPU path does
    assert any(f["case"] == "probe (updates_in_forward)" for f in against_cudnn.findings)
    assert any(f["case"] == "probe (running_var)" for f in against_cudnn.findings)  # biased vs cuDNN's unbiased


def test_paddle_cpu_identity_at_one_value_per_channel():
    need_venv("paddle")
    rep = run_audit("paddle_cpu")
    assert rep.inferred["one_value"] == "identity" and rep.inferred["running_var"] == "none"


def test_tf_nn_batch_normalization_evaluation():
    need_venv("tf")
    rep = run_audit("tf_nn_batch_normalization")
    assert rep.inferred["evaluation_uses"] == "running statistics" and rep.inferred["eps"] == "inside sqrt"


@pytest.mark.parametrize(
    "target,correction",
    [
        ("tf_fused_batch_norm", "unbiased_clamped"),
        ("tf_keras2_fused", "unbiased_clamped"),
        ("tf_keras2_nonfused", "none"),
        ("keras_tensorflow", "none"),
    ],
)
def test_tensorflow_targets(target, correction):
    need_venv("tf")
    rep = run_audit(target)
    assert rep.inferred["running_var"] == correction and rep.inferred["momentum"].endswith("as claimed")


def _naive_float32(x, w, b, rm, rv, training, momentum, eps):
    """The spec's formula in plain float32 (a peer for the Flax comparison)."""
    axes = (0, *range(2, x.ndim))
    shape = (1, -1) + (1,) * (x.ndim - 2)
    m = x.mean(axis=axes, dtype=np.float32) if training else rm
    v = ((x - m.reshape(shape)) ** 2).mean(axis=axes, dtype=np.float32) if training else rv
    y = (x - m.reshape(shape)) / np.sqrt(v.reshape(shape) + np.float32(eps)) * w.reshape(shape) + b.reshape(shape)
    return y.astype(np.float32), rm, rv


USER = """
import os, time
import numpy as np
from normspec.oracle import batch_norm

def exact(x, w, b, rm, rv, training, momentum, eps):
    r = batch_norm(x, w, b, rm, rv, training=training, momentum=momentum, eps=eps, convention="keras3")
    return r.y, r.running_mean, r.running_var

def crashes(x, w, b, rm, rv, training, momentum, eps):
    if x.shape[0] == 64:
        os.abort()  # a segfault stand-in: the process dies
    return exact(x, w, b, rm, rv, training, momentum, eps)

def hangs(x, w, b, rm, rv, training, momentum, eps):
    if x.shape[0] == 64:
        time.sleep(60)
    return exact(x, w, b, rm, rv, training, momentum, eps)
"""


def test_a_correct_user_implementation_has_no_findings(tmp_path):
    impl = tmp_path / "impl.py"
    impl.write_text(USER)
    rep = run_audit(f"python:{impl}:exact", "keras3")
    assert not rep.failed, rep.findings
    assert all(c["status"] in ("ok", "refused as claimed", "unsupported") for c in rep.cases)
    assert case_row(rep, "backward_random")["status"] == "unsupported"  # the protocol has no gradients


TORCH64 = """
import numpy as np

def torch64(x, w, b, rm, rv, training, momentum, eps):
    # the torch convention computed in float64 and rounded once; it computes at n = 1 and eps <= 0
    x64, shape = x.astype(np.float64), (1, -1) + (1,) * (x.ndim - 2)
    axes = (0, *range(2, x.ndim))
    with np.errstate(all="ignore"):
        if training:
            m, v = x64.mean(axis=axes), x64.var(axis=axes)
            n = x.size // x.shape[1]
            rm = ((1 - momentum) * rm + momentum * m).astype(np.float32)
            rv = ((1 - momentum) * rv + momentum * v * n / (n - 1)).astype(np.float32)
        else:
            m, v = rm.astype(np.float64), rv.astype(np.float64)
        y = (x64 - m.reshape(shape)) / np.sqrt(v.reshape(shape) + eps) * w.reshape(shape) + b.reshape(shape)
    return y.astype(np.float32), rm, rv
"""


def test_a_correct_float64_implementation_of_the_torch_profile_exits_0(tmp_path, capsys):
    """It differs from torch only where torch refuses (n = 1, eps <= 0): degenerate-input, not a failure."""
    impl = tmp_path / "impl.py"
    impl.write_text(TORCH64)
    assert main(["audit", f"python:{impl}:torch64", "--convention", "torch", "--progress", "never"]) == 0
    out = capsys.readouterr().out
    assert "degenerate-input" in out
    assert main(["audit", f"python:{impl}:torch64", "--convention", "torch", "--strict", "--progress", "never"]) == 1


STALE = (
    TORCH64.replace("def torch64", "def exact64")
    + """
_previous = {}

def stale(x, w, b, rm, rv, training, momentum, eps):
    # an off-by-one in a training pipeline: the running update uses the previous call's batch statistics
    if training:
        n = x.size // x.shape[1]
        axes = (0, *range(2, x.ndim))
        now = (x.astype(np.float64).mean(axis=axes), x.astype(np.float64).var(axis=axes) * n / max(n - 1, 1))
        m, v = _previous.get(x.shape[1:], now)
        _previous[x.shape[1:]] = now
        y, _, _ = exact64(x, w, b, rm, rv, training, momentum, eps)
        rm = ((1 - momentum) * rm + momentum * m).astype(np.float32)
        rv = ((1 - momentum) * rv + momentum * v).astype(np.float32)
        return y, rm, rv
    return exact64(x, w, b, rm, rv, training, momentum, eps)
"""
)


def test_stale_statistics_across_consecutive_steps_are_a_semantic_finding(tmp_path, capsys):
    """The steps of a sequence run one after another in one process, so state kept between calls shows."""
    impl = tmp_path / "impl.py"
    impl.write_text(STALE)
    rep = run_audit(f"python:{impl}:stale", "torch")
    semantic = [f for f in rep.findings if f["kind"] == "semantic"]
    assert [f["case"] for f in semantic] == ["random_sequence"], rep.findings
    assert "running_mean after step 2" in semantic[0]["message"]
    good = run_audit(f"python:{impl}:exact64", "torch")
    assert not good.failed, good.findings


def test_a_missing_library_is_one_unavailable_line(monkeypatch, capsys):
    import dataclasses

    from normspec.targets import adapters

    fake = dataclasses.replace(adapters.ADAPTERS["torch"], name="nolib", library="normspec_no_such_library")
    monkeypatch.setitem(adapters.ADAPTERS, "nolib", fake)
    assert main(["audit", "nolib", "--progress", "never"]) == 0
    out = capsys.readouterr().out
    assert "[unavailable] normspec_no_such_library is not installed" in out and "pip install" in out
    assert "finding" not in out


def test_a_crashing_or_hanging_target_is_a_finding_not_an_auditor_crash(tmp_path):
    impl = tmp_path / "impl.py"
    impl.write_text(USER)
    crash = run_audit(f"python:{impl}:crashes", "keras3")
    crashed = {f["case"] for f in crash.findings if f["kind"] == "crash"}
    assert crashed == {"keras_trigger", "flax_trigger"}  # the two 64-row cases, isolated one process each
    assert case_row(crash, "random_sequence")["status"] == "ok"
    hang = run_audit(f"python:{impl}:hangs", "keras3", timeout=3)
    # the first case to hang costs the deadline once; the cases after it are not sent to the target
    assert {c["case"] for c in hang.cases if c["status"] == "timeout"} == {"keras_trigger"}
    assert case_row(hang, "flax_trigger")["status"] == "not run"
    assert "the target hung on keras_trigger" in case_row(hang, "flax_trigger")["message"]
    assert [f["case"] for f in hang.findings if f["kind"] == "crash"] == ["keras_trigger"]


def test_cli_json_report_and_reproducer(tmp_path, capsys):
    need("torch")
    code = main(["audit", "torch_raw", "--convention", "torch", "--json", "--report", str(tmp_path)])
    data = json.loads(capsys.readouterr().out)
    assert code == 1 and data["target"] == "torch_raw" and data["convention"] == "torch"
    assert isinstance(data["findings"], list) and all({"kind", "case"} <= set(f) for f in data["findings"])
    assert (tmp_path / "report.html").exists() and (tmp_path / "random_sequence.png").exists()
    repro = next(f["reproducer"] for f in data["findings"] if "reproducer" in f)
    assert (tmp_path / "reproducers").exists() and np.load(f"{repro}/case.npz")["x"].ndim >= 3
    assert not math.isnan(data["seconds"])


CORRECT_VARIANTS = (
    TORCH64
    + """

def _welford(v):
    mean, m2 = 0.0, 0.0
    for k, value in enumerate(v, start=1):
        d = value - mean
        mean += d / k
        m2 += d * (value - mean)
    return mean, m2 / len(v)

def welford64(x, w, b, rm, rv, training, momentum, eps):  # Welford's update in float64, rounded once
    if not training:
        return torch64(x, w, b, rm, rv, training, momentum, eps)
    c = x.shape[1]
    cols = np.moveaxis(x.astype(np.float64), 1, 0).reshape(c, -1)
    stats = [_welford(col) for col in cols]
    m, v = np.array([s[0] for s in stats]), np.array([s[1] for s in stats])
    n = cols.shape[1]
    shape = (1, -1) + (1,) * (x.ndim - 2)
    with np.errstate(all="ignore"):
        y = (x - m.reshape(shape)) / np.sqrt(v.reshape(shape) + eps) * w.reshape(shape) + b.reshape(shape)
        rm = ((1 - momentum) * rm + momentum * m).astype(np.float32)
        rv = ((1 - momentum) * rv + momentum * v * n / (n - 1)).astype(np.float32)
    return y.astype(np.float32), rm, rv

def folded64(x, w, b, rm, rv, training, momentum, eps):  # y = x a + (b - mean a), all in float64
    y, rm2, rv2 = torch64(x, w, b, rm, rv, training, momentum, eps)
    axes = (0, *range(2, x.ndim))
    shape = (1, -1) + (1,) * (x.ndim - 2)
    x64 = x.astype(np.float64)
    m, v = (x64.mean(axis=axes), x64.var(axis=axes)) if training else (rm.astype(np.float64), rv.astype(np.float64))
    with np.errstate(all="ignore"):
        a = w.astype(np.float64) / np.sqrt(v + eps)
        y = x64 * a.reshape(shape) + (b - m * a).reshape(shape)
    return y.astype(np.float32), rm2, rv2
"""
)


@pytest.mark.parametrize("fn", ["welford64", "folded64"])
def test_correct_welford_and_folded_implementations_exit_0(fn, tmp_path, capsys):
    impl = tmp_path / "impl.py"
    impl.write_text(CORRECT_VARIANTS)
    assert main(["audit", f"python:{impl}:{fn}", "--convention", "torch", "--progress", "never"]) == 0, (
        capsys.readouterr().out
    )


def test_tf1_graph_code_with_and_without_update_ops():
    """TF1-style graph code: the moving averages update only through UPDATE_OPS. Without the control
    dependency the audit names the missing update once, with its likely cause, and describes the stuck
    running variance as never updated, not as a correction mismatch."""
    need_venv("tf")
    good = run_audit("tf1_graph_bn")
    assert good.inferred["updates_in_forward"] == "yes" and good.inferred["running_var"] == "none"
    assert not [f for f in good.findings if f["case"].startswith("probe (")], good.findings
    bad = run_audit("tf1_graph_bn_no_update_ops")
    assert bad.inferred["running_var"] == bad.inferred["momentum"] == "never updated (still its initial value)"
    probes = [f for f in bad.findings if f["case"].startswith("probe (")]
    assert len(probes) == 1 and probes[0]["kind"] == "semantic" and "UPDATE_OPS" in probes[0]["message"], probes
    # the stuck statistics are reported once: the per-case findings are the same as with UPDATE_OPS
    assert {(f["kind"], f["case"]) for f in bad.findings} - {(f["kind"], f["case"]) for f in good.findings} == {
        ("semantic", "probe (updates_in_forward)")
    }
