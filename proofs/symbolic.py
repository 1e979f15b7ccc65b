"""Deciding ``lhs == rhs`` symbolically: one place, shared by facts and identities.

:func:`prove_equal` tries a short list of SymPy normal forms on
``lhs - rhs`` and reports the one that reduced it to zero.  It only ever
answers "proven" (some rewrite gave exactly 0) or "not shown"; refuting is
the job of a counterexample search.

>>> import sympy as sp
>>> a, b = sp.symbols("a b", positive=True)
>>> prove_equal((a + b) ** 2, a**2 + 2 * a * b + b**2)
'expand'
>>> prove_equal(a / sp.sqrt(a), sp.sqrt(a)), prove_equal(a, b)
('identical', None)
"""

from __future__ import annotations

from collections.abc import Callable

import sympy as sp

__all__ = ["prove_equal", "REWRITES"]


def _factor_radicands(e: sp.Expr) -> sp.Expr:
    """Factor what stands under each square root, so sqrt((2u+1)**2/4) can come out."""
    return sp.simplify(
        e.replace(
            lambda a: isinstance(a, sp.Pow) and a.exp.is_Rational and a.exp.q == 2,
            lambda a: sp.factor(sp.together(a.base)) ** a.exp,
        )
    )


REWRITES: list[tuple[str, Callable[[sp.Expr], sp.Expr]]] = [
    ("expand", lambda e: sp.expand(e)),
    ("together", lambda e: sp.expand(sp.together(e))),
    ("powsimp", lambda e: sp.expand(sp.powsimp(sp.powdenest(e, force=False)))),
    ("radsimp", lambda e: sp.expand(sp.radsimp(sp.together(e)))),
    ("simplify", lambda e: sp.simplify(e)),
    ("factor_radicands", _factor_radicands),
]


def prove_equal(lhs: sp.Expr, rhs: sp.Expr) -> str | None:
    """Name of the first rewrite that takes ``lhs - rhs`` to 0, or None."""
    diff = sp.sympify(lhs) - sp.sympify(rhs)
    if diff == 0:
        return "identical"
    for name, rewrite in REWRITES:
        try:
            if rewrite(diff) == 0:
                return name
        except (TypeError, ValueError, NotImplementedError, RecursionError):
            continue
    return None
