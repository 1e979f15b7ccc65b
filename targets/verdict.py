"""The audit's verdicts, one set for every layer: finding kinds, status words, the exit status.

A **finding** is something a user should act on; its ``kind`` says what:

================  ==========================================================================
kind              meaning
================  ==========================================================================
semantic          a different function on valid input: wrong momentum, eps outside the root,
                  stale statistics, wrong axes, a refusal of an ordinary input
accuracy          beyond the error budget of the algorithm the target declares; with none
                  declared, well beyond the formula evaluated plainly in the input's precision
non-finite        NaN or infinity where the exact value is finite
crash             an exception, a signal, a hang past the deadline, an output of the wrong shape
degenerate-input  on n = 1, eps <= 0 or an empty batch the target and its profile differ only
                  in refusing versus computing
profile-drift     the installed library no longer does what its recorded profile says: a probed
                  field disagrees on a version other than the profile's ``verified_on``
unavailable       the library (or a normspec extra) is not installed: no other findings
================  ==========================================================================

Budgets bound the rounding errors of an evaluation order whose intermediates stay in range.  An
intermediate that overflows (the squared deviations of ``|x| ~ 1e30`` in float32) is beyond every
such budget, so it is an ``accuracy`` finding even where the plain formula overflows the same way:
scaling, or float64 inside, avoids it.

The exit status of ``normspec audit`` is 1 when there is a semantic, accuracy, non-finite or
crash finding, else 0; ``--strict`` adds degenerate-input and profile-drift.  normspec's own
domain rules (for example its refusal where ``var + eps < 0``) are never a finding.

A case's **status** never hides a bad result: ``ok`` only within 1 ULP of the exact value;
``within budget`` (and how far) when farther but inside the declared algorithm's budget;
``no budget`` (and how far) where no budget applies (the backward, the probes);
``beyond budget``, ``inaccurate`` and ``non-finite`` otherwise.  A case the target refuses as
its profile does is ``refused as claimed``.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Iterable, Mapping
from typing import Any

import numpy as np

__all__ = [
    "KINDS",
    "FAILING",
    "STRICT",
    "VACUOUS_FACTOR",
    "VACUOUS_ULP",
    "exit_status",
    "degenerate_reason",
    "status_word",
    "rel_ulp",
    "judge_output",
]

KINDS: dict[str, str] = {
    "semantic": "a different function on valid input",
    "accuracy": "beyond the error budget of the declared algorithm (or of the plain formula)",
    "non-finite": "NaN or infinity where the exact value is finite",
    "crash": "an exception, a signal, a hang or an output of the wrong shape",
    "degenerate-input": "n = 1, eps <= 0 or an empty batch: refusing versus computing",
    "profile-drift": "the installed library no longer matches its recorded profile",
    "unavailable": "the library or an extra is not installed",
}
FAILING: tuple[str, ...] = ("semantic", "accuracy", "non-finite", "crash")
STRICT: tuple[str, ...] = (*FAILING, "degenerate-input", "profile-drift")

# Accuracy is judged against the error budget of the algorithm a target declares, or, with none
# declared, of the plain float32 formula (normspec.budgets, "plain_float32").  Where that plain budget
# is unbounded (var + eps below its statistics' error bound, as on a constant input), the plain
# formula's own error on the case is the yardstick: an accuracy finding when the target is this many
# times, and this many ULP at the terms' scale, worse.
VACUOUS_FACTOR, VACUOUS_ULP = 64.0, 1024.0


def exit_status(findings: Iterable[Mapping[str, Any]], *, strict: bool = False) -> int:
    """1 when a finding has exit-status weight (``strict`` widens the set), else 0."""
    weighty = STRICT if strict else FAILING
    return 1 if any(f["kind"] in weighty for f in findings) else 0


def degenerate_reason(values_per_group: int, eps: float | None, training: bool, batch: int) -> str | None:
    """Why an input is degenerate (where implementations may refuse or compute), or None."""
    if batch == 0:
        return "an empty batch"
    if eps is not None and not math.isnan(eps) and eps <= 0:
        return f"eps = {eps!r} <= 0"
    if training and values_per_group == 1:
        return "one value per group in training"
    return None


def status_word(
    max_ulp: float,
    *,
    non_finite: bool,
    budget: str | None = None,
    beyond: int = 0,
    inaccurate: bool = False,
) -> tuple[str, str]:
    """``(status, explanation)`` of a computed case; the explanation is empty for ``ok``."""
    if non_finite:
        return "non-finite", "NaN or infinity where the exact value is finite"
    if beyond:
        return "beyond budget", f"{beyond} element(s) beyond the budget of {budget}"
    if inaccurate:
        return "inaccurate", f"{max_ulp:.3g} ULP from the exact value, worse than the plain formula"
    if not math.isfinite(max_ulp):
        return "non-finite", "an infinite distance from the exact value"
    if max_ulp <= 1:
        return "ok", ""
    if budget is not None:
        return "within budget", f"{max_ulp:.3g} ULP from the exact value, within {budget}'s budget"
    return "no budget", f"{max_ulp:.3g} ULP from the exact value; no error budget applies to this case"


def rel_ulp(got: np.ndarray, want: np.ndarray, magnitude: np.ndarray) -> float:
    """Largest ``|got - want|`` in float32 ULPs of ``magnitude``, the terms' scale of each element
    (``|gamma x-hat| + |gamma| + |beta|``: never zero, unlike an output that cancels)."""
    with np.errstate(invalid="ignore", over="ignore"):
        floor = np.float64(np.finfo(np.float32).tiny)
        unit = np.spacing(np.maximum(np.abs(magnitude), floor).astype(np.float32)).astype(np.float64)
        diff = np.abs(got.astype(np.float64) - want.astype(np.float64)) / unit
    finite = np.isfinite(diff)
    return float(diff[finite].max()) if finite.any() else 0.0


def judge_output(
    row: dict[str, Any],
    got: np.ndarray,
    exact: np.ndarray,
    *,
    x: np.ndarray,
    magnitude: np.ndarray,
    naive: np.ndarray | None = None,
    budget_of: Callable[[str], tuple[np.ndarray, np.ndarray]] | None = None,
    declared: str | None = None,
) -> tuple[str, str] | None:
    """The one judge of a computed output, for every layer: fills ``row`` (distances, the worst
    element, status and verdict) and returns the finding ``(kind, message)``, or None.

    ``exact`` is the oracle's correctly rounded output, ``magnitude`` the terms' scale, ``naive``
    the plain formula in the input's precision.  ``budget_of(algorithm)`` gives the per-element
    error budget and the exact value (float64) for an algorithm: the declared one, else the plain
    formula's (:func:`normspec.budgets.algorithm.plain_algorithm`).  Without ``budget_of`` only the
    distance is judged (the probes, outputs a profile defines as x itself)."""
    from normspec.oracle import ulp_distance

    with np.errstate(invalid="ignore", over="ignore"):
        d = ulp_distance(got, exact)
    finite = np.isfinite(exact.astype(np.float64))
    bad = finite & ~np.isfinite(got.astype(np.float64))
    row["max_ulp"] = float(d[finite].max()) if finite.any() else 0.0
    row["correctly_rounded"] = float(np.mean(d == 0)) if d.size else 1.0
    # an element that is NaN or infinite where the exact value is finite is infinitely far at any scale
    row["rel_ulp"] = math.inf if bad.any() else rel_ulp(got[finite], exact[finite], magnitude[finite])
    if naive is not None:
        row["naive_rel_ulp"] = rel_ulp(naive[finite], exact[finite], magnitude[finite])
        if (finite & ~np.isfinite(naive.astype(np.float64))).any():
            row["naive_rel_ulp"] = math.inf
    if finite.any():
        w = np.unravel_index(int(np.argmax(np.where(finite, np.nan_to_num(d, nan=np.inf), -1))), d.shape)
        row["worst"] = {
            "index": [int(v) for v in w],
            "x": float(x[w]),
            "exact": float(exact[w]),
            "observed": float(got[w]),
        }
    finding: tuple[str, str] | None = None
    if bad.any():
        i = tuple(int(v) for v in np.argwhere(bad)[0])
        finding = ("non-finite", f"y{list(i)} = {got[i]!r} where the exact value is {exact[i]!r}")
        _status(row, status_word(row["max_ulp"], non_finite=True))
    elif budget_of is None:
        _status(row, status_word(row["max_ulp"], non_finite=False))
    else:
        from normspec.budgets.algorithm import plain_algorithm

        name = declared or plain_algorithm(x.dtype)
        label = name if declared else f"{name} (none declared)"
        budget, exact64 = budget_of(name)
        with np.errstate(invalid="ignore", over="ignore"):
            err = np.abs(got.astype(np.float64) - exact64)
            over = err > budget
        beyond, unbounded = int(over.sum()), int((~np.isfinite(budget)).sum())
        row["budget_algorithm"], row["beyond_budget"], row["unbounded"] = label, beyond, unbounded
        plain = row.get("naive_rel_ulp", math.inf)
        # with no algorithm declared and the plain budget unbounded (var + eps below its statistics'
        # error bound), the plain formula's own error on the case is the yardstick
        vacuous = (
            not beyond
            and declared is None
            and unbounded > 0
            and row["rel_ulp"] > max(VACUOUS_FACTOR * plain, plain + VACUOUS_ULP)
        )
        worst = row.get("worst", {})
        if beyond:
            with np.errstate(invalid="ignore", divide="ignore"):
                ratio = np.where(over, err / budget, -1.0)
            k = tuple(int(v) for v in np.unravel_index(int(np.argmax(ratio)), err.shape))
            finding = (
                "accuracy",
                f"{beyond} element(s) beyond the budget of {label}; worst y{list(k)} = "
                f"{float(got[k])!r}, exact {float(exact64[k])!r}, error {float(err[k]):.3g} > budget "
                f"{float(budget[k]):.3g} ({float(ratio[k]):.3g} times)",
            )
        elif vacuous:
            finding = (
                "accuracy",
                f"{row['rel_ulp']:.3g} ULP at the terms' scale where the budget of {label} is unbounded, more "
                f"than {VACUOUS_FACTOR:g} times the plain formula's error on this case ({plain:.3g}); worst "
                f"y{worst.get('index')} = {worst.get('observed')!r}, exact {worst.get('exact')!r}",
            )
        _status(row, status_word(row["max_ulp"], non_finite=False, budget=label, beyond=beyond, inaccurate=vacuous))
        if unbounded and row["status"] == "within budget":
            row["verdict"] += f" (unbounded on {unbounded} element(s): var + eps below its statistics' error)"
    if finding is not None:  # the values behind a failing case's plot in the report
        row["exact_y"] = exact.astype(np.float64).ravel().tolist()
        row["observed_y"] = got.astype(np.float64).ravel().tolist()
    return finding


def _status(row: dict[str, Any], verdict: tuple[str, str]) -> None:
    row["status"], explanation = verdict
    if explanation:
        row["verdict"] = explanation
