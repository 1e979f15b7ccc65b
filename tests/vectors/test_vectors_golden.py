"""Golden vectors: deterministic, self-consistent, tamper-evident, consumable by ONNX runtimes."""

import json
from pathlib import Path

import numpy as np
import pytest
from normspec.oracle import ulp_distance
from normspec.oracle.formats import bfloat16_dtype
from normspec.vectors import check_case, generate, load_cases, resolve_target

from normspec.cli import main
from normspec.errors import InputFileError
from normspec.testing import BatchNormMismatchError, assert_batch_norm_matches, cases

DTYPES = ("float16", "float32", "float64") + (("bfloat16",) if bfloat16_dtype() is not None else ())
try:
    import onnx  # noqa: F401

    HAVE_ONNX = True
except ImportError:
    HAVE_ONNX = False


def _tree(root: Path) -> dict[str, bytes]:
    return {str(p.relative_to(root)): p.read_bytes() for p in sorted(root.rglob("*")) if p.is_file()}


@pytest.fixture(scope="module")
def vecdir(tmp_path_factory):
    d = tmp_path_factory.mktemp("vectors")
    generate(d, ("torch", "keras3", "onnx_bn15"), DTYPES, seed=3, onnx=HAVE_ONNX)
    return d


def test_regenerating_gives_byte_identical_files(vecdir, tmp_path):
    generate(tmp_path, ("torch", "keras3", "onnx_bn15"), DTYPES, seed=3, onnx=HAVE_ONNX)
    a, b = _tree(vecdir), _tree(tmp_path)
    assert a.keys() == b.keys() and len(a) > 50
    assert [k for k in a if a[k] != b[k]] == []


def test_manifest_records_provenance(vecdir):
    m = json.loads((vecdir / "manifest.json").read_text())
    assert m["generator"]["seed"] == 3 and m["generator"]["normspec"]
    kinds = {c["kind"] for c in m["cases"]}
    assert {"random_train", "constant_channel", "large_mean", "subnormal", "two_values", "witness"} <= kinds
    assert {c["dtype"] for c in m["cases"]} == set(DTYPES)
    assert all(len(c["sha256"]) == 64 for c in m["cases"])


def test_the_oracle_passes_its_own_vectors(vecdir):
    factory = resolve_target("oracle")
    results = [check_case(c, factory(c.convention)) for c in load_cases(vecdir)]
    assert results and all(r.status == "exact" for r in results), [r for r in results if r.status != "exact"][:2]
    assert all(r.beyond_budget == 0 for r in results)


def test_float32_vectors_carry_reference_budgets(vecdir):
    cases = [c for c in load_cases(vecdir) if c.dtype == "float32"]
    assert cases and all(c.expected["budget_naive_float32_pairwise"].shape == c.expected["y"].shape for c in cases)
    assert all("budget_naive_float32_pairwise" not in c.expected for c in load_cases(vecdir) if c.dtype != "float32")


@pytest.mark.parametrize("damage", ["flip", "truncate"])
def test_tampered_or_truncated_files_are_detected(vecdir, tmp_path, damage):
    for name, data in _tree(vecdir).items():
        (tmp_path / name).parent.mkdir(parents=True, exist_ok=True)
        (tmp_path / name).write_bytes(data)
    victim = next(tmp_path.glob("*.npz"))
    data = bytearray(victim.read_bytes())
    if damage == "flip":
        data[len(data) // 2] ^= 0x01
    else:
        data = data[: len(data) // 2]
    victim.write_bytes(bytes(data))
    with pytest.raises(InputFileError, match="does not match the manifest"):
        list(load_cases(tmp_path))


@pytest.mark.parametrize("bad", ["../outside.npz", "/etc/passwd", "sub/../../x.npz"])
def test_manifest_pointing_outside_is_refused(tmp_path, bad):
    (tmp_path / "manifest.json").write_text(json.dumps({"cases": [{"name": "x", "file": bad, "sha256": "0"}]}))
    with pytest.raises(InputFileError, match="outside"):
        list(load_cases(tmp_path))


def test_bfloat16_round_trips_through_the_store(vecdir):
    if bfloat16_dtype() is None:
        pytest.skip("ml_dtypes (the bfloat16 extra) is not installed")
    case = next(c for c in load_cases(vecdir) if c.dtype == "bfloat16")
    assert case.inputs["x"].dtype == bfloat16_dtype() and case.expected["y"].dtype == bfloat16_dtype()


@pytest.mark.skipif(not HAVE_ONNX, reason="onnx is not installed (pip install 'normspec[onnx]')")
def test_onnx_node_tests_run_on_onnxruntime(vecdir):
    ort = pytest.importorskip("onnxruntime", reason="onnxruntime is not installed (pip install 'normspec[onnx]')")
    from onnx import TensorProto, numpy_helper

    dirs = sorted((vecdir / "onnx").iterdir())
    assert dirs, "ONNX cases were exported"
    for d in dirs:
        sess = ort.InferenceSession(str(d / "model.onnx"), providers=["CPUExecutionProvider"])
        feeds = {}
        for i, inp in enumerate(sess.get_inputs()):
            t = TensorProto()
            t.ParseFromString((d / "test_data_set_0" / f"input_{i}.pb").read_bytes())
            feeds[inp.name] = numpy_helper.to_array(t)
        t = TensorProto()
        t.ParseFromString((d / "test_data_set_0" / "output_0.pb").read_bytes())
        expected = numpy_helper.to_array(t)
        (got,) = sess.run(None, feeds)
        assert got.shape == expected.shape and got.dtype == expected.dtype
        dist = ulp_distance(got, expected)
        assert np.isfinite(dist).all()  # ORT's float rounding may differ; the layout and values must line up
        print(f"{d.name}: onnxruntime max {dist.max():.0f} ULP from the exact output")


def _broken(x, w, b, rm, rv, training, momentum, eps):
    """eps outside the square root (Keras CNTK bug): off by several ULP on small variances."""
    axes = (0, *range(2, x.ndim))
    shape = (1, -1) + (1,) * (x.ndim - 2)
    xd = x.astype(np.float64)
    m = xd.mean(axis=axes) if training else rm.astype(np.float64)
    v = xd.var(axis=axes) if training else rv.astype(np.float64)
    y = (xd - m.reshape(shape)) / (np.sqrt(v.reshape(shape)) + eps) * w.reshape(shape) + b.reshape(shape)
    return y.astype(x.dtype), rm, rv


def _crashing(*args):
    raise RuntimeError("segfault stand-in")


def test_pytest_helper_reports_case_exact_observed_distance():
    case = next(c for c in cases(conventions=("torch",), dtypes=("float32",)) if c.kind == "random_eval")
    with pytest.raises(BatchNormMismatchError) as info:
        assert_batch_norm_matches(_broken, case)
    msg = str(info.value)
    assert case.name in msg and "exact" in msg and "got" in msg and "ULP" in msg
    with pytest.raises(BatchNormMismatchError, match="crash"):
        assert_batch_norm_matches(_crashing, case)


def test_check_cli_with_user_targets(vecdir, tmp_path, capsys):
    impl = tmp_path / "impls.py"
    impl.write_text(
        "from normspec.oracle import batch_norm\n"
        "def good(x, w, b, rm, rv, training, momentum, eps):\n"
        "    r = batch_norm(x, w, b, rm, rv, training=training, momentum=momentum, eps=eps, convention='torch')\n"
        "    return r.y, r.running_mean, r.running_var\n"
        "def bad(*a):\n"
        "    raise ValueError('boom')\n"
    )
    torch_f32 = [c.name for c in load_cases(vecdir) if c.convention == "torch" and c.dtype == "float32"][:4]
    case_args = [a for n in torch_f32 for a in ("--case", n)]
    assert main(["vectors", "check", str(vecdir), "--target", f"python:{impl}:good", *case_args]) == 0
    assert "4 cases: 4 exact" in capsys.readouterr().out
    assert main(["vectors", "check", str(vecdir), "--target", f"python:{impl}:bad", *case_args]) == 1
    out = capsys.readouterr().out
    assert "crash" in out and "reproduce: normspec vectors check" in out and "boom" in out
    assert main(["vectors", "check", str(vecdir), "--target", "python:no_such_module_xyz:f"]) == 2
    assert main(["vectors", "check", str(vecdir), "--target", f"python:{tmp_path}/nope.py:f"]) == 2


def test_check_cli_runs_user_code_in_a_worker(vecdir, tmp_path, capsys):
    """A target that segfaults, exits, hangs, prints on stdout or returns junk is a result per case:
    the checker survives, reports each and stops sending cases to one that hung."""
    impl = tmp_path / "hostile.py"
    impl.write_text(
        "import ctypes, os, sys, time\n"
        "from normspec.oracle import batch_norm\n"
        "def chatty(x, w, b, rm, rv, training, momentum, eps):\n"
        "    print('start epoch 1')\n"
        "    r = batch_norm(x, w, b, rm, rv, training=training, momentum=momentum, eps=eps, convention='torch')\n"
        "    return r.y, r.running_mean, r.running_var\n"
        "def segfault(*a):\n"
        "    ctypes.string_at(0)\n"
        "def exits(*a):\n"
        "    os._exit(3)\n"
        "def hangs(*a):\n"
        "    time.sleep(600)\n"
        "def junk(*a):\n"
        "    return None, 'a', object()\n"
    )
    torch = [c for c in load_cases(vecdir) if c.convention == "torch"]
    chosen = [c.name for c in torch if c.dtype == "float32"][:3] + [c.name for c in torch if c.dtype == "bfloat16"][:1]
    assert any(c.steps > 1 for c in torch if c.name in chosen), "teacher forcing across worker steps is checked"
    args = ["vectors", "check", str(vecdir), *(a for n in chosen for a in ("--case", n))]
    assert main([*args, "--target", f"python:{impl}:chatty"]) == 0  # its print is not the protocol
    assert f"{len(chosen)} exact" in capsys.readouterr().out
    for fn, word in (("segfault", "exit status -11"), ("exits", "exit status 3"), ("junk", "malformed")):
        assert main([*args, "--target", f"python:{impl}:{fn}", "--json"]) == 1, fn
        results = json.loads(capsys.readouterr().out)["results"]
        assert {r["status"] for r in results} == {"crash"} and word in results[0]["worst"], (fn, results[0])
    assert main([*args, "--target", f"python:{impl}:hangs", "--timeout", "2", "--json"]) == 1
    results = json.loads(capsys.readouterr().out)["results"]
    assert "timeout" in results[0]["worst"] and all("not run" in r["worst"] for r in results[1:])
    for bad in ("0", "-1", "nan", "inf"):
        assert main([*args, "--target", f"python:{impl}:chatty", "--timeout", bad]) == 2
        assert "--timeout" in capsys.readouterr().err


def test_torch_target_runs_when_installed(vecdir, capsys):
    pytest.importorskip("torch", reason="torch is an optional extra: pip install 'normspec[torch]'")
    code = main(["vectors", "check", str(vecdir), "--target", "torch", "--json"])
    data = json.loads(capsys.readouterr().out)
    statuses = {r["case"]: r["status"] for r in data["results"]}
    # pytorch#5410 lives on in 2.13 CPU: the constant channel is not exact
    assert statuses["torch-float32-constant_channel"] == "differs"
    beyond = {r["case"]: r["beyond_budget"] for r in data["results"]}
    assert beyond["torch-float32-huge_magnitude"] > 0  # overflowing squares: worse than plain float32 allows
    # cases generated for another convention (torch_raw's n = 1, which torch refuses; onnx_bn15's
    # momentum) are listed as such, not compared: nothing crashes, and differences do not fail
    other = {name for name, status in statuses.items() if status == "other convention"}
    assert other == {c.name for c in load_cases(vecdir) if c.convention != "torch"}, other
    assert "crash" not in statuses.values() and code == 0
    # --follows compares them anyway: torch refuses onnx_bn15's one value per channel, a crash
    assert main(["vectors", "check", str(vecdir), "--target", "torch", "--follows", "onnx_bn15"]) == 1


def test_family_vectors_regenerate_identically_and_check(tmp_path):
    from normspec.spec import CONVENTIONS

    # every affine form (per element, channel, group, none), eps precision and fused residual add
    profiles = tuple(n for n, c in CONVENTIONS.items() if c.layer != "batch_norm")
    a, b = tmp_path / "a", tmp_path / "b"
    generate(a, (), ("float32",), seed=1, family=profiles)
    generate(b, (), ("float32",), seed=1, family=profiles)
    assert _tree(a) == _tree(b)
    factory = resolve_target("oracle")
    results = [check_case(c, factory(c.convention)) for c in load_cases(a)]
    from normspec.vectors.family import family_battery

    # five cases per profile, and the float16/bfloat16 LLM cases for the profiles that store weights as their input
    assert len(results) == sum(len(family_battery(CONVENTIONS[p])) for p in profiles) > 5 * len(profiles)
    assert [r for r in results if r.status != "exact"] == []

    def wrong(x, w, b_, eps, groups):  # eps outside the square root: a different function
        m, v = x.mean(axis=-1, keepdims=True), x.var(axis=-1, keepdims=True)
        return ((x - m) / (np.sqrt(v) + eps) * w + b_).astype(np.float32)

    ln = [c for c in load_cases(a) if c.convention == "torch_layer_norm"]
    assert any(check_case(c, wrong).status != "exact" for c in ln)


@pytest.mark.parametrize(
    ("edit", "message"),
    [
        (lambda m: m["cases"][0].update(training="false"), "training = 'false' is not a bool"),
        (lambda m: m["cases"].__setitem__(0, "a string"), "is a str, not an object"),
        (lambda m: m["cases"][0].pop("name"), "has no 'name'"),
        (lambda m: m["cases"][0].update(momentum="abc"), "momentum = 'abc' is not a int or float"),
        (lambda m: m["cases"][0].update(file=123), "file = 123 is not a str"),
    ],
)
def test_a_manifest_that_breaks_the_schema_is_refused_by_name(vecdir, tmp_path, edit, message, capsys):
    import shutil

    copy = tmp_path / "copy"
    shutil.copytree(vecdir, copy)
    manifest = json.loads((copy / "manifest.json").read_text())
    edit(manifest)
    (copy / "manifest.json").write_text(json.dumps(manifest))
    assert main(["vectors", "check", str(copy), "--target", "oracle"]) == 2
    assert message in capsys.readouterr().err


def test_llm_vectors_carry_exact_gradients_in_their_format(tmp_path):
    """hf_llama_rms_norm cases: dy, dx and dweight in bfloat16 (stored as bits, the manifest
    naming the dtype), equal to the oracle's exact backward; a backward 1 ULP off in one dx
    element is told apart, and a target without a backward says its gradients went unchecked."""
    bf16 = bfloat16_dtype()
    if bf16 is None:
        pytest.skip("bfloat16 needs ml_dtypes: pip install 'normspec[bfloat16]'")
    from normspec.oracle import rms_norm_backward

    generate(tmp_path, (), ("float32",), family=("hf_llama_rms_norm", "torch_layer_norm"))
    manifest = json.loads((tmp_path / "manifest.json").read_text())
    entry = next(e for e in manifest["cases"] if e["name"] == "hf_llama_rms_norm-bfloat16-bf16_rows_4096")
    assert {entry["arrays"][k] for k in ("x", "dy", "dx", "dweight", "y")} == {"bfloat16"}
    cases = {c.name: c for c in load_cases(tmp_path)}
    case = cases["hf_llama_rms_norm-bfloat16-bf16_rows_4096"]
    x, w, dy = case.inputs["x"][0], case.inputs["weight"], case.inputs["dy"][0]
    assert x.dtype == dy.dtype == bf16
    g = rms_norm_backward(x, dy, 1, w, eps=None, convention="hf_llama_rms_norm")
    assert np.array_equal(case.expected["dx"][0].view(np.uint16), g.dx.view(np.uint16))
    assert np.array_equal(case.expected["dweight"][0].view(np.uint16), g.dweight.view(np.uint16))
    assert "dbias" in cases["torch_layer_norm-float32-random"].expected
    oracle = resolve_target("oracle")("hf_llama_rms_norm")
    assert check_case(case, oracle).status == "exact"

    def off_by_one(x, w, b, eps, groups):
        return oracle(x, w, b, eps, groups)

    def backward(x, w, b, eps, groups, dy):
        grads = dict(oracle.backward(x, w, b, eps, groups, dy))
        dx = grads["dx"].copy()
        dx.view(np.uint16).flat[5] += 1  # the next bfloat16 away from zero: 1 ULP
        grads["dx"] = dx
        return grads

    off_by_one.backward = backward
    r = check_case(case, off_by_one)
    assert (r.status, r.max_ulp, r.worst) == ("differs", 1.0, "dx: 1 ULP")
    r = check_case(case, lambda x, w, b, eps, groups: oracle(x, w, b, eps, groups))
    assert r.status == "exact" and r.worst == "gradients not compared (the target has no backward)"


def test_fused_add_vectors_carry_the_residual_stream_and_its_gradient(tmp_path, capsys):
    """fused_add_rms_norm cases: a residual input, the new stream expected (residual_out), and
    dresidual with the exact dx that includes it; a kernel that normalizes x instead of the sum,
    one whose stream is a bfloat16 ULP off, and a backward that drops dresidual are each told
    apart, in process and through the worker that runs user code."""
    bf16 = bfloat16_dtype()
    if bf16 is None:
        pytest.skip("bfloat16 needs ml_dtypes: pip install 'normspec[bfloat16]'")
    from normspec.oracle import rms_norm, rms_norm_backward

    generate(tmp_path, (), ("float32",), family=("fused_add_rms_norm",))
    cases = {c.name: c for c in load_cases(tmp_path)}
    case = cases["fused_add_rms_norm-bfloat16-bf16_rows_4096"]
    inp = case.inputs
    x, r, w = inp["x"][0], inp["residual"][0], inp["weight"]
    assert x.dtype == r.dtype == inp["dresidual"].dtype == case.expected["residual_out"].dtype == bf16
    res = rms_norm(x, 1, w, convention="fused_add_rms_norm", residual=r)
    assert np.array_equal(case.expected["residual_out"][0].view(np.uint16), res.residual.view(np.uint16))
    g = rms_norm_backward(x, inp["dy"][0], 1, w, convention="fused_add_rms_norm", residual=r,
                          dresidual=inp["dresidual"][0])  # fmt: skip
    assert np.array_equal(case.expected["dx"][0].view(np.uint16), g.dx.view(np.uint16))
    oracle = resolve_target("oracle")("fused_add_rms_norm")
    assert all(check_case(c, oracle).status == "exact" for c in cases.values())

    def unfused(x, w, b, eps, groups, residual):
        return rms_norm(x, 1, w, eps=eps, convention="hf_llama_rms_norm").y, oracle(x, w, b, eps, groups, residual)[1]

    def stream_off(x, w, b, eps, groups, residual):
        y, s = oracle(x, w, b, eps, groups, residual)
        s = s.copy()
        s.view(np.uint16).flat[3] += 1
        return y, s

    def no_dresidual(x, w, b, eps, groups, dy, residual, dresidual):
        return oracle.backward(x, w, b, eps, groups, dy, residual, np.zeros_like(dresidual))

    assert check_case(case, unfused).status == "differs"
    assert check_case(case, stream_off).worst.startswith("residual_out: 1 ULP")
    stream_off.backward = no_dresidual
    got = check_case(case, stream_off)
    assert got.status == "differs" and got.worst.startswith("dx: ")
    impl = tmp_path / "impl.py"
    impl.write_text(
        "from normspec.oracle import rms_norm\n"
        "def unfused(x, w, b, eps, groups, residual):\n"
        "    s = rms_norm(x, 1, w, eps=eps, convention='fused_add_rms_norm', residual=residual).residual\n"
        "    return rms_norm(x, 1, w, eps=eps, convention='hf_llama_rms_norm').y, s\n"
        "def fused(x, w, b, eps, groups, residual):\n"
        "    r = rms_norm(x, 1, w, eps=eps, convention='fused_add_rms_norm', residual=residual)\n"
        "    return r.y, r.residual\n"
    )
    args = ["vectors", "check", str(tmp_path), "--case", case.name, "--json"]
    assert main([*args, "--target", f"python:{impl}:fused"]) == 0
    assert json.loads(capsys.readouterr().out)["results"][0]["status"] == "exact"
    main([*args, "--target", f"python:{impl}:unfused"])
    assert json.loads(capsys.readouterr().out)["results"][0]["status"] == "differs"
    # the audit's protocol has no residual stream: it refuses a fused profile by name, pointing here
    assert main(["audit", f"python:{impl}:fused", "--convention", "fused_add_rms_norm"]) == 2
    assert "vectors generate --family" in capsys.readouterr().err
