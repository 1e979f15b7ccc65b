"""Convention probes, one record type and one inference for every layer.

A :class:`Probe` is a small case whose output tells apart the functions a target might compute
instead of the one its profile claims: for each alternative (the claimed one included) it holds
the observation that alternative predicts (or a tuple of them), computed from the convention record (the oracle under
the record with one field changed, or the formula with other axes).  :func:`infer` names the
alternative nearest the target's observation.  No tolerance decides it: an observation is
attributed to an alternative only when it is closer to it than a quarter of the distance between
the two nearest alternatives and within :data:`ATTRIBUTION` of it (relative to the probe's scale,
which the probes keep near 1); otherwise it is "none of the known alternatives", with its value.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from dataclasses import dataclass
from dataclasses import field as _field
from typing import Any

import numpy as np

__all__ = ["Probe", "infer", "NONE_OF", "ATTRIBUTION"]

NONE_OF = "none of the known alternatives"
# The probes use small exact values (order 1), so an implementation of an alternative in float16
# or wider lands within 2**-8 of it; a blend of two alternatives (ONNX BatchNormalization-9's
# statistics, say) lands between them and is named as none of them.
ATTRIBUTION = 2.0**-8


@dataclass(frozen=True)
class Probe:
    """One convention probe.

    ``field`` is what it observes (a key of the report's claimed/observed table), ``case`` the
    name of the case it reads, ``claimed`` the label of the profile's alternative, and
    ``alternatives`` label -> predicted observation.  ``read`` takes the case's outputs (a mapping
    with ``y`` and, for BatchNorm, the running statistics) to the observation.  ``arrays`` holds
    the case itself where the probe brings its own (the family's); BatchNorm's probes read cases
    of the battery."""

    field: str
    case: str
    claimed: str
    alternatives: Mapping[str, Any]
    read: Callable[[Mapping[str, np.ndarray]], Any]
    note: str = ""
    arrays: Mapping[str, Any] | None = _field(default=None, repr=False)

    @property
    def name(self) -> str:
        return self.case


def infer(probe: Probe, outputs: Mapping[str, np.ndarray]) -> str:
    """The label of the alternative the outputs match (see the module docstring)."""
    observed = np.asarray(probe.read(outputs), np.float64).ravel()
    if not np.isfinite(observed).all():
        return "not inferred (non-finite output)"
    # an alternative may predict one of several observations (a tuple): the nearest one counts
    predicted = {
        k: [np.asarray(c, np.float64).ravel() for c in (v if isinstance(v, tuple) else (v,))]
        for k, v in probe.alternatives.items()
    }
    distance = {k: min(float(np.max(np.abs(observed - c))) for c in v) for k, v in predicted.items()}
    best = min(distance, key=lambda k: distance[k])
    points = [(k, c) for k, v in predicted.items() for c in v]
    gaps = [
        float(np.max(np.abs(a - b)))
        for i, (ka, a) in enumerate(points)
        for kb, b in points[i + 1 :]
        if ka != kb and not np.array_equal(a, b)
    ]
    scale = max(1.0, max(float(np.max(np.abs(c))) for _, c in points))
    limit = min(min(gaps) / 4 if gaps else np.inf, ATTRIBUTION * scale)
    if distance[best] > limit:
        if observed.size == 1:  # a scalar probe: say what each alternative predicts
            known = "; ".join(f"{k}: {float(v[0][0]):.6g}" for k, v in predicted.items() if v[0].size == 1)
            return f"{NONE_OF} (observed {float(observed[0]):.6g}; {known})"
        shown = np.array2string(observed, precision=6, separator=", ")
        return f"{NONE_OF} (observed {shown})"
    return best
