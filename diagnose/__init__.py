"""Running-statistics diagnosis: why a BatchNorm model evaluates worse than it trains.

:func:`diagnose` reads a sequence of training batches (lazily: one batch at a time) and computes,
per channel and under a chosen convention:

- the running statistics after every step, as a correct implementation of the convention stores
  them (the oracle's training step: exact, then correctly rounded each step);
- the statistics of all the data seen, exactly (population mean and biased variance), and the law
  of total variance that splits the population variance into the mean within-batch variance
  (what the running variance estimates) and the variance of the batch means (what it misses):
  ``var(all) = mean_k var(batch_k) + var_k mean(batch_k)`` for batches of equal size, weighted by
  batch size otherwise (``normspec prove total_variance``);
- the weight the initial running values still carry after ``k`` steps (``(1 - m)**k`` where
  ``momentum`` weighs the new value, ``m**k`` where it weighs the old one) and the steps until
  that weight falls below 1 % (``normspec prove momentum_maps`` has the closed form);
- the evaluation-mode output of the training data that follows: per channel its mean
  ``(M - running_mean) / sqrt(running_var + eps)`` and standard deviation
  ``sqrt(V / (running_var + eps))`` (0 and 1 when the running statistics describe the data);
- whether the batches look like i.i.d. samples of the data: a one-way analysis of variance of
  the per-sample channel means (each sample's mean over the spatial axes, so that correlated
  pixels of one image do not count as independent values).  Under i.i.d. sampling of roughly
  normal sample means, ``F = (between-batch mean square) / (within-batch mean square)`` follows
  the F distribution with ``(K - 1, S - K)`` degrees of freedom (``K`` batches, ``S`` samples);
  the batching is flagged as not i.i.d. when the probability of an ``F`` at least this large is
  below :data:`IID_ALPHA` (0.1 %): by sampling noise alone, one channel in a thousand would be
  flagged.  Those statistics are float64 (a test, not an output); everything else is exact.

The causes it names: batches that are not i.i.d. samples (each drawn from one distribution, as in
a data set ordered by class or by source), initial values that still weigh more than 1 %, and,
given the running statistics a model really holds (``observed``), statistics that never moved
from their initial values (TF1 graph code that does not run ``UPDATE_OPS``; MXNet on CPU, which
updates only in a backward pass).
"""

from __future__ import annotations

import math
import re
from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass, field
from fractions import Fraction
from pathlib import Path
from typing import Any

import numpy as np
from normspec.oracle import batch_norm
from normspec.spec.conventions import Convention, get_convention

from normspec._load import load_callable
from normspec._npz import load_npz
from normspec.errors import (
    DomainError,
    InputFileError,
    InvalidArgumentError,
    MissingExtraError,
    NormspecError,
    ShapeError,
    expected,
)

__all__ = ["IID_ALPHA", "Diagnosis", "diagnose", "read_batches", "f_survival", "plot", "render_text"]

# Below this probability of an F at least as large under i.i.d. sampling, batching is flagged.
IID_ALPHA = 1e-3
# The initial running values weigh too much above this share.
INITIAL_WEIGHT_LIMIT = 0.01


def read_batches(source: str | Path) -> Iterator[np.ndarray]:
    """The batches of ``source``, one at a time: an ``.npz`` whose array (``x``, or its only one)
    has a leading batch axis, a directory of ``.npz`` files (one batch each, in name order), or
    ``python:module:function`` (or ``python:path/file.py:function``) returning an iterable of arrays."""
    text = str(source)
    if text.startswith("python:"):
        yield from _python_batches(text)
        return
    path = Path(text)
    if path.is_dir():
        files = sorted(path.glob("*.npz"), key=_natural)  # batch2 before batch10
        if not files:
            raise InputFileError(f"{text!r} is a directory with no .npz files")
        for f in files:
            yield _only_array(f, load_npz(f))
        return
    stacked = _only_array(path, load_npz(path))
    if stacked.ndim < 3:
        raise ShapeError(expected("an array (batches, N, C, ...) with a leading batch axis", "x.shape", stacked.shape))
    yield from stacked


def _natural(path: Path) -> list[Any]:
    return [int(t) if t.isdigit() else t for t in re.split(r"(\d+)", path.name)]


def _only_array(path: Path, arrays: dict[str, np.ndarray]) -> np.ndarray:
    if "x" in arrays:
        return arrays["x"]
    if len(arrays) == 1:
        return next(iter(arrays.values()))
    raise InputFileError(f"{str(path)!r} holds {', '.join(arrays) or 'no arrays'}: name the batches 'x'")


def _python_batches(spec: str) -> Iterator[np.ndarray]:
    for batch in load_callable(spec, "batches")():
        yield np.asarray(batch)


def f_survival(f: float, d1: int, d2: int) -> float:
    """P(F >= f) for the F distribution with (d1, d2) degrees of freedom (mpmath's regularized
    incomplete beta function: P(F <= f) = I_{d1 f / (d1 f + d2)}(d1/2, d2/2))."""
    import mpmath

    if math.isinf(f):
        return 0.0
    if f <= 0:
        return 1.0
    with mpmath.workdps(30):
        z = mpmath.mpf(d1) * f / (mpmath.mpf(d1) * f + d2)
        return float(mpmath.betainc(mpmath.mpf(d2) / 2, mpmath.mpf(d1) / 2, 0, 1 - z, regularized=True))


@dataclass
class Diagnosis:
    """What :func:`diagnose` found; ``as_dict`` for JSON."""

    convention: str
    momentum: float
    eps: float
    steps: int
    batch_shape: tuple[int, ...]
    running_mean: np.ndarray  # (steps + 1, C): the initial values, then after each step
    running_var: np.ndarray
    batch_mean: np.ndarray  # (steps, C), float64 of the exact values
    batch_var: np.ndarray  # (steps, C), biased
    population_mean: list[Fraction]
    population_var: list[Fraction]
    within: list[Fraction]  # mean within-batch (biased) variance, weighted by batch size
    between: list[Fraction]  # variance of the batch means, weighted by batch size
    initial_weight: float
    steps_to_one_percent: int | None
    eval_mean: np.ndarray  # (C,): mean of the evaluation-mode output of all the data seen
    eval_std: np.ndarray
    f_statistic: np.ndarray  # (C,) one-way ANOVA of the per-sample means across batches
    p_value: np.ndarray
    causes: list[str] = field(default_factory=list)
    observed: dict[str, Any] = field(default_factory=dict)

    @property
    def channels(self) -> int:
        return int(self.running_mean.shape[1])

    @property
    def alpha(self) -> float:
        """The per-channel threshold: IID_ALPHA over the channels (Bonferroni), so that i.i.d. data
        has at most that chance of a flag on any channel."""
        return IID_ALPHA / max(self.channels, 1)

    @property
    def not_iid(self) -> np.ndarray:
        return np.asarray(self.p_value < self.alpha)

    def as_dict(self) -> dict[str, Any]:
        """Plain JSON values: NaN and infinities (an undefined test, a NaN statistic) become None."""
        return _json_safe(self._as_dict())

    def _as_dict(self) -> dict[str, Any]:
        per_channel = []
        for c in range(self.channels):
            per_channel.append(
                {
                    "channel": c,
                    "population_mean": float(self.population_mean[c]),
                    "population_var": float(self.population_var[c]),
                    "within_batch_var": float(self.within[c]),
                    "between_batch_var": float(self.between[c]),
                    "running_mean": float(self.running_mean[-1, c]),
                    "running_var": float(self.running_var[-1, c]),
                    "eval_mean": float(self.eval_mean[c]),
                    "eval_std": float(self.eval_std[c]),
                    "f_statistic": float(self.f_statistic[c]),
                    "p_value": float(self.p_value[c]),
                    "not_iid": bool(self.not_iid[c]),
                }
            )
        return {
            "convention": self.convention,
            "momentum": "cumulative" if math.isnan(self.momentum) else self.momentum,
            "eps": self.eps,
            "steps": self.steps,
            "batch_shape": list(self.batch_shape),
            "initial_weight": self.initial_weight,
            "steps_to_one_percent": self.steps_to_one_percent,
            "iid_alpha": IID_ALPHA,
            "iid_alpha_per_channel": self.alpha,
            "channels": per_channel,
            "running_mean": self.running_mean.tolist(),
            "running_var": self.running_var.tolist(),
            "causes": self.causes,
            "observed": self.observed,
        }


def _json_safe(value: Any) -> Any:
    if isinstance(value, float):
        return value if math.isfinite(value) else None
    if isinstance(value, dict):
        return {k: _json_safe(v) for k, v in value.items()}
    if isinstance(value, list):
        return [_json_safe(v) for v in value]
    return value


def _initial_weight(conv: Convention, momentum: float, steps: int, cumulative: bool) -> tuple[float, int | None]:
    """The weight of the initial running values after ``steps`` updates, and the updates until it is below 1 %."""
    if cumulative:  # the cumulative average forgets the initial value at the first step
        return (1.0 if steps == 0 else 0.0), 1
    m = float(conv.effective_momentum(momentum))
    keep = 1.0 - m if conv.momentum_direction == "new" else m
    if keep <= 0:
        return (1.0 if steps == 0 else 0.0), 1
    if keep >= 1:
        return 1.0, None
    return keep**steps, math.ceil(math.log(INITIAL_WEIGHT_LIMIT) / math.log(keep))


def diagnose(
    batches: Iterable[Any],
    convention: str | Convention = "torch",
    *,
    momentum: float | str | None = None,
    eps: float | None = None,
    running_mean: Any = None,
    running_var: Any = None,
    backward: bool = True,
    observed: dict[str, np.ndarray] | None = None,
    progress: Callable[[int], None] | None = None,
) -> Diagnosis:
    """Diagnose the running statistics of a BatchNorm trained on ``batches`` (arrays ``(N, C, ...)``
    of one shape) under ``convention``; see the module docstring.  ``backward=False`` says no
    backward pass ran (MXNet's CPU BatchNorm then never updates); ``observed`` holds the running
    statistics a model really ended with (``running_mean``, ``running_var``)."""
    conv = get_convention(convention)
    if not conv.running_stats:
        raise InvalidArgumentError(expected("a profile with running statistics", "convention", conv.name))
    cumulative = isinstance(momentum, str)
    mom: float | str = conv.momentum if momentum is None else momentum
    if not cumulative and not 0 <= float(mom) <= 1:
        raise InvalidArgumentError(expected("a momentum in [0, 1] or 'cumulative'", "momentum", momentum))
    rm: np.ndarray | None = None
    rv: np.ndarray | None = None
    traj_m: list[np.ndarray] = []
    traj_v: list[np.ndarray] = []
    means: list[list[Fraction]] = []
    variances: list[list[Fraction]] = []
    counts: list[int] = []
    anova: list[tuple[int, np.ndarray, np.ndarray]] = []  # per batch: samples, mean and SS of sample means
    shape: tuple[int, ...] | None = None
    dtype: Any = np.float32
    k = 0
    for k, raw in enumerate(batches):
        x = np.asarray(raw)
        if shape is None:
            if x.ndim < 2:
                raise ShapeError(expected("batches (N, C, ...) of at least 2 axes", "batch 0 shape", x.shape))
            shape, dtype = x.shape, x.dtype
            channels = x.shape[1]
            rm = np.full(channels, conv.running_mean_init, np.float32) if running_mean is None else running_mean
            rv = np.full(channels, conv.running_var_init, np.float32) if running_var is None else running_var
            rm, rv = np.asarray(rm), np.asarray(rv)
            traj_m.append(rm.astype(np.float64))
            traj_v.append(rv.astype(np.float64))
        elif x.shape != shape:
            raise ShapeError(f"batch {k} has shape {x.shape}; the batches before it have {shape}")
        if x.shape[0] == 0 or x.size == 0:
            raise ShapeError(f"batch {k} is empty (shape {x.shape})")
        if not np.isfinite(x).all():
            pos = tuple(int(i) for i in np.argwhere(~np.isfinite(x))[0])
            raise DomainError(f"batch {k}: x{list(pos)} = {x[pos]!r} is not finite")
        # a NaN running statistic (the unbiased variance of one value, say) stays NaN: IEEE arithmetic
        # in every later update; the oracle, which refuses NaN statistics as input, sees a stand-in
        assert rm is not None and rv is not None
        lost_m, lost_v = ~np.isfinite(rm), ~np.isfinite(rv)
        try:
            r = batch_norm(
                x,
                None,
                None,
                np.where(lost_m, 0, rm).astype(rm.dtype),
                np.where(lost_v, 1, rv).astype(rv.dtype),
                training=True,
                momentum=mom,
                eps=eps,
                convention=conv,
                num_batches_tracked=k,
                with_backward=backward,
            )
        except NormspecError as exc:
            raise type(exc)(f"batch {k}: {exc}") from None
        assert r.running_mean is not None and r.running_var is not None
        rm = np.where(lost_m, np.nan, r.running_mean).astype(r.running_mean.dtype)
        rv = np.where(lost_v, np.nan, r.running_var).astype(r.running_var.dtype)
        traj_m.append(rm.astype(np.float64))
        traj_v.append(rv.astype(np.float64))
        means.append([Fraction(v) for v in r.exact.mean])  # finite x: exact rationals
        variances.append([Fraction(v) for v in r.exact.var])
        counts.append(x.size // x.shape[1])
        sample_means = x.astype(np.float64).reshape(x.shape[0], x.shape[1], -1).mean(axis=2)
        centre = sample_means.mean(axis=0)
        anova.append((x.shape[0], centre, ((sample_means - centre) ** 2).sum(axis=0)))
        if progress is not None:
            progress(x.size)
    if shape is None:
        raise InvalidArgumentError("no batches: the sequence is empty")
    steps = k + 1
    channels = shape[1]
    total = sum(counts)
    pop_mean, pop_var, within, between = [], [], [], []
    for c in range(channels):
        m_c = sum((n * means[i][c] for i, n in enumerate(counts)), Fraction(0)) / total
        w_c = sum((n * variances[i][c] for i, n in enumerate(counts)), Fraction(0)) / total
        b_c = sum((n * (means[i][c] - m_c) ** 2 for i, n in enumerate(counts)), Fraction(0)) / total
        second = sum((n * (variances[i][c] + means[i][c] ** 2) for i, n in enumerate(counts)), Fraction(0)) / total
        v_c = second - m_c**2
        if v_c != w_c + b_c:  # the law of total variance (normspec prove total_variance), exactly
            raise AssertionError(f"channel {c}: population variance {v_c} != {w_c} + {b_c}")
        pop_mean.append(m_c)
        pop_var.append(v_c)
        within.append(w_c)
        between.append(b_c)
    nominal = conv.default_eps(np.finfo(np.dtype(dtype)).nmant + 1) if eps is None else float(eps)
    eps_used = conv.effective_eps(nominal)
    eval_mean, eval_std = _eval_moments(pop_mean, pop_var, traj_m[-1], traj_v[-1], eps_used)
    f_stat, p_val = _anova(anova, channels)
    if not backward and conv.update_time == "backward":  # nothing moved the running statistics
        weight, to_one = 1.0, None
    else:
        weight, to_one = _initial_weight(conv, 0.0 if cumulative else float(mom), steps, cumulative)
    diag = Diagnosis(
        conv.name,
        math.nan if cumulative else float(mom),
        float(eps_used),
        steps,
        shape,
        np.array(traj_m),
        np.array(traj_v),
        np.array([[float(v) for v in row] for row in means]),
        np.array([[float(v) for v in row] for row in variances]),
        pop_mean,
        pop_var,
        within,
        between,
        weight,
        to_one,
        eval_mean,
        eval_std,
        f_stat,
        p_val,
    )
    _name_causes(diag, conv, observed, backward)
    return diag


def _eval_moments(
    pop_mean: list[Fraction], pop_var: list[Fraction], rm: np.ndarray, rv: np.ndarray, eps: float
) -> tuple[np.ndarray, np.ndarray]:
    """Mean and standard deviation, per channel, of the evaluation-mode output (weight 1, bias 0)
    of data with these exact moments under the running statistics ``rm``, ``rv``."""
    channels = len(pop_mean)
    mean, std = np.full(channels, math.nan), np.full(channels, math.nan)
    for c in range(channels):
        if not (math.isfinite(rm[c]) and math.isfinite(rv[c])):
            continue
        denom = Fraction(float(rv[c])) + Fraction(eps)
        if denom <= 0:
            continue
        mean[c] = float(pop_mean[c] - Fraction(float(rm[c]))) / math.sqrt(denom)
        std[c] = math.sqrt(pop_var[c] / denom)
    return mean, std


def _eval_output(diag: Diagnosis, rm: np.ndarray, rv: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    return _eval_moments(diag.population_mean, diag.population_var, rm, rv, diag.eps)


def _anova(anova: list[tuple[int, np.ndarray, np.ndarray]], channels: int) -> tuple[np.ndarray, np.ndarray]:
    """One-way ANOVA of the per-sample channel means, batches as groups: F and P(F' >= F)."""
    k = len(anova)
    samples = sum(n for n, _, _ in anova)
    d1, d2 = k - 1, samples - k
    if d1 < 1 or d2 < 1:  # one batch, or one sample per batch: nothing to compare
        return np.full(channels, math.nan), np.full(channels, math.nan)
    grand = np.sum([n * centre for n, centre, _ in anova], axis=0) / samples
    ssb = np.sum([n * (centre - grand) ** 2 for n, centre, _ in anova], axis=0)
    ssw = np.sum([ss for _, _, ss in anova], axis=0)
    f = np.empty(channels)
    p = np.empty(channels)
    for c in range(channels):
        if ssw[c] == 0:
            f[c] = math.inf if ssb[c] > 0 else math.nan
        else:
            f[c] = (ssb[c] / d1) / (ssw[c] / d2)
        p[c] = math.nan if math.isnan(f[c]) else f_survival(float(f[c]), d1, d2)
    return f, p


def _name_causes(diag: Diagnosis, conv: Convention, observed: dict[str, np.ndarray] | None, backward: bool) -> None:
    flagged = np.flatnonzero(diag.not_iid)
    if flagged.size:
        c = int(flagged[np.argmax([float(diag.between[i] / diag.population_var[i]) for i in flagged])])
        share = float(diag.between[c] / diag.population_var[c]) if diag.population_var[c] else 0.0
        diag.causes.append(
            f"batches are not i.i.d. samples of the data ({flagged.size} of {diag.channels} channel(s); channel {c}: "
            f"F = {diag.f_statistic[c]:.4g}, P {_p_text(diag.p_value[c])} < {diag.alpha:.2g}): training normalizes "
            f"each batch by its own statistics, evaluation by the running averages, whose variance estimates only the "
            f"within-batch part ({1 - share:.1%} of the data's variance on channel {c}; the batch means' spread is "
            f"the other {share:.1%})"
        )
    influence = _initial_influence(diag)
    if influence > INITIAL_WEIGHT_LIMIT:
        when = f"; {diag.steps_to_one_percent} steps bring it below 1 %" if diag.steps_to_one_percent else ""
        diag.causes.append(
            f"the initial running values still weigh {diag.initial_weight:.1%} after {diag.steps} step(s) "
            f"({_momentum_text(diag)}, {conv.momentum_direction}-weight){when}, and they are far enough from the "
            f"data to move the running statistics by {influence:.1%} of its scale"
        )
    lost = ~(np.isfinite(diag.running_mean[-1]) & np.isfinite(diag.running_var[-1]))
    if lost.any():
        first = int(np.argmax(~(np.isfinite(diag.running_mean) & np.isfinite(diag.running_var)).all(axis=1)))
        diag.causes.append(
            f"the running statistics of {int(lost.sum())} channel(s) are NaN from step {first} on: {conv.name} "
            f"keeps the unbiased variance, undefined for one value per channel ({diag.batch_shape[0]} sample(s) of "
            f"{int(np.prod(diag.batch_shape[2:], dtype=np.int64))} value(s) per batch)"
        )
    if not backward and conv.update_time == "backward":
        diag.causes.append(
            f"profile {conv.name} updates the running statistics only in a backward pass, and none ran: they keep "
            "their initial values"
        )
    if observed:
        rm0, rv0 = diag.running_mean[0], diag.running_var[0]
        missing = [k for k in ("running_mean", "running_var") if k not in observed]
        if missing:
            raise InputFileError(f"the observed statistics lack {' and '.join(missing)} (found: {', '.join(observed)})")
        om = np.asarray(observed["running_mean"], np.float64)
        ov = np.asarray(observed["running_var"], np.float64)
        for key, arr in (("running_mean", om), ("running_var", ov)):
            if arr.shape != rm0.shape:
                raise ShapeError(expected(f"observed {key} of shape {rm0.shape}", f"observed {key}.shape", arr.shape))
        stuck = bool(np.array_equal(om, rm0) and np.array_equal(ov, rv0))
        from normspec.oracle import ulp_distance

        with np.errstate(invalid="ignore"):
            dm = ulp_distance(om.astype(np.float32), diag.running_mean[-1].astype(np.float32))
            dv = ulp_distance(ov.astype(np.float32), diag.running_var[-1].astype(np.float32))
        eval_mean, eval_std = _eval_output(diag, om, ov)
        diag.observed = {
            "never_updated": stuck,
            "running_mean_ulp": [float(v) for v in dm],
            "running_var_ulp": [float(v) for v in dv],
            "eval_mean": [float(v) for v in eval_mean],
            "eval_std": [float(v) for v in eval_std],
        }
        if not (np.isfinite(om).all() and np.isfinite(ov).all()):
            diag.causes.append(
                "the model's running statistics hold NaN or infinity: an unbiased running variance of one value "
                "per channel (cuDNN at batch size 1), or a non-finite input or update"
            )
        if stuck and diag.steps > 0:
            diag.causes.insert(
                0,
                "the model's running statistics were never updated (still their initial values): in TF1 graph "
                "code, the UPDATE_OPS collection was not run with the train op; on MXNet's CPU BatchNorm, no "
                "backward pass ran",
            )


def _initial_influence(diag: Diagnosis) -> float:
    """How far the initial values pull the running statistics, relative to the data's scale: the
    initial weight times the largest of |initial mean - data mean| / data std and
    |initial variance - mean within-batch variance| / that variance, over the channels."""
    worst = 0.0
    for c in range(diag.channels):
        m0, v0 = diag.running_mean[0, c], diag.running_var[0, c]
        std = math.sqrt(float(diag.population_var[c]))
        within = float(diag.within[c])
        parts = [abs(m0 - float(diag.population_mean[c])) / std if std > 0 else 0.0]
        parts.append(abs(v0 - within) / within if within > 0 else 0.0)
        worst = max(worst, diag.initial_weight * max(parts))
    return worst


def _momentum_text(diag: Diagnosis) -> str:
    return "cumulative average" if math.isnan(diag.momentum) else f"momentum {diag.momentum:g}"


def _p_text(p: float) -> str:
    return "< 1e-300" if p == 0 else f"= {p:.2g}"


def render_text(diag: Diagnosis, source: str = "") -> str:
    """The terminal report: a table per channel, then the causes."""
    lines = [
        f"normspec diagnose{' ' + source if source else ''}: {diag.steps} training step(s) of batches "
        f"{diag.batch_shape} under {diag.convention} ({_momentum_text(diag)}, eps {diag.eps:.3g})",
        "",
        f"{'ch':>3} {'data mean':>10} {'data var':>10} {'within':>10} {'between':>10} {'run mean':>10} {'run var':>10}"
        f" {'eval mean':>10} {'eval std':>9} {'F':>9} {'P':>8}",
    ]
    for c in range(diag.channels):
        p = diag.p_value[c]
        lines.append(
            f"{c:>3} {float(diag.population_mean[c]):>10.4g} {float(diag.population_var[c]):>10.4g} "
            f"{float(diag.within[c]):>10.4g} {float(diag.between[c]):>10.4g} {diag.running_mean[-1, c]:>10.4g} "
            f"{diag.running_var[-1, c]:>10.4g} {diag.eval_mean[c]:>10.3g} {diag.eval_std[c]:>9.3g} "
            f"{diag.f_statistic[c]:>9.3g} {('<1e-300' if p == 0 else f'{p:.2g}'):>8}"
            + ("  not i.i.d." if diag.not_iid[c] else "")
        )
    lines += [
        "",
        "data mean/var: all the data seen, exactly (biased variance) = within (mean within-batch variance, what the",
        "running variance estimates) + between (variance of the batch means); run mean/var: the running statistics a",
        "correct implementation of the convention holds after the last step; eval mean/std: its evaluation-mode output",
        "on all the data (0 and 1 when the running statistics describe the data); F, P: one-way ANOVA of per-sample",
        f"means across batches (flagged below P = {diag.alpha:.2g}: {IID_ALPHA:g} over {diag.channels} channel(s)).",
        "",
        f"initial running values weigh {diag.initial_weight:.3g} after {diag.steps} step(s)"
        + (f" (below 1 % after {diag.steps_to_one_percent})" if diag.steps_to_one_percent else ""),
    ]
    if diag.observed:
        lines.append(
            "observed running statistics: "
            + ("never updated (still the initial values)" if diag.observed["never_updated"] else "updated")
            + f"; max {max(diag.observed['running_mean_ulp'] + diag.observed['running_var_ulp']):.3g} ULP from the "
            "convention's"
        )
    lines.append("")
    if diag.causes:
        lines.append(f"{len(diag.causes)} likely cause(s) of a train/eval gap:")
        lines += [f"  - {c}" for c in diag.causes]
    else:
        lines.append("no cause found: the running statistics describe the data the batches hold")
    return "\n".join(lines)


def plot(diag: Diagnosis, directory: Path, max_channels: int = 4) -> list[Path]:
    """``running_statistics.png`` (per channel: the running mean and variance over the steps against
    the data's, the batch means and variances as dots) and ``variance_decomposition.png``."""
    try:
        import matplotlib

        matplotlib.use("Agg")
        import matplotlib.pyplot as plt
    except ImportError:
        raise MissingExtraError("--plot needs matplotlib: pip install 'normspec[audit]'") from None
    directory.mkdir(parents=True, exist_ok=True)
    shown = min(diag.channels, max_channels)
    steps = np.arange(diag.steps + 1)
    fig, axes = plt.subplots(2, shown, figsize=(4.2 * shown, 6.4), squeeze=False)
    for c in range(shown):
        top, bottom = axes[0, c], axes[1, c]
        top.plot(steps[1:], diag.batch_mean[:, c], ".", color="0.6", label="batch mean")
        top.plot(steps, diag.running_mean[:, c], "-", label="running mean")
        top.axhline(float(diag.population_mean[c]), color="k", lw=1, label="mean of all data")
        top.set_title(f"channel {c}: mean")
        bottom.plot(steps[1:], diag.batch_var[:, c], ".", color="0.6", label="batch variance")
        bottom.plot(steps, diag.running_var[:, c], "-", label="running variance")
        bottom.axhline(float(diag.population_var[c]), color="k", lw=1, label="variance of all data")
        bottom.axhline(float(diag.within[c]), color="k", ls="--", lw=1, label="mean within-batch variance")
        bottom.set_xlabel("training step")
        bottom.set_title(f"channel {c}: variance")
        if c == 0:
            top.legend(fontsize=7)
            bottom.legend(fontsize=7)
    fig.suptitle(f"running statistics under {diag.convention} ({_momentum_text(diag)})")
    fig.tight_layout()
    first = directory / "running_statistics.png"
    fig.savefig(first, dpi=90)
    plt.close(fig)
    fig, ax = plt.subplots(figsize=(max(4.0, 0.6 * diag.channels + 2), 3.6))
    ch = np.arange(diag.channels)
    within = np.array([float(v) for v in diag.within])
    between = np.array([float(v) for v in diag.between])
    ax.bar(ch, within, label="mean within-batch variance (running variance estimates this)")
    ax.bar(ch, between, bottom=within, label="variance of the batch means")
    ax.set_xlabel("channel")
    ax.set_ylabel("variance of all the data")
    ax.set_title("law of total variance, per channel")
    ax.legend(fontsize=7)
    fig.tight_layout()
    second = directory / "variance_decomposition.png"
    fig.savefig(second, dpi=90)
    plt.close(fig)
    return [first, second]
