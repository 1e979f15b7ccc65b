"""Adapters: one per real implementation, each driving the library itself.

An adapter runs a *case* (a short sequence of BatchNorm steps on one layer,
its running statistics carried from step to step) and returns what the
library produced.  Adapters run inside :mod:`normspec.targets.worker`, one
process per case, so a crash or a hang in a library never reaches the
auditor.  Each knows the convention profile its library claims.

Case keys: ``x`` (steps, N, C, ...), ``weight``, ``bias``, ``running_mean``,
``running_var`` (C,), ``training`` (bool), ``momentum`` and ``eps`` (in the
meaning of the claimed convention), ``axis`` (the channel axis, 1).
Result keys: ``y`` (steps, ...), ``running_mean``, ``running_var`` (steps, C).
"""

from __future__ import annotations

import os
from collections.abc import Callable
from typing import Any

import numpy as np
from normspec.targets.base import Adapter, Case, Result

from normspec._load import load_callable

__all__ = ["Adapter", "ADAPTERS", "get_adapter"]


def _stack(ys: list[Any], rms: list[Any], rvs: list[Any]) -> Result:
    return {
        "y": np.stack([np.asarray(v) for v in ys]),
        "running_mean": np.stack([np.asarray(v) for v in rms]),
        "running_var": np.stack([np.asarray(v) for v in rvs]),
    }


def _run_protocol(fn: Callable[..., Any], case: Case) -> Result:
    rm, rv = case["running_mean"].copy(), case["running_var"].copy()
    ys, rms, rvs = [], [], []
    for x in case["x"]:
        y, rm, rv = fn(
            x.copy(),
            case["weight"].copy(),
            case["bias"].copy(),
            np.asarray(rm).copy(),
            np.asarray(rv).copy(),
            bool(case["training"]),
            float(case["momentum"]),
            float(case["eps"]),
        )
        ys.append(y)
        rms.append(rm)
        rvs.append(rv)
    return _stack(ys, rms, rvs)


# ---------------------------------------------------------------- PyTorch


def _torch(case: Case, raw: bool = False) -> Result:
    import torch

    rm, rv = torch.tensor(case["running_mean"]), torch.tensor(case["running_var"])
    w, b = torch.tensor(case["weight"]), torch.tensor(case["bias"])
    ys, rms, rvs = [], [], []
    for x in case["x"]:
        xt = torch.from_numpy(np.ascontiguousarray(x))
        if raw:
            y = torch.batch_norm(
                xt, w, b, rm, rv, bool(case["training"]), float(case["momentum"]), float(case["eps"]), False
            )
        else:
            y = torch.nn.functional.batch_norm(
                xt,
                rm,
                rv,
                w,
                b,
                training=bool(case["training"]),
                momentum=float(case["momentum"]),
                eps=float(case["eps"]),
            )
        ys.append(y.numpy().copy())
        rms.append(rm.numpy().copy())
        rvs.append(rv.numpy().copy())
    return _stack(ys, rms, rvs)


def _grads(dx: Any, dw: Any, db: Any) -> Result:
    return {"dx": np.asarray(dx)[None], "dweight": np.asarray(dw)[None], "dbias": np.asarray(db)[None]}


def _torch_backward(case: Case) -> Result:
    import torch

    x = torch.from_numpy(np.ascontiguousarray(case["x"][0])).requires_grad_()
    w = torch.tensor(case["weight"], requires_grad=True)
    b = torch.tensor(case["bias"], requires_grad=True)
    y = torch.nn.functional.batch_norm(x, None, None, w, b, training=True, eps=float(case["eps"]))
    y.backward(torch.from_numpy(np.ascontiguousarray(case["dy"][0])))
    return _grads(x.grad, w.grad, b.grad)


# ---------------------------------------------------------------- ONNX


def _onnx_model(
    opset: int, training: bool, shape: tuple[int, ...], eps: float, momentum: float, dtype: Any = np.float32
) -> Any:
    from onnx import TensorProto, helper

    c = shape[1]
    x_type = TensorProto.FLOAT
    if np.dtype(dtype) == np.float16:
        if opset < 15:  # one type T for X and its parameters: a float16 x needs float16 parameters
            raise NotImplementedError(f"BatchNormalization-{opset} takes X and its parameters in one type")
        x_type = TensorProto.FLOAT16  # BatchNormalization-15: X, Y in T; scale, B in T1; statistics in T2
    ins = ["X", "scale", "B", "mean", "var"]
    attrs: dict[str, Any] = {"epsilon": float(eps), "momentum": float(momentum)}
    if opset >= 14:
        attrs["training_mode"] = 1 if training else 0
    outs = ["Y", "running_mean", "running_var"] if (training and opset >= 14) else ["Y"]
    if training and opset < 14:
        outs = ["Y", "running_mean", "running_var", "saved_mean", "saved_var"]
    node = helper.make_node("BatchNormalization", ins, outs, **attrs)
    f = TensorProto.FLOAT
    inputs = [helper.make_tensor_value_info("X", x_type, list(shape))] + [
        helper.make_tensor_value_info(n, f, [c]) for n in ins[1:]
    ]
    outputs = [helper.make_tensor_value_info("Y", x_type, list(shape))] + [
        helper.make_tensor_value_info(n, f, None) for n in outs[1:]
    ]
    graph = helper.make_graph([node], "bn", inputs, outputs)
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", opset)])
    model.ir_version = 8
    return model


def _onnx(case: Case, opset: int, runtime: str) -> Result:
    rm, rv = case["running_mean"].copy(), case["running_var"].copy()
    ys, rms, rvs = [], [], []
    training = bool(case["training"])
    for x in case["x"]:
        model = _onnx_model(opset, training, x.shape, case["eps"], case["momentum"], x.dtype)
        feeds = {"X": x, "scale": case["weight"], "B": case["bias"], "mean": rm, "var": rv}
        if runtime == "reference":
            from onnx.reference import ReferenceEvaluator

            outs: list[Any] = list(ReferenceEvaluator(model).run(None, feeds))
        else:
            import onnxruntime as ort

            sess = ort.InferenceSession(model.SerializeToString(), providers=["CPUExecutionProvider"])
            outs = list(sess.run(None, feeds))
        ys.append(np.asarray(outs[0]))
        if training and len(outs) >= 3:  # as returned: the audit checks their dtype
            rm, rv = np.asarray(outs[1]), np.asarray(outs[2])
        rms.append(rm)
        rvs.append(rv)
    return _stack(ys, rms, rvs)


# ---------------------------------------------------------------- Keras 3


def _keras(case: Case) -> Result:
    import keras

    x0 = case["x"][0]
    layer = keras.layers.BatchNormalization(axis=1, momentum=float(case["momentum"]), epsilon=float(case["eps"]))
    layer.build(x0.shape)
    layer.set_weights([case["weight"], case["bias"], case["running_mean"], case["running_var"]])
    ys, rms, rvs = [], [], []
    for x in case["x"]:
        y = layer(x, training=bool(case["training"]))
        ys.append(np.asarray(keras.ops.convert_to_numpy(y)))
        rms.append(np.asarray(keras.ops.convert_to_numpy(layer.moving_mean)))
        rvs.append(np.asarray(keras.ops.convert_to_numpy(layer.moving_variance)))
    return _stack(ys, rms, rvs)


# ---------------------------------------------------------------- Flax


def _flax_linen(case: Case) -> Result:
    import jax.numpy as jnp
    from flax import linen as nn

    training = bool(case["training"])
    layer = nn.BatchNorm(
        use_running_average=not training, axis=1, momentum=float(case["momentum"]), epsilon=float(case["eps"])
    )
    variables = {
        "params": {"scale": jnp.asarray(case["weight"]), "bias": jnp.asarray(case["bias"])},
        "batch_stats": {"mean": jnp.asarray(case["running_mean"]), "var": jnp.asarray(case["running_var"])},
    }
    ys, rms, rvs = [], [], []
    for x in case["x"]:
        if training:
            y, upd = layer.apply(variables, jnp.asarray(x), mutable=["batch_stats"])
            variables = {"params": variables["params"], "batch_stats": upd["batch_stats"]}
        else:
            y = layer.apply(variables, jnp.asarray(x))
        ys.append(np.asarray(y))
        rms.append(np.asarray(variables["batch_stats"]["mean"]))
        rvs.append(np.asarray(variables["batch_stats"]["var"]))
    return _stack(ys, rms, rvs)


def _flax_nnx(case: Case) -> Result:
    import jax.numpy as jnp
    from flax import nnx

    c = case["x"].shape[2]
    layer = nnx.BatchNorm(c, axis=1, momentum=float(case["momentum"]), epsilon=float(case["eps"]), rngs=nnx.Rngs(0))
    assert layer.scale is not None and layer.bias is not None
    layer.scale.value = jnp.asarray(case["weight"])
    layer.bias.value = jnp.asarray(case["bias"])
    layer.mean.value = jnp.asarray(case["running_mean"])
    layer.var.value = jnp.asarray(case["running_var"])
    ys, rms, rvs = [], [], []
    for x in case["x"]:
        y = layer(jnp.asarray(x), use_running_average=not bool(case["training"]))
        ys.append(np.asarray(y))
        rms.append(np.asarray(layer.mean.value))
        rvs.append(np.asarray(layer.var.value))
    return _stack(ys, rms, rvs)


# ---------------------------------------------------------------- MXNet (its own venv)


def _mxnet(case: Case) -> Result:
    import mxnet as mx
    from mxnet import autograd, gluon

    c = case["x"].shape[2]
    layer = gluon.nn.BatchNorm(axis=1, momentum=float(case["momentum"]), epsilon=float(case["eps"]), in_channels=c)
    layer.initialize()
    for param, key in (
        (layer.gamma, "weight"),
        (layer.beta, "bias"),
        (layer.running_mean, "running_mean"),
        (layer.running_var, "running_var"),
    ):
        param.set_data(mx.nd.array(case[key]))
    ys, rms, rvs = [], [], []
    for x in case["x"]:
        data = mx.nd.array(x)
        if bool(case["training"]):
            data.attach_grad()
            with autograd.record():
                y = layer(data)
            if bool(case.get("backward", True)):
                y.backward()
        else:
            y = layer(data)
        ys.append(y.asnumpy())
        rms.append(layer.running_mean.data().asnumpy())
        rvs.append(layer.running_var.data().asnumpy())
    return _stack(ys, rms, rvs)


# ---------------------------------------------------------------- PaddlePaddle (its own venv)


def _paddle(case: Case) -> Result:
    import paddle
    import paddle.nn.functional as F  # noqa: N812 - Paddle's own spelling

    paddle.set_device("cpu")
    rm, rv = paddle.to_tensor(case["running_mean"]), paddle.to_tensor(case["running_var"])
    w, b = paddle.to_tensor(case["weight"]), paddle.to_tensor(case["bias"])
    ys, rms, rvs = [], [], []
    for x in case["x"]:
        x4 = x.reshape(x.shape[0], x.shape[1], -1, 1)  # NCHW, as Paddle's 2-D kernels want
        y = F.batch_norm(
            paddle.to_tensor(x4),
            rm,
            rv,
            weight=w,
            bias=b,
            training=bool(case["training"]),
            momentum=float(case["momentum"]),
            epsilon=float(case["eps"]),
            data_format="NCHW",
        )
        ys.append(y.numpy().reshape(x.shape))
        rms.append(rm.numpy().copy())
        rvs.append(rv.numpy().copy())
    return _stack(ys, rms, rvs)


# ---------------------------------------------------------------- TensorFlow (its own venv)


def _tf_fused(case: Case) -> Result:
    import tensorflow as tf

    rm, rv = case["running_mean"].copy(), case["running_var"].copy()
    ys, rms, rvs = [], [], []
    training = bool(case["training"])
    for x in case["x"]:
        x4 = np.ascontiguousarray(x.reshape(x.shape[0], x.shape[1], -1, 1).transpose(0, 2, 3, 1))  # NHWC on CPU
        y, mean, var = tf.compat.v1.nn.fused_batch_norm(
            x4,
            case["weight"],
            case["bias"],
            mean=rm,
            variance=rv,
            epsilon=float(case["eps"]),
            data_format="NHWC",
            is_training=training,
            exponential_avg_factor=float(case["momentum"]),
        )
        ys.append(np.asarray(y).transpose(0, 3, 1, 2).reshape(x.shape))
        if training:
            rm, rv = np.asarray(mean), np.asarray(var)
        rms.append(rm)
        rvs.append(rv)
    return _stack(ys, rms, rvs)


def _tf_nn(case: Case) -> Result:
    """tf.nn.batch_normalization, stateless: evaluation with the given statistics."""
    import tensorflow as tf

    shape = (1, -1) + (1,) * (case["x"].ndim - 3)
    ys = []
    for x in case["x"]:
        y = tf.nn.batch_normalization(
            x,
            case["running_mean"].reshape(shape),
            case["running_var"].reshape(shape),
            case["bias"].reshape(shape),
            case["weight"].reshape(shape),
            float(case["eps"]),
        )
        ys.append(np.asarray(y))
    n = len(ys)
    return _stack(ys, [case["running_mean"]] * n, [case["running_var"]] * n)


def _tf_keras2(case: Case, fused: bool) -> Result:
    import tf_keras

    x0 = case["x"][0]
    shape = (x0.shape[0], x0.shape[1], -1, 1) if fused else x0.shape
    layer = tf_keras.layers.BatchNormalization(
        axis=1, momentum=float(case["momentum"]), epsilon=float(case["eps"]), fused=fused
    )
    layer.build(np.empty(x0.reshape(shape).shape).shape)
    layer.set_weights([case["weight"], case["bias"], case["running_mean"], case["running_var"]])
    ys, rms, rvs = [], [], []
    for x in case["x"]:
        y = layer(x.reshape(shape), training=bool(case["training"]))
        ys.append(np.asarray(y).reshape(x.shape))
        rms.append(np.asarray(layer.moving_mean))
        rvs.append(np.asarray(layer.moving_variance))
    return _stack(ys, rms, rvs)


def _tf1_graph(case: Case, update_ops: bool) -> Result:
    """TF1-style graph code: ``tf.compat.v1.layers.batch_normalization`` in a ``tf.compat.v1.Session``.
    Its moving averages update only through the ``UPDATE_OPS`` collection; ``update_ops`` says whether
    the fetched output depends on it, as a train op written with ``tf.control_dependencies`` does."""
    import tensorflow as tf

    v1 = tf.compat.v1
    x0 = case["x"][0]
    graph = tf.Graph()
    with graph.as_default():
        xp = v1.placeholder(tf.float32, x0.shape)
        y = v1.layers.batch_normalization(
            xp,
            axis=1,
            momentum=float(case["momentum"]),
            epsilon=float(case["eps"]),
            training=bool(case["training"]),
            fused=False,
            gamma_initializer=v1.constant_initializer(case["weight"]),
            beta_initializer=v1.constant_initializer(case["bias"]),
            moving_mean_initializer=v1.constant_initializer(case["running_mean"]),
            moving_variance_initializer=v1.constant_initializer(case["running_var"]),
        )
        if update_ops:
            with tf.control_dependencies(v1.get_collection(v1.GraphKeys.UPDATE_OPS)):
                y = tf.identity(y)
        moving = {v.name.split("/")[-1].split(":")[0]: v for v in v1.global_variables()}
        init = v1.global_variables_initializer()
    ys, rms, rvs = [], [], []
    with v1.Session(graph=graph) as sess:
        sess.run(init)
        for x in case["x"]:
            ys.append(sess.run(y, {xp: x}))
            rm, rv = sess.run([moving["moving_mean"], moving["moving_variance"]])
            rms.append(rm)
            rvs.append(rv)
    return _stack(ys, rms, rvs)


def _flax_backward(case: Case) -> Result:
    import jax
    import jax.numpy as jnp
    from flax import linen as nn

    layer = nn.BatchNorm(use_running_average=False, axis=1, epsilon=float(case["eps"]))
    stats = {"mean": jnp.zeros_like(case["weight"]), "var": jnp.ones_like(case["weight"])}

    def f(x: Any, scale: Any, bias: Any) -> Any:
        y, _ = layer.apply({"params": {"scale": scale, "bias": bias}, "batch_stats": stats}, x, mutable=["batch_stats"])
        return y

    _, vjp = jax.vjp(f, jnp.asarray(case["x"][0]), jnp.asarray(case["weight"]), jnp.asarray(case["bias"]))
    return _grads(*vjp(jnp.asarray(case["dy"][0])))


def _mxnet_backward(case: Case) -> Result:
    import mxnet as mx
    from mxnet import autograd, gluon

    c = case["x"].shape[2]
    layer = gluon.nn.BatchNorm(axis=1, epsilon=float(case["eps"]), in_channels=c)
    layer.initialize()
    layer.gamma.set_data(mx.nd.array(case["weight"]))
    layer.beta.set_data(mx.nd.array(case["bias"]))
    x = mx.nd.array(case["x"][0])
    x.attach_grad()
    with autograd.record():
        y = layer(x)
    y.backward(mx.nd.array(case["dy"][0]))
    return _grads(x.grad.asnumpy(), layer.gamma.grad().asnumpy(), layer.beta.grad().asnumpy())


def _paddle_backward(case: Case) -> Result:
    import paddle
    import paddle.nn.functional as F  # noqa: N812 - Paddle's own spelling

    paddle.set_device("cpu")
    x0 = case["x"][0]
    x = paddle.to_tensor(x0.reshape(x0.shape[0], x0.shape[1], -1, 1), stop_gradient=False)
    w = paddle.to_tensor(case["weight"], stop_gradient=False)
    b = paddle.to_tensor(case["bias"], stop_gradient=False)
    rm, rv = paddle.to_tensor(np.zeros_like(case["weight"])), paddle.to_tensor(np.ones_like(case["weight"]))
    y = F.batch_norm(x, rm, rv, weight=w, bias=b, training=True, epsilon=float(case["eps"]), data_format="NCHW")
    y.backward(paddle.to_tensor(case["dy"][0].reshape(x.shape)))
    return _grads(x.grad.numpy().reshape(x0.shape), w.grad.numpy(), b.grad.numpy())


def _tf_keras2_backward(case: Case, fused: bool) -> Result:
    import tensorflow as tf
    import tf_keras

    x0 = case["x"][0]
    shape = (x0.shape[0], x0.shape[1], -1, 1) if fused else x0.shape
    layer = tf_keras.layers.BatchNormalization(axis=1, epsilon=float(case["eps"]), fused=fused)
    layer.build(x0.reshape(shape).shape)
    layer.set_weights([case["weight"], case["bias"], np.zeros_like(case["weight"]), np.ones_like(case["weight"])])
    x = tf.constant(x0.reshape(shape))
    with tf.GradientTape() as tape:
        tape.watch(x)
        y = layer(x, training=True)
    dx, dw, db = tape.gradient(
        y, [x, layer.gamma, layer.beta], output_gradients=tf.constant(case["dy"][0].reshape(shape))
    )
    return _grads(np.asarray(dx).reshape(x0.shape), np.asarray(dw), np.asarray(db))


def _kernels_backward(case: Case) -> Result:
    from normspec.kernels import batch_norm_backward

    return _grads(
        *batch_norm_backward(
            case["x"][0], case["dy"][0], case["weight"], eps=float(case["eps"]), convention="torch_raw"
        )
    )


# ---------------------------------------------------------------- normspec's own kernels


def _kernels(case: Case, convention: str = "torch") -> Result:
    from normspec.kernels import batch_norm

    def fn(x: Any, w: Any, b: Any, rm: Any, rv: Any, training: bool, momentum: float, eps: float) -> Any:
        return batch_norm(x, w, b, rm, rv, training, momentum, eps, convention)

    return _run_protocol(fn, case)


ADAPTERS: dict[str, Adapter] = {
    a.name: a
    for a in [
        Adapter(
            "torch",
            "torch",
            "torch",
            _torch,
            "torch.nn.functional.batch_norm, CPU",
            backward=_torch_backward,
            algorithm="torch_cpu",
        ),
        Adapter(
            "torch_raw",
            "torch_raw",
            "torch",
            lambda c: _torch(c, raw=True),
            "raw torch.batch_norm op, CPU",
            backward=_torch_backward,
            algorithm="torch_cpu",
        ),
        Adapter(
            "onnx_reference_bn9",
            "onnx_bn9",
            "onnx",
            lambda c: _onnx(c, 9, "reference"),
            "onnx.reference.ReferenceEvaluator, BatchNormalization-9 (one-output inference node)",
            evaluation_only=True,
        ),
        Adapter(
            "onnx_reference_bn14",
            "onnx_bn14",
            "onnx",
            lambda c: _onnx(c, 14, "reference"),
            "onnx.reference.ReferenceEvaluator, BatchNormalization-14",
        ),
        Adapter(
            "onnx_reference_bn15",
            "onnx_bn15",
            "onnx",
            lambda c: _onnx(c, 15, "reference"),
            "onnx.reference.ReferenceEvaluator, BatchNormalization-15",
        ),
        Adapter(
            "onnxruntime_bn15",
            "onnx_bn15",
            "onnxruntime",
            lambda c: _onnx(c, 15, "onnxruntime"),
            "onnxruntime CPU, BatchNormalization-15",
        ),
        Adapter(
            "keras_numpy",
            "keras3",
            "keras",
            _keras,
            "Keras 3 BatchNormalization, NumPy backend",
            (("KERAS_BACKEND", "numpy"),),
            algorithm="raw_moments_float32",
        ),
        Adapter(
            "keras_jax",
            "keras3",
            "keras",
            _keras,
            "Keras 3 BatchNormalization, JAX backend",
            (("KERAS_BACKEND", "jax"),),
        ),
        Adapter(
            "keras_torch",
            "keras3",
            "keras",
            _keras,
            "Keras 3 BatchNormalization, torch backend",
            (("KERAS_BACKEND", "torch"),),
            algorithm="raw_moments_float32",
        ),
        Adapter(
            "flax_linen",
            "flax_linen",
            "flax",
            _flax_linen,
            "flax.linen.BatchNorm (jax CPU)",
            (("JAX_PLATFORMS", "cpu"),),
            backward=_flax_backward,
            algorithm="flax_fast_variance",
        ),
        Adapter(
            "flax_nnx",
            "flax_nnx",
            "flax",
            _flax_nnx,
            "flax.nnx.BatchNorm (jax CPU)",
            (("JAX_PLATFORMS", "cpu"),),
            algorithm="flax_fast_variance",
        ),
        Adapter(
            "kernels",
            "torch",
            "numba",
            _kernels,
            "normspec.kernels (numba CPU)",
            backward=_kernels_backward,
            algorithm="float64_inside",
        ),
        Adapter(
            "mxnet_cpu",
            "mxnet_cpu",
            "mxnet",
            _mxnet,
            "MXNet 1.9.1 Gluon BatchNorm, CPU",
            venv="mxnet",
            backward=_mxnet_backward,
        ),
        Adapter(
            "paddle_cpu",
            "paddle_cpu",
            "paddle",
            _paddle,
            "PaddlePaddle F.batch_norm, CPU",
            venv="paddle",
            backward=_paddle_backward,
        ),
        Adapter(
            "tf_fused_batch_norm",
            "tf_fused_batch_norm_v3",
            "tensorflow",
            _tf_fused,
            "tf.compat.v1.nn.fused_batch_norm (FusedBatchNormV3), CPU",
            venv="tf",
            algorithm="tf_fused_cpu",
        ),
        Adapter(
            "tf_keras2_fused",
            "tf_keras2_fused",
            "tf_keras",
            lambda c: _tf_keras2(c, True),
            "tf_keras (Keras 2) BatchNormalization, fused path",
            venv="tf",
            backward=lambda c: _tf_keras2_backward(c, True),
            algorithm="tf_fused_cpu",
        ),
        Adapter(
            "tf_keras2_nonfused",
            "tf_keras2_nonfused",
            "tf_keras",
            lambda c: _tf_keras2(c, False),
            "tf_keras (Keras 2) BatchNormalization, non-fused path",
            venv="tf",
            backward=lambda c: _tf_keras2_backward(c, False),
        ),
        Adapter(
            "tf1_graph_bn",
            "tf_keras2_nonfused",
            "tf_keras",
            lambda c: _tf1_graph(c, True),
            "TF1 graph code: tf.compat.v1.layers.batch_normalization in a Session, output under "
            "tf.control_dependencies(UPDATE_OPS) (own venv)",
            (("TF_USE_LEGACY_KERAS", "1"),),
            venv="tf",
        ),
        Adapter(
            "tf1_graph_bn_no_update_ops",
            "tf_keras2_nonfused",
            "tf_keras",
            lambda c: _tf1_graph(c, False),
            "TF1 graph code that forgets the UPDATE_OPS control dependency (own venv)",
            (("TF_USE_LEGACY_KERAS", "1"),),
            venv="tf",
            deliberate="graph code whose output does not depend on UPDATE_OPS: the moving averages never move",
        ),
        Adapter(
            "tf_nn_batch_normalization",
            "tf_keras2_nonfused",
            "tensorflow",
            _tf_nn,
            "tf.nn.batch_normalization (stateless; evaluation with given statistics)",
            venv="tf",
            evaluation_only=True,
        ),
        Adapter(
            "keras_tensorflow",
            "keras3",
            "keras",
            _keras,
            "Keras 3 BatchNormalization, TensorFlow backend",
            (("KERAS_BACKEND", "tensorflow"),),
            venv="tf",
        ),
    ]
}


def _python_target(spec: str) -> Adapter:
    def run(case: Case) -> Result:
        fn = load_callable(spec)  # in the worker process, once per case
        if "groups" in case:  # a family case: f(x, weight, bias, eps, groups) -> y (eps None: the default)
            eps = float(case["eps"])
            x = np.ascontiguousarray(case["x"][0])
            fused = (case["residual"][0].copy(),) if "residual" in case else ()  # a fused add: (y, new residual)
            y = fn(x, case["weight"].copy(), case["bias"].copy(), None if np.isnan(eps) else eps, int(case["groups"]),
                   *fused)  # fmt: skip
            one = np.zeros((1, 1), np.float32)
            if fused:
                if not isinstance(y, tuple | list) or len(y) != 2:
                    raise TypeError(f"a fused residual add returns (y, new residual), not {type(y).__name__}")
                return {"y": np.asarray(y[0])[None], "residual_out": np.asarray(y[1])[None], "running_mean": one,
                        "running_var": one + 1}  # fmt: skip
            return {"y": np.asarray(y)[None], "running_mean": one, "running_var": one + 1}
        return _run_protocol(fn, case)

    return Adapter(spec, "torch", "numpy", run, f"user implementation {spec}")


def get_adapter(name: str) -> Adapter:
    if name.startswith("python:"):
        return _python_target(name)
    if name in ADAPTERS:
        return ADAPTERS[name]
    from normspec.targets.family_adapters import FAMILY_ADAPTERS

    return FAMILY_ADAPTERS[name]


def prepare_environment(adapter: Adapter) -> None:
    for key, value in adapter.env:
        os.environ[key] = value
