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
