"""Audit reports: a terminal table, and an HTML page with plots."""

from __future__ import annotations

import html
import json
import math
from pathlib import Path
from typing import Any

import numpy as np
from normspec.targets.audit import AuditReport

__all__ = ["render_text", "write_html"]


def _fmt(v: object) -> str:
    if v is None:
        return "-"
    if isinstance(v, float):
        return "inf" if math.isinf(v) else f"{v:.3g}" if v < 1e6 else f"{v:.2e}"
    return str(v)


_QUIET = ("ok", "within budget", "no budget", "refused as claimed", "unsupported", "skipped")


def _failing_first(cases: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """Cases whose status is not a quiet one first, in battery order otherwise."""
    return sorted(cases, key=lambda c: c["status"] in _QUIET)


def render_text(rep: AuditReport) -> str:
    head = f"normspec audit: {rep.target} ({rep.description}); {rep.layer}, claimed convention {rep.convention}"
    missing = [f for f in rep.findings if f["kind"] == "unavailable"]
    if missing:
        return f"{head}\n[unavailable] {missing[0]['message']}"
    lines = [head, ""]
    lines.append(f"{'convention':20} {'claimed':48} observed")
    for key, claimed in rep.claimed.items():
        seen = rep.inferred.get(key, "not run")
        mark = "" if seen == claimed or seen.endswith("as claimed") or seen.startswith("not run") else "   <-- differs"
        lines.append(f"{key:20} {claimed:48} {seen}{mark}")
    if rep.judged_under:
        lines.append(
            "the other cases are judged under the observed behaviour (each difference charged once, by its probe): "
            + ", ".join(f"{k} = {v}" for k, v in rep.judged_under.items())
        )
    lines += ["", f"{'case':34} {'status':18} {'max ULP':>10} {'ULP@terms':>10} {'naive f32':>10} {'CR %':>6}  note"]
    for c in _failing_first(rep.cases):
        cr = c.get("correctly_rounded")
        lines.append(
            f"{c['case']:34} {c['status'][:18]:18} {_fmt(c.get('max_ulp')):>10} {_fmt(c.get('rel_ulp')):>10} "
            f"{_fmt(c.get('naive_rel_ulp')):>10} {'-' if cr is None else f'{100 * cr:5.1f}':>6}  "
            f"{(c.get('verdict') or c.get('note', ''))[:70]}"
        )
    lines += [
        "",
        "ULP@terms: distance in float32 ULPs of |gamma xhat| + |gamma| + |beta|; naive f32: the same for the",
        "spec's formula in plain float32 on the same case; CR: share correctly rounded. Cases with a status",
        "other than ok, within budget, no budget or refused as claimed come first.",
        "",
    ]
    if rep.findings:
        lines.append(f"{len(rep.findings)} finding(s):")
        for f in rep.findings:
            lines.append(f"  [{f['kind']}] {f['case']}: {f['message'][:200]}")
            if "reproducer" in f:
                lines.append(f"      reproducer: {f['reproducer']}/repro.py")
    else:
        lines.append("no findings")
    lines.append(
        f"exit status {rep.exit_code()} (1 for semantic, accuracy, non-finite or crash findings; "
        f"--strict: {rep.exit_code(strict=True)}, also degenerate-input and profile-drift) ({rep.seconds:.1f} s)"
    )
    return "\n".join(lines)


def write_html(rep: AuditReport, directory: Path) -> Path:
    """``report.json`` and ``report.html``: the findings with their reproducers, the conventions
    claimed and observed, the cases failing first, a plot of observed against exact y for each
    failing case, and the running-statistics trajectories of a training sequence (PNG, matplotlib)."""
    directory.mkdir(parents=True, exist_ok=True)
    (directory / "report.json").write_text(json.dumps(rep.as_dict(), indent=2))
    plt = _pyplot()
    body = [
        f"<h1>normspec audit: {html.escape(rep.target)}</h1>",
        f"<p>{html.escape(rep.description)}; {rep.layer}, claimed convention <b>{html.escape(rep.convention)}</b>.</p>",
        "<h2>Findings</h2><ul>",
    ]
    body += [
        f"<li><b>{f['kind']}</b> {html.escape(f['case'])}: {html.escape(f['message'][:400])}"
        + (f' (<a href="{html.escape(f["reproducer"])}/repro.py">reproducer</a>)' if "reproducer" in f else "")
        + "</li>"
        for f in rep.findings
    ] or ["<li>none</li>"]
    body.append(
        "</ul><h2>Conventions</h2><table border=1 cellpadding=4>"
        "<tr><th>field</th><th>claimed</th><th>observed</th></tr>"
    )
    for key, claimed in rep.claimed.items():
        body.append(
            f"<tr><td>{key}</td><td>{html.escape(claimed)}</td><td>{html.escape(rep.inferred.get(key, '-'))}</td></tr>"
        )
    body.append(
        "</table><h2>Cases</h2><p>Failing cases first. ULP at the terms' scale: the distance in float32 ULPs of "
        "|gamma x-hat| + |gamma| + |beta|; plain formula: the same for the spec's formula evaluated plainly in the "
        "input's precision on the same case.</p><table border=1 cellpadding=4><tr><th>case</th><th>status</th>"
        "<th>max ULP</th><th>ULP at the terms' scale</th><th>plain formula</th><th>worst element: exact, observed</th>"
        "<th>budget</th><th>verdict</th><th>note</th></tr>"
    )
    images = []
    for c in _failing_first(rep.cases):
        worst = c.get("worst", {})
        pair = f"{worst.get('exact')!r}, {worst.get('observed')!r}" if worst else "-"
        budget = f"{c['budget_algorithm']}: {c.get('beyond_budget', 0)} beyond" if "budget_algorithm" in c else "-"
        body.append(
            f"<tr><td>{c['case']}</td><td>{html.escape(c['status'])}</td><td>{_fmt(c.get('max_ulp'))}</td>"
            f"<td>{_fmt(c.get('rel_ulp'))}</td><td>{_fmt(c.get('naive_rel_ulp'))}</td><td>{html.escape(pair)}</td>"
            f"<td>{html.escape(budget)}</td><td>{html.escape(c.get('verdict', ''))}</td>"
            f"<td>{html.escape(c.get('note', ''))}</td></tr>"
        )
        if plt is not None and "exact_y" in c:
            images.append(_case_plot(plt, rep.target, c, directory))
    body.append("</table>")
    if plt is not None:
        images += [_trajectory_plot(plt, rep.target, name, tr, directory) for name, tr in rep.trajectories.items()]
    body += [f'<h2>{html.escape(img)}</h2><img src="{img}">' for img in images]
    if plt is None:
        body.append("<p>(plots need matplotlib: pip install 'normspec[audit]')</p>")
    page = directory / "report.html"
    page.write_text("<!doctype html><meta charset=utf-8><title>normspec audit</title>\n" + "\n".join(body))
    return page


def _case_plot(plt: Any, target: str, case: dict[str, Any], directory: Path) -> str:
    """Observed against exact y of one failing case."""
    exact, seen = np.asarray(case["exact_y"]), np.asarray(case["observed_y"])
    fig, ax = plt.subplots(figsize=(4.5, 4))
    ax.plot(exact, np.where(np.isfinite(seen), seen, np.nan), "x", label=target)
    lo, hi = float(np.nanmin(exact)), float(np.nanmax(exact))
    ax.plot([lo, hi], [lo, hi], "-", lw=0.8, label="exact")
    ax.set_xlabel("exact y")
    ax.set_ylabel("observed y")
    ax.set_title(f"{case['case']}: {case['status']}")
    ax.legend(fontsize=8)
    fig.tight_layout()
    png = directory / f"{case['case']}.png"
    fig.savefig(png, dpi=90)
    plt.close(fig)
    return png.name


def _trajectory_plot(plt: Any, target: str, name: str, tr: dict[str, Any], directory: Path) -> str:
    """Running mean and variance of channel 0 over the steps, the target's against the exact, and
    the histogram of y's errors over all steps."""
    fig, axes = plt.subplots(1, 3, figsize=(13, 3.6))
    steps = np.arange(1, len(tr["exact_mean"]) + 1)
    for ax, key, label in ((axes[0], "mean", "running mean"), (axes[1], "var", "running variance")):
        ax.plot(steps, tr[f"exact_{key}"], "o-", label="exact (normspec oracle)")
        ax.plot(steps, tr[f"target_{key}"], "x--", label=target)
        ax.set_xlabel("training step")
        ax.set_title(f"{label}, channel 0")
        ax.legend(fontsize=8)
    ulps = np.asarray(tr["ulps"], dtype=np.float64)
    axes[2].hist(np.log10(1 + ulps[np.isfinite(ulps)]), bins=30)
    axes[2].set_xlabel("log10(1 + ULP distance of y)")
    axes[2].set_title("error of y over all steps")
    fig.suptitle(f"{target}: {name}")
    fig.tight_layout()
    png = directory / f"{name}.png"
    fig.savefig(png, dpi=90)
    plt.close(fig)
    return png.name


def _pyplot() -> Any:
    try:
        import matplotlib

        matplotlib.use("Agg")
        import matplotlib.pyplot as plt
    except ImportError:
        return None
    return plt
