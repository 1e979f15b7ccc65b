"""numba loops of the CPU kernels (float64 arithmetic inside, float32 in and out).

Arrays are viewed as (A, C, B): C channels, statistics over A and B.
"""

from __future__ import annotations

import math

import numpy as np
from normspec.kernels._simd import HALF_GAP as _HALF_GAP
from normspec.kernels._simd import (
    W,
    address,
    block_sums16,
    block_sums16_eft,
    chunk_masked,
    chunk_stream,
    fma,
    pow2_floor,
    store_fence,
)
from numba import get_num_threads, njit, prange

_MAX_F32 = 3.4028234663852886e38


# Rows (contiguous runs of one channel's values) are summed in blocks of 64 values by
# ``block_sums16`` (._simd): 16 lane-wise running sums of 4 terms each and a fixed four-level tree
# over the lanes, no reassociation; a row's last values in one shorter vector block and
# sequential blocks of at most 6.
# * sum d**2: no term meets more than 10 roundings from its subtraction on, so a block errs by at
#   most (ROW_BOUND + 4) u sum d**2 with ROW_BOUND = 6.
# * sum d: likewise (ROW_BOUND + 2) u sum|d|.
# Or, for the few channels whose elements the certificate leaves open (``eft``,
# block_sums16_eft), both sums carried error-free (TwoSum at the subtraction and at every
# addition, an fma for each square) as pairs whose low parts collect the errors; the low parts'
# own rounding leaves a block within EFT_BLOCK u**2 sum|d| (sum d**2) of the exact sums.  The
# mean's error bound is what leaves elements near y = 0 open, the variance's (through the
# relative error of s) those elsewhere; this re-summing closes most of them at about a third of
# the cost of exact statistics.
# The block sums are combined with Neumaier's compensated summation, which must not be
# reassociated (it lives in functions without fastmath); the blocks' low parts go into the
# compensation, and S1 stays the pair (sum, compensation): within 4 m^2 u^2 sum|d| more of the
# blocks' exact total for m terms (each term's error, at most u times a partial sum or a low
# part, meets at most m roundings).  sum|d| is not accumulated: Cauchy-Schwarz bounds it by
# sqrt(n sum d**2), and sum d**2 is known to a relative error far below the 2**-20 slack.
# Reassociated blocks (CHUNK + 2 u sum|d| with CHUNK = 65) are what the channels-last sums and
# the CUDA kernel use.
CHUNK = 65
ROW_BOUND = 6
EFT_BLOCK = 220  # above 144 (S1) and 199 (S2), block_sums16_eft's bounds at 4 terms a lane
_BLOCK = 64
_SA_SLACK = 1.0 + 2.0**-20


@njit(cache=True)
def _two_sum(a: float, b: float) -> tuple[float, float]:  # pragma: no cover - compiled
    """(s, e): s = fl(a + b), a + b = s + e exactly (Knuth; no fastmath, so kept as written)."""
    s = a + b
    bb = s - a
    return s, (a - (s - bb)) + (b - bb)


@njit(cache=True)
def _two_prod(a: float, b: float) -> tuple[float, float]:  # pragma: no cover - compiled
    """(p, e): p = fl(a b), a b = p + e exactly (no underflow)."""
    p = a * b
    return p, fma(a, b, -p)


@njit(cache=True)
def _quotient(s: float, c: float, n: float) -> tuple[float, float, float]:  # pragma: no cover - compiled
    """(s + c) / n as a pair (q, q_lo) and a bound on its error: q = fl(s / n), the remainder
    s - q n exact by an fma (the remainder of a correctly rounded quotient; away from underflow,
    which the callers' 2**-1074 covers), q_lo = fl(fl(remainder + c) / n).  A non-finite s (a
    channel holding inf or NaN) gives q alone, q_lo = 0."""
    q = s / n
    r = fma(-q, n, s)
    if not math.isfinite(r):
        r = 0.0
    return q, (r + c) / n, 2.02 * _U * (abs(r) + abs(c)) / n


@njit(cache=True)
def _tail_sums(v: np.ndarray, shift: float, eft: bool) -> tuple[float, float, float, float]:  # pragma: no cover
    """Sequential (S1, S1_lo, S2, S2_lo) of at most ROW_BOUND values, plain (no reassociation;
    low parts 0) or, with ``eft``, carried as in block_sums16_eft.  k terms: S1's low parts add
    up to at most (k + 1) u sum|d| and each meets at most k + 1 roundings (within 49 u**2 sum|d|
    at k = 6); S2's to (k + 3) u sum d**2, each meeting at most k + 2, and de**2 is dropped
    (within 73 u**2 sum d**2 at k = 6)."""
    p1 = 0.0
    lo1 = 0.0
    p2 = 0.0
    lo2 = 0.0
    if not eft:
        for i in range(v.size):
            t = float(v[i]) - shift
            p1 += t
            p2 += t * t
        return p1, lo1, p2, lo2
    for i in range(v.size):
        d, de = _two_sum(np.float64(v[i]), -shift)
        p1, te = _two_sum(p1, d)
        lo1 += de + te
        p = d * d
        p2, qe = _two_sum(p2, p)
        lo2 += fma(d + d, de, fma(d, d, -p) + qe)
    return p1, lo1, p2, lo2


@njit(cache=True)
def _neumaier(s: float, comp: float, t: float) -> tuple[float, float]:  # pragma: no cover - compiled
    u = s + t
    if not math.isfinite(u):  # an infinity (or NaN) arrived: it is the sum; keep comp finite
        return u, comp
    if abs(s) >= abs(t):
        comp += (s - u) + t
    else:
        comp += (t - u) + s
    return u, comp


@njit(cache=True)
def _add_low(comp: float, lo: float) -> float:  # pragma: no cover - compiled
    """comp + lo, where a NaN lo (an infinity among the block's values, whose sum then says it)
    leaves comp as it is: the compensations stay finite, as in :func:`_neumaier`."""
    return comp + lo if math.isfinite(lo) else comp


@njit(cache=True)
def _block(
    row: np.ndarray, k: int, nv: int, shift: float, eft: bool
) -> tuple[float, float, float, float]:  # pragma: no cover - compiled
    """block_sums16 or block_sums16_eft of row[k : k + 16 nv] as (S1, S1_lo, S2, S2_lo)."""
    if eft:
        return block_sums16_eft(row, k, nv, shift)
    p1, p2 = block_sums16(row, k, nv, shift)
    return p1, 0.0, p2, 0.0


@njit(cache=True)
def _sums_of(
    row: np.ndarray, shift: float, s1: float, c1: float, s2: float, c2: float, eft: bool
) -> tuple[float, float, float, float]:  # pragma: no cover - compiled
    """Add the shifted sums of one contiguous row to (S1, comp1, S2, comp2): blocks of 64 values
    (and the row's shorter last blocks) in block_sums16's fixed order, combined compensated
    (``eft``: block_sums16_eft, the blocks' low parts into the compensations)."""
    B = row.size
    k = 0
    while k + _BLOCK <= B:
        p1, lo1, p2, lo2 = _block(row, k, _BLOCK // W, shift, eft)
        s1, c1 = _neumaier(s1, _add_low(c1, lo1), p1)
        s2, c2 = _neumaier(s2, _add_low(c2, lo2), p2)
        k += _BLOCK
    nv = (B - k) // W
    if nv > 0:
        p1, lo1, p2, lo2 = _block(row, k, nv, shift, eft)
        s1, c1 = _neumaier(s1, _add_low(c1, lo1), p1)
        s2, c2 = _neumaier(s2, _add_low(c2, lo2), p2)
        k += nv * W
    while k < B:
        e = min(B, k + ROW_BOUND)
        p1, lo1, p2, lo2 = _tail_sums(row[k:e], shift, eft)
        s1, c1 = _neumaier(s1, _add_low(c1, lo1), p1)
        s2, c2 = _neumaier(s2, _add_low(c2, lo2), p2)
        k = e
    return s1, c1, s2, c2


@njit(cache=True)
def _row_sums(row: np.ndarray, shift: float, acc: np.ndarray, eft: bool) -> None:  # pragma: no cover - compiled
    """:func:`_sums_of` into acc = [S1, comp1, S2, comp2]."""
    acc[0], acc[1], acc[2], acc[3] = _sums_of(row, shift, acc[0], acc[1], acc[2], acc[3], eft)


@njit(cache=True)
def _shift(row: np.ndarray) -> float:  # pragma: no cover - compiled
    """A shift near the channel's mean (the mean of its first few values): the sums' error bounds
    grow with sum|x - shift|, so a central shift tightens them."""
    k = min(row.size, 64)
    t = 0.0
    for i in range(k):
        t += np.float64(row[i])
    return shift_of(t, k)


@njit(cache=True)
def shift_of(t: float, k: int) -> float:  # pragma: no cover - compiled
    """t / k, or 0 when that is not finite (an infinity among the values: x - inf would turn the
    channel's infinite sum into NaN).  Compiled for CUDA too, hence math rather than numpy."""
    m = t / k
    return m if math.isfinite(m) else 0.0


def threads() -> int:
    """numba's thread count (the host sizes its tasks by it)."""
    return get_num_threads()


def neumaier_terms(a_n: int, b_n: int, tasks: int) -> int:
    """How many terms one channel's compensated sums combine (the m of the bound), with slack."""
    return 2 * (a_n * (b_n // _BLOCK + 4) + 2 * tasks + 130)


@njit(cache=True)
def _sa_bound(n: int, s2: float) -> float:  # pragma: no cover - compiled
    """A bound on sum|d| from sum d**2 (Cauchy-Schwarz, with slack for the error of s2)."""
    return np.sqrt(n * s2) * _SA_SLACK


@njit(cache=True)
def _finish_sums(shift: float, acc: np.ndarray, n: int, out: np.ndarray) -> None:  # pragma: no cover
    """out = [shift, S1, comp1, S2, bound on sum|d|] (STATS_COLUMNS): S1 stays a pair."""
    s2 = acc[2] + acc[3]
    out[0] = shift
    out[1] = acc[0]
    out[2] = acc[1] if np.isfinite(acc[0]) else 0.0
    out[3] = s2
    out[4] = _sa_bound(n, s2)


@njit(parallel=True, cache=True)
def stats_inner(x3: np.ndarray, out: np.ndarray) -> None:  # pragma: no cover - compiled
    """Per channel [shift, S1, comp1, S2, bound on sum|d|], d = x - shift (see _shift), one channel
    per task (for few outer rows A)."""
    A, C, B = x3.shape
    for c in prange(C):
        shift = _shift(x3[0, c])
        acc = np.zeros(4)
        for a in range(A):
            _row_sums(x3[a, c], shift, acc, False)
        _finish_sums(shift, acc, A * B, out[c])


@njit(parallel=True, cache=True)
def stats_channels_eft(x3: np.ndarray, chans: np.ndarray, out: np.ndarray) -> None:  # pragma: no cover - compiled
    """:func:`stats_inner`'s table for channels ``chans`` only (out[k] for chans[k], one task
    each), the sums carried error-free (block_sums16_eft): the re-summing of channels with open
    elements (the ``eft`` of :func:`plan_from_sums`, with m = neumaier_terms(A, B, 1)).  A sixth
    column keeps S2's low part (S2 + out[k, 5] is the unrounded pair), for :func:`dd_plan`."""
    A, _, B = x3.shape
    for k in prange(chans.size):
        c = chans[k]
        shift = _shift(x3[0, c])
        acc = np.zeros(4)
        for a in range(A):
            _row_sums(x3[a, c], shift, acc, True)
        _finish_sums(shift, acc, A * B, out[k])
        s2, lo2 = _two_sum(acc[2], acc[3])
        out[k, 5] = lo2 if np.isfinite(s2) else 0.0


@njit(parallel=True, cache=True)
def stats_linear(x3: np.ndarray, tasks: int, out: np.ndarray) -> None:  # pragma: no cover - compiled
    """The same sums reading x in memory order: each task streams a slab of outer rows and keeps
    compensated sums for every channel; the slabs' sums are combined compensated (many outer rows
    A, short inner rows B: the per-channel walk would jump through memory and stall)."""
    A, C, B = x3.shape
    shift = np.empty(C)
    for c in range(C):
        shift[c] = _shift(x3[0, c])
    tot = np.zeros((tasks, C, 4))
    step = (A + tasks - 1) // tasks
    for t in prange(tasks):
        acc = tot[t]
        for a in range(t * step, min(A, (t + 1) * step)):
            for c in range(C):
                _row_sums(x3[a, c], shift[c], acc[c], False)
    for c in range(C):
        s1 = 0.0
        c1 = 0.0
        s2 = 0.0
        c2 = 0.0
        for t in range(tasks):
            s1, c1 = _neumaier(s1, c1, tot[t, c, 0])
            s1, c1 = _neumaier(s1, c1, tot[t, c, 1])
            s2, c2 = _neumaier(s2, c2, tot[t, c, 2])
            s2, c2 = _neumaier(s2, c2, tot[t, c, 3])
        tot[0, c, 0] = s1
        tot[0, c, 1] = c1
        tot[0, c, 2] = s2
        tot[0, c, 3] = c2
        _finish_sums(shift[c], tot[0, c], A * B, out[c])


_U = 2.0**-53
STATS_COLUMNS = 5  # shift, S1, comp1 (S1 + comp1 is the shifted sum), S2, bound on sum|d|
EFT_COLUMNS = 6  # the same and S2's low part (stats_channels_eft)
KAPPA = 2.0**-26 * (1 - 2.0**-23)
# plan columns: mu, var, s, k, cg, mu_lo, mu_err, var_err, uncertain, K, G, gap_k, beta'
PLAN_COLUMNS = 13
# 2**(E-24) with 2**E <= |y64| < 2**(E+1) is at most the distance from the float32 nearest y64
# to the rounding boundary on y64's side (see ._simd)


@njit(cache=True)
def plan_from_sums(
    shift: float,
    s1: float,
    c1: float,
    s2: float,
    sa: float,
    n: int,
    m: int,
    chunk: int,
    eft: bool,
    gamma: float,
    beta: float,
    eps: float,
    guard: bool,
    out: np.ndarray,
) -> None:  # pragma: no cover - compiled
    """Statistics and error bounds of one channel from its shifted sums (the single source of the bounds).

    Sums: chunks of at most ``chunk`` terms (reassociated), then compensated over m chunk sums,
    the sum d kept as the pair s1 + c1, so |dS1| <= (chunk + 2) u sum|d| + 4 m^2 u^2 sum|d|
    (d**2: (chunk + 4) u S2 + 2u S2 + 4 m^2 u^2 S2, S2 rounded once), times 1.01 for the
    higher-order terms.  ``eft``: both sums were carried error-free through the chunks
    (block_sums16_eft), |dS1| <= (EFT_BLOCK + 4 m^2) u^2 sum|d| and
    |dS2| <= u S2 + (EFT_BLOCK + 4 m^2) u^2 S2 instead.  Then S1/n is mean1 plus a low part (the
    division's remainder, exact by an fma, with c1), the mean is shift + mean1 + low as the
    pair (mu, mu_lo) (Fast2Sum, then one rounding of the low parts), var = S2/n - (mean1 + low)^2,
    and :func:`plan_finish`.
    """
    if not np.isfinite(s1) or not np.isfinite(c1):  # a channel holding inf or NaN: s1 says it
        c1 = 0.0
    if eft:
        ds1 = 1.01 * (EFT_BLOCK + 4.0 * m * m) * _U * _U * sa
        ds2 = 1.01 * (_U + (EFT_BLOCK + 4.0 * m * m) * _U * _U) * s2
    else:
        ds1 = 1.01 * ((chunk + 2) * _U * sa + 4.0 * m * m * _U * _U * sa)
        ds2 = 1.01 * ((chunk + 4) * _U * s2 + 2 * _U * s2 + 4.0 * m * m * _U * _U * s2)
    mean1, low, e_low = _quotient(s1, c1, np.float64(n))
    mu = shift + mean1
    if abs(shift) >= abs(mean1):
        add_err = (shift - mu) + mean1
    else:
        add_err = (mean1 - mu) + shift
    # mu + add_err is shift + mean1 exactly (Fast2Sum): the mean is carried as a pair, so its
    # error is the sums' error and the low parts' rounding, not the rounding of shift + mean1
    if not np.isfinite(add_err):  # a channel holding inf or NaN: mu alone (inf or NaN) says it
        add_err = 0.0
    mu_lo = add_err + low
    mu_err = 1.01 * (ds1 / n + e_low + _U * abs(mu_lo) + 2.0**-1074)
    mf = mean1 + low
    e_mf = ds1 / n + e_low + _U * abs(mf)  # |S1 / n - mf|, S1 exact
    var = s2 / n - mf * mf
    var_err = 1.01 * (ds2 / n + _U * s2 / n + 2 * abs(mf) * e_mf + e_mf * e_mf + 2 * _U * mf * mf + _U * abs(var))
    plan_finish(mu, mu_lo, max(var, 0.0), mu_err, var_err, gamma, beta, eps, guard, out)


@njit(cache=True)
def plan_finish(
    mu: float,
    mu_lo: float,
    var: float,
    mu_err: float,
    var_err: float,
    gamma: float,
    beta: float,
    eps: float,
    guard: bool,
    out: np.ndarray,
) -> None:  # pragma: no cover - compiled
    """s = gamma/sqrt(var + eps), beta' = beta - mu_lo s and the rounding certificate's K and G.

    The mean is the pair mu + mu_lo, within mu_err of the exact mean (mu alone within
    mu_err + |mu_lo|); the kernels compute y64 = fma(x - mu, s, beta') with mu_lo folded into
    beta' (rounded, by at most 1.01u(|beta'| + |mu_lo s|)).  y64 errs by at most
    k3|p| + cg3 + e(beta') + 2**-52|y64| (p the product; k3 = 1.01(rho + 3u) for the subtraction,
    the product and s's relative error rho; cg3 from the mean's error), so by at most
    K|y64| + G once |p| is bounded by (1 + u)|y64| + |beta'|.  The float32 r nearest y64 is then
    the correctly rounded y when |y64 - r| + 2(K|y64| + G) stays below 2**(E-24) (2**E <= |y64| <
    2**(E+1)): the rounding boundaries next to r lie 2**(E-24) from it or farther (more below
    2**-126, where the spacing is fixed), except below a power of two r <= |y64|, where the binade
    below has half the spacing; the bracket reaches that side by no more than K|y64| + G, under
    half the distance once the doubled bound fits.  As K|y64| < 2K 2**E, the kernels test
    |y64 - r| < 2**E gap_k - G2 with gap_k = HALF_GAP - 4K and G2 = 2G, the plan's column 10;
    the host rechecks the rows they flag with the bracket itself (:func:`_decided`).  k and cg
    (columns 3 and 4) are the terms of a mean taken as mu alone, for callers that fold the affine
    into their own bound (``rows_norm``).

    A channel whose bounds are vacuous is marked uncertain (every element goes exact).
    """
    D = var + eps
    dD = var_err + _U * D
    uncertain = not (D - dD > 0) and not (D == 0 and dD == 0 and guard)
    s = 0.0
    k = 0.0
    cg = 0.0
    big_k = np.inf
    big_g = np.inf
    gap_k = -1.0  # nothing passes
    beta_eff = beta
    if not uncertain:
        if D > 0:
            s = gamma / np.sqrt(D)
            rho = dD / (2 * (D - dD)) + 3 * _U
        else:
            rho = 3 * _U  # the guard: s = 0, y = beta exactly
        k = 1.01 * (rho + 2 * _U)
        cg = 1.01 * (mu_err + abs(mu_lo)) * abs(s) * (1 + rho)
        beta_eff = beta - mu_lo * s
        if KAPPA - k * (1 + _U) - 2.0**-52 > 0 and np.isfinite(s) and np.isfinite(cg) and np.isfinite(beta_eff):
            k3 = 1.01 * (rho + 3 * _U)
            big_k = k3 * (1 + _U) + 2.0**-52
            e_beta = 1.01 * _U * (abs(beta_eff) + abs(mu_lo * s))
            # s's error acts on mu_lo s, folded into beta', as on the product
            prod = abs(beta_eff) + abs(mu_lo * s)
            big_g = (k3 * (1 + _U) * prod + 1.01 * mu_err * abs(s) * (1 + rho) + e_beta) * (1 + 2.0**-40)
            gap_k = _HALF_GAP - 4 * big_k * (1 + 2.0**-40)
            big_g = 2 * big_g  # the bound counted twice (see above)
        else:
            uncertain = True
            beta_eff = beta
    out[0] = mu
    out[1] = var
    out[2] = s if not uncertain else 0.0
    out[3] = k
    out[4] = cg
    out[5] = mu_lo
    out[6] = mu_err
    out[7] = var_err
    out[8] = 1.0 if uncertain else 0.0
    out[9] = big_k
    out[10] = big_g
    out[11] = gap_k
    out[12] = beta_eff


@njit(cache=True)
def _decided(yv: float, r: np.float32, big_k: float, big_g2: float) -> bool:  # pragma: no cover - compiled
    """Whether the float32 r nearest y64 = yv is the correctly rounded exact y, given
    |yv - y*| <= K|yv| + G (``big_g2`` = 2G, the plan's column 10): the host's recheck of the
    rows the bulk pass flags, with the bracket itself instead of the bulk pass's bound on it.

    The bracket [|yv| - B, |yv| + B], B = (K|yv| + G)(1 + 2**-40) (covering this line's two
    roundings), must lie strictly inside r's rounding interval: |r| plus half the float32
    spacing above |r|, minus half the spacing below it (a quarter of the spacing above at a
    power of two from 2**-125 up, where the binade below is finer).  The two differences
    are exact (Sterbenz: the operands are within a factor of two, the edges exact in float64),
    so only B is rounded.  Strict inequalities: a bracket reaching a midpoint is open.  The
    bulk pass's test (2**E gap_k - 2G) is the same one with K|yv| <= 2K 2**E and the bound
    doubled for every r, so what it passes passes here.  At r = 0 the bracket must also keep to
    r's sign: an exact 0 rounds to +0, a negative value to -0.  A NaN or infinite yv is not
    flagged (its inputs were NaN or infinite); a finite yv that rounds to infinity is."""
    if not np.isfinite(yv):
        return True
    a = abs(float(r))
    if not np.isfinite(a):
        return False
    ya = abs(yv)
    b = (big_k * ya + 0.5 * big_g2) * (1 + 2.0**-40)
    if a == 0.0:  # +0 takes [0, 2**-150] (an exact 0 included), -0 takes [-2**-150, 0)
        inside = (ya + b) * (1 + 2.0**-40) < 2.0**-150
        return inside and (yv >= b if not np.signbit(r) else -yv > b)
    m, ex = math.frexp(a)  # a = m 2**ex, 0.5 <= m < 1
    spacing = math.ldexp(1.0, max(ex - 1, -126) - 23)
    below = 0.25 * spacing if m == 0.5 and ex - 1 >= -125 else 0.5 * spacing
    return ya - (a - below) > b and (a + 0.5 * spacing) - ya > b


@njit(cache=True)
def decided_many(yv: np.ndarray, r: np.ndarray, bound: np.ndarray, out: np.ndarray) -> None:  # pragma: no cover
    """out[i]: whether float32 r[i] is the correct rounding of every value within bound[i] of
    yv[i] (:func:`_decided` with K = 0 and G = bound[i]; NaN or infinite yv counts as decided)."""
    for i in range(yv.size):
        out[i] = _decided(yv[i], r[i], 0.0, 2.0 * bound[i])


@njit(cache=True)
def plans_from_stats(
    st: np.ndarray,
    n: int,
    m: int,
    chunk: int,
    gamma: np.ndarray,
    beta: np.ndarray,
    eps: float,
    guard: bool,
    plan: np.ndarray,
) -> None:  # pragma: no cover - compiled
    for c in range(st.shape[0]):
        s = st[c]
        plan_from_sums(s[0], s[1], s[2], s[3], s[4], n, m, chunk, False, gamma[c], beta[c], eps, guard, plan[c])


@njit(cache=True)
def plans_finish(
    mu: np.ndarray, var: np.ndarray, gamma: np.ndarray, beta: np.ndarray, eps: float, guard: bool, plan: np.ndarray
) -> None:  # pragma: no cover - compiled
    for c in range(mu.size):
        plan_finish(mu[c], 0.0, var[c], 0.0, 0.0, gamma[c], beta[c], eps, guard, plan[c])


@njit(parallel=True, cache=True)
def stats_rows(x2: np.ndarray, out: np.ndarray, chunks: int) -> None:  # pragma: no cover - compiled
    """The same for (A, C) rows (channels last): CHUNK rows at a time per channel, compensated across."""
    A, C = x2.shape
    shift = np.empty(C)
    for c in range(C):
        shift[c] = _shift(x2[: min(A, 64), c])
    tot = np.zeros((chunks, 5, C))
    step = (A + chunks - 1) // chunks
    for k in prange(chunks):
        p0 = np.zeros(C)
        p1 = np.zeros(C)
        p2 = np.zeros(C)
        hi = min(A, (k + 1) * step)
        for a0 in range(k * step, hi, CHUNK):
            p0[:] = 0.0
            p1[:] = 0.0
            p2[:] = 0.0
            for a in range(a0, min(hi, a0 + CHUNK)):
                row = x2[a]
                for c in range(C):
                    d = np.float64(row[c]) - shift[c]
                    p0[c] += d
                    p1[c] += d * d
                    p2[c] += abs(d)
            for c in range(C):
                tot[k, 0, c], tot[k, 1, c] = _neumaier(tot[k, 0, c], tot[k, 1, c], p0[c])
                tot[k, 2, c], tot[k, 3, c] = _neumaier(tot[k, 2, c], tot[k, 3, c], p1[c])
                tot[k, 4, c] += p2[c]
    for c in range(C):
        s1 = 0.0
        c1 = 0.0
        s2 = 0.0
        c2 = 0.0
        sa = 0.0
        for k in range(chunks):
            s1, c1 = _neumaier(s1, c1, tot[k, 0, c])
            s1, c1 = _neumaier(s1, c1, tot[k, 1, c])
            s2, c2 = _neumaier(s2, c2, tot[k, 2, c])
            s2, c2 = _neumaier(s2, c2, tot[k, 3, c])
            sa += tot[k, 4, c]
        out[c, 0] = shift[c]
        out[c, 1] = s1
        out[c, 2] = c1 if np.isfinite(s1) else 0.0
        out[c, 3] = s2 + c2
        out[c, 4] = sa


@njit(cache=True, fastmath={"contract"})
def _normalize_row(
    x: np.ndarray, y: np.ndarray, mu: float, sc: float, bt: float, gap_k: float, big_g: float
) -> np.bool_:  # pragma: no cover - compiled
    """One row of y; True when some element needs the host's recheck (its rounding is not
    decided by the bulk test of :func:`plan_finish`).  ``contract`` lets the multiply and add fuse (one
    rounding where the bound counts two); a boolean OR instead of a count."""
    bad: np.bool_ = np.bool_(False)
    for b in range(x.size):
        yv = (np.float64(x[b]) - mu) * sc + bt + 0.0  # + 0.0: an exact 0 is +0 (-0 + 0 = +0)
        r = np.float32(yv)
        y[b] = r
        bad = bad | (abs(yv - np.float64(r)) > pow2_floor(yv) * gap_k - big_g)
    return bad


@njit(parallel=True, cache=True)
def normalize(
    x3: np.ndarray,
    mu: np.ndarray,
    s: np.ndarray,
    beta: np.ndarray,
    gap_k: np.ndarray,
    big_g: np.ndarray,
    y3: np.ndarray,
    uncertified: np.ndarray,
    spans: np.ndarray,
    tasks: int,
    stream: bool,
) -> None:  # pragma: no cover - compiled
    """y = (x - mu) * s + beta' in float64, rounded to float32, with the rounding
    certificate of :func:`plan_finish` per element.

    ``uncertified[a, c]`` is nonzero when row (a, c) has elements whose rounding the certificate
    leaves open (the host decides them); they lie in its ``spans[a * C + c]`` = [lo, hi) (the
    whole row on the scalar path, the flagged 16-lane chunks on the streaming one: a long row
    with one open element is rechecked around it, not whole).  ``tasks``: how many slabs of rows to share among the
    threads (a few per thread).  ``stream``: use the 16-lane streaming-store code of
    :mod:`._simd` (same arithmetic; rows of at least 16 values; the host asks for it on outputs
    too large to stay in cache, where skipping the read of y's lines pays).
    """
    A, C, B = x3.shape
    rows = A * C
    xf = x3.reshape(rows * B)
    yf = y3.reshape(rows * B)
    flags = uncertified.reshape(rows)
    stream = stream and B >= W and address(yf) % 4 == 0
    tasks = max(1, min(rows, tasks))
    step = (rows + tasks - 1) // tasks
    for t in prange(tasks):
        r0 = t * step
        r1 = min(rows, r0 + step)
        if stream:
            _normalize_span(xf, yf, r0, r1, B, C, mu, s, beta, gap_k, big_g, flags, spans)
            store_fence()
        else:
            for r in range(r0, r1):
                c = r % C
                flags[r] = _normalize_row(x3[r // C, c], y3[r // C, c], mu[c], s[c], beta[c], gap_k[c], big_g[c])
                spans[r, 0], spans[r, 1] = 0, B


@njit(cache=True)
def _normalize_span(
    xf: np.ndarray,
    yf: np.ndarray,
    r0: int,
    r1: int,
    B: int,
    C: int,
    mu: np.ndarray,
    s: np.ndarray,
    beta: np.ndarray,
    gap_k: np.ndarray,
    big_g: np.ndarray,
    flags: np.ndarray,
    spans: np.ndarray,
) -> None:  # pragma: no cover - compiled
    """Rows r0 .. r1-1 of the flat arrays (row r: channel r % C, values r*B .. r*B + B - 1,
    B >= 16) in 16-lane chunks aligned to y's cache lines: full chunks streamed, the partial
    ones at either end masked; a chunk may straddle two rows.  Sets flags[r] for the rows
    with flagged elements (clears the others) and spans[r] to the offsets [lo, hi) in the row
    that the flagged chunks cover."""
    start = r0 * B
    end = r1 * B
    for r in range(r0, r1):
        flags[r] = 0
        spans[r, 0], spans[r, 1] = B, 0
    q = start - (address(yf) // 4 + start) % W
    r = r0  # the row of the chunk's first lane (of lane lo for the first chunk)
    row_end = (r + 1) * B
    c = r % C
    while q < end:
        if q >= start and q + W <= min(row_end, end):  # full chunks inside row r: one parameter set
            m, sc, bt, kk, gg = mu[c], s[c], beta[c], gap_k[c], big_g[c]
            while q + W <= min(row_end, end):
                if chunk_stream(xf, yf, q, 0, W, W, m, sc, bt, kk, gg, m, sc, bt, kk, gg):
                    _mark(flags, spans, r, q - r * B, B)
                q += W
            if q >= end:
                break
            if q == row_end:
                r += 1
                row_end += B
                c = c + 1 if c + 1 < C else 0
                continue
        # a chunk at an end of the span, or straddling rows r and r + 1
        split = min(row_end - q, W)  # lanes from here on belong to row r + 1
        c2 = c + 1 if c + 1 < C else 0
        lo = max(start - q, 0)
        hi = min(end - q, W)
        m, sc, bt, kk, gg = mu[c], s[c], beta[c], gap_k[c], big_g[c]
        m2, sc2, bt2, kk2, gg2 = mu[c2], s[c2], beta[c2], gap_k[c2], big_g[c2]
        if lo == 0 and hi == W:
            f = chunk_stream(xf, yf, q, 0, W, split, m, sc, bt, kk, gg, m2, sc2, bt2, kk2, gg2)
        else:
            f = chunk_masked(xf, yf, q, lo, hi, split, m, sc, bt, kk, gg, m2, sc2, bt2, kk2, gg2)
        if f & 1:
            _mark(flags, spans, r, q - r * B, B)
        if f & 2:
            _mark(flags, spans, r + 1, q - (r + 1) * B, B)
        q += W
        if q >= row_end:  # B >= 16: one row boundary at most
            r += 1
            row_end += B
            c = c2


@njit(cache=True)
def _mark(flags: np.ndarray, spans: np.ndarray, r: int, off: int, B: int) -> None:  # pragma: no cover - compiled
    """Row r has a flagged chunk at offsets off .. off + 15 (clipped to the row)."""
    flags[r] = 1
    spans[r, 0] = min(spans[r, 0], max(off, 0))
    spans[r, 1] = max(spans[r, 1], min(off + W, B))


@njit(cache=True)
def certify_row(
    x: np.ndarray,
    mu: float,
    s: float,
    beta: float,
    big_k: float,
    gap_k: float,
    big_g: float,
    y: np.ndarray,
    bad: np.ndarray,
) -> int:  # pragma: no cover - compiled
    """One row again, element by element: writes y and marks in ``bad`` the finite-x elements
    whose rounding the bulk test leaves open and :func:`_decided` too (K, gap_k and 2G: the
    plan's columns 9 to 11)."""
    count = 0
    for b in range(x.size):
        xv = np.float64(x[b])
        yv = (xv - mu) * s + beta + 0.0
        r = np.float32(yv)
        y[b] = r
        bulk = not (abs(yv - np.float64(r)) > pow2_floor(yv) * gap_k - big_g)
        bad[b] = not bulk and not _decided(yv, r, big_k, big_g) and np.isfinite(xv)
        count += bad[b]
    return count


@njit(parallel=True, cache=True)
def normalize_rows(
    x2: np.ndarray,
    mu: np.ndarray,
    s: np.ndarray,
    beta: np.ndarray,
    gap_k: np.ndarray,
    big_g: np.ndarray,
    y2: np.ndarray,
    uncertified: np.ndarray,
) -> None:  # pragma: no cover - compiled
    """:func:`normalize` for (A, C) rows (channels last); ``uncertified[a]`` flags row a."""
    for a in prange(x2.shape[0]):
        uncertified[a] = _normalize_across(x2[a], y2[a], mu, s, beta, gap_k, big_g)


@njit(cache=True, fastmath={"contract"})
def _normalize_across(
    row: np.ndarray,
    out: np.ndarray,
    mu: np.ndarray,
    s: np.ndarray,
    beta: np.ndarray,
    gap_k: np.ndarray,
    big_g: np.ndarray,
) -> np.bool_:  # pragma: no cover - compiled
    bad: np.bool_ = np.bool_(False)
    for c in range(row.size):
        yv = (np.float64(row[c]) - mu[c]) * s[c] + beta[c] + 0.0
        r = np.float32(yv)
        out[c] = r
        bad = bad | (abs(yv - np.float64(r)) > pow2_floor(yv) * gap_k[c] - big_g[c])
    return bad


@njit(parallel=True, cache=True)
def backward_sums(x3: np.ndarray, dy3: np.ndarray, mu: np.ndarray, out: np.ndarray) -> None:  # pragma: no cover
    """Per channel: out[c] = [sum dy, sum dy * (x - mu)]."""
    A, C, B = x3.shape
    for c in prange(C):
        m = mu[c]
        s0 = 0.0
        s1 = 0.0
        for a in range(A):
            for b in range(B):
                g = np.float64(dy3[a, c, b])
                s0 += g
                s1 += g * (np.float64(x3[a, c, b]) - m)
        out[c, 0] = s0
        out[c, 1] = s1


@njit(parallel=True, cache=True)
def backward_dx(
    x3: np.ndarray,
    dy3: np.ndarray,
    mu: np.ndarray,
    coef: np.ndarray,
    mean_dy: np.ndarray,
    proj: np.ndarray,
    dx3: np.ndarray,
) -> None:  # pragma: no cover - compiled
    """dx = coef * (dy - mean_dy - (x - mu) * proj), coef = gamma * invstd, proj = mean(dy (x - mu)) invstd^2."""
    A, C, B = x3.shape
    for ac in prange(A * C):
        a = ac // C
        c = ac % C
        for b in range(B):
            t = np.float64(x3[a, c, b]) - mu[c]
            dx3[a, c, b] = np.float32(coef[c] * (np.float64(dy3[a, c, b]) - mean_dy[c] - t * proj[c]))


@njit(cache=True)
def exact_bins(bits3: np.ndarray, c: int, bins1: np.ndarray, bins2: np.ndarray) -> None:  # pragma: no cover
    """Exact sums of channel c's float32 values and of their squares, binned by the exponent of
    the last bit.

    A finite float32 is M * 2**E with |M| < 2**24 and E = -149 .. 104; bin E + 149 collects the
    signed M (S1) and M**2 split into its high and low 24 bits (S2), all in int64 without overflow
    for fewer than 2**39 values.  ``bits3`` is the int32 view of the (A, C, B) values.
    """
    A, _, B = bits3.shape
    for a in range(A):
        row = bits3[a, c]
        for i in range(B):
            b = np.int64(row[i])
            ex = (b >> 23) & 0xFF
            frac = b & 0x7FFFFF
            mant = frac if ex == 0 else frac | 0x800000
            idx = 0 if ex == 0 else ex - 1
            sq = mant * mant
            bins1[idx] += -mant if b < 0 else mant
            bins2[idx, 0] += sq >> 24
            bins2[idx, 1] += sq & 0xFFFFFF


@njit(parallel=True, cache=True)
def exact_bins_many(bits3: np.ndarray, chans: np.ndarray, bins1: np.ndarray, bins2: np.ndarray) -> None:
    """:func:`exact_bins` of channels ``chans`` (one task each) into bins1[k], bins2[k]."""  # pragma: no cover
    for k in prange(chans.size):
        exact_bins(bits3, chans[k], bins1[k], bins2[k])


# ---------------------------------------------------------------- LayerNorm / RMSNorm (rows x features)


@njit(cache=True)
def _row_plan(row: np.ndarray, centred: bool, eps: float, out: np.ndarray) -> None:  # pragma: no cover
    """Statistics of one row and the per-row error terms (gamma = 1, beta = 0: the per-element
    affine is folded in by the caller).  out: plan columns as in plan_finish."""
    n = row.size
    shift = _shift(row) if centred else 0.0
    s1, c1, s2, c2 = _sums_of(row, shift, 0.0, 0.0, 0.0, 0.0, False)  # no per-row allocation
    sq = s2 + c2
    m = 2 * (n // _BLOCK + 4 + 130)
    if centred:
        plan_from_sums(shift, s1, c1, sq, _sa_bound(n, sq), n, m, ROW_BOUND, False, 1.0, 0.0, eps, False, out)
    else:
        ds2 = 1.01 * ((ROW_BOUND + 4) * _U * sq + 2 * _U * sq + 4.0 * m * m * _U * _U * sq)
        ms = sq / n
        plan_finish(0.0, 0.0, ms, 0.0, 1.01 * (ds2 / n + _U * ms), 1.0, 0.0, eps, False, out)


@njit(parallel=True, cache=True)
def rows_norm(
    x2: np.ndarray,
    gamma: np.ndarray,
    beta: np.ndarray,
    centred: bool,
    eps: float,
    plan: np.ndarray,
    y2: np.ndarray,
    uncertified: np.ndarray,
) -> None:  # pragma: no cover - compiled
    """LayerNorm (centred) or RMSNorm of each row with per-element gamma/beta, one row at a time.

    With the row's s = 1/sqrt(D) (relative error k) and mean error cg (the mean taken as mu
    alone), the element's scale gamma_j s errs by k_j = k + 1.01u relatively, so y64 errs by at
    most K|y64| + G_j with K = k_j(1 + u) + 2**-52 and G_j = k_j(1 + u)|beta_j| + cg|gamma_j|; the
    rounding certificate of :func:`plan_finish` becomes |y64 - r| < 2**E gap_k - G_j.
    """
    R, F = x2.shape
    for r in prange(R):
        row = x2[r]
        _row_plan(row, centred, eps, plan[r])
        ok, _, a, bcoef, gap_k = _row_coefs(plan[r])
        if not ok:
            for j in range(F):
                y2[r, j] = np.float32(np.nan)
            uncertified[r] = F
            continue
        uncertified[r] = _affine_row(row, y2[r], plan[r, 0], plan[r, 2], gamma, beta, a, bcoef, gap_k)


@njit(cache=True)
def _row_coefs(p: np.ndarray) -> tuple[bool, float, float, float, float]:  # pragma: no cover - compiled
    """From a row's plan: whether its bounds hold, k_j, and the certificate's a, bcoef, gap_k."""
    kj = p[3] + 1.01 * _U
    big_k = kj * (1 + _U) + 2.0**-52
    ok = not (p[8] > 0) and KAPPA - big_k > 0
    # the bound counted twice, as in plan_finish: the bracket may reach the binade below a power of two
    a, bcoef = 2 * kj * (1 + _U) * (1 + 2.0**-40), 2 * p[4] * (1 + 2.0**-40)
    return ok, kj, a, bcoef, _HALF_GAP - 4 * big_k * (1 + 2.0**-40)


@njit(parallel=True, cache=True)
def rows_norm_narrow(
    xb: np.ndarray,
    gamma: np.ndarray,
    beta: np.ndarray,
    centred: bool,
    eps: float,
    plan: np.ndarray,
    yb: np.ndarray,
    uncertified: np.ndarray,
    tasks: int,
    half: bool,
) -> None:  # pragma: no cover - compiled
    """:func:`rows_norm` on bfloat16 rows (``half`` False) or float16 rows (True), bits in, bits
    out: each row widened exactly into a float32 buffer, normalized and certified as there, then
    rounded to its format.  Where the float32 lands on a tie of the format the side of the exact
    value is taken from y64 and the row's bound (as the host's ``_fallback_row`` bounds it); a
    row with an element the certificate or the bound leaves open is flagged for the host, which
    redoes it exactly."""
    R, F = xb.shape
    step = (R + tasks - 1) // tasks
    for t in prange(tasks):
        xrow = np.empty(F, np.float32)
        yrow = np.empty(F, np.float32)
        xbits = xrow.view(np.uint32)
        ybits = yrow.view(np.uint32)
        for r in range(t * step, min(R, (t + 1) * step)):
            src = xb[r]
            if half:
                _widen_f16_row(src, xbits, xrow)
            else:
                for j in range(F):
                    xbits[j] = np.uint32(src[j]) << np.uint32(16)
            _row_plan(xrow, centred, eps, plan[r])
            ok, kj, a, bcoef, gap_k = _row_coefs(plan[r])
            mu, s, cg = plan[r, 0], plan[r, 2], plan[r, 4]
            if not ok or _affine_row(xrow, yrow, mu, s, gamma, beta, a, bcoef, gap_k):
                uncertified[r] = 1
                continue
            uncertified[r] = 0
            out = yb[r]
            if half:
                if _f16_row(ybits, out):
                    uncertified[r] = _narrow_ties_row(xrow, yrow, ybits, out, mu, s, gamma, beta, kj, cg, True)
                continue
            tie = False
            for j in range(F):  # rounded to nearest even (vectorized); ties and NaN seen to below
                b = ybits[j]
                out[j] = _bf16_rne(b)
                nan = (b & np.uint32(0x7FFFFFFF)) > np.uint32(0x7F800000)
                tie |= ((b & np.uint32(0xFFFF)) == np.uint32(0x8000)) | nan
            if tie:
                uncertified[r] = _narrow_ties_row(xrow, yrow, ybits, out, mu, s, gamma, beta, kj, cg, False)


@njit(cache=True)
def _widen_f16_row(src: np.ndarray, xbits: np.ndarray, xrow: np.ndarray) -> None:  # pragma: no cover - compiled
    """float16 bits to float32 (``xrow``, whose bits are ``xbits``), exactly, without branches (three
    loops the compiler vectorizes).  The magnitude's exponent and mantissa move up 13 bits and the
    exponent is rebiased by 112 (infinity and NaN by 224, to 255); a subnormal or zero gets 113,
    which makes it 2**-14 (1 + m/1024), and subtracting 2**-14 leaves m 2**-24 exactly (both in
    [2**-14, 2**-13): Sterbenz); then the sign goes back on."""
    n = src.size
    for j in range(n):
        mag = np.uint32(src[j]) & np.uint32(0x7FFF)
        e = mag >> np.uint32(10)
        add = np.uint32(112) + np.uint32(e == 0) + np.uint32(112) * np.uint32(e == 31)
        xbits[j] = (mag << np.uint32(13)) + (add << np.uint32(23))
    for j in range(n):
        sub = (np.uint32(src[j]) & np.uint32(0x7C00)) == 0
        xrow[j] = xrow[j] - np.float32(2.0**-14) * np.float32(sub)
    for j in range(n):
        xbits[j] = xbits[j] | ((np.uint32(src[j]) & np.uint32(0x8000)) << np.uint32(16))


@njit(cache=True)
def _f16_bits(b: np.uint32, value: float) -> np.uint16:  # pragma: no cover - compiled
    """float32 (bits b, value) to float16 bits, rounded to nearest, ties to even: 65520 (the largest
    float16 plus half its ULP) and beyond to infinity, below 2**-14 to the nearest multiple of
    2**-24; NaN stays a quiet NaN."""
    sign = (b >> np.uint32(16)) & np.uint32(0x8000)
    mag = b & np.uint32(0x7FFFFFFF)
    if mag > np.uint32(0x7F800000):
        return np.uint16(sign | np.uint32(0x7E00))
    if mag >= np.uint32(0x477FF000):
        return np.uint16(sign | np.uint32(0x7C00))
    if mag >= np.uint32(0x38800000):
        v = mag - np.uint32(112 << 23)
        return np.uint16(sign | ((v + np.uint32(0xFFF) + ((v >> np.uint32(13)) & np.uint32(1))) >> np.uint32(13)))
    return np.uint16(sign | np.uint32(np.rint(abs(value) * 2.0**24)))


@njit(cache=True)
def _f16_row(ybits: np.ndarray, out: np.ndarray) -> bool:  # pragma: no cover - compiled
    """A float32 row to float16 bits; True when some element is a tie of float16 (or outside its
    normal range, where the scalar rounding settles it and ties are looked for again)."""
    special = False
    for j in range(ybits.size):  # the normal range, vectorized
        mag = ybits[j] & np.uint32(0x7FFFFFFF)
        v = mag - np.uint32(112 << 23)
        sign = (ybits[j] >> np.uint32(16)) & np.uint32(0x8000)
        out[j] = np.uint16(sign | ((v + np.uint32(0xFFF) + ((v >> np.uint32(13)) & np.uint32(1))) >> np.uint32(13)))
        outside = (mag < np.uint32(0x38800000)) | (mag >= np.uint32(0x477FF000))
        special |= outside | ((v & np.uint32(0x1FFF)) == np.uint32(0x1000))
    return special


@njit(cache=True)
def _narrow_ties_row(
    xrow: np.ndarray,
    yrow: np.ndarray,
    ybits: np.ndarray,
    out: np.ndarray,
    mu: float,
    s: float,
    gamma: np.ndarray,
    beta: np.ndarray,
    kj: float,
    cg: float,
    half: bool,
) -> int:  # pragma: no cover - compiled
    """A row's float16 (``half``) or bfloat16 elements outside the fast path: NaN kept quiet,
    float16's subnormal and overflow ranges rounded by the scalar rule, and the ties of the format
    settled by y64 and its bound; 1 when one is left open (the host redoes the row)."""
    for j in range(xrow.size):
        b = ybits[j]
        mag = b & np.uint32(0x7FFFFFFF)
        if half:
            normal = np.uint32(0x38800000) <= mag < np.uint32(0x477FF000)
            if not normal:  # _f16_row's bits hold in the normal range; the scalar rule elsewhere
                out[j] = _f16_bits(b, np.float64(yrow[j]))
                if mag >= np.uint32(0x7F800000):
                    continue
            if mag >= np.uint32(0x38800000):  # (from 65520 up it rounds to infinity, or is that tie)
                tie = (mag & np.uint32(0x1FFF)) == np.uint32(0x1000)
            else:
                t = abs(np.float64(yrow[j])) * 2.0**25
                tie = t == np.floor(t) and t % 2 == 1
        else:
            if mag > np.uint32(0x7F800000):
                out[j] = np.uint16((b >> np.uint32(16)) | np.uint32(0x40))
                continue
            tie = (b & np.uint32(0xFFFF)) == np.uint32(0x8000) and mag < np.uint32(0x7F800000)
        if not tie:
            continue
        p = (np.float64(xrow[j]) - mu) * (s * gamma[j])
        yv = p + beta[j]
        err = (kj * abs(p) + cg * abs(gamma[j]) + 2.0**-52 * abs(yv)) * (1 + 2.0**-40)
        m = np.float64(yrow[j])
        if yv - m > err:
            up = True
        elif m - yv > err:
            up = False
        else:
            return 1
        # the tie's neighbours: its rounding toward zero, and the next bits away from zero
        if half:
            trunc = _f16_trunc(mag, m)
        else:
            trunc = np.uint16(mag >> np.uint32(16))
        away = up == (m > 0)
        sign = np.uint16((b >> np.uint32(16)) & np.uint32(0x8000))
        out[j] = np.uint16(sign | (trunc + np.uint16(1 if away else 0)))
    return 0


@njit(cache=True)
def _f16_trunc(mag: np.uint32, m: float) -> np.uint16:  # pragma: no cover - compiled
    """The float16 magnitude bits of a tie's neighbour toward zero."""
    if mag >= np.uint32(0x38800000):
        return np.uint16((mag - np.uint32(112 << 23)) >> np.uint32(13))
    return np.uint16(np.floor(abs(m) * 2.0**24))


@njit(cache=True, fastmath={"contract"})
def _affine_row(
    row: np.ndarray,
    out: np.ndarray,
    mu: float,
    s: float,
    gamma: np.ndarray,
    beta: np.ndarray,
    a: float,
    bcoef: float,
    gap_k: float,
) -> np.bool_:  # pragma: no cover - compiled
    """One row of rows_norm with per-element gamma/beta; True when some element's rounding the
    certificate leaves open (fused multiply-add and a boolean flag, as in _normalize_row)."""
    bad: np.bool_ = np.bool_(False)
    for j in range(row.size):
        yv = (np.float64(row[j]) - mu) * (s * gamma[j]) + beta[j]
        r = np.float32(yv)
        out[j] = r
        room = pow2_floor(yv) * gap_k - (a * abs(beta[j]) + bcoef * abs(gamma[j]))
        bad = bad | (abs(yv - np.float64(r)) > room)
    return bad


# ---------------------------------------------------------------- float16 / bfloat16 bits


@njit(parallel=True, cache=True)
def bf16_to_f32(src: np.ndarray, dst: np.ndarray) -> None:  # pragma: no cover - compiled
    """bfloat16 bits (uint16) to float32 bits (uint32): exact, a bfloat16 is a float32's top half."""
    for i in prange(src.size):
        dst[i] = np.uint32(src[i]) << np.uint32(16)


@njit(parallel=True, cache=True)
def f32_to_bf16(src: np.ndarray, dst: np.ndarray) -> None:  # pragma: no cover - compiled
    """float32 bits to bfloat16 bits, rounded to nearest, ties to even; NaN stays a quiet NaN."""
    for i in prange(src.size):
        b = np.uint32(src[i])
        if (b & np.uint32(0x7FFFFFFF)) > np.uint32(0x7F800000):
            dst[i] = np.uint16((b >> np.uint32(16)) | np.uint32(0x40))
        else:
            dst[i] = _bf16_rne(b)


@njit(cache=True)
def _bf16_rne(b: np.uint32) -> np.uint16:  # pragma: no cover - compiled
    """float32 bits (not NaN) to bfloat16 bits, rounded to nearest, ties to even (a carry into the
    exponent is the next binade or infinity, as it should be)."""
    return np.uint16((b + np.uint32(0x7FFF) + ((b >> np.uint32(16)) & np.uint32(1))) >> np.uint32(16))


@njit(cache=True)
def narrow_ties(
    bits: np.ndarray, values: np.ndarray, p: int, min_normal_bits: int, min_sub: float, out: np.ndarray
) -> int:  # pragma: no cover - compiled
    """The indices (written to ``out`` as far as it reaches; returns how many there are) of the
    float32 values (``values``, and the
    same memory as ``bits``) that are ties of a format with p significant bits: from its smallest
    normal (``min_normal_bits``, as float32 bits) on, a 1 followed by zeros in the 24 - p bits below
    the format's last bit; below it, the odd multiples of min_sub / 2.  Non-finite values are
    never ties.  Ties are rare: one pass, one thread."""
    shift = 24 - p
    low = np.uint32((1 << shift) - 1)
    half = np.uint32(1 << (shift - 1))
    n = 0
    for i in range(bits.size):
        b = np.uint32(bits[i])
        mag = b & np.uint32(0x7FFFFFFF)
        if mag >= np.uint32(0x7F800000):
            continue
        if mag >= np.uint32(min_normal_bits):
            tie = (b & low) == half
        else:
            t = abs(np.float64(values[i])) * (2 / min_sub)
            tie = t == np.floor(t) and t % 2 == 1
        if tie:
            if n < out.size:
                out[n] = i
            n += 1
    return n


@njit(parallel=True, cache=True)
def f16_to_f32(src: np.ndarray, dst: np.ndarray) -> None:  # pragma: no cover - compiled
    """float16 bits (uint16) to float32 bits (uint32): exact (:func:`_widen_f16_row`, by chunks)."""
    n = src.size
    step = 4096
    for k in prange((n + step - 1) // step):
        lo = k * step
        hi = min(n, lo + step)
        _widen_f16_row(src[lo:hi], dst[lo:hi], dst[lo:hi].view(np.float32))


@njit(parallel=True, cache=True)
def f32_to_f16(src: np.ndarray, src_bits: np.ndarray, dst: np.ndarray) -> None:  # pragma: no cover - compiled
    """float32 (``src``, and the same memory as bits) to float16 bits, rounded to nearest, ties to
    even (see :func:`_f16_bits`)."""
    for i in prange(src.size):
        dst[i] = _f16_bits(np.uint32(src_bits[i]), np.float64(src[i]))


# ---------------------------------------------------------------- double-double recheck (tier 2)

# dd_plan columns: mean (hi, lo), s (hi, lo), the mean's error, s's relative error, beta
DD_COLUMNS = 7
_U2 = _U * _U


@njit(cache=True)
def dd_plan(
    st: np.ndarray, n: int, m: int, gamma: float, beta: float, eps: float, out: np.ndarray
) -> None:  # pragma: no cover - compiled
    """The channel's mean and s = gamma / sqrt(var + eps) as pairs of float64s, with error bounds,
    from its error-free sums (a row of :func:`stats_channels_eft`: shift, S1 + comp1, S2 + S2_lo
    within (EFT_BLOCK + 4 m^2) u^2 of sum|d| and of S2).

    Each step is an error-free transformation (TwoSum, an fma for products and remainders) up
    to the rounding of the low parts, bounded as it goes: mean = shift + S1/n; var = S2/n -
    (S1/n)^2; D = var + eps; s from t = 1/sqrt(D_hi) by one Newton step,
    s = gamma t (1 + w/2) with w = 1 - D t^2 (|w| <~ 3u; the step's own error is below
    3 w^2 / 8).  out = [mean_hi, mean_lo, s_hi, s_lo, mean error, s's relative error, beta]; the
    relative error is inf where D's bound does not keep it positive (the recheck then decides
    nothing).  Bounds are about 1e-30 of the values on ordinary data, against about 1e-15 for
    the float64 plan: the recheck decides elements the float64 bound leaves open, those near
    y = 0 with a nonzero beta included (where |y| is far below the terms that cancel)."""
    nf = np.float64(n)
    shift, s1, c1, s2, sa, c2 = st[0], st[1], st[2], st[3], st[4], st[5]
    err_sums = 1.01 * (EFT_BLOCK + 4.0 * m * m) * _U2
    q, q_lo, e_q = _quotient(s1, c1, nf)
    e_q += err_sums * sa / nf
    mh, me = _two_sum(shift, q)
    ml = me + q_lo
    e_mean = 1.01 * (e_q + _U * abs(ml))
    v, v_lo, e_v = _quotient(s2, c2, nf)
    e_v += err_sums * (abs(s2) + abs(c2)) / nf
    qq, qqe = _two_prod(q, q)
    qq_lo = qqe + 2 * q * q_lo
    e_sq = 1.01 * (2 * abs(q) * e_q + e_q * e_q + q_lo * q_lo + 2.02 * _U * (abs(qqe) + abs(2 * q * q_lo)))
    vh, ve = _two_sum(v, -qq)
    v_rest = ve + (v_lo - qq_lo)
    e_var = e_v + e_sq + 2.02 * _U * (abs(ve) + abs(v_lo) + abs(qq_lo))
    dh, de = _two_sum(vh, eps)
    dl = de + v_rest
    e_d = e_var + 1.01 * _U * (abs(de) + abs(v_rest))
    dh, dl = _two_sum(dh, dl)
    out[0], out[1], out[4], out[6] = mh, ml, e_mean, beta
    floor = dh - abs(dl) - e_d
    if not (floor > 0 and np.isfinite(dh) and np.isfinite(e_mean)):
        out[2], out[3], out[5] = 0.0, 0.0, np.inf
        return
    t = 1.0 / np.sqrt(dh)
    tt, tte = _two_prod(t, t)
    h = fma(-dh, tt, 1.0)
    w = h - (dh * tte + dl * tt)
    e_w = 3.03 * _U * (abs(h) + abs(dh * tte) + abs(dl * tt)) + abs(dl * tte)
    sh, se = _two_prod(gamma, t)
    half = gamma * t * w * 0.5
    sl = se + half
    s_abs = abs(sh)
    rel_round = 3.03 * _U * (abs(se) + abs(half)) / s_abs if s_abs > 0 else 0.0
    rho = 1.02 * (e_d / (2 * floor) + 0.5 * w * w + e_w + rel_round) + 4 * _U2
    out[2], out[3], out[5] = sh, sl, rho


@njit(cache=True)
def certify_row_dd(x: np.ndarray, dd: np.ndarray, y: np.ndarray, bad: np.ndarray) -> int:  # pragma: no cover
    """The elements of one row marked in ``bad`` again, in double-double arithmetic from
    :func:`dd_plan`'s row ``dd``: y = (x - mean) s + beta as yh + yl, with a bound B on its
    distance from the exact y; where the bracket lies strictly inside the rounding interval of
    the float32 r nearest yh + yl (the edges as in :func:`_decided`, the distances to them
    computed as an exact difference plus yl), y = r and the mark is cleared.  Returns how many
    stay marked."""
    mh, ml, sh, sl, e_mean, rho, beta = dd[0], dd[1], dd[2], dd[3], dd[4], dd[5], dd[6]
    count = 0
    if not np.isfinite(rho):
        for b in range(x.size):
            count += bad[b]
        return count
    s_abs = abs(sh) + abs(sl)
    for b in range(x.size):
        if not bad[b]:
            continue
        d, de = _two_sum(np.float64(x[b]), -mh)
        dl = de - ml
        p, pe = _two_prod(d, sh)
        pl = pe + (d * sl + dl * sh)
        yh, ye = _two_sum(p, beta)
        yl = ye + pl
        yh, yl = _two_sum(yh, yl)  # |yl| <= u|yh|: the gaps below are then an exact difference plus yl
        arith = 3.03 * _U * (abs(pe) + abs(d * sl) + abs(dl * sh)) + abs(dl * sl) + 1.01 * _U * (abs(ye) + abs(pl))
        big_b = 1.01 * (rho * (abs(p) + abs(pl)) + (e_mean + _U * abs(dl)) * s_abs * (1 + 1.01 * rho) + arith)
        big_b = big_b * (1 + 2.0**-40) + 2.0**-1060
        r = np.float32(yh + yl)
        a = abs(float(r))
        if not np.isfinite(a):
            count += 1
            continue
        if r < 0 or (r == 0 and yh < 0):
            yh, yl = -yh, -yl
        if a == 0.0:  # as in _decided: the bracket inside r's half of [-2**-150, 2**-150]
            inside = (yh + abs(yl)) * (1 + 2.0**-40) + big_b < 2.0**-150
            ok = inside and (yh + yl) * (1 - 2.0**-40) > big_b
        else:
            mant, ex = math.frexp(a)
            spacing = math.ldexp(1.0, max(ex - 1, -126) - 23)
            below = 0.25 * spacing if mant == 0.5 and ex - 1 >= -125 else 0.5 * spacing
            lo_gap = (yh - (a - below)) + yl
            hi_gap = ((a + 0.5 * spacing) - yh) - yl
            ok = min(lo_gap, hi_gap) * (1 - 2.0**-40) > big_b
        if ok:
            y[b] = r
            bad[b] = False
        else:
            count += 1
    return count
