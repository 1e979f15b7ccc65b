"""Audit adapters for the rest of the family: LayerNorm, RMSNorm, GroupNorm, InstanceNorm.

Each family adapter runs one forward of one layer on a case (``x``, ``weight``,
``bias``, ``eps``, and ``groups`` for GroupNorm) in the same worker processes
as the BatchNorm targets (:mod:`normspec.targets.worker`), and returns ``y``.
:mod:`normspec.targets.family` judges the results; ``FAMILY_ADAPTERS`` is
importable from there too.  The workers in the targets' own venvs import this
module without SymPy or mpmath: NumPy and :mod:`normspec.targets.base` only.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import numpy as np
from normspec.targets.base import Adapter

__all__ = ["FAMILY_ADAPTERS"]

F32 = np.float32
Case = dict[str, Any]


def _y(y: Any) -> dict[str, np.ndarray]:
    arr = np.asarray(y)[None]
    return {"y": arr, "running_mean": np.zeros((1, 1), F32), "running_var": np.ones((1, 1), F32)}


def _tensor(a: np.ndarray) -> Any:
    """A torch tensor of a host array; bfloat16 (ml_dtypes) travels as its bits."""
    import torch

    a = np.ascontiguousarray(a)
    if a.dtype.name == "bfloat16":
        return torch.from_numpy(a.view(np.int16)).view(torch.bfloat16)
    return torch.from_numpy(a)


def _host(t: Any, like: np.ndarray) -> np.ndarray:
    """A torch tensor back on the host; bfloat16 as ``like``'s bfloat16 dtype."""
    import torch

    t = t.detach().cpu()
    if t.dtype == torch.bfloat16:
        return np.asarray(t.view(torch.int16).numpy().view(like.dtype))
    return np.asarray(t.numpy())


def _torch(layer: str) -> Callable[[Case], dict[str, np.ndarray]]:
    def run(case: Case) -> dict[str, np.ndarray]:
        import torch.nn.functional as F  # noqa: N812 - torch's spelling

        x = _tensor(case["x"][0])
        w, b, eps = _tensor(case["weight"]), _tensor(case["bias"]), float(case["eps"])
        if layer == "layer_norm":
            y = F.layer_norm(x, (x.shape[-1],), w, b, eps)
        elif layer == "rms_norm":
            y = F.rms_norm(x, (x.shape[-1],), w, None if np.isnan(eps) else eps)
        elif layer == "group_norm":
            y = F.group_norm(x, int(case["groups"]), w, b, eps)
        else:
            y = F.instance_norm(x, eps=eps)
        return _y(_host(y, case["x"]))

    return run


def _transformers(module: str, name: str) -> Callable[[Case], dict[str, np.ndarray]]:
    """A Hugging Face RMSNorm module itself, in the case's dtype (bfloat16 as a model loads it)."""

    def run(case: Case) -> dict[str, np.ndarray]:
        import importlib

        import torch

        cls = getattr(importlib.import_module(f"transformers.models.{module}"), name)
        x, w = np.ascontiguousarray(case["x"][0]), np.asarray(case["weight"])
        eps = float(case["eps"])
        layer = cls(x.shape[-1], eps=1e-6 if np.isnan(eps) else eps).to(_tensor(x).dtype)
        with torch.no_grad():
            layer.weight.copy_(_tensor(w))
            y = layer(_tensor(x))
        return _y(_host(y, x))

    return run


def _gpu_rms_norm(kind: str) -> Callable[[Case], dict[str, np.ndarray]]:
    """A GPU RMSNorm kernel from its Python package, on CUDA tensors in the case's dtype; the output
    comes back to the host (bfloat16 as its bits)."""

    def run(case: Case) -> dict[str, np.ndarray]:
        import torch

        x, w = np.ascontiguousarray(case["x"][0]), np.asarray(case["weight"])
        eps = float(case["eps"])
        eps = 1e-6 if np.isnan(eps) else eps
        xt, wt = _tensor(x).to("cuda").contiguous(), _tensor(w).to("cuda").contiguous()
        if kind == "liger":  # LigerRMSNormFunction.apply(X, W, eps, offset, casting_mode, in_place)
            from liger_kernel.ops.rms_norm import LigerRMSNormFunction

            y = LigerRMSNormFunction.apply(xt, wt, eps, 0.0, "llama", False)
        elif kind == "vllm":  # vllm._custom_ops.rms_norm(out, input, weight, epsilon), into out
            from vllm import _custom_ops as ops

            y = torch.empty_like(xt)
            ops.rms_norm(y, xt, wt, eps)
        else:  # flashinfer.norm.rmsnorm(input, weight, eps)
            import flashinfer

            y = flashinfer.norm.rmsnorm(xt, wt, eps)
        torch.cuda.synchronize()
        return _y(_host(y, x))

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


def _flax(layer: str, x_dtype: bool = False) -> Callable[[Case], dict[str, np.ndarray]]:
    """flax.linen LayerNorm / RMSNorm; ``x_dtype``: with ``dtype=x.dtype`` (y in x's dtype, float32
    parameters), else flax's default (y in the promoted dtype)."""

    def run(case: Case) -> dict[str, np.ndarray]:
        import jax.numpy as jnp
        from flax import linen as nn

        x = jnp.asarray(case["x"][0])
        eps = float(case["eps"])
        dtype = x.dtype if x_dtype else None
        mod: Any
        if layer == "layer_norm":
            mod = nn.LayerNorm(epsilon=eps, dtype=dtype)
            params = {"params": {"scale": jnp.asarray(case["weight"]), "bias": jnp.asarray(case["bias"])}}
        else:
            mod = nn.RMSNorm(epsilon=eps, dtype=dtype)
            params = {"params": {"scale": jnp.asarray(case["weight"])}}
        return _y(np.asarray(mod.apply(params, x)))

    return run


def _policy(x: np.ndarray) -> str:
    """The Keras dtype policy a model on these inputs runs under: mixed for 16-bit activations."""
    return {"bfloat16": "mixed_bfloat16", "float16": "mixed_float16"}.get(x.dtype.name, x.dtype.name)


def _keras_mixed(layer: str) -> Callable[[Case], dict[str, np.ndarray]]:
    """Keras 3 RMSNormalization / LayerNormalization under the mixed policy of x's dtype (its float32
    variables hold the case's float32 parameters)."""

    def run(case: Case) -> dict[str, np.ndarray]:
        import keras

        x = case["x"][0]
        lay: Any
        if layer == "rms_norm":
            lay = keras.layers.RMSNormalization(axis=-1, epsilon=float(case["eps"]), dtype=_policy(x))
            lay.build(x.shape)
            lay.set_weights([case["weight"]])
        else:
            lay = keras.layers.LayerNormalization(axis=-1, epsilon=float(case["eps"]), dtype=_policy(x))
            lay.build(x.shape)
            lay.set_weights([case["weight"], case["bias"]])
        return _y(keras.ops.convert_to_numpy(lay(x)))

    return run


def _onnx(layer: str, runtime: str) -> Callable[[Case], dict[str, np.ndarray]]:
    def run(case: Case) -> dict[str, np.ndarray]:
        from onnx import TensorProto, helper

        x = case["x"][0]
        f = {"float16": TensorProto.FLOAT16, "bfloat16": TensorProto.BFLOAT16}.get(x.dtype.name, TensorProto.FLOAT)
        if layer == "rms_norm":  # opset 23, stash_type 1 (its default): Scale in X's type
            node = helper.make_node("RMSNormalization", ["X", "scale"], ["Y"], axis=-1, epsilon=float(case["eps"]))
            opset, pshape = 23, [x.shape[-1]]
        elif layer == "layer_norm":
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
        inputs = ["X", "scale"] if layer == "rms_norm" else ["X", "scale", "B"]
        graph = helper.make_graph(
            [node],
            "family",
            [helper.make_tensor_value_info(n, f, list(x.shape) if n == "X" else pshape) for n in inputs],
            [helper.make_tensor_value_info("Y", f, list(x.shape))],
        )
        model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", opset)])
        model.ir_version = 10
        feeds = dict(zip(inputs, (x, case["weight"], case["bias"]), strict=False))
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
    algorithm: str | None = None,
    needs_gpu: bool = False,
) -> Adapter:
    return Adapter(
        name, convention, library, run, description, env, venv=venv, algorithm=algorithm, needs_gpu=needs_gpu
    )


FAMILY_ADAPTERS: dict[str, Adapter] = {
    a.name: a
    for a in [
        _a("torch_layer_norm", "torch_layer_norm", "torch", _torch("layer_norm"), "torch F.layer_norm, CPU"),
        _a("torch_rms_norm", "torch_rms_norm", "torch", _torch("rms_norm"), "torch F.rms_norm, CPU"),
        _a("torch_group_norm", "torch_group_norm", "torch", _torch("group_norm"), "torch F.group_norm, CPU"),
        _a(
            "hf_llama_rms_norm",
            "hf_llama_rms_norm",
            "transformers",
            _transformers("llama.modeling_llama", "LlamaRMSNorm"),
            "transformers LlamaRMSNorm, in the input's dtype (CPU)",
        ),
        _a(
            "liger_rms_norm",
            "liger_rms_norm_llama",
            "liger_kernel",
            _gpu_rms_norm("liger"),
            "Liger-Kernel LigerRMSNormFunction, casting_mode='llama', offset 0 (CUDA GPU only)",
            needs_gpu=True,
        ),
        _a(
            "vllm_rms_norm",
            "hf_llama_rms_norm",
            "vllm",
            _gpu_rms_norm("vllm"),
            "vLLM's CUDA rms_norm (vllm._custom_ops.rms_norm; CUDA GPU only)",
            needs_gpu=True,
        ),
        _a(
            "flashinfer_rms_norm",
            "flashinfer_rms_norm",
            "flashinfer",
            _gpu_rms_norm("flashinfer"),
            "FlashInfer flashinfer.norm.rmsnorm (CUDA GPU only)",
            needs_gpu=True,
        ),
        _a(
            "hf_gemma_rms_norm",
            "gemma_rms_norm",
            "transformers",
            _transformers("gemma.modeling_gemma", "GemmaRMSNorm"),
            "transformers GemmaRMSNorm, in the input's dtype (CPU)",
        ),
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
            algorithm="raw_moments_float32",
        ),
        _a(
            "keras_group_norm",
            "keras3_group_norm",
            "keras",
            _keras("group_norm"),
            "Keras 3 GroupNormalization, NumPy",
            (("KERAS_BACKEND", "numpy"),),
            algorithm="raw_moments_float32",
        ),
        _a(
            "keras_torch_layer_norm",
            "keras3_layer_norm",
            "keras",
            _keras("layer_norm"),
            "Keras 3 LayerNormalization, torch backend",
            (("KERAS_BACKEND", "torch"),),
            algorithm="raw_moments_float32",
        ),
        _a(
            "keras_torch_group_norm",
            "keras3_group_norm",
            "keras",
            _keras("group_norm"),
            "Keras 3 GroupNormalization, torch backend",
            (("KERAS_BACKEND", "torch"),),
            algorithm="raw_moments_float32",
        ),
        _a(
            "flax_layer_norm",
            "flax_layer_norm",
            "flax",
            _flax("layer_norm"),
            "flax.linen.LayerNorm (jax CPU)",
            (("JAX_PLATFORMS", "cpu"),),
            algorithm="flax_fast_variance",
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
            "flax_rms_norm_dtype",
            "flax_rms_norm_dtype",
            "flax",
            _flax("rms_norm", x_dtype=True),
            "flax.linen.RMSNorm(dtype=x.dtype), float32 parameters (jax CPU)",
            (("JAX_PLATFORMS", "cpu"),),
        ),
        _a(
            "flax_layer_norm_dtype",
            "flax_layer_norm_dtype",
            "flax",
            _flax("layer_norm", x_dtype=True),
            "flax.linen.LayerNorm(dtype=x.dtype), float32 parameters (jax CPU)",
            (("JAX_PLATFORMS", "cpu"),),
            algorithm="flax_fast_variance",
        ),
        _a(
            "keras_rms_norm_mixed",
            "keras3_rms_norm_mixed",
            "keras",
            _keras_mixed("rms_norm"),
            "Keras 3 RMSNormalization, mixed policy of the input's dtype, NumPy",
            (("KERAS_BACKEND", "numpy"),),
        ),
        _a(
            "keras_layer_norm_mixed",
            "keras3_layer_norm_mixed",
            "keras",
            _keras_mixed("layer_norm"),
            "Keras 3 LayerNormalization, mixed policy of the input's dtype, NumPy",
            (("KERAS_BACKEND", "numpy"),),
            algorithm="raw_moments_float32",
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
            "onnx_reference_rms_norm23",
            "onnx_rms_norm23_cast",
            "onnx",
            _onnx("rms_norm", "reference"),
            "onnx.reference RMSNormalization-23",
        ),
        _a(
            "onnxruntime_rms_norm23",
            "onnx_rms_norm23_cast",
            "onnxruntime",
            _onnx("rms_norm", "ort"),
            "onnxruntime RMSNormalization-23, CPU",
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
            algorithm="flax_fast_variance",
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
