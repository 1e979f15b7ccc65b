"""The family audit against real libraries: LayerNorm, RMSNorm, GroupNorm, InstanceNorm."""

import importlib.util

import pytest
from normspec.targets.audit import run_audit
from normspec.targets.family import FAMILY_ADAPTERS

from normspec.cli import main
from normspec.errors import InvalidArgumentError


def need(module: str) -> None:
    if importlib.util.find_spec(module) is None:
        pytest.skip(f"{module} is not installed (pip install 'normspec[audit]')")


def findings(rep, case):
    return {f["kind"] for f in rep.findings if f["case"] == case}


def test_keras_layer_norm_raw_moments_nan():
    """Keras 3's NumPy backend computes E[x^2]-E[x]^2: NaN on [40000, 40001, 40002, 40003]."""
    need("keras")
    rep = run_audit("keras_layer_norm")
    assert "non-finite" in findings(rep, "raw_moments_trigger")


def test_torch_family_on_normal_rows_and_group_norm():
    need("torch")
    for target in ("torch_layer_norm", "torch_rms_norm", "torch_group_norm", "torch_instance_norm"):
        rep = run_audit(target)
        row = next(c for c in rep.cases if c["case"] == "random")
        assert row["status"] in ("ok", "within budget") and row["max_ulp"] < 1e4, (target, row)
        assert not findings(rep, "random"), rep.findings
        if row["status"] != "ok":  # never "ok" far from the exact value without saying how far and why
            assert "ULP from the exact value" in row["verdict"], row


def test_family_accuracy_verdicts_on_a_constant_input():
    """torch 2.13 group_norm/instance_norm on a constant input of 1.2345678e7: the exact y is the bias, torch
    returns values of order 100 (no algorithm declared: the plain formula's budget is unbounded there, and its own
    error is far smaller)."""
    need("torch")
    for target in ("torch_group_norm", "torch_instance_norm"):
        rep = run_audit(target)
        row = next(c for c in rep.cases if c["case"] == "constant")
        assert row["status"] == "inaccurate" and "accuracy" in findings(rep, "constant"), (target, row)
    ln = run_audit("torch_layer_norm")  # LayerNorm gets the bias exactly
    assert next(c for c in ln.cases if c["case"] == "constant")["status"] == "ok"


def test_our_kernels_are_correctly_rounded_on_the_family_battery():
    need("numba")
    for target in ("kernels_layer_norm", "kernels_rms_norm"):
        rep = run_audit(target)
        assert not rep.findings, rep.findings
        assert all(c["max_ulp"] == 0 for c in rep.cases), [(c["case"], c["max_ulp"]) for c in rep.cases]


def test_onnx_layer_norm17_matches_and_cli(capsys):
    need("onnx")
    rep = run_audit("onnx_reference_layer_norm17")
    assert rep.layer == "layer_norm" and {c["case"] for c in rep.cases} >= {"random", "raw_moments_trigger"}
    failing = any(f["kind"] in ("semantic", "accuracy", "non-finite", "crash") for f in rep.findings)
    assert main(["audit", "onnx_reference_layer_norm17"]) == int(failing)
    assert "normspec audit: onnx_reference_layer_norm17" in capsys.readouterr().out


def test_every_family_target_claims_a_known_profile():
    from normspec.spec import get_convention

    for name, adapter in FAMILY_ADAPTERS.items():
        layer = get_convention(adapter.convention).layer
        assert layer.split("_")[0] in name, (name, layer)  # layer, rms, group, instance


def need_venv(name: str) -> None:
    from normspec.targets.audit import venv_root

    if not (venv_root() / name / "bin" / "python").exists():
        pytest.skip(f"the {name} target's virtual environment is missing: bash scripts/setup-target-venvs.sh {name}")


def test_mxnet_group_norm_takes_scale_and_bias_per_group():
    """apache/mxnet#17139 on MXNet 1.9.1: gamma and beta have one entry per group, not per channel."""
    need_venv("mxnet")
    own = run_audit("mxnet_group_norm")  # its own (per-group) profile: the values agree
    row = next(c for c in own.cases if c["case"] == "random")
    assert row["status"] in ("ok", "within budget") and row["max_ulp"] < 1e3, row
    per_channel = run_audit("mxnet_group_norm", "torch_group_norm")  # per-channel weights: refused
    assert "semantic" in findings(per_channel, "random")


@pytest.mark.parametrize(
    ("venv", "targets"),
    [
        ("tf", ("tf_keras_layer_norm", "tf_keras_group_norm")),
        ("paddle", ("paddle_layer_norm", "paddle_group_norm", "paddle_instance_norm")),
        ("mxnet", ("mxnet_layer_norm", "mxnet_instance_norm")),
    ],
)
def test_venv_family_targets_agree_on_normal_rows(venv, targets):
    need_venv(venv)
    for target in targets:
        rep = run_audit(target)
        row = next(c for c in rep.cases if c["case"] == "random")
        ok = row["status"] in ("ok", "within budget")
        assert ok and row["max_ulp"] < 1e4 and not findings(rep, "random"), (target, row)


def test_onnx_instance_and_group_norm_targets():
    need("onnxruntime")
    for target in ("onnx_reference_instance_norm", "onnxruntime_instance_norm", "onnxruntime_group_norm21"):
        rep = run_audit(target)
        row = next(c for c in rep.cases if c["case"] == "random")
        ok = row["status"] in ("ok", "within budget")
        assert ok and row["max_ulp"] < 1e4 and not findings(rep, "random"), (target, row)
        battery = {f["kind"] for f in rep.findings if not f["case"].startswith("probe (")}
        assert not battery & {"crash", "semantic"}  # every case computed


def test_flax_group_norm_raw_moments_overflow_at_huge_magnitude():
    """flax.linen.GroupNorm's fast variance squares in float32: NaN at |x| ~ 1e30 where the exact y is finite."""
    need("flax")
    rep = run_audit("flax_group_norm")
    assert not findings(rep, "random")
    assert "non-finite" in findings(rep, "huge_magnitude")


def test_family_report_writes_reproducers_that_rerun_the_finding(tmp_path):
    import json
    import subprocess
    import sys

    need("keras")
    code = main(["audit", "keras_layer_norm", "--report", str(tmp_path), "--progress", "never"])
    assert code == 1  # the NaN on [40000..40003]
    rep = json.loads((tmp_path / "report.json").read_text())
    page = (tmp_path / "report.html").read_text()
    assert page.index("raw_moments_trigger") < page.index("<td>random</td>")  # failing cases first
    assert (tmp_path / "raw_moments_trigger.png").exists() and "reproducer</a>" in page
    folder = next(f["reproducer"] for f in rep["findings"] if f["case"] == "raw_moments_trigger")
    out = subprocess.run([sys.executable, "repro.py"], cwd=folder, capture_output=True, text=True, timeout=300)
    assert out.returncode == 0, out.stderr[-2000:]
    assert "[non-finite]" in out.stdout and "observed nan" in out.stdout


FAMILY_USER = """
import numpy as np

def ln64(x, w, b, eps, groups):  # LayerNorm in float64, rounded once: correct
    x64 = x.astype(np.float64)
    m, v = x64.mean(axis=-1, keepdims=True), x64.var(axis=-1, keepdims=True)
    return ((x64 - m) / np.sqrt(v + eps) * w + b).astype(x.dtype)

def ln_welford64(x, w, b, eps, groups):  # Welford's update in float64 per row, rounded once: correct
    rows = x.astype(np.float64).reshape(-1, x.shape[-1])
    out = np.empty_like(rows)
    for i, row in enumerate(rows):
        mean, m2 = 0.0, 0.0
        for k, value in enumerate(row, start=1):
            d = value - mean
            mean += d / k
            m2 += d * (value - mean)
        out[i] = (row - mean) / np.sqrt(m2 / len(row) + eps) * w + b
    return out.reshape(x.shape).astype(x.dtype)

def ln_folded64(x, w, b, eps, groups):  # folded affine x * a + (b - mean * a) in float64, rounded once
    x64 = x.astype(np.float64)
    m, v = x64.mean(axis=-1, keepdims=True), x64.var(axis=-1, keepdims=True)
    a = w / np.sqrt(v + eps)
    return (x64 * a + (b - m * a)).astype(x.dtype)

def gn64(x, w, b, eps, groups):  # GroupNorm in float64, rounded once: correct
    n, c = x.shape[:2]
    xg = x.astype(np.float64).reshape(n, groups, -1)
    y = ((xg - xg.mean(axis=2, keepdims=True)) / np.sqrt(xg.var(axis=2, keepdims=True) + eps)).reshape(x.shape)
    shape = (1, c) + (1,) * (x.ndim - 2)
    return (y * w.reshape(shape) + b.reshape(shape)).astype(x.dtype)

def rms64(x, w, b, eps, groups):  # RMSNorm in float64, rounded once: correct
    x64 = x.astype(np.float64)
    # eps=None: the machine epsilon of what torch computes in (float32 for 16-bit inputs)
    eps = np.finfo(np.promote_types(x.dtype, np.float32)).eps if eps is None or np.isnan(eps) else eps
    return (x64 / np.sqrt((x64 * x64).mean(axis=-1, keepdims=True) + eps) * w).astype(x.dtype)

def rms64_documented_eps(x, w, b, eps, groups):  # eps=None read as finfo(x.dtype).eps, as torch documents
    x64 = x.astype(np.float64)
    eps = np.finfo(x.dtype).eps if eps is None or np.isnan(eps) else eps
    return (x64 / np.sqrt((x64 * x64).mean(axis=-1, keepdims=True) + eps) * w).astype(x.dtype)

def ln_eps_outside(x, w, b, eps, groups):  # eps added to the standard deviation: another function
    x64 = x.astype(np.float64)
    m, v = x64.mean(axis=-1, keepdims=True), x64.var(axis=-1, keepdims=True)
    return ((x64 - m) / (np.sqrt(v) + eps) * w + b).astype(x.dtype)

def gn_per_group(x, w, b, eps, groups):  # GroupNorm that takes one scale and bias per group
    n, c = x.shape[:2]
    xg = x.astype(np.float64).reshape(n, groups, -1)
    y = (xg - xg.mean(axis=2, keepdims=True)) / np.sqrt(xg.var(axis=2, keepdims=True) + eps)
    y = y * w[:groups].reshape(1, -1, 1) + b[:groups].reshape(1, -1, 1)
    return y.reshape(x.shape).astype(x.dtype)

def rms_centred(x, w, b, eps, groups):  # RMSNorm that subtracts the mean
    x64 = x.astype(np.float64)
    v = x64.var(axis=-1, keepdims=True)
    return ((x64 - x64.mean(axis=-1, keepdims=True)) / np.sqrt(v + eps) * w).astype(x.dtype)
"""


def test_user_family_implementations_through_the_cli(tmp_path, capsys):
    impl = tmp_path / "impl.py"
    impl.write_text(FAMILY_USER)
    ok = ["audit", f"python:{impl}:ln64", "--convention", "torch_layer_norm", "--progress", "never"]
    assert main(ok) == 0
    assert "no findings" in capsys.readouterr().out
    welford = ["audit", f"python:{impl}:ln_welford64", "--convention", "torch_layer_norm", "--progress", "never"]
    assert main(welford) == 0, capsys.readouterr().out
    for name, profile in (
        ("ln_folded64", "torch_layer_norm"),
        ("gn64", "torch_group_norm"),
        ("rms64", "torch_rms_norm"),
    ):
        code = main(["audit", f"python:{impl}:{name}", "--convention", profile, "--progress", "never"])
        assert code == 0, (name, capsys.readouterr().out)
    # bfloat16 rows: torch 2.13 adds float32's epsilon (2**-23), not bfloat16's 2**-7 as documented
    doc_eps = ["audit", f"python:{impl}:rms64_documented_eps", "--convention", "torch_rms_norm", "--progress", "never"]
    assert main(doc_eps) == 1
    out = capsys.readouterr().out
    assert "[accuracy] bf16_rows_4096" in out and "[accuracy] random" not in out
    outside = ["audit", f"python:{impl}:ln_eps_outside", "--convention", "torch_layer_norm", "--progress", "never"]
    assert main(outside) == 1
    assert "[semantic] probe (eps): eps: claimed inside sqrt, observed outside sqrt" in capsys.readouterr().out
    centred = ["audit", f"python:{impl}:rms_centred", "--convention", "torch_rms_norm", "--progress", "never"]
    assert main(centred) == 1
    capsys.readouterr()
    per_group = ["audit", f"python:{impl}:gn_per_group", "--convention", "torch_group_norm", "--progress", "never"]
    assert main(per_group) == 1
    capsys.readouterr()
    with pytest.raises(InvalidArgumentError, match="a layer_norm profile"):
        run_audit("torch_layer_norm", "torch")  # a library's LayerNorm is not audited as a BatchNorm


WRONG_FAMILY = """
import numpy as np

def _ln(x, w, b, eps, dtype=np.float64):
    xd = x.astype(dtype)
    m = xd.mean(axis=-1, keepdims=True)
    v = ((xd - m) ** 2).mean(axis=-1, keepdims=True)
    return ((xd - m) / np.sqrt(v + dtype(eps)) * w.astype(dtype) + b.astype(dtype)).astype(x.dtype)

def all_axes(x, w, b, eps, groups):  # one mean and variance for the whole batch
    x64 = x.astype(np.float64)
    return ((x64 - x64.mean()) / np.sqrt(x64.var() + eps) * w + b).astype(x.dtype)

def rsqrt_estimate(x, w, b, eps, groups):  # 1/sqrt(var + eps) kept to 12 significant bits
    x64 = x.astype(np.float64)
    m = x64.mean(axis=-1, keepdims=True)
    r = 1 / np.sqrt(((x64 - m) ** 2).mean(axis=-1, keepdims=True) + eps)
    frac, exp = np.frexp(r)
    return ((x64 - m) * np.ldexp(np.round(frac * 2**12) / 2**12, exp) * w + b).astype(x.dtype)

def half(x, w, b, eps, groups):  # every operation in float16
    return _ln(x, w, b, eps, np.float16)

def raw_moments(x, w, b, eps, groups):  # var = E[x^2] - E[x]^2 in float32
    m = x.mean(axis=-1, keepdims=True, dtype=np.float32)
    v = (x * x).mean(axis=-1, keepdims=True, dtype=np.float32) - m * m
    return ((x - m) / np.sqrt(v + np.float32(eps)) * w + b).astype(x.dtype)
"""


@pytest.mark.parametrize(
    "bug, kinds",
    [
        ("all_axes", {"semantic"}),
        ("rsqrt_estimate", {"accuracy"}),
        ("half", {"semantic", "accuracy", "non-finite"}),
        ("raw_moments", {"accuracy", "non-finite"}),
    ],
)
def test_wrong_user_layer_norms_exit_1(bug, kinds, tmp_path, capsys):
    """Wrong axes, an rsqrt estimate, half-precision arithmetic, raw moments: each a finding, exit 1."""
    impl = tmp_path / "wrong.py"
    impl.write_text(WRONG_FAMILY)
    code = main(["audit", f"python:{impl}:{bug}", "--convention", "torch_layer_norm", "--progress", "never"])
    out = capsys.readouterr().out
    assert code == 1, out
    seen = {kind for kind in ("semantic", "accuracy", "non-finite") if f"[{kind}]" in out}
    assert seen & kinds, out
    if bug == "all_axes":
        assert "axes: claimed the trailing axis, observed all axes" in out
    if bug == "half":
        assert "precision: claimed float32 or wider statistics, observed float16 statistics" in out


@pytest.mark.parametrize("target", ["hf_llama_rms_norm", "hf_gemma_rms_norm"])
def test_transformers_rms_norm_modules_follow_their_profiles(target):
    """The real modules in bfloat16 and float16 (rows of 4096 and 8192, a small variance, an outlier
    channel, all-equal rows): every LLM case correctly rounded, the rounding order as claimed."""
    need("transformers")
    need("ml_dtypes")
    rep = run_audit(target)
    assert not [f for f in rep.findings if f["kind"] == "semantic"], rep.findings
    llm = [c for c in rep.cases if c["case"].startswith(("bf16_", "f16_"))]
    assert len(llm) == 6 and all(c["status"] == "ok" for c in llm), llm
    assert all(c["max_ulp"] == 0 for c in llm if c["case"].startswith("bf16_")), llm


def test_an_llm_kernel_that_scales_before_the_cast_is_one_semantic_finding(tmp_path):
    """A kernel claiming LlamaRMSNorm but scaling in float32 and rounding once: within a ULP on
    every case, so only the rounding probe tells it apart, and it is charged once."""
    need("ml_dtypes")
    impl = tmp_path / "llm_kernel.py"
    impl.write_text(
        "import numpy as np\n"
        "def scale_first(x, w, b, eps, groups):\n"
        "    xf = x.astype(np.float32)\n"
        "    e = np.float32(1e-6 if eps is None else eps)\n"
        "    inv = (1 / np.sqrt((xf * xf).mean(-1, keepdims=True, dtype=np.float32) + e)).astype(np.float32)\n"
        "    return (xf * inv * w.astype(np.float32)).astype(x.dtype)\n"
    )
    rep = run_audit(f"python:{impl}:scale_first", "hf_llama_rms_norm")
    semantic = [f for f in rep.findings if f["kind"] == "semantic"]
    assert len(semantic) == 1 and "rounding" in semantic[0]["message"], rep.findings
    # both 16-bit probes see it; the order is one defect, charged once
    assert rep.inferred["rounding"] == rep.inferred["rounding_float16"] == "scaled, rounded once"


def test_a_float16_only_library_rounding_once_is_seen_by_the_float16_probe():
    """onnxruntime 1.32 has no bfloat16 RMSNormalization kernel, so the bfloat16 rounding probe is
    refused; the float16 one sees its CPU kernel round once where RMSNormalization-23's text casts
    the normalized value to float16 before the scale: a semantic finding, not just a ULP."""
    need("onnxruntime")
    need("ml_dtypes")
    rep = run_audit("onnxruntime_rms_norm23")
    assert rep.inferred["rounding"].startswith("not inferred"), rep.inferred
    assert rep.inferred["rounding_float16"] == "scaled, rounded once", rep.inferred
    semantic = [f for f in rep.findings if f["kind"] == "semantic"]
    assert [f["case"] for f in semantic] == ["probe (rounding_float16)"], rep.findings


@pytest.mark.parametrize("target", ["liger_rms_norm", "vllm_rms_norm", "flashinfer_rms_norm"])
def test_gpu_only_llm_targets_run_where_a_gpu_is_and_say_why_not_elsewhere(target):
    from normspec.targets.runner import unavailable_reason

    reason = unavailable_reason(FAMILY_ADAPTERS[target])
    if reason is not None:  # no GPU, or the package is missing: one line, no finding
        assert target in reason and ("NVIDIA GPU" in reason or "pip install" in reason), reason
        said = run_audit(target).findings  # said once, as "unavailable", never charged as a finding
        assert [(f["kind"], f["message"]) for f in said] == [("unavailable", reason)], said
        pytest.skip(reason)
    rep = run_audit(target)
    assert not [f for f in rep.findings if f["kind"] == "semantic"], rep.findings


@pytest.mark.parametrize(
    "target", ["flax_rms_norm_dtype", "flax_layer_norm_dtype", "keras_rms_norm_mixed", "keras_layer_norm_mixed"]
)
def test_flax_and_keras_half_precision_policies_follow_their_profiles(target):
    """flax.linen with dtype=x.dtype and Keras 3 under a mixed policy, on bfloat16 and float16 rows with
    float32 parameters: float32 math and one rounding (Keras' RMSNormalization rounds its scale to the
    compute dtype first, a cast point).  Every LLM case is within the float32 algorithm's budget of the
    profile's exact value, and no rounding-order finding is made."""
    need("flax" if target.startswith("flax") else "keras")
    need("ml_dtypes")
    rep = run_audit(target)
    assert not [f for f in rep.findings if f["kind"] == "semantic"], rep.findings
    llm = [c for c in rep.cases if c["case"].startswith(("bf16_", "f16_"))]
    assert len(llm) == 6 and all(c["status"] in ("ok", "within budget") for c in llm), llm
    assert not [f for f in rep.findings if f["case"].startswith(("bf16_", "f16_"))], rep.findings
    if "rms" in target:  # float32 math rounded once is correctly rounded on these bfloat16 rows
        assert all(c["max_ulp"] == 0 for c in llm if c["case"].startswith("bf16_")), llm


def test_keras_rms_norm_scale_cast_is_a_cast_point():
    """Keras' RMSNormalization under a mixed policy reads its float32 scale in bfloat16: judged against
    the profile without that cast (Flax's), its bfloat16 rows move off the exact value."""
    need("keras")
    need("ml_dtypes")
    rep = run_audit("keras_rms_norm_mixed", "flax_rms_norm_dtype")
    llm = [c for c in rep.cases if c["case"].startswith("bf16_rows")]
    assert llm and all(c["max_ulp"] >= 1 for c in llm), llm


def test_onnx_rms_normalization23_in_16_bits():
    """RMSNormalization-23 as its text defines it (float32 stash, Normalized cast to X's type, Mul by
    Scale in that type), on the LLM rows.  onnxruntime 1.32's CPU provider has no bfloat16 kernel:
    those rows say unsupported and are not charged; its float16 rows are within 1 ULP.  onnx's
    reference evaluator computes in X's type despite stash_type=1: the precision probe sees float16
    statistics, and its bfloat16 rows of 4096 fall far outside the float32 budget."""
    need("onnxruntime")
    need("ml_dtypes")
    ort = run_audit("onnxruntime_rms_norm23")
    rows = {c["case"]: c for c in ort.cases}
    assert all(rows[n]["status"] == "unsupported" for n in rows if n.startswith("bf16_")), rows
    assert rows["f16_rows_4096"]["status"] in ("ok", "within budget") and rows["f16_rows_4096"]["max_ulp"] <= 1
    assert not [f for f in ort.findings if f["case"].startswith(("bf16_", "f16_"))], ort.findings
    ref = run_audit("onnx_reference_rms_norm23")
    assert any(f["kind"] == "semantic" and "float16 statistics" in f["message"] for f in ref.findings), ref.findings
    assert {"bf16_rows_4096", "bf16_rows_8192"} <= {f["case"] for f in ref.findings if f["kind"] == "accuracy"}
