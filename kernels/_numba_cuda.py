"""numba.cuda kernels of the CUDA BatchNorm (float64 arithmetic inside, float32 in and out).

The same arithmetic and error analysis as the CPU kernels (see ``_numba_cpu``): each thread
sums blocks of at most CHUNK values sequentially and combines the block sums with Neumaier's
compensated summation; a block's per-thread sums are combined, compensated, by its thread 0,
and the blocks' sums by one thread per channel.
numba.cuda compiles without fast math by default: no flush to zero, IEEE division and square
root.  NVVM may still fuse a multiply and an add (the PTX shows fma.rn.f64 in the sums, the
normalization and the backward); a fused operation rounds once where the bounds count two
roundings, so they hold either way.  ``python -m pytest`` compiles every kernel to PTX when
the CUDA toolkit is present (tests/kernels/test_kernels_cuda.py), GPU or not.

Everything here also runs under numba's CUDA simulator (``NUMBA_ENABLE_CUDASIM=1``).
"""

from __future__ import annotations

import math

from normspec.kernels._numba_cpu import _SA_SLACK, CHUNK, _neumaier, shift_of  # njit: compiled for CUDA as well
from numba import cuda, float32, float64, int64
from numba.core import config

# threads per block; the simulator runs each thread as a Python thread, so it gets fewer (the
# logic does not depend on the count, and small blocks exercise the multi-block paths)
THREADS = 32 if config.ENABLE_CUDASIM else 256
_OVERFLOW = 3.4028235677973366e38  # the largest float32 plus half its ULP: from here on, rounds to inf


@cuda.jit
def shifts_kernel(x3, shift):  # pragma: no cover - device code
    """shift[c]: the mean of the first min(B, 64) values of x3[0, c] (as the CPU kernels)."""
    c = cuda.grid(1)
    if c < x3.shape[1]:
        k = x3.shape[2] if x3.shape[2] < 64 else 64  # (min() of two ints fails to compile for CUDA here)
        t = 0.0
        for i in range(k):
            t += float64(x3[0, c, i])
        shift[c] = shift_of(t, k)


@cuda.jit(device=True)
def _slab_walk(x3):  # pragma: no cover - device code
    """Grid (S, C): channel c, thread t, the channel's count n and row length B, this thread's
    first flat index j in the channel and its stride (adjacent threads read adjacent values)."""
    t = cuda.threadIdx.x
    n = x3.shape[0] * x3.shape[2]
    return cuda.blockIdx.y, t, n, x3.shape[2], cuda.blockIdx.x * cuda.blockDim.x + t, cuda.gridDim.x * cuda.blockDim.x


@cuda.jit
def partial_sums_kernel(x3, shift, parts):  # pragma: no cover - device code
    """Grid (S, C): thread t of slab s of channel c walks the channel's values j = s * T + t,
    j += S * T (adjacent threads read adjacent values) summing d = x - shift; thread 0 of the
    block then combines its threads' [S1, comp1, S2, comp2] into parts[c, s]."""
    sums = cuda.shared.array((THREADS, 4), float64)
    c, t, n, B, j, stride = _slab_walk(x3)
    sh = shift[c]
    s1 = 0.0
    c1 = 0.0
    s2 = 0.0
    c2 = 0.0
    p1 = 0.0
    p2 = 0.0
    cnt = 0
    while j < n:
        a = j // B
        d = float64(x3[a, c, j - a * B]) - sh
        p1 += d
        p2 += d * d
        cnt += 1
        if cnt == CHUNK:
            s1, c1 = _neumaier(s1, c1, p1)
            s2, c2 = _neumaier(s2, c2, p2)
            p1 = 0.0
            p2 = 0.0
            cnt = 0
        j += stride
    s1, c1 = _neumaier(s1, c1, p1)
    s2, c2 = _neumaier(s2, c2, p2)
    sums[t, 0] = s1
    sums[t, 1] = c1
    sums[t, 2] = s2
    sums[t, 3] = c2
    cuda.syncthreads()
    if t == 0:
        s1 = 0.0
        c1 = 0.0
        s2 = 0.0
        c2 = 0.0
        for k in range(cuda.blockDim.x):
            s1, c1 = _neumaier(s1, c1, sums[k, 0])
            s1, c1 = _neumaier(s1, c1, sums[k, 1])
            s2, c2 = _neumaier(s2, c2, sums[k, 2])
            s2, c2 = _neumaier(s2, c2, sums[k, 3])
        parts[c, cuda.blockIdx.x, 0] = s1
        parts[c, cuda.blockIdx.x, 1] = c1
        parts[c, cuda.blockIdx.x, 2] = s2
        parts[c, cuda.blockIdx.x, 3] = c2


@cuda.jit
def combine_kernel(parts, shift, n, out):  # pragma: no cover - device code
    """out[c] = [shift, S1, comp1, S2, bound on sum|d|] from the per-thread compensated sums."""
    c = cuda.grid(1)
    if c < parts.shape[0]:
        s1 = 0.0
        c1 = 0.0
        s2 = 0.0
        c2 = 0.0
        for t in range(parts.shape[1]):
            s1, c1 = _neumaier(s1, c1, parts[c, t, 0])
            s1, c1 = _neumaier(s1, c1, parts[c, t, 1])
            s2, c2 = _neumaier(s2, c2, parts[c, t, 2])
            s2, c2 = _neumaier(s2, c2, parts[c, t, 3])
        sq = s2 + c2
        out[c, 0] = shift[c]
        out[c, 1] = s1
        out[c, 2] = c1 if math.isfinite(s1) else 0.0
        out[c, 3] = sq
        out[c, 4] = math.sqrt(n * sq) * _SA_SLACK  # >= sum|d| (Cauchy-Schwarz)


@cuda.jit(device=True)
def _split(i, C, B):  # pragma: no cover - device code
    """Flat index i of an (A, C, B) array as (a, c, b)."""
    ac = i // B
    a = ac // C
    return a, ac - a * C, i - ac * B


@cuda.jit
def normalize_kernel(x3, mu, s, beta, gap_k, big_g, y3, flags):  # pragma: no cover - device code
    """y = (x - mu) * s + beta' in float64, rounded to float32; flags[a, c] counts the elements
    of row (a, c) whose rounding the certificate leaves to the host (as the CPU ``normalize``:
    |y64 - r| < 2**E gap_k - G, 2**E <= |y64| < 2**(E+1))."""
    _, C, B = x3.shape
    i = cuda.grid(1)
    while i < x3.size:
        a, c, b = _split(i, C, B)
        yv = (float64(x3[a, c, b]) - mu[c]) * s[c] + beta[c] + 0.0  # + 0.0: an exact 0 is +0
        ay = abs(yv)
        if ay >= _OVERFLOW:  # what the cast gives, spelled out (the simulator's cast warns)
            r = float32(math.copysign(math.inf, yv))
        else:
            r = float32(yv)
        floor = 0.0
        if ay > 0:  # frexp gives E + 1; inf and NaN are never flagged (as on the CPU)
            floor = math.ldexp(1.0, math.frexp(yv)[1] - 1) if ay < math.inf else math.inf
        if abs(yv - float64(r)) > floor * gap_k[c] - big_g[c]:
            cuda.atomic.add(flags, (a, c), 1)
        y3[a, c, b] = r
        i += cuda.gridsize(1)


@cuda.jit
def exact_bins_kernel(bits3, c, bins1, bins2):  # pragma: no cover - device code
    """The exponent-binned exact integer sums of channel c (see ``_numba_cpu.exact_bins``), with
    per-block bins in shared memory added atomically into the global ones."""
    sb1 = cuda.shared.array(254, int64)
    sb2 = cuda.shared.array((254, 2), int64)
    t = cuda.threadIdx.x
    for k in range(t, 254, cuda.blockDim.x):
        sb1[k] = 0
        sb2[k, 0] = 0
        sb2[k, 1] = 0
    cuda.syncthreads()
    A, _, B = bits3.shape
    n = A * B
    j = cuda.grid(1)
    stride = cuda.gridsize(1)
    while j < n:
        a = j // B
        b = int64(bits3[a, c, j - a * B])
        ex = (b >> 23) & 0xFF
        frac = b & 0x7FFFFF
        mant = frac if ex == 0 else frac | 0x800000
        idx = 0 if ex == 0 else ex - 1
        sq = mant * mant
        cuda.atomic.add(sb1, idx, -mant if b < 0 else mant)
        cuda.atomic.add(sb2, (idx, 0), sq >> 24)
        cuda.atomic.add(sb2, (idx, 1), sq & 0xFFFFFF)
        j += stride
    cuda.syncthreads()
    for k in range(t, 254, cuda.blockDim.x):
        if sb1[k] != 0:
            cuda.atomic.add(bins1, k, sb1[k])
        if sb2[k, 0] != 0 or sb2[k, 1] != 0:
            cuda.atomic.add(bins2, (k, 0), sb2[k, 0])
            cuda.atomic.add(bins2, (k, 1), sb2[k, 1])


@cuda.jit
def backward_partials_kernel(x3, dy3, mu, parts):  # pragma: no cover - device code
    """Grid (S, C), threads as in partial_sums_kernel: parts[c, s] = [sum dy, sum dy (x - mu)] over
    the block's values (plain float64 sums: the backward's bound is relative to the terms)."""
    sums = cuda.shared.array((THREADS, 2), float64)
    c, t, n, B, j, stride = _slab_walk(x3)
    m = mu[c]
    s0 = 0.0
    s1 = 0.0
    while j < n:
        a = j // B
        g = float64(dy3[a, c, j - a * B])
        s0 += g
        s1 += g * (float64(x3[a, c, j - a * B]) - m)
        j += stride
    sums[t, 0] = s0
    sums[t, 1] = s1
    cuda.syncthreads()
    if t == 0:
        s0 = 0.0
        s1 = 0.0
        for k in range(cuda.blockDim.x):
            s0 += sums[k, 0]
            s1 += sums[k, 1]
        parts[c, cuda.blockIdx.x, 0] = s0
        parts[c, cuda.blockIdx.x, 1] = s1


@cuda.jit
def backward_dx_kernel(x3, dy3, mu, coef, mean_dy, proj, dx3):  # pragma: no cover - device code
    """dx = coef * (dy - mean_dy - (x - mu) * proj) in float64, rounded once (as the CPU's)."""
    _, C, B = x3.shape
    i = cuda.grid(1)
    while i < x3.size:
        a, c, b = _split(i, C, B)
        t = float64(x3[a, c, b]) - mu[c]
        dx3[a, c, b] = float32(coef[c] * (float64(dy3[a, c, b]) - mean_dy[c] - t * proj[c]))
        i += cuda.gridsize(1)


def blocks_for(count: int, per_block: int = THREADS, cap: int = 4096) -> int:
    return max(1, min(cap, -(-count // per_block)))
