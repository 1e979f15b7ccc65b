"""The one generic checker: every fact's derivation, then its oracle confirmation.

>>> r = prove("one_value_is_beta")
>>> r.status, r.steps[0].method
('proven', 'identical')
"""

from __future__ import annotations

import time
from dataclasses import dataclass, field

import numpy as np
from normspec.proofs.facts import FACTS, Fact, FactCheckError
from normspec.proofs.symbolic import prove_equal

from normspec.errors import UnknownNameError, expected

__all__ = ["StepResult", "FactResult", "prove", "prove_all"]


@dataclass(frozen=True)
class StepResult:
    claim: str
    lhs: str
    rhs: str
    method: str | None  # the rewrite that reduced lhs - rhs to 0; None: not shown

    @property
    def ok(self) -> bool:
        return self.method is not None


@dataclass
class FactResult:
    name: str
    statement: str
    assumptions: tuple[str, ...]
    why: str
    status: str  # "proven" | "failed"
    steps: list[StepResult] = field(default_factory=list)
    numeric_checks: int = 0
    numeric_error: str | None = None
    seconds: float = 0.0

    def as_dict(self) -> dict[str, object]:
        return {
            "name": self.name,
            "statement": self.statement,
            "assumptions": list(self.assumptions),
            "why": self.why,
            "status": self.status,
            "seconds": round(self.seconds, 3),
            "numeric_checks": self.numeric_checks,
            "numeric_error": self.numeric_error,
            "steps": [
                {"claim": s.claim, "lhs": s.lhs, "rhs": s.rhs, "method": s.method, "ok": s.ok} for s in self.steps
            ],
        }


def _fact(name: str) -> Fact:
    try:
        return FACTS[name]
    except KeyError:
        raise UnknownNameError(expected("one of " + ", ".join(FACTS), "fact", name)) from None


def prove(name: str, seed: int = 0) -> FactResult:
    """Check every step of fact ``name`` symbolically, then confirm it against the oracle."""
    fact = _fact(name)
    t0 = time.perf_counter()
    res = FactResult(fact.name, fact.statement, fact.assumptions, fact.why, "proven")
    for claim, lhs, rhs in fact.steps():
        # SymPy's nan is a singleton: a step claiming "this is 0/0" is met only by nan itself
        method = "identical" if lhs is rhs else prove_equal(lhs, rhs)
        res.steps.append(StepResult(claim, str(lhs), str(rhs), method))
    try:
        res.numeric_checks = fact.confirm(np.random.default_rng(seed))
    except FactCheckError as exc:
        res.numeric_error = str(exc)
    if not all(s.ok for s in res.steps) or res.numeric_error is not None:
        res.status = "failed"
    res.seconds = time.perf_counter() - t0
    return res


def prove_all(seed: int = 0) -> list[FactResult]:
    return [prove(name, seed) for name in FACTS]
