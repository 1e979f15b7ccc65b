"""group_norm on the general core, against an independent exact computation."""

from fractions import Fraction

import mpmath
import numpy as np
import pytest
from independent import round_mpf
from normspec.oracle import group_norm

from normspec.errors import ShapeError


def exact_group_norm(x, groups, w, b, eps):
    n, c = x.shape[:2]
    per = c // groups
    out = np.empty(x.shape, x.dtype)
    xs = x.reshape(n, groups, -1)
    o = out.reshape(n, groups, -1)
    for i in range(n):
        for g in range(groups):
            vals = [Fraction(float(v)) for v in xs[i, g]]
            m = sum(vals) / len(vals)
            v = sum((t - m) ** 2 for t in vals) / len(vals)
            length = len(vals) // per
            D = v + Fraction(eps)
            with mpmath.workprec(600):
                for k, t in enumerate(vals):
                    ch = g * per + k // length
                    A, B = (t - m) * Fraction(float(w[ch])), Fraction(float(b[ch]))
                    y = mpmath.mpf(B.numerator) / B.denominator + (
                        mpmath.mpf(A.numerator) / A.denominator
                    ) / mpmath.sqrt(mpmath.mpf(D.numerator) / D.denominator)
                    o[i, g, k] = round_mpf(y, np.dtype(np.float32), (A, B, D))
    return out


@pytest.mark.parametrize("groups", [1, 2, 3, 6])
def test_group_norm_matches_exact(groups):
    rng = np.random.default_rng(groups)
    x = (rng.standard_normal((2, 6, 4)) * 3 + 10).astype(np.float32)
    w, b = rng.standard_normal(6).astype(np.float32), rng.standard_normal(6).astype(np.float32)
    got = group_norm(x, groups, w, b).y
    want = exact_group_norm(x, groups, w, b, 1e-5)
    assert (got.view(np.uint32) == want.view(np.uint32)).all()


def test_group_norm_refuses_groups_not_dividing_channels():
    with pytest.raises(ShapeError, match="num_groups=4"):
        group_norm(np.ones((2, 6, 3), np.float32), 4)
