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
from collections.abc import Iterable, Mapping
from typing import Any

__all__ = [
    "KINDS",
    "FAILING",
    "STRICT",
    "VACUOUS_FACTOR",
    "VACUOUS_ULP",
    "exit_status",
    "degenerate_reason",
    "status_word",
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
