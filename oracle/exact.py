"""Exact per-group sums of values and of squares, vectorized.

Statistics in normspec are exact rationals; no float accumulation decides
anything.  The trick that keeps this at numpy speed: a float64 sum of
numbers that are all integer multiples of one power of two ``2**k``, and
whose total magnitude stays below ``2**(k+53)``, is *exact* in any order.
So every value is cut into pieces that lie on fixed per-group grids:

    piece 0: multiples of 2**(T - w),       |piece| < 2**T
    piece 1: multiples of 2**(T - 2w),      |piece| < 2**(T - w)
    ...

where ``T`` bounds the group's magnitudes and ``w = 53 - ceil(log2(n+1))``
leaves room for ``n`` summands.  Each piece is extracted exactly
(``trunc`` of a power-of-two scaling), summed exactly in float64, and the
per-piece totals are combined at the end as Python integers.  Squares are
exact doubles for inputs of at most 26 significant bits (float32, float16,
bfloat16); float64 inputs are first split (Veltkamp) so that every partial
product is exact.

Work is done in cache-sized blocks, which is where the speed comes from.

>>> x = np.array([[0.1, 0.2, 0.3]], dtype=np.float32).reshape(1, 1, 3)
>>> s1, s2, nonfinite = exact_sums(x)
>>> s1[0] == sum(Fraction(float(v)) for v in x.ravel())
True
"""

from __future__ import annotations

import math
from collections.abc import Callable, Iterator
from fractions import Fraction

import numpy as np

__all__ = ["exact_sums", "blocks", "BLOCK_ELEMENTS"]

BLOCK_ELEMENTS = 1 << 14  # 128 KiB of float64: stays in L2 (larger blocks cost page faults per temporary)

# float64 inputs outside this magnitude range take the slow path: squares of
# smaller values underflow, and power-of-two grid scales would overflow.
_F64_SAFE_LO = 2.0**-480
_F64_SAFE_HI = 2.0**480
_VELTKAMP = 134217729.0  # 2**27 + 1


def blocks(shape: tuple[int, int, int], target: int = BLOCK_ELEMENTS) -> Iterator[tuple[slice, slice, slice]]:
    """Cover an (A, G, B) array with blocks of about ``target`` elements.

    >>> [tuple((s.start, s.stop) for s in b) for b in blocks((2, 3, 4), target=8)]
    [((0, 1), (0, 2), (0, 4)), ((0, 1), (2, 3), (0, 4)), ((1, 2), (0, 2), (0, 4)), ((1, 2), (2, 3), (0, 4))]
    """
    a_n, g_n, b_n = shape
    if g_n * b_n <= target:
        step = max(1, target // max(1, g_n * b_n))
        for a0 in range(0, a_n, step):
            yield slice(a0, min(a_n, a0 + step)), slice(0, g_n), slice(0, b_n)
    elif b_n <= target:
        gstep = max(1, target // b_n)
        for a0 in range(a_n):
            for g0 in range(0, g_n, gstep):
                yield slice(a0, a0 + 1), slice(g0, min(g_n, g0 + gstep)), slice(0, b_n)
    else:
        for a0 in range(a_n):
            for g0 in range(g_n):
                for b0 in range(0, b_n, target):
                    yield slice(a0, a0 + 1), slice(g0, g0 + 1), slice(b0, min(b_n, b0 + target))


class _PieceSum:
    """Exact running sum, per group, of values bounded by ``2**top[g]``."""

    def __init__(self, top: np.ndarray, n: int) -> None:
        self.top = top.astype(np.int64)  # per group: |value| < 2**top
        self.w = 53 - max(1, math.ceil(math.log2(n + 1)))
        self.scale0 = np.ldexp(1.0, (self.w - self.top)).reshape(1, -1, 1)
        self.acc: list[np.ndarray] = []
        self.step = math.ldexp(1.0, self.w)

    def add(self, v: np.ndarray, gs: slice) -> None:
        r = v * self.scale0[:, gs, :]  # exact: a power of two
        q = np.trunc(r)
        first = self._piece(0)
        first[gs] += q.sum(axis=(0, 2))
        r -= q  # exact: the fractional part
        at = np.flatnonzero(r != 0)  # (on a boolean: numpy is ten times faster there)
        if not at.size:
            return
        # the few values with bits below the first grid go on, compressed, with their groups
        group = np.unravel_index(at, r.shape)[1] + (gs.start or 0)  # (gs steps by 1)
        rest = r.ravel()[at]
        j = 1
        while rest.size:
            rest *= self.step
            q = np.trunc(rest)
            np.add.at(self._piece(j), group, q)
            rest -= q
            keep = rest != 0
            rest, group = rest[keep], group[keep]
            j += 1

    def _piece(self, j: int) -> np.ndarray:
        while len(self.acc) <= j:
            self.acc.append(np.zeros(self.top.shape[0]))
        return self.acc[j]

    def totals(self) -> list[Fraction]:
        out = []
        for g in range(self.top.shape[0]):
            total = 0
            exp0 = int(self.top[g]) - self.w
            lowest = exp0 - self.w * (len(self.acc) - 1)
            for j, acc in enumerate(self.acc):
                total += int(acc[g]) << (self.w * (len(self.acc) - 1 - j))
            out.append(Fraction(total << lowest) if lowest >= 0 else Fraction(total, 1 << -lowest))
        return out


def _square_terms(fmt_bits: int) -> tuple[Callable[[np.ndarray], list[np.ndarray]], int]:
    """A function giving exact doubles whose sum is ``v**2``, and how many it gives."""
    if fmt_bits <= 26:
        return (lambda v: [v * v]), 1

    def split(v: np.ndarray) -> list[np.ndarray]:
        t = v * _VELTKAMP
        hi = t - (t - v)  # at most 26 significant bits, and so is lo
        lo = v - hi
        return [hi * hi, 2.0 * hi * lo, lo * lo]

    return split, 3


def _slow_sums(x3: np.ndarray, g: int) -> tuple[Fraction, Fraction]:
    vals = [Fraction(float(v)) for v in np.asarray(x3[:, g, :], dtype=np.float64).ravel()]
    return sum(vals, Fraction(0)), sum((v * v for v in vals), Fraction(0))


def _absmax(x3: np.ndarray) -> np.ndarray:
    """Per group ``max |x|`` over axes 0 and 2 as float64 (NaN where a NaN is present).  The 16-bit
    formats compare their bit patterns with the sign cleared (the order of magnitudes, NaN above
    infinity): numpy's float16 and ml_dtypes' bfloat16 reductions run element by element."""
    if x3.dtype.itemsize == 2:
        bits = x3.view(np.uint16) & np.uint16(0x7FFF)
        return bits.max(axis=(0, 2)).view(x3.dtype).astype(np.float64)
    with np.errstate(invalid="ignore"):
        return np.maximum(x3.max(axis=(0, 2)), -x3.min(axis=(0, 2))).astype(np.float64)


def exact_sums(
    x3: np.ndarray,
    *,
    fmt_bits: int | None = None,
    progress: Callable[[int], None] | None = None,
    first: bool = True,
    second: bool = True,
) -> tuple[list[Fraction], list[Fraction], np.ndarray]:
    """Exact ``sum(x)`` and ``sum(x**2)`` over axes 0 and 2 of an (A, G, B) array.

    Returns the two lists of per-group sums and a boolean mask of the groups
    holding a NaN or an infinity; their sums are left at zero.  ``fmt_bits``
    is the significand width of the input format (24 for float32); it
    decides whether squares are exact doubles.  ``progress`` is called with
    the number of elements done after each block.  ``first=False`` skips
    ``sum(x)`` (RMSNorm needs only the squares) and ``second=False`` skips ``sum(x**2)``;
    a skipped list is all zeros.
    """
    a_n, g_n, b_n = x3.shape
    n = a_n * b_n
    if fmt_bits is None:
        fmt_bits = np.finfo(x3.dtype).nmant + 1
    if n == 0:
        return [Fraction(0)] * g_n, [Fraction(0)] * g_n, np.zeros(g_n, dtype=bool)
    absmax = _absmax(x3)
    nonfinite = ~np.isfinite(absmax)
    slow = np.zeros(g_n, dtype=bool)
    if fmt_bits > 26:
        nz = np.where(x3 != 0, np.abs(x3), np.inf).min(axis=(0, 2))
        slow = (absmax >= _F64_SAFE_HI) | (nz < _F64_SAFE_LO)
    skip = slow | nonfinite
    absmax[skip] = 0.0  # these groups are zeroed below and summed elsewhere
    top = np.frexp(absmax)[1].astype(np.int64)  # absmax < 2**top
    squares, n_terms = _square_terms(fmt_bits)
    s1 = _PieceSum(top, n)
    s2 = _PieceSum(2 * top + 1, n * n_terms)  # every term shares the accumulator
    for sa, sg, sb in blocks(x3.shape):
        xb = x3[sa, sg, sb].astype(np.float64)
        if skip.any():
            xb = np.where(skip[sg].reshape(1, -1, 1), 0.0, xb)
        if first:
            s1.add(xb, sg)
        if second:
            for term in squares(xb):
                s2.add(term, sg)
        if progress is not None:
            progress(xb.size)
    sum1 = s1.totals() if first else [Fraction(0)] * g_n
    sum2 = s2.totals() if second else [Fraction(0)] * g_n
    for g in np.flatnonzero(slow & ~nonfinite):
        sum1[g], sum2[g] = _slow_sums(x3, int(g))
    return sum1, sum2, nonfinite
