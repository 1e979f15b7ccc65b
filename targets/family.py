"""The family part of the one audit (:func:`normspec.targets.audit.run_audit`): LayerNorm,
RMSNorm, GroupNorm, InstanceNorm and MeanVarianceNormalization targets.

The adapters (:mod:`normspec.targets.family_adapters`, ``FAMILY_ADAPTERS`` here too) run one
forward of one layer on a case (``x``, ``weight``, ``bias``, ``eps``, and ``groups`` for
GroupNorm) in the same worker processes as the BatchNorm targets and return ``y``.
:func:`audit_family` runs the convention probes (:func:`family_probes`: eps placement, which
statistics, which axes or channels, per-channel or per-group weight, float16 or wider
statistics) and the battery (:mod:`normspec.vectors.family`), and judges each output with the
audit's one judge (:func:`normspec.targets.verdict.judge_output`) against the oracle under the
profile the target claims (:mod:`normspec.spec.conventions`).
"""

from __future__ import annotations

import math
import tempfile
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np
from normspec.spec.conventions import Convention
from normspec.targets.family_adapters import FAMILY_ADAPTERS
from normspec.targets.probes import Probe, infer
from normspec.targets.verdict import degenerate_reason, judge_output
from normspec.vectors.family import exact_family_output, family_battery, per_channel_affine

from normspec.errors import InvalidArgumentError, expected

__all__ = [
    "FAMILY_ADAPTERS",
    "exact_family_output",
    "family_battery",
    "per_channel_affine",
    "audit_family",
    "family_probes",
    "judge_family",
    "infer_family",
]

Case = dict[str, Any]


def _values_per_group(conv: Convention, case: Case) -> int:
    """How many values share one mean and variance in a battery case (its protocol's layout)."""
    x = case["x"][0]
    if conv.layer in ("layer_norm", "rms_norm"):
        return int(x.shape[-1])
    if conv.layer == "mean_variance_norm":
        return int(x.size // max(x.shape[1], 1))
    groups = x.shape[1] if conv.layer == "instance_norm" else int(case["groups"])
    return int(x.size // max(x.shape[0] * groups, 1))


# ---------------------------------------------------------------- convention probes
#
# Each probe is one small case whose output tells apart the functions a target might compute
# instead of the claimed one: eps inside or outside the square root; mean subtracted or not,
# biased or unbiased variance; which axes (and for GroupNorm which channels) share a mean;
# one weight per channel or per group; statistics in float16 or wider.  The alternatives are
# chosen to differ by a factor of 1.4 or more at the element where they are compared, so the
# nearest one names what the target computes; no tolerance decides anything.


def _normalized(x: np.ndarray, axes: tuple[int, ...], *, centred: bool, ddof: int, eps: float, outside: bool) -> Any:
    """``x`` normalized over ``axes`` in float64, weight 1 and bias 0: the probes' alternatives."""
    x = np.asarray(x, np.float64)
    n = math.prod(x.shape[a] for a in axes)
    m = x.mean(axis=axes, keepdims=True) if centred else 0.0
    v: np.ndarray = ((x - m) ** 2).sum(axis=axes, keepdims=True) / (n - ddof)
    return (x - m) / (np.sqrt(v) + eps if outside else np.sqrt(v + eps))


def _grouping(conv: Convention, x0: np.ndarray, groups: int) -> tuple[np.ndarray, tuple[int, ...]]:
    """``x0`` reshaped so that the values sharing one mean lie along the returned axes (the protocol's layout)."""
    if conv.layer in ("layer_norm", "rms_norm"):
        return x0, (x0.ndim - 1,)
    if conv.layer == "mean_variance_norm":
        return x0, (0, 2, 3)
    g = x0.shape[1] if conv.layer == "instance_norm" else groups
    return x0.reshape(x0.shape[0], g, -1), (2,)


def _claimed_y(
    conv: Convention,
    x0: np.ndarray,
    groups: int,
    eps: float,
    *,
    centred: bool | None = None,
    ddof: int = 0,
    outside: bool | None = None,
) -> np.ndarray:
    """The claimed layer's y (weight 1, bias 0) in float64, with any of its statistics' choices changed."""
    view, axes = _grouping(conv, x0, groups)
    y = _normalized(
        view,
        axes,
        centred=conv.centred if centred is None else centred,
        ddof=ddof,
        eps=conv.effective_eps(eps),
        outside=conv.eps_placement == "outside" if outside is None else outside,
    )
    return np.asarray(y).reshape(x0.shape)


def _probe_case(conv: Convention, x0: np.ndarray, groups: int, eps: float, weight: np.ndarray | None = None) -> Case:
    """A family case around ``x0`` (one step), effective weight 1 (or ``weight``) and bias 0, as the
    protocol lays them out."""
    if conv.layer in ("layer_norm", "rms_norm"):
        feat = x0.shape[-1]
    else:
        feat = groups if conv.affine == "per_group" else x0.shape[1]
    # parameters in float32, or in the dtype the profile stores them in (LLM profiles: the input's)
    pdt = x0.dtype if conv.weight_format == "input" else np.dtype(conv.weight_format or "float32")
    # the stored weight whose effective value (offset + weight: Gemma's 1 + w) is the one wanted
    wanted = np.ones(feat) if weight is None else np.asarray(weight, np.float64)
    w = (wanted - conv.weight_offset).astype(pdt)
    return {
        "x": x0[None],
        "weight": w,
        "bias": np.zeros(feat, pdt),
        "eps": np.array(eps),
        "training": np.array(True),
        "momentum": np.array(0.0),
        "running_mean": np.zeros(feat, np.float32),
        "running_var": np.ones(feat, np.float32),
        "groups": np.array(groups),
    }


def _one_group(conv: Convention, values: list[float], dtype: type = np.float32) -> tuple[np.ndarray, int]:
    """One group of ``values`` in the layer's layout (GroupNorm: one value per channel, one group)."""
    v: np.ndarray = np.array(values, dtype)
    shape = {
        "layer_norm": (1, v.size),
        "rms_norm": (1, v.size),
        "mean_variance_norm": (1, 1, 1, v.size),
        "instance_norm": (1, 1, v.size),
        "group_norm": (1, v.size, 1),
    }[conv.layer]
    return v.reshape(shape), 1


def _probe(field: str, case: Case, note: str, claimed: str, alternatives: dict[str, np.ndarray]) -> Probe:
    """A family probe: it brings its own case and reads its y (float16 statistics may give NaN
    where inf meets inf: read as the 0 they give elsewhere)."""

    def read(outputs: Any) -> np.ndarray:
        y = np.asarray(outputs["y"], np.float64)
        return np.where(np.isfinite(y), y, 0.0) if field == "precision" else y

    return Probe(field, f"probe_{field}", claimed, alternatives, read, note, case)


def _refuse_fused(conv: Convention) -> None:
    if conv.residual:  # the audit protocol f(x, weight, bias, eps, groups) has no residual stream
        raise InvalidArgumentError(
            expected(
                "a profile without a fused residual add (judge such kernels with normspec.testing.judge_norm(..., "
                "residual=...), or check them against `normspec vectors generate --family` vectors)",
                "convention",
                conv.name,
            )
        )


def family_probes(conv: Convention) -> list[Probe]:
    """The convention probes of a family profile (see the comment above)."""
    _refuse_fused(conv)
    layer, probes = conv.layer, []
    # eps: the values [0, 2**-5] (variance 2**-12, mean square 2**-11) with eps 2**-10 put the two
    # placements a factor near 2 apart, within every library's accepted eps (Paddle: <= 1e-3)
    x0, g = _one_group(conv, [0.0, 2.0**-5])
    probes.append(
        _probe(
            "eps",
            _probe_case(conv, x0, g, 2.0**-10),
            "values [0, 2**-5], eps 2**-10: eps inside and outside the square root differ",
            "inside sqrt" if conv.eps_placement == "inside" else "outside sqrt",
            {
                "inside sqrt": _claimed_y(conv, x0, g, 2.0**-10, outside=False),
                "outside sqrt": _claimed_y(conv, x0, g, 2.0**-10, outside=True),
            },
        )
    )
    # statistics: the values [1, 3] give y = [-1, 1] (biased), [-0.71, 0.71] (unbiased), [0.45, 1.34]
    # (mean of squares, RMSNorm) or [0.32, 0.95] (sum of squares over n - 1)
    x0, g = _one_group(conv, [1.0, 3.0])
    stats = {
        "mean subtracted, biased variance": (True, 0),
        "mean subtracted, unbiased variance": (True, 1),
        "mean of squares": (False, 0),
        "sum of squares / (n - 1)": (False, 1),
    }
    probes.append(
        _probe(
            "statistics",
            _probe_case(conv, x0, g, 2.0**-20),
            "values [1, 3], eps 2**-20: mean subtracted or not, variance biased or not",
            "mean subtracted, biased variance" if conv.centred else "mean of squares",
            {k: _claimed_y(conv, x0, g, 2.0**-20, centred=c, ddof=d) for k, (c, d) in stats.items()},
        )
    )
    if layer in ("layer_norm", "rms_norm", "group_norm", "instance_norm"):
        probes.append(_axes_probe(conv))
    if layer == "group_norm" and conv.affine == "per_channel":
        x0 = np.array([[[0.0, 1.0], [2.0, 5.0], [10.0, 11.0], [20.0, 40.0]]], np.float32)
        y = _claimed_y(conv, x0, 2, 2.0**-20)
        w = np.array([1.0, 2.0, 3.0, 4.0])
        probes.append(
            _probe(
                "weight",
                _probe_case(conv, x0, 2, 2.0**-20, weight=w),
                "4 channels in 2 groups, weight [1, 2, 3, 4]: one weight per channel or per group",
                "one per channel",
                {"one per channel": y * w[:, None], "one per group (the first 2)": y * w[[0, 0, 1, 1], None]},
            )
        )
    if layer == "rms_norm" and conv.weight_format == "input":
        for narrow in ("bfloat16", "float16"):  # a library may have kernels for one of them only
            rounding = _rounding_probe(conv, narrow)
            if rounding is not None:
                probes.append(rounding)
    if layer != "mean_variance_norm":
        # precision: in float16 the square 256**2 = 65536 overflows (the largest float16 is 65504), so
        # statistics kept in float16 give y = 0 (or NaN); float32 or wider statistics give y = [-1, 1]
        x0, g = _one_group(conv, [-256.0, 256.0], np.float16)
        wide = conv.stats_format not in ("float16", "input")
        probes.append(
            _probe(
                "precision",
                _probe_case(conv, x0, g, 2.0**-10),
                "float16 values [-256, 256]: their squares overflow float16, not float32",
                "float32 or wider statistics" if wide else "float16 statistics",
                {
                    "float32 or wider statistics": _claimed_y(conv, x0.astype(np.float64), g, 2.0**-10),
                    "float16 statistics": np.zeros(x0.shape),
                },
            )
        )
    return probes


def _rounding_probe(conv: Convention, narrow: str) -> Probe | None:
    """Where an LLM RMSNorm rounds (``narrow``: bfloat16, or float16 as field ``rounding_float16``):
    the normalized value to the input's dtype and then the scaled one (LlamaRMSNorm), or only the
    scaled one (torch F.rms_norm, Gemma).  The row [1, 3] (normalized values 0.447 and 1.342, each
    far from a rounding boundary) with a weight on the second for which the two orders give
    different outputs, its scaled value at least an eighth of a spacing from a tie: a kernel
    computing in float32 lands on one alternative or the other."""
    import dataclasses

    from normspec.oracle import rms_norm
    from normspec.oracle.formats import bfloat16_dtype, format_of

    dtype = bfloat16_dtype() if narrow == "bfloat16" else np.dtype(np.float16)
    if dtype is None:  # the bfloat16 extra is not installed: no probe (and no finding)
        return None
    bits = format_of(dtype).p
    names = {True: "normalized rounded to the input dtype, then scaled", False: "scaled, rounded once"}
    orders = (
        (True, dataclasses.replace(conv, cast_points=(("normalized", "input"),), weight_offset=0.0)),
        (False, dataclasses.replace(conv, cast_points=(), weight_offset=0.0)),
    )
    x0 = np.array([[1.0, 3.0]], dtype)
    xhat = 3.0 / math.sqrt(5.0 + 2.0**-20)  # the second element (1.342) separates the orders; the first keeps 1
    for c in (1 + np.arange(2 ** (bits - 1)) / 2 ** (bits - 1)).astype(dtype):  # every weight in [1, 2), in order
        scaled = float(c) * xhat
        if abs(math.fmod(scaled / math.ldexp(1.0, math.frexp(scaled)[1] - bits), 1.0) - 0.5) <= 0.125:
            continue  # within an eighth of a spacing from a tie
        weight = np.array([1.0, c], dtype)
        alternatives = {
            names[k]: rms_norm(x0, 1, weight, eps=2.0**-20, convention=v).y.astype(np.float64) for k, v in orders
        }
        if len({float(a[0, 1]) for a in alternatives.values()}) == 2:
            break
    else:
        return None
    claimed = names[conv.cast_at("normalized") is not None]
    case = _probe_case(conv, x0, 1, 2.0**-20, weight=weight.astype(np.float64))
    note = f"{narrow} row [1, 3], weights where the two rounding orders give different outputs"
    return _probe("rounding" if narrow == "bfloat16" else "rounding_float16", case, note, claimed, alternatives)


def _axes_probe(conv: Convention) -> Probe:
    """Which axes (GroupNorm: which channels) share one mean and variance."""
    eps = 2.0**-20

    def norm(x: np.ndarray, axes: tuple[int, ...]) -> np.ndarray:
        e, outside = conv.effective_eps(eps), conv.eps_placement == "outside"
        return np.asarray(_normalized(x, axes, centred=conv.centred, ddof=0, eps=e, outside=outside))

    if conv.layer in ("layer_norm", "rms_norm"):
        x0 = np.array([[0.0, 1.0], [10.0, 30.0]], np.float32)
        alternatives = {
            "the trailing axis": norm(x0, (1,)),
            "all axes": norm(x0, (0, 1)),
            "the batch axis": norm(x0, (0,)),
        }
        claimed, g, note = "the trailing axis", 1, "rows [0, 1] and [10, 30], weight over the trailing axis"
    elif conv.layer == "instance_norm":
        x0 = np.array([[[0.0, 1.0], [10.0, 30.0]], [[4.0, 2.0], [-5.0, 7.0]]], np.float32)
        alternatives = {
            "each sample's channel": norm(x0, (2,)),
            "all channels of a sample": norm(x0, (1, 2)),
            "the batch and spatial axes": norm(x0, (0, 2)),
        }
        claimed, g, note = "each sample's channel", 1, "2 samples of 2 channels of 2 values"
    else:
        x0 = np.array([[[0.0, 1.0], [2.0, 5.0], [10.0, 11.0], [20.0, 40.0]]], np.float32)
        order = [0, 2, 1, 3]  # channel c in group c mod 2
        inter = norm(x0[:, order].reshape(1, 2, -1), (2,)).reshape(x0.shape)[:, np.argsort(order)]
        alternatives = {
            "groups of consecutive channels": norm(x0.reshape(1, 2, -1), (2,)).reshape(x0.shape),
            "groups of interleaved channels": inter,
            "each channel on its own": norm(x0, (2,)),
            "all channels together": norm(x0.reshape(1, 1, -1), (2,)).reshape(x0.shape),
        }
        claimed, g, note = (
            "groups of consecutive channels",
            2,
            "4 channels [0, 1], [2, 5], [10, 11], [20, 40] in 2 groups",
        )
    return _probe("axes", _probe_case(conv, x0, g, eps), note, claimed, alternatives)


def infer_family(
    conv: Convention, probes: list[Probe], rows: list[dict[str, Any]], findings: list[dict[str, Any]]
) -> dict[str, str]:
    """Each probe's field (:func:`normspec.targets.probes.infer`); a semantic finding where it is
    not the claimed alternative.  Returns field -> what was observed."""
    inferred: dict[str, str] = {}
    charged: set[tuple[str, str]] = set()  # (what was claimed, what was seen) of a rounding probe charged
    for probe, row in zip(probes, rows, strict=True):
        y = row.pop("y", None)
        if y is None:
            inferred[probe.field] = f"not inferred ({row['status']})"
            continue
        assert probe.arrays is not None
        seen = infer(probe, {"y": np.asarray(y, np.float64).reshape(probe.arrays["x"][0].shape)})
        if seen == probe.claimed:
            inferred[probe.field] = f"{seen}, as claimed"
            continue
        inferred[probe.field] = seen
        if seen.startswith("not inferred"):
            continue
        if probe.field.startswith("rounding"):  # one rounding order, seen in both 16-bit formats: charged once
            if (probe.claimed, seen) in charged:
                continue
            charged.add((probe.claimed, seen))
        shown = np.array2string(np.asarray(y, np.float64), precision=4, separator=", ")
        message = f"{probe.field}: claimed {probe.claimed}, observed {seen} ({probe.note}; y = {shown})"
        findings.append({"kind": "semantic", "case": f"probe ({probe.field})", "message": message})
    return inferred


def naive_family(conv: Convention, case: Case) -> tuple[np.ndarray, np.ndarray]:
    """The peer the family's accuracy verdicts compare with: the layer's formula evaluated plainly in
    the input's precision (two-pass statistics, then ``(x - mean) / sqrt(var + eps) * w + b``), and
    the terms' scale ``|w x-hat| + |w| + |b|`` (in float64, never zero where w is not) at which errors
    are measured, as the BatchNorm audit's ``|gamma x-hat| + |gamma| + |beta|``."""
    x = case["x"][0]
    eps_v = float(case["eps"])
    eps = conv.effective_eps(conv.default_eps(np.finfo(x.dtype).nmant + 1) if np.isnan(eps_v) else eps_v)
    w, b = np.asarray(case["weight"]), np.asarray(case["bias"])
    layer = conv.layer
    axes: tuple[int, ...]
    if layer in ("layer_norm", "rms_norm"):
        rows, axes, pshape = x, (-1,), (1,) * (x.ndim - 1) + (-1,)
    elif layer == "mean_variance_norm":
        rows, axes, pshape = x, (0, 2, 3), (1, -1, 1, 1)
    else:
        groups = x.shape[1] if layer == "instance_norm" else int(case["groups"])
        if conv.affine == "per_group":
            w, b = per_channel_affine(w, b, x.shape[1], groups)
        rows, axes, pshape = x.reshape(x.shape[0], groups, -1), (2,), (1, -1) + (1,) * (x.ndim - 2)
    if layer == "mean_variance_norm":
        w, b = np.ones(x.shape[1]), np.zeros(x.shape[1])
    out = []
    for dt in (x.dtype, np.float64):
        r = rows.astype(dt)
        with np.errstate(all="ignore"):
            m = r.mean(axis=axes, keepdims=True, dtype=dt) if conv.centred else np.zeros((), dt)
            v = ((r - m) ** 2).mean(axis=axes, keepdims=True, dtype=dt)
            e = np.asarray(eps, dtype=dt)
            den = np.sqrt(v) + e if conv.eps_placement == "outside" else np.sqrt(v + e)
            xh = ((r - m) / den).reshape(x.shape)
            out.append((xh, w.reshape(pshape).astype(dt), b.reshape(pshape).astype(dt)))
    (xh, wd, bd), (xh64, w64, b64) = out
    with np.errstate(all="ignore"):
        naive = (xh * wd + (0 if layer == "rms_norm" else bd)).astype(x.dtype)
        scale = np.abs(xh64 * w64) + np.abs(w64) + (0 if layer == "rms_norm" else np.abs(b64))
    return naive, scale


def _family_budget(conv: Convention, case: Case, algorithm: str) -> tuple[np.ndarray, np.ndarray]:
    """The algorithm's per-element error budget on a family case, and the exact y (float64)."""
    from normspec.budgets import budget_for_layer, get_algorithm
    from normspec.oracle import forward
    from normspec.vectors.family import family_arguments

    args, kwargs = family_arguments(conv, case["x"][0], case["weight"], case["bias"], case["eps"], case["groups"])
    budget = budget_for_layer(get_algorithm(algorithm), conv, *args, **kwargs)
    if conv.cast_at("normalized") is not None:  # the profile's exact value is the scaled cast, rounded to float64
        return budget, forward(conv, *args, y_dtype="float64", **kwargs).y
    ex = forward(conv, *args, **kwargs).exact
    x0 = case["x"][0]
    exact = np.array([float(ex.y(i, prec=80)) for i in np.ndindex(x0.shape)]).reshape(x0.shape)
    return budget, exact


def judge_family(
    target: str,
    conv: Convention,
    battery: list[tuple[str, Case, str]],
    timeout: float,
    progress: Callable[[int], None] | None,
    algorithm: str | None = None,
) -> tuple[list[dict[str, Any]], list[dict[str, Any]], list[Any]]:
    """Run ``battery`` on ``target`` (in its worker process) and judge each output
    (:func:`normspec.targets.verdict.judge_output`): rows, findings, and the cases as run."""
    from normspec.targets.runner import AuditCase, run_cases

    _refuse_fused(conv)

    cases = [
        AuditCase(
            name,
            "family",
            case["x"],
            case["weight"],
            case["bias"],
            case["running_mean"],
            case["running_var"],
            True,
            0.0,
            float(case["eps"]),
            note,
            extra={"groups": case["groups"]},
        )
        for name, case, note in battery
    ]
    with tempfile.TemporaryDirectory(prefix="normspec-family-") as tmp:
        outcomes = run_cases(target, cases, timeout, Path(tmp), progress)
    rows: list[dict[str, Any]] = []
    findings: list[dict[str, Any]] = []
    for (name, case, note), ac in zip(battery, cases, strict=True):
        out = outcomes[ac.name]
        start = len(findings)
        row: dict[str, Any] = {"case": name, "status": out.status, "note": note}
        x0 = case["x"][0]
        degenerate = degenerate_reason(_values_per_group(conv, case), float(case["eps"]), True, x0.shape[0])
        if out.status in ("crash", "timeout"):
            findings.append({"kind": "crash", "case": name, "message": out.message})
        elif out.status == "refused" and x0.dtype != np.float32:
            # a 16-bit input the library has no kernel for: said in the row, not charged (as in the BatchNorm audit)
            row["status"], row["message"] = "unsupported", out.message
        elif out.status == "refused":
            row["message"] = out.message
            kind, why = ("degenerate-input", f" ({degenerate})") if degenerate else ("semantic", "")
            findings.append({"kind": kind, "case": name, "message": f"refused{why}: {out.message[:200]}"})
        elif out.result is not None:
            want = exact_family_output(conv, case)
            got = np.asarray(out.result["y"][0]).astype(want.dtype)
            if got.shape != want.shape:
                message = f"y shape {got.shape}, expected {want.shape}"
                findings.append({"kind": "crash", "case": name, "message": message})
                row["status"] = "crash"
                rows.append(row)
                continue
            probe = name.startswith("probe_")
            if probe:
                row["y"] = got.astype(np.float64).ravel().tolist()  # for the inference
            naive, mag = naive_family(conv, case)

            def budget_of(alg: str, case: Case = case) -> tuple[np.ndarray, np.ndarray]:
                return _family_budget(conv, case, alg)

            verdict = judge_output(
                row,
                got,
                want,
                x=x0,
                magnitude=mag,
                naive=naive,
                budget_of=None if probe else budget_of,
                declared=algorithm,
            )
            if verdict is not None:
                findings.append({"kind": verdict[0], "case": name, "message": verdict[1]})
        if name.startswith("probe_"):  # a probe feeds the convention inference only
            del findings[start:]
        rows.append(row)
    return rows, findings, cases


def audit_family(
    report: Any,
    adapter: Any,
    conv: Convention,
    *,
    timeout: float = 120.0,
    progress: Callable[[int], None] | None = None,
    reproducers: Path | None = None,
) -> None:
    """The family part of :func:`normspec.targets.audit.run_audit`: probes, battery and judge for a
    LayerNorm, RMSNorm, GroupNorm, InstanceNorm or MeanVarianceNormalization target; fills ``report``."""
    from normspec.targets.runner import probe_case_name, profile_drift, write_reproducer

    probes = family_probes(conv)
    report.claimed = {p.field: p.claimed for p in probes}
    probe_cases = [(p.name, dict(p.arrays or {}), p.note) for p in probes]
    rows, findings, cases = judge_family(
        report.target, conv, probe_cases + family_battery(conv), timeout, progress, adapter.algorithm
    )
    inferred_findings: list[dict[str, Any]] = []
    report.inferred = infer_family(conv, probes, rows[: len(probes)], inferred_findings)
    if inferred_findings and conv.name == adapter.convention:
        drift = profile_drift(adapter, conv)
        if drift:  # the target's own profile, verified on another version: the record may be stale
            inferred_findings = [
                {**f, "kind": "profile-drift", "message": f["message"] + f" on {drift}"} for f in inferred_findings
            ]
    report.audited = by_name = {c.name: c for c in cases}
    for f in findings + inferred_findings:
        case = by_name.get(probe_case_name(f["case"]))
        if reproducers is not None and case is not None:  # an inference finding reproduces on its probe
            f["reproducer"] = str(write_reproducer(reproducers, case, report.target, conv.name))
    report.findings = inferred_findings + findings
    report.cases = rows[len(probes) :]
