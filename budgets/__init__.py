"""Float error budgets: rigorous per-element bounds for an evaluation order, and their audit.

:mod:`~normspec.budgets.algorithm` describes an evaluation order as data;
:mod:`~normspec.budgets.derive` derives the bound (reductions analytically,
the elementwise stage FPTaylor-style from a SymPy model);
:mod:`~normspec.budgets.classify` sorts observed outputs against it;
``normspec budget`` is the command.
"""

from normspec.budgets.algorithm import ALGORITHMS, Algorithm, get_algorithm
from normspec.budgets.classify import Classification, classify
from normspec.budgets.derive import budget_for_batch_norm, budget_for_layer

__all__ = [
    "Algorithm",
    "ALGORITHMS",
    "get_algorithm",
    "budget_for_batch_norm",
    "budget_for_layer",
    "classify",
    "Classification",
]
