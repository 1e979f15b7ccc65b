"""Hostile arguments to the kernels: each refused by name, in normspec's one exception hierarchy."""

import importlib.util

import numpy as np
import pytest

from normspec.errors import DomainError, NormspecError, ShapeError

pytest.importorskip("numba", reason="the kernels are the optional kernels extra: pip install 'normspec[kernels]'")
from normspec import kernels as K  # noqa: N812

F32 = np.float32
X = np.ones((4, 3), F32)
RM, RV = np.zeros(3, F32), np.ones(3, F32)


def _read_only():
    out = np.zeros((4, 3), F32)
    out.setflags(write=False)
    return out


@pytest.mark.parametrize(
    ("kwargs", "error", "name"),
    [
        ({"weight": np.array([np.nan, 1, 1], F32)}, DomainError, "weight element=nan"),
        ({"bias": np.array([np.inf, 1, 1], F32)}, DomainError, "bias element=inf"),
        (
            {"running_mean": RM, "running_var": np.array([np.nan, 1, 1], F32), "training": False},
            DomainError,
            "running_var element=nan",
        ),
        ({"running_mean": RM, "running_var": RV, "momentum": float("nan")}, DomainError, "momentum=nan"),
        ({"eps": "abc"}, DomainError, "eps='abc'"),
        ({"eps": 10**400}, DomainError, "eps=1000"),
        ({"axis": 1.5}, ShapeError, "axis=1.5"),
        ({"out": [1, 2]}, ShapeError, "out='list'"),
        ({"out": _read_only()}, ShapeError, "read-only"),
    ],
)
def test_bad_arguments_are_refused_by_name(kwargs, error, name):
    with pytest.raises(error, match=name.replace("(", r"\(").replace("[", r"\[")):
        K.batch_norm(X, **kwargs)


def test_bad_inputs_and_torch_tensors():
    with pytest.raises(ShapeError, match=r"x.shape=\(\)"):
        K.batch_norm(np.float32(1))
    with pytest.raises(ShapeError, match="rectangular"):
        K.batch_norm([[1.0, 2.0], [3.0]])
    assert issubclass(ShapeError, NormspecError)
    if importlib.util.find_spec("torch") is None:
        return
    import torch

    y, _, _ = K.batch_norm(torch.ones(4, 3, requires_grad=True))  # detached, moved to the host
    assert y.dtype == F32
    if importlib.util.find_spec("ml_dtypes") is not None:
        yb, _, _ = K.batch_norm(torch.ones(4, 3, dtype=torch.bfloat16))
        assert yb.dtype.name == "bfloat16"


X6 = np.random.default_rng(0).standard_normal((4, 6)).astype(F32)
W6 = np.ones(6, F32)


@pytest.mark.parametrize("layer", ["layer_norm", "rms_norm"])
@pytest.mark.parametrize(
    ("args", "kwargs", "error", "name"),
    [
        ((X6, 5), {}, ShapeError, "normalized_ndim=5"),
        ((X6, True), {}, ShapeError, "normalized_ndim=True"),
        ((X6, 1.5), {}, ShapeError, "normalized_ndim=1.5"),
        ((X6, 1, np.ones(5, F32)), {}, ShapeError, r"weight.shape=\(5,\)"),
        ((X6, 1, np.full(6, np.nan, F32)), {}, DomainError, "weight element=nan"),
        ((X6, 1, ["a"] * 6), {}, NormspecError, "weight.dtype='str"),
        ((X6, 1, np.ones(6, np.complex64)), {}, NormspecError, "weight.dtype='complex64'"),
        ((X6, 1, W6), {"eps": -1.0}, DomainError, "eps=-1.0"),
        ((X6, 1, W6), {"eps": float("nan")}, DomainError, "eps=nan"),
        ((X6, 1, W6), {"eps": "abc"}, DomainError, "eps='abc'"),
        ((np.float32(1),), {}, ShapeError, r"x.shape=\(\)"),
        (([[1.0, 2.0], [3.0]],), {}, ShapeError, "rectangular"),
        ((np.ones((4, 6), np.int32),), {}, NormspecError, "x.dtype='int32'"),
    ],
    ids=[
        "ndim-5",
        "ndim-bool",
        "ndim-float",
        "weight-shape",
        "weight-nan",
        "weight-str",
        "weight-complex",
        "eps-negative",
        "eps-nan",
        "eps-str",
        "0-d",
        "ragged",
        "int-x",
    ],
)
def test_family_kernels_refuse_bad_arguments_by_name(layer, args, kwargs, error, name):
    with pytest.raises(error, match=name):
        getattr(K, layer)(*args, **kwargs)


def test_family_kernels_take_numpy_scalar_eps_and_empty_batches():
    for layer in (K.layer_norm, K.rms_norm):
        assert layer(X6, 1, W6, eps=np.float32(1e-5)).shape == X6.shape
        assert layer(np.ones((0, 6), F32)).shape == (0, 6)
