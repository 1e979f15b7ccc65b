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

import tempfile
import time
from collections.abc import Callable
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np
from normspec.targets.family_adapters import FAMILY_ADAPTERS
from normspec.vectors.family import exact_family_output, family_battery, per_channel_affine

if TYPE_CHECKING:
    from normspec.spec.conventions import Convention

__all__ = [
    "FAMILY_ADAPTERS",
    "exact_family_output",
    "family_battery",
    "per_channel_affine",
    "reproduce_family_case",
    "run_family_audit",
]

Case = dict[str, Any]


def _judge(
    target: str,
    conv: Convention,
    battery: list[tuple[str, Case, str]],
    timeout: float,
    progress: Callable[[int], None] | None,
) -> tuple[list[dict[str, Any]], list[dict[str, Any]], list[Any]]:
    """Run ``battery`` on ``target`` (in its worker process) and compare with the oracle: rows, findings, cases."""
    from normspec.oracle import ulp_distance
    from normspec.targets.audit import AuditCase, run_cases

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
    rows, findings = [], []
    for (name, case, note), ac in zip(battery, cases, strict=True):
        out = outcomes[ac.name]
        row: dict[str, Any] = {"case": name, "status": out.status, "note": note}
        if out.status in ("crash", "timeout"):
            findings.append({"kind": "crash", "case": name, "message": out.message})
        elif out.status == "refused":
            row["message"] = out.message
            findings.append({"kind": "convention", "case": name, "message": f"refused: {out.message[:200]}"})
        elif out.result is not None:
            want = exact_family_output(conv, case)
            got = np.asarray(out.result["y"][0]).astype(want.dtype)
            with np.errstate(invalid="ignore", over="ignore"):
                d = ulp_distance(got, want)
            finite = np.isfinite(want)
            row["max_ulp"] = float(d[finite].max()) if finite.any() else 0.0
            row["correctly_rounded"] = float(np.mean(d == 0))
            if finite.any():
                w = np.unravel_index(int(np.argmax(np.where(finite, np.nan_to_num(d, nan=np.inf), -1))), d.shape)
                x0 = case["x"][0]
                row["worst"] = {
                    "index": [int(v) for v in w],
                    "x": float(x0[w]),
                    "exact": float(want[w]),
                    "observed": float(got[w]),
                }
            bad = finite & ~np.isfinite(got)
            if bad.any():
                i = tuple(int(v) for v in np.argwhere(bad)[0])
                findings.append(
                    {
                        "kind": "non-finite",
                        "case": name,
                        "message": f"y{list(i)} = {got[i]!r} where the exact value is {want[i]!r}",
                    }
                )
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

    adapter = FAMILY_ADAPTERS[target]
    conv = get_convention(convention or adapter.convention)
    t0 = time.perf_counter()
    rows, findings, cases = _judge(target, conv, family_battery(conv), timeout, progress)
    if reproducers is not None:
        by_name = {c.name: c for c in cases}
        safe = "".join(ch if ch.isalnum() or ch in "-_" else "_" for ch in target)
        for f in findings:
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
        "cases": rows,
        "findings": findings,
        "seconds": round(time.perf_counter() - t0, 2),
    }
