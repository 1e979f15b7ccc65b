"""Classify observed outputs against the exact values and the algorithm's budget."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

import numpy as np
from normspec.oracle import ulp_distance

__all__ = ["Classification", "classify", "CLASSES"]

CLASSES = ("correctly rounded", "within 1 ULP", "within budget", "beyond budget", "non-finite")


@dataclass
class Classification:
    counts: dict[str, int]
    worst_ratio: float  # max |observed - exact| / budget over finite budgets
    ratios: np.ndarray  # per element |observed - exact| / budget (inf where beyond an infinite-free budget)
    max_ulp: float
    worst: dict[str, Any] = field(default_factory=dict)

    def as_dict(self) -> dict[str, Any]:
        return {"counts": self.counts, "worst_ratio": self.worst_ratio, "max_ulp": self.max_ulp, "worst": self.worst}


def classify(
    observed: np.ndarray, exact_rounded: np.ndarray, exact_value: np.ndarray, budget: np.ndarray
) -> Classification:
    """Every element: correctly rounded (0 ULP from the correctly rounded exact value), within
    1 ULP, within the budget (|observed - exact| <= budget), beyond it, or non-finite where the
    exact value is finite and the budget does not allow it."""
    obs = np.asarray(observed)
    with np.errstate(invalid="ignore", over="ignore"):
        d = ulp_distance(obs, exact_rounded.astype(obs.dtype))
        err = np.abs(obs.astype(np.float64) - exact_value)
        ratio = np.where(budget > 0, err / budget, np.where(err == 0, 0.0, np.inf))
    nonfinite = ~np.isfinite(obs.astype(np.float64)) & np.isfinite(exact_value) & np.isfinite(budget)
    cls = np.full(obs.shape, "beyond budget", dtype=object)
    cls[err <= budget] = "within budget"
    cls[d <= 1] = "within 1 ULP"
    cls[d == 0] = "correctly rounded"
    cls[nonfinite] = "non-finite"
    counts = {c: int(np.sum(cls == c)) for c in CLASSES}
    finite = np.isfinite(ratio)
    worst = {}
    if obs.size:
        i = tuple(int(v) for v in np.unravel_index(int(np.argmax(np.where(np.isfinite(ratio), ratio, -1))), obs.shape))
        worst = {
            "index": list(i),
            "observed": float(obs[i]),
            "exact": float(exact_value[i]),
            "budget": float(budget[i]),
            "ulp": float(d[i]),
        }
    return Classification(
        counts,
        float(ratio[finite].max()) if finite.any() else 0.0,
        ratio,
        float(d[np.isfinite(d)].max()) if np.isfinite(d).any() else 0.0,
        worst,
    )
