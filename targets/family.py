"""Audit targets for the rest of the family: LayerNorm, RMSNorm, GroupNorm, InstanceNorm.

Each family adapter runs one forward of one layer on a case (``x``, ``weight``,
``bias``, ``eps``, and ``groups`` for GroupNorm) in the same worker processes
as the BatchNorm targets (:mod:`normspec.targets.worker`), and returns ``y``.
:func:`run_family_audit` compares with the oracle (``layer_norm``,
``rms_norm``, ``group_norm``, ``instance_norm``) under the profile the target
claims (:mod:`normspec.spec.family_conventions`).
"""

from __future__ import annotations

import tempfile
import time
from collections.abc import Callable
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np
from normspec.targets.adapters import Adapter

if TYPE_CHECKING:  # the workers in the targets' own venvs import this module without SymPy or mpmath
    from normspec.spec.family_conventions import FamilyConvention

__all__ = ["FAMILY_ADAPTERS", "exact_family_output", "family_battery", "reproduce_family_case", "run_family_audit"]

F32 = np.float32
Case = dict[str, Any]


def _y(y: Any) -> dict[str, np.ndarray]:
    arr = np.asarray(y)[None]
    return {"y": arr, "running_mean": np.zeros((1, 1), F32), "running_var": np.ones((1, 1), F32)}


def _torch(layer: str) -> Callable[[Case], dict[str, np.ndarray]]:
    def run(case: Case) -> dict[str, np.ndarray]:
        import torch
        import torch.nn.functional as F  # noqa: N812 - torch's spelling

        x = torch.from_numpy(np.ascontiguousarray(case["x"][0]))
        w, b, eps = torch.from_numpy(case["weight"]), torch.from_numpy(case["bias"]), float(case["eps"])
        if layer == "layer_norm":
            y = F.layer_norm(x, (x.shape[-1],), w, b, eps)
        elif layer == "rms_norm":
            y = F.rms_norm(x, (x.shape[-1],), w, None if np.isnan(eps) else eps)
        elif layer == "group_norm":
            y = F.group_norm(x, int(case["groups"]), w, b, eps)
        else:
            y = F.instance_norm(x, eps=eps)
        return _y(y.numpy())

    return run


def _keras(layer: str) -> Callable[[Case], dict[str, np.ndarray]]:
    def run(case: Case) -> dict[str, np.ndarray]:
        import keras

        x = case["x"][0]
        if layer == "layer_norm":
            lay = keras.layers.LayerNormalization(axis=-1, epsilon=float(case["eps"]))
            lay.build(x.shape)
            lay.set_weights([case["weight"], case["bias"]])
        else:
            lay = keras.layers.GroupNormalization(groups=int(case["groups"]), axis=1, epsilon=float(case["eps"]))
            lay.build(x.shape)
            lay.set_weights([case["weight"], case["bias"]])
        return _y(keras.ops.convert_to_numpy(lay(x)))

    return run


def _flax(layer: str) -> Callable[[Case], dict[str, np.ndarray]]:
    def run(case: Case) -> dict[str, np.ndarray]:
        import jax.numpy as jnp
        from flax import linen as nn

        x = jnp.asarray(case["x"][0])
        eps = float(case["eps"])
        mod: Any
        if layer == "layer_norm":
            mod = nn.LayerNorm(epsilon=eps)
            params = {"params": {"scale": jnp.asarray(case["weight"]), "bias": jnp.asarray(case["bias"])}}
        else:
            mod = nn.RMSNorm(epsilon=eps)
            params = {"params": {"scale": jnp.asarray(case["weight"])}}
        return _y(np.asarray(mod.apply(params, x)))

    return run


def _onnx(layer: str, runtime: str) -> Callable[[Case], dict[str, np.ndarray]]:
    def run(case: Case) -> dict[str, np.ndarray]:
        from onnx import TensorProto, helper

        x = case["x"][0]
        f = TensorProto.FLOAT
        if layer == "layer_norm":
            node = helper.make_node(
                "LayerNormalization", ["X", "scale", "B"], ["Y"], axis=-1, epsilon=float(case["eps"])
            )
            opset, pshape = 17, [x.shape[-1]]
        elif layer == "instance_norm":
            node = helper.make_node("InstanceNormalization", ["X", "scale", "B"], ["Y"], epsilon=float(case["eps"]))
            opset, pshape = 17, [x.shape[1]]  # InstanceNormalization-6 is current at opset 17
        else:
            node = helper.make_node(
                "GroupNormalization",
                ["X", "scale", "B"],
                ["Y"],
                num_groups=int(case["groups"]),
                epsilon=float(case["eps"]),
            )
            opset, pshape = 21, [x.shape[1]]
        graph = helper.make_graph(
            [node],
            "family",
            [
                helper.make_tensor_value_info("X", f, list(x.shape)),
                helper.make_tensor_value_info("scale", f, pshape),
                helper.make_tensor_value_info("B", f, pshape),
            ],
            [helper.make_tensor_value_info("Y", f, list(x.shape))],
        )
        model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", opset)])
        model.ir_version = 10
        feeds = {"X": x, "scale": case["weight"], "B": case["bias"]}
        if runtime == "reference":
            from onnx.reference import ReferenceEvaluator

            outputs: Any = ReferenceEvaluator(model).run(None, feeds)
            out = outputs[0]
        else:
            import onnxruntime as ort

            out = ort.InferenceSession(model.SerializeToString(), providers=["CPUExecutionProvider"]).run(None, feeds)[
                0
            ]
        return _y(np.asarray(out))

    return run


def _flax_group_norm(case: Case) -> dict[str, np.ndarray]:
    import jax.numpy as jnp
    from flax import linen as nn

    x = jnp.asarray(np.moveaxis(case["x"][0], 1, -1))  # Flax normalizes channels-last
    mod = nn.GroupNorm(num_groups=int(case["groups"]), epsilon=float(case["eps"]))
    params = {"params": {"scale": jnp.asarray(case["weight"]), "bias": jnp.asarray(case["bias"])}}
    return _y(np.moveaxis(np.asarray(mod.apply(params, x)), -1, 1))


def _tf_keras(layer: str) -> Callable[[Case], dict[str, np.ndarray]]:
    def run(case: Case) -> dict[str, np.ndarray]:
        import tf_keras

        x = case["x"][0]
        eps = float(case["eps"])
        lay: Any
        if layer == "layer_norm":
            lay = tf_keras.layers.LayerNormalization(axis=-1, epsilon=eps)
        else:
            lay = tf_keras.layers.GroupNormalization(groups=int(case["groups"]), axis=1, epsilon=eps)
        lay.build(x.shape)
        lay.set_weights([case["weight"], case["bias"]])
        return _y(np.asarray(lay(x)))

    return run


def _paddle(layer: str) -> Callable[[Case], dict[str, np.ndarray]]:
    def run(case: Case) -> dict[str, np.ndarray]:
        import paddle
        import paddle.nn.functional as F  # noqa: N812 - Paddle's own spelling

        paddle.set_device("cpu")
        x = paddle.to_tensor(case["x"][0])
        w, b, eps = paddle.to_tensor(case["weight"]), paddle.to_tensor(case["bias"]), float(case["eps"])
        if layer == "layer_norm":
            y = F.layer_norm(x, [x.shape[-1]], w, b, epsilon=eps)
        elif layer == "group_norm":
            y = F.group_norm(x, int(case["groups"]), epsilon=eps, weight=w, bias=b, data_format="NCL")
        else:
            y = F.instance_norm(x, weight=w, bias=b, eps=eps, data_format="NCL")
        return _y(y.numpy())

    return run


def _mxnet(layer: str) -> Callable[[Case], dict[str, np.ndarray]]:
    def run(case: Case) -> dict[str, np.ndarray]:
        import mxnet as mx

        x, w, b = (mx.nd.array(case[k][0] if k == "x" else case[k]) for k in ("x", "weight", "bias"))
        eps = float(case["eps"])
        if layer == "layer_norm":
            y = mx.nd.LayerNorm(x, w, b, axis=-1, eps=eps)
        elif layer == "group_norm":
            y = mx.nd.GroupNorm(x, w, b, num_groups=int(case["groups"]), eps=eps)
        else:
            y = mx.nd.InstanceNorm(x, w, b, eps=eps)
        return _y(y.asnumpy())

    return run


def _kernels(layer: str) -> Callable[[Case], dict[str, np.ndarray]]:
    def run(case: Case) -> dict[str, np.ndarray]:
        from normspec.kernels import layer_norm as k_ln
        from normspec.kernels import rms_norm as k_rms

        x = case["x"][0]
        if layer == "layer_norm":
            return _y(k_ln(x, 1, case["weight"], case["bias"], eps=float(case["eps"])))
        eps = float(case["eps"])
        return _y(k_rms(x, 1, case["weight"], eps=None if np.isnan(eps) else eps))

    return run


def _a(
    name: str,
    convention: str,
    library: str,
    run: Callable[[Case], Any],
    description: str,
    env: tuple[tuple[str, str], ...] = (),
    venv: str | None = None,
) -> Adapter:
    return Adapter(name, convention, library, run, description, env, venv=venv)


FAMILY_ADAPTERS: dict[str, Adapter] = {
    a.name: a
    for a in [
        _a("torch_layer_norm", "torch_layer_norm", "torch", _torch("layer_norm"), "torch F.layer_norm, CPU"),
        _a("torch_rms_norm", "torch_rms_norm", "torch", _torch("rms_norm"), "torch F.rms_norm, CPU"),
        _a("torch_group_norm", "torch_group_norm", "torch", _torch("group_norm"), "torch F.group_norm, CPU"),
        _a(
            "torch_instance_norm", "torch_instance_norm", "torch", _torch("instance_norm"), "torch F.instance_norm, CPU"
        ),
        _a(
            "keras_layer_norm",
            "keras3_layer_norm",
            "keras",
            _keras("layer_norm"),
            "Keras 3 LayerNormalization, NumPy",
            (("KERAS_BACKEND", "numpy"),),
        ),
        _a(
            "keras_group_norm",
            "keras3_group_norm",
            "keras",
            _keras("group_norm"),
            "Keras 3 GroupNormalization, NumPy",
            (("KERAS_BACKEND", "numpy"),),
        ),
        _a(
            "flax_layer_norm",
            "flax_layer_norm",
            "flax",
            _flax("layer_norm"),
            "flax.linen.LayerNorm (jax CPU)",
            (("JAX_PLATFORMS", "cpu"),),
        ),
        _a(
            "flax_rms_norm",
            "flax_rms_norm",
            "flax",
            _flax("rms_norm"),
            "flax.linen.RMSNorm (jax CPU)",
            (("JAX_PLATFORMS", "cpu"),),
        ),
        _a(
            "onnx_reference_layer_norm17",
            "onnx_layer_norm17",
            "onnx",
            _onnx("layer_norm", "reference"),
            "onnx.reference LayerNormalization-17",
        ),
        _a(
            "onnxruntime_layer_norm17",
            "onnx_layer_norm17",
            "onnxruntime",
            _onnx("layer_norm", "ort"),
            "onnxruntime LayerNormalization-17",
        ),
        _a(
            "onnx_reference_group_norm21",
            "onnx_group_norm21",
            "onnx",
            _onnx("group_norm", "reference"),
            "onnx.reference GroupNormalization-21",
        ),
        _a(
            "flax_group_norm",
            "flax_group_norm",
            "flax",
            _flax_group_norm,
            "flax.linen.GroupNorm (jax CPU)",
            (("JAX_PLATFORMS", "cpu"),),
        ),
        _a(
            "onnx_reference_instance_norm",
            "onnx_instance_norm",
            "onnx",
            _onnx("instance_norm", "reference"),
            "onnx.reference InstanceNormalization-6",
        ),
        _a(
            "onnxruntime_instance_norm",
            "onnx_instance_norm",
            "onnxruntime",
            _onnx("instance_norm", "ort"),
            "onnxruntime InstanceNormalization-6",
        ),
        _a(
            "onnxruntime_group_norm21",
            "onnx_group_norm21",
            "onnxruntime",
            _onnx("group_norm", "ort"),
            "onnxruntime GroupNormalization-21",
        ),
        _a(
            "tf_keras_layer_norm",
            "tf_keras2_layer_norm",
            "tf_keras",
            _tf_keras("layer_norm"),
            "tf_keras 2 LayerNormalization (TensorFlow CPU, own venv)",
            venv="tf",
        ),
        _a(
            "tf_keras_group_norm",
            "tf_keras2_group_norm",
            "tf_keras",
            _tf_keras("group_norm"),
            "tf_keras 2 GroupNormalization (TensorFlow CPU, own venv)",
            venv="tf",
        ),
        _a(
            "paddle_layer_norm",
            "paddle_layer_norm",
            "paddle",
            _paddle("layer_norm"),
            "paddle F.layer_norm, CPU (own venv)",
            venv="paddle",
        ),
        _a(
            "paddle_group_norm",
            "paddle_group_norm",
            "paddle",
            _paddle("group_norm"),
            "paddle F.group_norm, CPU (own venv)",
            venv="paddle",
        ),
        _a(
            "paddle_instance_norm",
            "paddle_instance_norm",
            "paddle",
            _paddle("instance_norm"),
            "paddle F.instance_norm, CPU (own venv)",
            venv="paddle",
        ),
        _a(
            "mxnet_layer_norm",
            "mxnet_layer_norm",
            "mxnet",
            _mxnet("layer_norm"),
            "mxnet.nd.LayerNorm 1.9.1, CPU (own venv)",
            venv="mxnet",
        ),
        _a(
            "mxnet_group_norm",
            "mxnet_group_norm",
            "mxnet",
            _mxnet("group_norm"),
            "mxnet.nd.GroupNorm 1.9.1, CPU (own venv)",
            venv="mxnet",
        ),
        _a(
            "mxnet_instance_norm",
            "mxnet_instance_norm",
            "mxnet",
            _mxnet("instance_norm"),
            "mxnet.nd.InstanceNorm 1.9.1, CPU (own venv)",
            venv="mxnet",
        ),
        _a("kernels_layer_norm", "torch_layer_norm", "numba", _kernels("layer_norm"), "normspec.kernels.layer_norm"),
        _a("kernels_rms_norm", "torch_rms_norm", "numba", _kernels("rms_norm"), "normspec.kernels.rms_norm"),
    ]
}


def per_channel_affine(weight: Any, bias: Any, channels: int, groups: int) -> tuple[np.ndarray, np.ndarray]:
    """Scale and bias given one per group (ONNX GroupNormalization-18, MXNet 1.9) repeated over each
    group's channels: the same formula in the per-channel form the oracle takes."""
    return np.repeat(weight, channels // groups), np.repeat(bias, channels // groups)


def exact_family_output(conv: FamilyConvention, case: Case) -> np.ndarray:
    """The correctly rounded y of a battery case under ``conv`` (its eps precision and affine form)."""
    from normspec.oracle import group_norm, layer_norm, rms_norm

    x, w, b = case["x"][0], case["weight"], case["bias"]
    eps = float(case["eps"])
    if conv.eps_cast == "float32":
        eps = float(F32(eps))
    if conv.layer == "layer_norm":
        return layer_norm(x, 1, w, b, eps=eps)
    if conv.layer == "rms_norm":
        return rms_norm(x, 1, w, eps=None if np.isnan(eps) else eps)
    groups = int(case["groups"]) if conv.layer == "group_norm" else x.shape[1]  # InstanceNorm: C groups
    if conv.affine == "per_group":
        w, b = per_channel_affine(w, b, x.shape[1], groups)
    return group_norm(x, groups, w, b, eps=eps).y  # affine "none" cases carry weight 1 and bias 0


def family_battery(conv: FamilyConvention, seed: int = 0) -> list[tuple[str, Case, str]]:
    """(name, case, note) for a family layer."""
    rng = np.random.default_rng(seed)
    eps = float("nan") if conv.eps_default is None else conv.eps_default  # NaN stands for "eps=None"
    nd = conv.layer in ("group_norm", "instance_norm")
    shape = (4, 6, 5) if nd else (6, 8)
    feat = shape[1] if nd else shape[-1]
    rows: list[tuple[str, np.ndarray, str]] = [
        ("random", rng.standard_normal(shape), "standard normal"),
        ("large_mean_rows", rng.standard_normal(shape) + 2000, "pytorch#51102: mean 2000"),
        (
            "raw_moments_trigger",
            np.broadcast_to(40000 + np.arange(shape[-1]) % 4, shape).astype(np.float64),
            "onnxruntime#28463, tvm#19592: [40000, 40001, 40002, 40003]",
        ),
        ("constant", np.full(shape, 1.2345678e7), "exact output beta"),
        ("huge_magnitude", rng.choice([-1.0, 1.0], shape) * 1e30 * (1 + rng.random(shape)), "squares overflow float32"),
    ]
    out = []
    for name, x, note in rows:
        case = {
            "x": x.astype(F32)[None],
            "weight": (1 + 0.5 * rng.standard_normal(feat)).astype(F32),
            "bias": rng.standard_normal(feat).astype(F32),
            "eps": np.array(eps),
            "training": np.array(True),
            "momentum": np.array(0.0),
            "running_mean": np.zeros(feat, F32),
            "running_var": np.ones(feat, F32),
            "groups": np.array(2 if conv.layer == "group_norm" else 1),
        }
        if conv.affine == "none":
            case["weight"], case["bias"] = np.ones(feat, F32), np.zeros(feat, F32)
        elif conv.affine == "per_group":
            case["weight"], case["bias"] = case["weight"][: int(case["groups"])], case["bias"][: int(case["groups"])]
        out.append((name, case, note))
    return out


def _judge(
    target: str,
    conv: FamilyConvention,
    battery: list[tuple[str, Case, str]],
    timeout: float,
    progress: Callable[[int], None] | None,
) -> tuple[list[dict[str, Any]], list[dict[str, Any]], list[Any]]:
    """Run ``battery`` on ``target`` (in its worker process) and compare with the oracle: rows, findings, cases."""
    from normspec.oracle import ulp_distance
    from normspec.targets.audit import AuditCase, run_cases

    cases = [
        AuditCase(
            name,
            "family",
            case["x"],
            case["weight"],
            case["bias"],
            case["running_mean"],
            case["running_var"],
            True,
            0.0,
            float(case["eps"]),
            note,
            extra={"groups": case["groups"]},
        )
        for name, case, note in battery
    ]
    with tempfile.TemporaryDirectory(prefix="normspec-family-") as tmp:
        outcomes = run_cases(target, cases, timeout, Path(tmp), progress)
    rows, findings = [], []
    for (name, case, note), ac in zip(battery, cases, strict=True):
        out = outcomes[ac.name]
        row: dict[str, Any] = {"case": name, "status": out.status, "note": note}
        if out.status in ("crash", "timeout"):
            findings.append({"kind": "crash", "case": name, "message": out.message})
        elif out.status == "refused":
            row["message"] = out.message
            findings.append({"kind": "convention", "case": name, "message": f"refused: {out.message[:200]}"})
        elif out.result is not None:
            want = exact_family_output(conv, case)
            got = np.asarray(out.result["y"][0]).astype(want.dtype)
            with np.errstate(invalid="ignore", over="ignore"):
                d = ulp_distance(got, want)
            finite = np.isfinite(want)
            row["max_ulp"] = float(d[finite].max()) if finite.any() else 0.0
            row["correctly_rounded"] = float(np.mean(d == 0))
            if finite.any():
                w = np.unravel_index(int(np.argmax(np.where(finite, np.nan_to_num(d, nan=np.inf), -1))), d.shape)
                x0 = case["x"][0]
                row["worst"] = {
                    "index": [int(v) for v in w],
                    "x": float(x0[w]),
                    "exact": float(want[w]),
                    "observed": float(got[w]),
                }
            bad = finite & ~np.isfinite(got)
            if bad.any():
                i = tuple(int(v) for v in np.argwhere(bad)[0])
                findings.append(
                    {
                        "kind": "non-finite",
                        "case": name,
                        "message": f"y{list(i)} = {got[i]!r} where the exact value is {want[i]!r}",
                    }
                )
        rows.append(row)
    return rows, findings, cases


_REPRO = '''"""Reproducer for normspec audit finding: {case} on {target} (convention {convention}).

Run from this folder: python repro.py
"""
from normspec.targets.family import reproduce_family_case

reproduce_family_case("case.npz", {target!r}, {convention!r})
'''


def reproduce_family_case(path: str | Path, target: str, convention: str) -> dict[str, Any]:
    """Run one saved family case (a reproducer's ``case.npz``) on ``target``; print and return its row."""
    from normspec.spec.family_conventions import get_family_convention

    with np.load(path, allow_pickle=False) as data:
        case = {k: data[k] for k in data.files}
    rows, findings, _ = _judge(target, get_family_convention(convention), [("case", case, "")], 120.0, None)
    row = rows[0]
    print(f"{target} under {convention}: {row['status']}, max {row.get('max_ulp', float('nan')):.3g} ULP")
    if "worst" in row:
        w = row["worst"]
        print(f"worst element {tuple(w['index'])}: x = {w['x']!r}, exact {w['exact']!r}, observed {w['observed']!r}")
    for f in findings:
        print(f"[{f['kind']}] {f['message']}")
    return row


def run_family_audit(
    target: str,
    convention: str | None = None,
    *,
    timeout: float = 120.0,
    progress: Callable[[int], None] | None = None,
    reproducers: Path | None = None,
) -> dict[str, Any]:
    """Run the family battery on ``target``; returns the report as a dict (same shape as the BatchNorm audit's).

    With ``reproducers``, each finding gets a folder there (``case.npz`` and ``repro.py``)."""
    from normspec.spec.family_conventions import get_family_convention

    adapter = FAMILY_ADAPTERS[target]
    conv = get_family_convention(convention or adapter.convention)
    t0 = time.perf_counter()
    rows, findings, cases = _judge(target, conv, family_battery(conv), timeout, progress)
    if reproducers is not None:
        by_name = {c.name: c for c in cases}
        safe = "".join(ch if ch.isalnum() or ch in "-_" else "_" for ch in target)
        for f in findings:
            folder = Path(reproducers) / safe / f["case"]
            folder.mkdir(parents=True, exist_ok=True)
            np.savez(folder / "case.npz", **by_name[f["case"]].arrays())
            (folder / "repro.py").write_text(_REPRO.format(case=f["case"], target=target, convention=conv.name))
            f["reproducer"] = str(folder)
    return {
        "target": target,
        "convention": conv.name,
        "layer": conv.layer,
        "description": adapter.description,
        "cases": rows,
        "findings": findings,
        "seconds": round(time.perf_counter() - t0, 2),
    }
