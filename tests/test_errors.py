"""Every bad input, one table: a NormspecError subclass whose message names the value."""

import numpy as np
import pytest
from normspec.oracle import batch_norm, ulp_distance

from normspec import oracle as O  # noqa: N812
from normspec.errors import (
    DegenerateInputError,
    DomainError,
    DTypeError,
    InvalidArgumentError,
    NormspecError,
    ShapeError,
    UnknownConventionError,
)
from normspec.testing import assert_batch_norm_matches, cases

X = np.ones((4, 3, 2), np.float32)
X6 = np.arange(24, dtype=np.float32).reshape(4, 6)


def _echo(x, w, b, rm, rv, training, momentum, eps):
    return x, rm, rv


ONES3, ZEROS3 = np.ones(3, np.float32), np.zeros(3, np.float32)


def bn(**kw):
    args = {"x": X, "weight": None, "bias": None, "running_mean": None, "running_var": None}
    args.update({k: kw.pop(k) for k in list(kw) if k in args})
    kw.setdefault("training", True)
    return batch_norm(args.pop("x"), *args.values(), **kw)


CASES = [
    (
        "weight length != channels",
        lambda: bn(weight=np.ones(4, np.float32)),
        ShapeError,
        r"weight of shape \(3,\).*weight.shape=\(4,\)",
    ),
    ("bias length != channels", lambda: bn(bias=np.ones(2, np.float32)), ShapeError, r"bias.shape=\(2,\)"),
    ("integer x", lambda: bn(x=np.ones((4, 3), np.int32)), DTypeError, r"x.dtype='int32'"),
    ("complex x", lambda: bn(x=np.ones((4, 3), np.complex64)), DTypeError, r"x.dtype='complex64'"),
    ("integer weight", lambda: bn(weight=np.ones(3, np.int64)), DTypeError, r"weight.dtype='int64'"),
    (
        "n=1 under torch",
        lambda: bn(x=np.ones((1, 3), np.float32)),
        DegenerateInputError,
        r"more than 1 value per channel.*x.shape=\(1, 3\)",
    ),
    (
        "negative eps where var + eps < 0",
        lambda: bn(x=np.ones((4, 3), np.float32), eps=-1e-5),
        DomainError,
        r"var \+ eps >= 0.*eps = -1e-05.*group \(0,\)=-1e-05",
    ),
    ("NaN eps", lambda: bn(eps=float("nan")), DomainError, r"eps=nan"),
    (
        "negative running_var",
        lambda: bn(running_mean=ZEROS3, running_var=np.array([1, -0.5, 1], np.float32)),
        DomainError,
        r"running_var >= 0.*-0.5",
    ),
    ("NaN weight", lambda: bn(weight=np.array([1, np.nan, 1], np.float32)), DomainError, r"finite weight.*nan"),
    ("axis out of range", lambda: bn(axis=3), ShapeError, r"axis in \[-3, 3\).*axis=3"),
    ("0-d x", lambda: bn(x=np.float32(1.0)), ShapeError, r"x.shape=\(\)"),
    (
        "weight/bias dtypes differ",
        lambda: bn(weight=ONES3, bias=np.zeros(3, np.float64)),
        DTypeError,
        r"bias.dtype='float64'",
    ),
    (
        "running dtypes differ",
        lambda: bn(running_mean=ZEROS3, running_var=np.ones(3, np.float64)),
        DTypeError,
        r"running_var.dtype='float64'",
    ),
    ("only one running stat", lambda: bn(running_mean=ZEROS3), InvalidArgumentError, r"both given or both None"),
    (
        "eval without running stats",
        lambda: bn(training=False),
        InvalidArgumentError,
        r"in evaluation.*running_mean=None",
    ),
    ("unknown convention", lambda: bn(convention="pytorch"), UnknownConventionError, r"convention='pytorch'"),
    (
        "cumulative where none exists",
        lambda: bn(convention="keras3", momentum="cumulative", running_mean=ZEROS3, running_var=ONES3),
        InvalidArgumentError,
        r"momentum='cumulative'",
    ),
    (
        "infinite momentum",
        lambda: bn(momentum=float("inf"), running_mean=ZEROS3, running_var=ONES3),
        DomainError,
        r"momentum=inf",
    ),
    (
        "ulp_distance dtype mismatch",
        lambda: ulp_distance(np.ones(2, np.float32), np.ones(2, np.float64)),
        DTypeError,
        r"b.dtype='float64'",
    ),
    (
        "layer_norm_backward: dy of another shape",
        lambda: O.layer_norm_backward(X6, X6[:2]),
        ShapeError,
        r"dy.shape=\(2, 6\)",
    ),
    (
        "rms_norm_backward: complex dy",
        lambda: O.rms_norm_backward(X6, X6.astype(np.complex64)),
        DTypeError,
        r"dy.dtype='complex64'",
    ),
    (
        "group_norm_backward: num_groups=True",
        lambda: O.group_norm_backward(np.ones((2, 4, 3), np.float32), np.ones((2, 4, 3), np.float32), True),
        ShapeError,
        "num_groups=True",
    ),
    (
        "testing.cases: dtype int8",
        lambda: cases(dtypes=("int8",)),
        InvalidArgumentError,
        "dtype='int8'",
    ),
    (
        "testing.cases: dtypes a string",
        lambda: cases(dtypes="float32"),
        InvalidArgumentError,
        "dtypes='float32'",
    ),
    (
        "assert_batch_norm_matches: max_ulp nan",
        lambda: assert_batch_norm_matches(_echo, cases()[0], max_ulp=float("nan")),
        InvalidArgumentError,
        "max_ulp=nan",
    ),
    (
        "assert_batch_norm_matches: max_ulp '2'",
        lambda: assert_batch_norm_matches(_echo, cases()[0], max_ulp="2"),
        InvalidArgumentError,
        "max_ulp='2'",
    ),
    (
        "ulp_distance shape mismatch",
        lambda: ulp_distance(np.ones(2, np.float32), np.ones(3, np.float32)),
        ShapeError,
        r"b.shape=\(3,\)",
    ),
]


@pytest.mark.parametrize("call,exc,pattern", [c[1:] for c in CASES], ids=[c[0] for c in CASES])
def test_bad_input_is_refused_with_a_named_value(call, exc, pattern):
    with pytest.raises(exc, match=pattern) as info:
        call()
    assert isinstance(info.value, NormspecError)
    assert str(info.value).startswith("Expected") or "Expected" in str(info.value)
