"""The ONNX backend node-test layout, so any ONNX runtime's test runner can consume the vectors.

For each evaluation case of float32 or float16 under an ONNX convention
(``onnx_bn14``/``onnx_bn15``, whose eps is a float32 attribute), a directory
``onnx/test_normspec_<case>_<step>/`` holds ``model.onnx``
(one BatchNormalization node, opset 15, ``training_mode=0``) and
``test_data_set_0/input_{0..4}.pb`` (X, scale, B, input_mean, input_var, each
in its own type as BatchNormalization-15 allows), ``output_0.pb`` (Y,
correctly rounded).
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np

from normspec.errors import InvalidArgumentError

__all__ = ["export_onnx", "ONNX_CONVENTIONS"]

ONNX_CONVENTIONS = ("onnx_bn14", "onnx_bn15")
_EXPORTABLE = {"float32", "float16"}


def _model(x_dtype: Any, p_dtype: Any, s_dtype: Any, shape: tuple[int, ...], eps: float) -> Any:
    import onnx
    from onnx import TensorProto, helper

    def t(dt: Any) -> int:
        return {
            np.dtype(np.float32): TensorProto.FLOAT,
            np.dtype(np.float16): TensorProto.FLOAT16,
            np.dtype(np.float64): TensorProto.DOUBLE,
        }[np.dtype(dt)]

    c = shape[1]
    node = helper.make_node(
        "BatchNormalization",
        ["X", "scale", "B", "input_mean", "input_var"],
        ["Y"],
        epsilon=float(np.float32(eps)),
        training_mode=0,
    )
    graph = helper.make_graph(
        [node],
        "normspec_batchnorm",
        [
            helper.make_tensor_value_info("X", t(x_dtype), list(shape)),
            helper.make_tensor_value_info("scale", t(p_dtype), [c]),
            helper.make_tensor_value_info("B", t(p_dtype), [c]),
            helper.make_tensor_value_info("input_mean", t(s_dtype), [c]),
            helper.make_tensor_value_info("input_var", t(s_dtype), [c]),
        ],
        [helper.make_tensor_value_info("Y", t(x_dtype), list(shape))],
    )
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 15)], producer_name="normspec")
    model.ir_version = 8
    onnx.checker.check_model(model)
    return model


def export_onnx(directory: Path, cases: list[Any]) -> list[str]:
    """Write the node-test directories; returns their paths relative to ``directory``."""
    try:
        import onnx
        from onnx import numpy_helper
    except ImportError:
        raise InvalidArgumentError("--onnx needs the onnx package: pip install 'normspec[onnx]'") from None
    written = []
    for case in cases:
        if case.convention not in ONNX_CONVENTIONS or case.training or case.dtype not in _EXPORTABLE:
            continue
        inp, exp = case.inputs, case.expected
        for k in range(case.steps):  # evaluation: every step starts from the same statistics
            name = f"onnx/test_normspec_{case.name}_{k}"
            root = directory / name
            (root / "test_data_set_0").mkdir(parents=True, exist_ok=True)
            x = inp["x"][k]
            model = _model(x.dtype, inp["weight"].dtype, inp["running_mean"].dtype, x.shape, case.eps)
            (root / "model.onnx").write_bytes(model.SerializeToString(deterministic=True))
            arrays = [x, inp["weight"], inp["bias"], inp["running_mean"], inp["running_var"]]
            for i, arr in enumerate(arrays):
                tensor = numpy_helper.from_array(np.ascontiguousarray(arr))
                (root / "test_data_set_0" / f"input_{i}.pb").write_bytes(tensor.SerializeToString(deterministic=True))
            y = numpy_helper.from_array(np.ascontiguousarray(exp["y"][k]))
            (root / "test_data_set_0" / "output_0.pb").write_bytes(y.SerializeToString(deterministic=True))
            written.append(name)
    del onnx
    return written
