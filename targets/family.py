"""The family audit: LayerNorm, RMSNorm, GroupNorm, InstanceNorm targets against the oracle.

The adapters (:mod:`normspec.targets.family_adapters`, ``FAMILY_ADAPTERS`` here
too) run one forward of one layer on a case (``x``, ``weight``, ``bias``,
``eps``, and ``groups`` for GroupNorm) in the same worker processes as the
BatchNorm targets (:mod:`normspec.targets.worker`), and return ``y``.
:func:`run_family_audit` runs the battery (:mod:`normspec.vectors.family`) and
compares with the oracle (``layer_norm``, ``rms_norm``, ``group_norm``,
``instance_norm``) under the profile the target claims
(:mod:`normspec.spec.conventions`).
"""

from __future__ import annotations

import math
import tempfile
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np
from normspec.spec.conventions import Convention
from normspec.targets.family_adapters import FAMILY_ADAPTERS
from normspec.targets.verdict import VACUOUS_FACTOR, VACUOUS_ULP, degenerate_reason, status_word
from normspec.vectors.family import exact_family_output, family_battery, per_channel_affine

from normspec.errors import InvalidArgumentError, expected

__all__ = [
    "FAMILY_ADAPTERS",
    "exact_family_output",
    "family_battery",
    "per_channel_affine",
    "reproduce_family_case",
    "run_family_audit",
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


# The values [0, 2**-5] (var 2**-12, mean square 2**-11) with eps 2**-10: inside and outside the root
# differ by a factor near 2, and eps stays within every library's accepted range (Paddle: <= 1e-3).
_PROBE_X, _PROBE_EPS = 2.0**-5, 2.0**-10


def family_probes(conv: Convention) -> list[tuple[str, Case, str]]:
    """Convention probes in the family protocol: one group of the values [0, 2**-5], eps 2**-10."""
    layer = conv.layer
    if layer in ("layer_norm", "rms_norm"):
        x, feat, groups = np.array([[0.0, _PROBE_X]]), 2, 1
    elif layer == "mean_variance_norm":
        x, feat, groups = np.array([[[[0.0, _PROBE_X]]]]), 1, 1
    elif layer == "instance_norm":
        x, feat, groups = np.array([[[0.0, _PROBE_X]]]), 1, 1
    else:
        x, feat, groups = np.array([[[0.0], [_PROBE_X]]]), 2, 1
    pfeat = groups if conv.affine == "per_group" else feat
    case = {
        "x": x.astype(np.float32)[None],
        "weight": np.ones(pfeat, np.float32),
        "bias": np.zeros(pfeat, np.float32),
        "eps": np.array(_PROBE_EPS),
        "training": np.array(True),
        "momentum": np.array(0.0),
        "running_mean": np.zeros(pfeat, np.float32),
        "running_var": np.ones(pfeat, np.float32),
        "groups": np.array(groups),
    }
    return [("probe_eps", case, "values [0, 2**-5], eps 2**-10: inside and outside the square root differ")]


def _infer_eps(conv: Convention, rows: list[dict[str, Any]], findings: list[dict[str, Any]]) -> dict[str, str]:
    """Where the target puts eps, from the probe's y at the value 1; a semantic finding if not where claimed."""
    row = rows[0]
    y = row.pop("y", None)
    if y is None:
        return {"eps": f"not inferred ({row['status']})"}
    h = _PROBE_X
    mean, var = (h / 2, h * h / 4) if conv.centred else (0.0, h * h / 2)
    e = conv.effective_eps(_PROBE_EPS)
    inside, outside = (h - mean) / math.sqrt(var + e), (h - mean) / (math.sqrt(var) + e)
    got = float(y[1])  # the element whose x is 2**-5
    seen = "inside sqrt" if abs(got - inside) < abs(got - outside) else "outside sqrt"
    claimed = "inside sqrt" if conv.eps_placement == "inside" else "outside sqrt"
    if seen != claimed:
        message = f"eps: claimed {claimed}, observed {seen} (y = {got:.6g} at x = 2**-5 of [0, 2**-5], eps 2**-10)"
        findings.insert(0, {"kind": "semantic", "case": "probe (eps)", "message": message})
    return {"eps": seen if seen != claimed else f"{seen}, as claimed"}


def naive_family(conv: Convention, case: Case) -> tuple[np.ndarray, np.ndarray]:
    """The peer the family's accuracy verdicts compare with: the layer's formula evaluated plainly in
    the input's precision (two-pass statistics, then ``(x - mean) / sqrt(var + eps) * w + b``), and
    the terms' scale ``|w x-hat| + |b|`` (in float64) at which errors are measured."""
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
        scale = np.abs(xh64 * w64) + (0 if layer == "rms_norm" else np.abs(b64))
    return naive, scale


def _accuracy(conv: Convention, case: Case, got: np.ndarray, algorithm: str | None, row: dict[str, Any]) -> str | None:
    """The accuracy verdict of a computed case: the declared algorithm's budget (the plain
    formula's, ``plain_float32``, when none is declared); None when there is no finding."""
    from normspec.budgets import budget_for_layer, get_algorithm
    from normspec.budgets.algorithm import plain_algorithm
    from normspec.oracle import forward
    from normspec.vectors.family import family_arguments

    name = algorithm or plain_algorithm(case["x"].dtype)
    args, kwargs = family_arguments(conv, case["x"][0], case["weight"], case["bias"], case["eps"], case["groups"])
    budget = budget_for_layer(get_algorithm(name), conv, *args, **kwargs)
    ex = forward(conv, *args, **kwargs).exact
    x0 = case["x"][0]
    exact = np.array([float(ex.y(i, prec=80)) for i in np.ndindex(x0.shape)]).reshape(x0.shape)
    with np.errstate(invalid="ignore", over="ignore"):
        err = np.abs(got.astype(np.float64) - exact)
        over = err > budget
    row["budget_algorithm"] = name if algorithm else f"{name} (none declared)"
    row["beyond_budget"] = beyond = int(over.sum())
    row["unbounded"] = unbounded = int((~np.isfinite(budget)).sum())
    if beyond:
        i = np.unravel_index(int(np.argmax(np.where(over, err / budget, -1))), err.shape)
        return (
            f"{beyond} element(s) beyond the budget of {row['budget_algorithm']}; worst y{[int(v) for v in i]} = "
            f"{float(got[i])!r}, exact {float(exact[i])!r}, error {float(err[i]):.3g} > budget {float(budget[i]):.3g}"
        )
    vacuous_bad = row["rel_ulp"] > max(VACUOUS_FACTOR * row["naive_rel_ulp"], row["naive_rel_ulp"] + VACUOUS_ULP)
    if unbounded and algorithm is None and vacuous_bad:  # a declared algorithm's unbounded budget allows anything
        worst = row.get("worst", {})
        return (
            f"{row['rel_ulp']:.3g} ULP at the terms' scale where the budget of {row['budget_algorithm']} is unbounded, "
            f"more than {VACUOUS_FACTOR:g} times the plain formula's error on this case ({row['naive_rel_ulp']:.3g}); "
            f"worst y{worst.get('index')} = {worst.get('observed')!r}, exact {worst.get('exact')!r}"
        )
    return None


def _judge(
    target: str,
    conv: Convention,
    battery: list[tuple[str, Case, str]],
    timeout: float,
    progress: Callable[[int], None] | None,
    algorithm: str | None = None,
) -> tuple[list[dict[str, Any]], list[dict[str, Any]], list[Any]]:
    """Run ``battery`` on ``target`` (in its worker process) and compare with the oracle: rows, findings, cases."""
    from normspec.oracle import ulp_distance
    from normspec.targets.audit import AuditCase, _rel_ulp, run_cases

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
            if name.startswith("probe_"):
                row["y"] = got.astype(np.float64).ravel().tolist()  # for the inference
            with np.errstate(invalid="ignore", over="ignore"):
                d = ulp_distance(got, want)
            finite = np.isfinite(want)
            row["max_ulp"] = float(d[finite].max()) if finite.any() else 0.0
            row["correctly_rounded"] = float(np.mean(d == 0))
            if finite.any():
                w = np.unravel_index(int(np.argmax(np.where(finite, np.nan_to_num(d, nan=np.inf), -1))), d.shape)
                row["worst"] = {
                    "index": [int(v) for v in w],
                    "x": float(x0[w]),
                    "exact": float(want[w]),
                    "observed": float(got[w]),
                }
            bad = finite & ~np.isfinite(got)
            naive, mag = naive_family(conv, case)
            row["rel_ulp"] = _rel_ulp(got[finite], want[finite], mag[finite])
            row["naive_rel_ulp"] = _rel_ulp(naive[finite], want[finite], mag[finite])
            verdict = _accuracy(conv, case, got, algorithm, row) if not bad.any() else None
            inaccurate = verdict is not None and not row.get("beyond_budget")
            row["status"], explanation = status_word(
                row["max_ulp"],
                non_finite=bool(bad.any()),
                budget=row.get("budget_algorithm"),
                beyond=row.get("beyond_budget", 0),
                inaccurate=inaccurate,
            )
            if explanation and row.get("unbounded") and row["status"] == "within budget":
                explanation += f" (unbounded on {row['unbounded']} element(s): var + eps below its statistics' error)"
            if explanation:
                row["verdict"] = explanation
            if bad.any():
                i = tuple(int(v) for v in np.argwhere(bad)[0])
                findings.append(
                    {
                        "kind": "non-finite",
                        "case": name,
                        "message": f"y{list(i)} = {got[i]!r} where the exact value is {want[i]!r}",
                    }
                )
            elif verdict is not None:
                findings.append({"kind": "accuracy", "case": name, "message": verdict})
            if bad.any() or verdict is not None:  # the values behind a failing case's plot in the report
                row["exact_y"] = want.astype(np.float64).ravel().tolist()
                row["observed_y"] = got.astype(np.float64).ravel().tolist()
        if name.startswith("probe_"):  # a probe feeds the convention inference only
            del findings[start:]
        rows.append(row)
    return rows, findings, cases


_REPRO = '''"""Reproducer for normspec audit finding: {case} on {target} (convention {convention}).

Run from this folder: python repro.py
"""
from normspec.targets.family import reproduce_family_case

reproduce_family_case("case.npz", {target!r}, {convention!r})
'''


def reproduce_family_case(path: str | Path, target: str, convention: str) -> dict[str, Any]:
    """Run one saved family case (a reproducer's ``case.npz``) on ``target``; print and return its row."""
    from normspec.spec.conventions import get_convention

    with np.load(path, allow_pickle=False) as data:
        case = {k: data[k] for k in data.files}
    rows, findings, _ = _judge(target, get_convention(convention), [("case", case, "")], 120.0, None)
    row = rows[0]
    print(f"{target} under {convention}: {row['status']}, max {row.get('max_ulp', float('nan')):.3g} ULP")
    if "worst" in row:
        w = row["worst"]
        print(f"worst element {tuple(w['index'])}: x = {w['x']!r}, exact {w['exact']!r}, observed {w['observed']!r}")
    for f in findings:
        print(f"[{f['kind']}] {f['message']}")
    return row


def run_family_audit(
    target: str,
    convention: str | None = None,
    *,
    timeout: float = 120.0,
    progress: Callable[[int], None] | None = None,
    reproducers: Path | None = None,
) -> dict[str, Any]:
    """Run the family battery on ``target``; returns the report as a dict (same shape as the BatchNorm audit's).

    With ``reproducers``, each finding gets a folder there (``case.npz`` and ``repro.py``)."""
    from normspec.spec.conventions import get_convention
    from normspec.targets.audit import unavailable_reason

    if target.startswith("python:"):  # a user's implementation of the layer its --convention names
        from normspec.targets.adapters import get_adapter

        adapter = get_adapter(target)
        if convention is None or get_convention(convention).layer == "batch_norm":
            raise InvalidArgumentError(
                expected("a family profile (--convention torch_layer_norm, ...)", "convention", convention)
            )
    else:
        adapter = FAMILY_ADAPTERS[target]
    conv = get_convention(convention or adapter.convention)
    t0 = time.perf_counter()
    missing = unavailable_reason(adapter)
    if missing is not None:  # one line, no cases, no other findings
        return {
            "target": target,
            "convention": conv.name,
            "layer": conv.layer,
            "description": adapter.description,
            "cases": [],
            "findings": [{"kind": "unavailable", "case": "-", "message": missing}],
            "seconds": 0.0,
        }
    probes = family_probes(conv)
    rows, findings, cases = _judge(target, conv, probes + family_battery(conv), timeout, progress, adapter.algorithm)
    inferred = _infer_eps(conv, rows[: len(probes)], findings)
    if findings and findings[0]["case"] == "probe (eps)" and conv.name == adapter.convention:
        from normspec.targets.audit import profile_drift

        drift = profile_drift(adapter, conv)
        if drift:  # the target's own profile, verified on another version: the record may be stale
            findings[0] = {**findings[0], "kind": "profile-drift", "message": findings[0]["message"] + f" on {drift}"}
    rows = rows[len(probes) :]
    if reproducers is not None:
        by_name = {c.name: c for c in cases}
        safe = "".join(ch if ch.isalnum() or ch in "-_" else "_" for ch in target)
        for f in findings:
            if f["case"] not in by_name:  # an inference finding: its probe is in the battery listing
                continue
            folder = Path(reproducers) / safe / f["case"]
            folder.mkdir(parents=True, exist_ok=True)
            np.savez(folder / "case.npz", **by_name[f["case"]].arrays())
            (folder / "repro.py").write_text(_REPRO.format(case=f["case"], target=target, convention=conv.name))
            f["reproducer"] = str(folder)
    return {
        "target": target,
        "convention": conv.name,
        "layer": conv.layer,
        "description": adapter.description,
        "inferred": inferred,
        "cases": rows,
        "findings": findings,
        "seconds": round(time.perf_counter() - t0, 2),
    }
