"""Fast float32 BatchNorm on the CPU (numba), correctly rounded.

See :func:`batch_norm` and :func:`batch_norm_backward`.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from fractions import Fraction
from typing import Any

import numpy as np
from normspec.kernels import _buffers, _exact, _narrow
from normspec.kernels._profiles import PROFILES, KernelProfile

from normspec.errors import DegenerateInputError, DomainError, DTypeError, ShapeError, UnknownConventionError, expected

__all__ = ["batch_norm", "batch_norm_backward", "KernelStats", "last_run"]

_U = 2.0**-53
# outputs from this size on are written with streaming stores (measured: 1.3-1.6x faster on
# 25-51 MB tensors, slower on a 0.8 MB one that stays in cache)
_STREAM_BYTES = 4 << 20


@dataclass
class KernelStats:
    """What the last call did: how many elements needed the exact fallback."""

    fallback_elements: int = 0  # elements decided by exact arithmetic (tier 4; narrow formats: at a tie)
    fallback_channels: int = 0  # channels whose exact statistics were computed
    running_fallbacks: int = 0
    resummed_channels: int = 0  # channels whose plan was rebuilt from error-free sums (tier 2)
    refined_channels: int = 0  # channels whose plan was rebuilt from exact statistics (tier 3)


last_run = KernelStats()


def _profile(convention: str) -> KernelProfile:
    try:
        return PROFILES[convention]
    except KeyError:
        raise UnknownConventionError(
            expected("a convention the kernels support: " + ", ".join(PROFILES), "convention", convention)
        ) from None


def _host(a: Any, name: str) -> np.ndarray:
    """An input as a numpy array: torch tensors are detached and moved to the host (bfloat16 kept,
    through ml_dtypes where numpy has no bfloat16); ragged sequences are refused by name."""
    if hasattr(a, "detach") and hasattr(a, "numpy"):
        t = a.detach().cpu()
        if str(t.dtype) == "torch.bfloat16":
            try:
                import ml_dtypes
            except ImportError:
                raise DTypeError(f"{name}: bfloat16 needs ml_dtypes: pip install 'normspec[bfloat16]'") from None
            import torch

            return np.asarray(t.view(torch.int16).numpy().view(ml_dtypes.bfloat16))
        a = t.numpy()
    try:
        return np.asarray(a)
    except ValueError:  # a ragged nested sequence
        raise ShapeError(expected("a rectangular array", name, type(a).__name__)) from None


def _as_f32(a: Any, name: str, shape: tuple[int, ...] | None = None) -> np.ndarray:
    arr = _host(a, name)
    if arr.dtype != np.float32:
        raise DTypeError(expected("float32 (the kernels' dtype)", f"{name}.dtype", arr.dtype.name))
    if shape is not None and arr.shape != shape:
        raise ShapeError(expected(f"{name} of shape {shape}", f"{name}.shape", arr.shape))
    if not np.isfinite(arr).all():
        raise DomainError(expected(f"finite {name}", f"{name} element", float(arr[~np.isfinite(arr)].flat[0])))
    return np.ascontiguousarray(arr)


def _number(value: Any, name: str) -> float:
    """A finite real number (numpy scalars too), or a DomainError naming it."""
    if isinstance(value, bool) or not isinstance(value, (int, float, np.integer, np.floating)):
        raise DomainError(expected("a finite real number", name, value))
    try:
        result = float(value)
    except OverflowError:
        raise DomainError(expected("a finite real number", name, value)) from None
    if not math.isfinite(result):
        raise DomainError(expected("a finite real number", name, value))
    return result


def _stats(x3: np.ndarray, backend: Any) -> tuple[np.ndarray, int, int]:
    """Per channel [shift, S1, comp1, S2, bound on sum|d|], the m of their error bound and its
    block term (the ``chunk`` of ``plan_from_sums``)."""
    a_n, c_n, b_n = x3.shape
    out = np.empty((c_n, backend.STATS_COLUMNS))
    if b_n == 1:
        chunks = _row_chunks(a_n)
        backend.stats_rows(x3[:, :, 0], out, chunks)
        return out, 2 * (a_n // backend.CHUNK + chunks + 130), backend.CHUNK
    tasks = min(a_n, 64)
    if a_n >= 2 * backend.threads():  # stream x in memory order
        backend.stats_linear(x3, tasks, out)
    else:  # few outer rows: one channel per task
        tasks = 1
        backend.stats_inner(x3, out)
    return out, backend.neumaier_terms(a_n, b_n, tasks), backend.ROW_BOUND


def _row_chunks(a_n: int) -> int:
    return max(1, min(64, a_n // 4096))


@dataclass
class _Plan:
    """Per-channel plan (views of one (C, PLAN_COLUMNS) array that the numba code fills; see plan_finish)."""

    table: np.ndarray
    exact: dict[int, tuple[Fraction, Fraction]] = field(default_factory=dict)  # channels the fallback solved
    resummed: set[int] = field(default_factory=set)  # channels whose plan came from error-free sums (tier 2)
    dd: dict[int, np.ndarray] = field(default_factory=dict)  # their double-double plans (dd_plan)
    refined: set[int] = field(default_factory=set)  # channels whose plan came from exact statistics (tier 3)
    finite: np.ndarray | None = None  # training: channels holding only finite values (from their sums)

    mu = property(lambda self: self.table[:, 0])
    var = property(lambda self: self.table[:, 1])
    s = property(lambda self: self.table[:, 2])
    k = property(lambda self: self.table[:, 3])
    cg = property(lambda self: self.table[:, 4])
    mu_err = property(lambda self: self.table[:, 6])
    var_err = property(lambda self: self.table[:, 7])
    uncertain = property(lambda self: self.table[:, 8] > 0)
    mu_lo = property(lambda self: self.table[:, 5])  # the mean is mu + mu_lo
    big_k = property(lambda self: self.table[:, 9])  # the rounding certificate: |y64 - y| <= K|y64| + G
    big_g = property(lambda self: self.table[:, 10])
    gap_k = property(lambda self: self.table[:, 11])  # the kernels' form of K (see plan_finish)
    beta_eff = property(lambda self: self.table[:, 12])  # beta - mu_lo s: the kernels' y64 = (x - mu) s + beta_eff


class _HostData:
    """How the driver reaches x and y for its rare per-row work: here, host arrays viewed (A, C, B)."""

    def __init__(self, x3: np.ndarray, y3: np.ndarray) -> None:
        self.x3, self.y3 = x3, y3

    def row(self, a: int, c: int) -> np.ndarray:
        return self.x3[a, c]

    def out_row(self, a: int, c: int) -> np.ndarray:
        return self.y3[a, c]

    def store_row(self, a: int, c: int, r: np.ndarray) -> None:
        pass  # out_row is a view: already stored

    def channel_stats(self, c: int) -> tuple[Fraction, Fraction]:
        return _exact.channel_stats(self.x3, c)

    def channel_stats_many(self, channels: list[int]) -> list[tuple[Fraction, Fraction]]:
        return _exact.channel_stats_many(self.x3, channels)

    def channel_sums_eft(self, channels: list[int]) -> tuple[np.ndarray, int, int] | None:
        """The channels' sums carried error-free (``stats_channels_eft``'s rows), the m of their
        bound and its block term; None where there is no such pass (channels last: B = 1)."""
        from normspec.kernels import _numba_cpu as cpu

        a_n, _, b_n = self.x3.shape
        if b_n == 1:
            return None
        out = np.empty((len(channels), cpu.EFT_COLUMNS))
        cpu.stats_channels_eft(self.x3, np.asarray(channels, np.int64), out)
        return out, cpu.neumaier_terms(a_n, b_n, 1), cpu.ROW_BOUND


@dataclass
class _Setup:
    """A call's validated arguments (shared by the CPU and CUDA drivers)."""

    prof: KernelProfile
    shape3: tuple[int, int, int]
    gamma: np.ndarray
    beta: np.ndarray
    rm: np.ndarray | None
    rv: np.ndarray | None
    eps: float
    momentum: float
    identity: bool  # n = 1 in training under a convention that returns x unchanged
    training: bool

    @property
    def n(self) -> int:
        return self.shape3[0] * self.shape3[2]


def _shape3(shape: tuple[int, ...], axis: int) -> tuple[int, int, int]:
    if len(shape) < 2:
        raise ShapeError(expected("an array of at least 2 dimensions (N, C, ...)", "x.shape", shape))
    if isinstance(axis, bool) or not isinstance(axis, (int, np.integer)):
        raise ShapeError(expected("an integer axis", "axis", axis))
    if not -len(shape) <= axis < len(shape):
        raise ShapeError(expected(f"an axis in [-{len(shape)}, {len(shape)})", "axis", axis))
    axis %= len(shape)
    return math.prod(shape[:axis]), shape[axis], math.prod(shape[axis + 1 :])


def _setup(
    x_shape: tuple[int, ...],
    x_dtype: Any,
    axis: int,
    weight: Any,
    bias: Any,
    running_mean: Any,
    running_var: Any,
    training: bool,
    momentum: float | None,
    eps: float | None,
    convention: str,
) -> _Setup:
    prof = _profile(convention)
    if np.dtype(x_dtype) != np.float32:
        raise DTypeError(expected("float32 (the kernels' dtype)", "x.dtype", np.dtype(x_dtype).name))
    a_n, c_n, b_n = _shape3(x_shape, axis)
    n = a_n * b_n
    gamma = _as_f32(np.ones(c_n, np.float32) if weight is None else weight, "weight", (c_n,)).astype(np.float64)
    beta = _as_f32(np.zeros(c_n, np.float32) if bias is None else bias, "bias", (c_n,)).astype(np.float64)
    tracked = running_mean is not None
    rm = _as_f32(running_mean, "running_mean", (c_n,)) if tracked else None
    rv = _as_f32(running_var, "running_var", (c_n,)) if running_var is not None else None
    if tracked != (rv is not None):
        raise ShapeError("running_mean and running_var must be given together")
    if rv is not None and (rv < 0).any():
        raise DomainError(expected("running_var >= 0", "running_var element", float(rv[rv < 0][0])))
    eps_v = prof.eps if eps is None else _number(eps, "eps")
    if not eps_v >= 0:
        raise DomainError(expected("a finite eps >= 0", "eps", eps))
    eps_v = prof.effective_eps(eps_v)
    mom = prof.effective_momentum(prof.momentum if momentum is None else _number(momentum, "momentum"))
    identity = False
    if training:
        if n == 0:
            raise DegenerateInputError(expected("at least one value per channel in training", "x.shape", x_shape))
        if eps_v == 0 and prof.eps_zero_refused:
            raise DomainError(expected(f"eps > 0 in training (convention {convention!r})", "eps", eps))
        if n == 1 and prof.one_value == "error":
            raise DegenerateInputError(expected("more than 1 value per channel when training", "x.shape", x_shape))
        identity = n == 1 and prof.one_value == "identity"
    elif rm is None or rv is None:
        raise ShapeError("evaluation needs running_mean and running_var")
    return _Setup(prof, (a_n, c_n, b_n), gamma, beta, rm, rv, eps_v, mom, identity, training)


def _finish(
    data: Any,
    flags: np.ndarray,
    plan: _Plan,
    setup: _Setup,
    training: bool,
    stats: KernelStats,
    backend: Any,
    spans: np.ndarray | None = None,
) -> tuple[np.ndarray | None, np.ndarray | None]:
    """After the bulk pass: the flagged rows (tiers 1-4), then the running statistics.
    ``spans[a * C + c]``: the offsets in row (a, c) that hold its open elements (None: whole rows)."""
    flags[:, plan.uncertain] = 1
    if flags.any():
        _fallback(data, flags, plan, setup, training, stats, backend, spans)
    stats.refined_channels = len(plan.refined)
    stats.resummed_channels = len(plan.resummed)
    rm, rv = setup.rm, setup.rv
    if rm is None or rv is None:
        return None, None
    if not training:
        return rm.copy(), rv.copy()
    return _update(data, plan, setup, stats, backend)


def batch_norm(
    x: Any,
    weight: Any = None,
    bias: Any = None,
    running_mean: Any = None,
    running_var: Any = None,
    training: bool = True,
    momentum: float | None = None,
    eps: float | None = None,
    convention: str = "torch",
    *,
    axis: int = 1,
    out: np.ndarray | None = None,
    backend: Any = None,
) -> tuple[np.ndarray, np.ndarray | None, np.ndarray | None]:
    """Float32 BatchNorm; returns ``(y, new_running_mean, new_running_var)`` as new arrays.

    ``x`` may also be float16 or bfloat16 (parameters and running statistics stay float32, as
    in mixed-precision training); ``y`` then has ``x``'s dtype, correctly rounded in that
    format.  Rounding the correctly rounded float32 once more gives it, except where the
    float32 lands exactly on a tie of the narrow format; there the side of the exact value
    decides (from the float64 value and its bound, exactly where they do not settle it).

    **Accuracy.**  Every element of ``y`` whose exact value is finite is the exact value
    correctly rounded (ties to even), on every input; so are the running statistics.
    Mechanism: float64 arithmetic inside (statistics from shifted sums of one pass, summed in
    a fixed order; the mean carried as a pair of float64s; then ``(x - mean) * s + beta``), a
    rigorous per-element error bound, and a certificate per element: the float32 nearest the
    float64 value is the answer when the value's error interval stays inside that float32's
    rounding interval.  Elements the certificate leaves open (those within the bound of a
    rounding boundary, a few per million on ordinary data) go through tiers, each decisive
    where the one before is not (``last_run`` counts them): their rows rechecked against the
    error bracket itself; in training their channel re-summed error-free (TwoSum, an fma for
    each square) and the rows rechecked in float64, then in double-double arithmetic with
    bounds near 1e-30 of the values; the channel's exact statistics (integer sums binned by
    exponent); and exact rationals for what is still open (an output exactly 0 or on a
    midpoint, say).

    Semantics follow ``convention`` (momentum direction and default, eps
    default, clamp and cast, Bessel correction, n = 1 behaviour, the
    0/0 guard), as the oracle's profiles say.  Inputs are not modified;
    non-contiguous and read-only arrays are accepted (a contiguous copy is
    taken).  ``out`` may receive ``y``.  Layouts: any channel ``axis``
    (NCHW, channels last, 2-D).
    """
    global last_run
    stats = KernelStats()
    if backend is None:
        from normspec.kernels import _numba_cpu as backend
    host = _host(x, "x")
    if host.ndim < 2:  # before ascontiguousarray, which makes a 0-d array 1-d
        raise ShapeError(expected("an array of at least 2 dimensions (N, C, ...)", "x.shape", host.shape))
    xa = np.ascontiguousarray(host)
    low = xa.dtype if xa.dtype.name in _narrow.NARROW else None
    if low is not None:
        xa = _narrow.widen(xa)  # exact: every float16 and bfloat16 is a float32
    setup = _setup(
        xa.shape, xa.dtype, axis, weight, bias, running_mean, running_var, training, momentum, eps, convention
    )
    x3 = xa.reshape(setup.shape3)
    a_n, c_n, b_n = x3.shape
    y_dtype = np.float32 if low is None else low
    _check_out(out, xa, y_dtype)
    if setup.identity:
        last_run = stats
        rm, rv = setup.rm, setup.rv
        return xa.astype(y_dtype), None if rm is None else rm.copy(), None if rv is None else rv.copy()
    y = out if out is not None and low is None else _buffers.empty(xa.shape, np.float32)
    y3 = y.reshape(x3.shape)
    flags = np.zeros((a_n, c_n) if b_n > 1 else (a_n,), np.uint8)  # 0/1 per row; small to clear and scan
    spans = None  # B > 1: the offsets in row (a, c) that hold its open elements; rows of 1 value are whole
    plan = _Plan(np.empty((c_n, backend.PLAN_COLUMNS)))
    _plan(x3, plan, setup, training, backend)
    p = plan
    if b_n == 1:
        backend.normalize_rows(x3[:, :, 0], p.mu, p.s, p.beta_eff, p.gap_k, p.big_g, y3[:, :, 0], flags)
        flags = np.repeat((flags > 0)[:, None], c_n, axis=1) if flags.any() else np.zeros((a_n, c_n), np.uint8)
    else:
        spans = np.empty((a_n * c_n, 2), np.int64)
        stream = y.nbytes >= _STREAM_BYTES
        tasks = 4 * backend.threads()
        backend.normalize(x3, p.mu, p.s, p.beta_eff, p.gap_k, p.big_g, y3, flags, spans, tasks, stream)
    new_rm, new_rv = _finish(_HostData(x3, y3), flags, plan, setup, training, stats, backend, spans)
    last_run = stats
    if low is not None:
        narrow = _to_narrow(y3, _HostData(x3, y3), plan, setup, low, stats).reshape(xa.shape)
        if out is None:
            return narrow, new_rm, new_rv
        out[...] = narrow
        return out, new_rm, new_rv
    return y, new_rm, new_rv


def _check_out(out: Any, xa: np.ndarray, y_dtype: Any) -> None:
    """``out=`` must be a writable contiguous numpy array of x's shape in y's dtype, apart from x."""
    if out is None:
        return
    if not isinstance(out, np.ndarray):
        raise ShapeError(expected("out as a numpy array", "out", type(out).__name__))
    if not out.flags.writeable:
        raise ShapeError(expected("a writable out", "out", "read-only"))
    if out.shape != xa.shape or out.dtype != y_dtype or not out.flags.c_contiguous:
        want = f"out of shape {xa.shape}, {np.dtype(y_dtype).name}, contiguous"
        raise ShapeError(expected(want, "out", (out.shape, out.dtype.name)))
    if np.may_share_memory(out, xa):  # contiguous both: exact; fallbacks re-read x
        raise ShapeError(expected("out not overlapping x (x is an input, never modified)", "out", "a view of x"))


def _plan(x3: Any, plan: _Plan, setup: _Setup, training: bool, backend: Any, stats: Any = None) -> None:
    """Fill the per-channel plan: from the batch statistics (training; ``stats(x3)`` gives them,
    with the m of their bound, by default the CPU's) or from the running ones."""
    guard = setup.prof.zero_var_guard
    if training:
        st, m, chunk = _stats(x3, backend) if stats is None else stats(x3)
        backend.plans_from_stats(st, setup.n, m, chunk, setup.gamma, setup.beta, setup.eps, guard, plan.table)
        plan.finite = np.isfinite(st[:, [1, 3]]).all(axis=1)
    else:
        assert setup.rm is not None and setup.rv is not None
        rm, rv = setup.rm.astype(np.float64), setup.rv.astype(np.float64)
        backend.plans_finish(rm, rv, setup.gamma, setup.beta, setup.eps, guard, plan.table)


def _certify(data: Any, a: int, c: int, span: tuple[int, int], plan: _Plan, backend: Any) -> np.ndarray:
    """Offsets [lo, hi) = ``span`` of row (a, c) of y again under ``plan``, stored; the mask of
    the row's finite-x elements not certified (elements outside the span were).  Under an
    uncertain plan the span must be the whole row (every element is rewritten and marked)."""
    row, out = data.row(a, c), data.out_row(a, c)
    lo, hi = span
    assert not plan.uncertain[c] or (lo, hi) == (0, row.size)
    bad = np.zeros(row.shape, np.bool_)
    t = plan.table[c]
    backend.certify_row(row[lo:hi], t[0], t[2], t[12], t[9], t[11], t[10], out[lo:hi], bad[lo:hi])
    data.store_row(a, c, out)
    return np.isfinite(row) if plan.uncertain[c] else bad


def _resum(data: Any, channels: list[int], plan: _Plan, setup: _Setup, backend: Any) -> bool:
    """Tier 2: the channels' sums again, both carried error-free (about four times the arithmetic
    of the first pass, channels in parallel), and each plan rebuilt from them: the mean's error
    bound falls from about 8u sum|x - shift| / n to O(m**2 u**2) of it, which closes most elements
    left open near y = 0; the double-double plan (``dd_plan``) is kept for the rows' last
    recheck.  False where the data has no such pass."""
    sums = data.channel_sums_eft(channels)
    if sums is None:
        return False
    st, m, chunk = sums
    guard = setup.prof.zero_var_guard
    for k, c in enumerate(channels):
        shift, s1, c1, s2, sa = st[k, :5]
        g, b = float(setup.gamma[c]), float(setup.beta[c])
        backend.plan_from_sums(shift, s1, c1, s2, sa, setup.n, m, chunk, True, g, b, setup.eps, guard, plan.table[c])
        plan.dd[c] = np.empty(backend.DD_COLUMNS)
        backend.dd_plan(st[k], setup.n, m, g, b, setup.eps, plan.dd[c])
        plan.resummed.add(c)
    return True


def _certify_dd(data: Any, a: int, c: int, bad: np.ndarray, plan: _Plan, backend: Any) -> None:
    """The elements of row (a, c) marked in ``bad`` again in double-double arithmetic (tier 2's
    second step, see ``certify_row_dd``): those it decides are stored and unmarked."""
    out = data.out_row(a, c)
    backend.certify_row_dd(data.row(a, c), plan.dd[c], out, bad)
    data.store_row(a, c, out)


def _refine(data: Any, channels: list[int], plan: _Plan, setup: _Setup, backend: Any) -> None:
    """Tier 3: the channels' exact means and variances (integer exponent bins, about 2 ns a value,
    channels in parallel); each plan is rebuilt from them: the mean as a pair of float64s
    (its error below 2**-100 of it), the variance rounded once, both errors known exactly."""
    for c, (mean, var) in zip(channels, data.channel_stats_many(channels), strict=True):
        plan.exact[c] = (mean, var)
        mu, v = float(mean), float(var)  # int / int: correctly rounded
        mu_lo = float(mean - Fraction(mu))
        mu_err = float(abs(mean - Fraction(mu) - Fraction(mu_lo))) * (1 + 2.0**-50)
        var_err = float(abs(Fraction(v) - var)) * (1 + 2.0**-50)
        gamma, beta = float(setup.gamma[c]), float(setup.beta[c])
        guard = setup.prof.zero_var_guard
        backend.plan_finish(mu, mu_lo, v, mu_err, var_err, gamma, beta, setup.eps, guard, plan.table[c])
        plan.refined.add(c)


def _exact_stats(data: Any, c: int, plan: _Plan, setup: _Setup) -> tuple[Fraction, Fraction]:
    """Channel c's exact mean and variance: the batch's (training, computed once) or the running ones."""
    if c not in plan.exact:
        if setup.training:
            plan.exact[c] = data.channel_stats(c)
        else:
            assert setup.rm is not None and setup.rv is not None
            plan.exact[c] = (Fraction(float(setup.rm[c])), Fraction(float(setup.rv[c])))
    return plan.exact[c]


def _fallback(
    data: Any,
    flags: np.ndarray,
    plan: _Plan,
    setup: _Setup,
    training: bool,
    stats: KernelStats,
    backend: Any,
    spans: np.ndarray | None,
) -> None:
    """Rows with uncertified elements: recheck against the error bracket (tier 1); in training
    re-sum the channels still uncertified error-free (tier 2, all at once) and recheck, in
    float64 and then in double-double arithmetic; then refine the statistics of those still
    uncertified exactly (tier 3) and recheck; what is still uncertified goes exact element by
    element (tier 4).  A channel holding inf or NaN is left as computed: its float result (NaN)
    is the defined one.  Only the ``spans`` of the rows (their flagged chunks) are rechecked."""
    beta = setup.beta
    c_n, b_n = flags.shape[1], setup.shape3[2]
    rows = [divmod(int(i), c_n) for i in np.flatnonzero(flags)]

    whole: set[tuple[int, int]] = set()  # rows once rechecked under an uncertain plan (y = beta' all along)

    def span(a: int, c: int) -> tuple[int, int]:
        if spans is None or plan.uncertain[c] or (a, c) in whole:
            whole.add((a, c))
            return (0, b_n)
        return (int(spans[a * c_n + c, 0]), int(spans[a * c_n + c, 1]))

    bad_rows = {}
    for a, c in rows:
        bad_rows[a, c] = _certify(data, a, c, span(a, c), plan, backend)
    finite = np.ones(plan.table.shape[0], bool) if not training or plan.finite is None else plan.finite
    if training:

        def still_open(done: set[int]) -> list[int]:
            return sorted({int(c) for (a, c), bad in bad_rows.items() if bad.any() and finite[c]} - done)

        def recheck(channels: list[int]) -> None:
            for a, c in rows:
                if c in channels:
                    bad_rows[a, c] = _certify(data, a, c, span(a, c), plan, backend)

        todo = still_open(plan.resummed | plan.refined)
        if todo and _resum(data, todo, plan, setup, backend):
            recheck(todo)
            for (a, c), bad in bad_rows.items():
                if c in todo and bad.any():
                    _certify_dd(data, a, c, bad, plan, backend)
        todo = still_open(plan.refined)
        if todo:
            _refine(data, todo, plan, setup, backend)
            stats.fallback_channels += len(todo)
            recheck(todo)
    for (a, c), bad in bad_rows.items():
        if not bad.any() or not finite[c]:
            continue
        mean, var = _exact_stats(data, c, plan, setup)
        row, out = data.row(a, c), data.out_row(a, c)
        for b in np.flatnonzero(bad):
            out[b] = _exact.y_correctly_rounded(
                float(row[b]),
                mean,
                var + Fraction(setup.eps),
                float(setup.gamma[c]),
                float(beta[c]),
                setup.prof.zero_var_guard,
            )
            stats.fallback_elements += 1
        data.store_row(a, c, out)


def _to_narrow(y3: np.ndarray, data: Any, plan: _Plan, setup: _Setup, low: Any, stats: KernelStats) -> np.ndarray:
    """The correctly rounded float16/bfloat16 y from the correctly rounded float32 y (see ._narrow):
    at a tie of the narrow format, the side of the exact value from y64 and its bound, exactly
    where they do not settle it."""
    x3 = data.x3

    def bounds(at: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        a, c, b = np.unravel_index(at, y3.shape)
        t = plan.table[c]
        yv = (x3[a, c, b].astype(np.float64) - t[:, 0]) * t[:, 2] + t[:, 12]
        return yv, (t[:, 9] * np.abs(yv) + t[:, 10]) * (1 + 2.0**-40)

    def exact(idx: tuple[int, ...], m: float) -> int:
        a, c, b = idx
        mean, var = _exact_stats(data, c, plan, setup)
        gamma, beta = float(setup.gamma[c]), float(setup.beta[c])
        stats.fallback_elements += 1
        xv = float(x3[a, c, b])
        return _exact.y_compare(xv, mean, var + Fraction(setup.eps), gamma, beta, setup.prof.zero_var_guard, m)

    return _narrow.to_narrow(y3, low, bounds, exact)


def _update(data: Any, plan: _Plan, setup: _Setup, stats: KernelStats, backend: Any) -> tuple[np.ndarray, np.ndarray]:
    """The new running statistics, correctly rounded: float64 with a bound, exact where the
    bound leaves the rounding open (from the channel's exact statistics)."""
    assert setup.rm is not None and setup.rv is not None
    rm, rv, mom, prof = setup.rm, setup.rv, setup.momentum, setup.prof
    bessel = prof.bessel(setup.n)
    w_new, w_old = (mom, 1 - mom) if prof.new_weight else (1 - mom, mom)
    old_m, old_v = rm.astype(np.float64), rv.astype(np.float64)
    with np.errstate(invalid="ignore"):
        qm = w_old * old_m + w_new * (plan.mu + plan.mu_lo)
        qv = w_old * old_v + w_new * plan.var * bessel
        dm = abs(w_new) * plan.mu_err + 6 * _U * (np.abs(w_old * old_m) + np.abs(w_new * plan.mu))
        # the computed w_new var bessel carries up to ~5u of itself: 8u of it, with the bound on
        # bessel's own rounding
        dv = (
            abs(w_new) * abs(bessel) * plan.var_err
            + 6 * _U * np.abs(w_old * old_v)
            + 8 * _U * np.abs(w_new * plan.var * bessel)
        )
    with np.errstate(over="ignore"):  # overflow to inf is the correct rounding
        new_m, new_v = qm.astype(np.float32), qv.astype(np.float32)
    for q, d, res in ((qm, dm, new_m), (qv, dv, new_v)):
        # decided when q's enclosure [q - d, q + d] stays inside res's rounding interval (the
        # kernels' recheck, _decided, with K = 0 and G = d)
        decided = np.empty(q.size, np.bool_)
        backend.decided_many(q, res, d, decided)
        redo = np.flatnonzero(~decided)
        for c in redo:
            mean, var = _exact_stats(data, int(c), plan, setup)
            if res is new_m:
                res[c] = _exact.update_correctly_rounded(float(rm[c]), mean, mom, prof.new_weight)
            else:
                exact_bessel = prof.bessel_exact(setup.n)
                assert exact_bessel is not None  # n = 1 unbiased: var * NaN, not finite, never redone
                res[c] = _exact.update_correctly_rounded(float(rv[c]), var * exact_bessel, mom, prof.new_weight)
            stats.running_fallbacks += 1
    return new_m, new_v


def batch_norm_backward(
    x: Any,
    dy: Any,
    weight: Any = None,
    running_mean: Any = None,
    running_var: Any = None,
    training: bool = True,
    eps: float | None = None,
    convention: str = "torch",
    *,
    axis: int = 1,
    backend: Any = None,
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Gradients ``(dx, dweight, dbias)`` of :func:`batch_norm`, float32.

    Training: ``dx = gamma invstd (dy - mean(dy) - xhat mean(dy xhat))``,
    ``dweight = sum(dy xhat)``, ``dbias = sum(dy)``; evaluation:
    ``dx = gamma invstd dy``.  Computed in float64 from float64 statistics
    and rounded once.  **Bound** (tested): each ``dx`` is within 1 ULP of
    float32 at the magnitude ``|gamma| invstd (|dy| + |mean(dy)| +
    |xhat| |mean(dy xhat)|)``, each ``dweight``/``dbias`` within 1 ULP at
    ``sum(|dy xhat|)``/``sum(|dy|)``: the error is relative to the terms,
    not to a result that may cancel to zero.
    """
    if backend is None:
        from normspec.kernels import _numba_cpu as backend
    xa = _as_f32(x, "x")
    dya = _as_f32(dy, "dy", xa.shape)
    x3 = xa.reshape(_shape3(xa.shape, axis))
    dy3 = dya.reshape(x3.shape)

    def sums(x3: Any, dy3: Any, mu: np.ndarray) -> np.ndarray:
        out = np.empty((x3.shape[1], 2))
        backend.backward_sums(x3, dy3, mu, out)
        return out

    def dx(x3: Any, dy3: Any, mu: np.ndarray, coef: np.ndarray, mean_dy: np.ndarray, proj: np.ndarray) -> Any:
        dx3 = _buffers.empty(x3.shape, np.float32)
        backend.backward_dx(x3, dy3, mu, coef, mean_dy, proj, dx3)
        return dx3

    dx3, dweight, dbias = _backward(
        x3, dy3, weight, running_mean, running_var, training, eps, convention, lambda x3: _stats(x3, backend), sums, dx
    )
    return dx3.reshape(xa.shape), dweight, dbias


def _backward(
    x3: Any,
    dy3: Any,
    weight: Any,
    running_mean: Any,
    running_var: Any,
    training: bool,
    eps: float | None,
    convention: str,
    stats: Any,
    sums: Any,
    dx: Any,
) -> tuple[Any, np.ndarray, np.ndarray]:
    """The backward pass on (A, C, B) views, the bulk work done by ``stats(x3) -> (st, m, chunk)``,
    ``sums(x3, dy3, mu) -> [sum dy, sum dy (x - mu)]`` per channel and ``dx(...)`` (CPU or
    CUDA); the per-channel arithmetic in between is shared."""
    prof = _profile(convention)
    a_n, c_n, b_n = x3.shape
    n = a_n * b_n
    gamma = _as_f32(np.ones(c_n, np.float32) if weight is None else weight, "weight", (c_n,)).astype(np.float64)
    eps_v = prof.effective_eps(prof.eps if eps is None else float(eps))
    if training:
        if n < 2 and prof.one_value == "error":
            raise DegenerateInputError(
                expected("more than 1 value per channel when training", "x viewed (A, C, B)", x3.shape)
            )
        st = stats(x3)[0]
        mean1 = st[:, 1] / n
        mu = st[:, 0] + mean1
        var = np.maximum(st[:, 3] / n - mean1 * mean1, 0.0)
    else:
        if running_mean is None or running_var is None:
            raise ShapeError("evaluation backward needs running_mean and running_var")
        mu = _as_f32(running_mean, "running_mean", (c_n,)).astype(np.float64)
        var = _as_f32(running_var, "running_var", (c_n,)).astype(np.float64)
    with np.errstate(divide="ignore"):
        invstd = np.where(var + eps_v > 0, 1.0 / np.sqrt(var + eps_v), 0.0)
    s = sums(x3, dy3, mu)
    dbias = s[:, 0]
    dweight = s[:, 1] * invstd
    coef = gamma * invstd
    if training:
        dx3 = dx(x3, dy3, mu, coef, dbias / n, s[:, 1] * invstd * invstd / n)
    else:
        dx3 = dx(x3, dy3, mu, coef, np.zeros(c_n), np.zeros(c_n))
    return dx3, dweight.astype(np.float32), dbias.astype(np.float32)
