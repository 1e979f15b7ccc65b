"""``normspec identity``: prove or refute ``LHS == RHS`` over the spec's functions.

Expressions are parsed with Python's :mod:`ast` into a tree that is walked
node by node and built into SymPy directly: only numbers, names, ``+ - * /
**``, unary signs and calls to the functions in :data:`FUNCTIONS` are
accepted.  Nothing is ever evaluated by Python, so attribute access,
subscripts, lambdas, dunder names and calls to anything else are refused
with :class:`ExpressionError`.

The decision: **proven** when a SymPy rewrite takes ``LHS - RHS`` to 0;
**refuted** when a point satisfying the assumptions gives different exact
values (checked at 60 and 120 digits); **undecided** otherwise.

>>> r = check_identity("batch_norm_eval(x, mean, var, gamma, beta, eps)",
...                    "x * gamma/sqrt(var + eps) + beta - mean * gamma/sqrt(var + eps)",
...                    assume=["eps > 0", "var >= 0"])
>>> r.status
'proven'
>>> check_identity("sqrt(var + eps)", "sqrt(var) + eps", assume=["eps > 0", "var >= 0"]).status
'refuted'
"""

from __future__ import annotations

import ast
import itertools
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import sympy as sp
from normspec.proofs.symbolic import prove_equal
from normspec.spec import batchnorm as bn
from normspec.spec import core

from normspec.errors import InvalidArgumentError, UnknownNameError

__all__ = ["check_identity", "IdentityResult", "ExpressionError", "FUNCTIONS", "parse_expression"]


class ExpressionError(InvalidArgumentError):
    """An expression that is malformed, uses forbidden syntax, or calls an unknown function."""


def _train_y(k: sp.Expr, gamma: sp.Expr, beta: sp.Expr, eps: sp.Expr, *xs: sp.Expr) -> sp.Expr:
    if not (isinstance(k, sp.Integer) and 0 <= int(k) < len(xs)):
        raise ExpressionError(
            f"Expected batch_norm_train(k, gamma, beta, eps, x0, x1, ...) with 0 <= k < n, but got k={k}"
        )
    return bn.batch_norm_train(xs, gamma, beta, eps)[int(k)]


def _eps_outside(x: Any, mean: Any, var: Any, gamma: Any, beta: Any, eps: Any) -> sp.Expr:
    return gamma * (x - mean) / (sp.sqrt(var) + eps) + beta


# name -> (function, number of arguments or None for variadic, signature for messages)
FUNCTIONS: dict[str, tuple[Callable[..., sp.Expr], int | None, str]] = {
    "sqrt": (sp.sqrt, 1, "sqrt(a)"),
    "abs": (sp.Abs, 1, "abs(a)"),
    "batch_norm_eval": (bn.batch_norm_eval, 6, "batch_norm_eval(x, mean, var, gamma, beta, eps)"),
    "batch_norm_train": (_train_y, None, "batch_norm_train(k, gamma, beta, eps, x0, x1, ...)"),
    "normalize": (core.normalize, 4, "normalize(x, mean, var, eps)"),
    "affine": (core.affine, 3, "affine(xhat, gamma, beta)"),
    "mean": (lambda *xs: core.mean(xs), None, "mean(x0, x1, ...)"),
    "biased_var": (lambda *xs: core.biased_var(xs), None, "biased_var(x0, x1, ...)"),
    "unbiased_var": (lambda *xs: core.unbiased_var(xs), None, "unbiased_var(x0, x1, ...)"),
    "running_update_new": (lambda r, b, m: bn.running_update(r, b, m, "new"), 3, "running_update_new(r, b, m)"),
    "running_update_old": (lambda r, b, m: bn.running_update(r, b, m, "old"), 3, "running_update_old(r, b, m)"),
    "eps_outside_sqrt": (_eps_outside, 6, "eps_outside_sqrt(x, mean, var, gamma, beta, eps)  [bug zoo]"),
}

_BINOPS: dict[type, Callable[[sp.Expr, sp.Expr], sp.Expr]] = {
    ast.Add: lambda a, b: a + b,
    ast.Sub: lambda a, b: a - b,
    ast.Mult: lambda a, b: a * b,
    ast.Div: lambda a, b: a / b,
    ast.Pow: lambda a, b: a**b,
}


def parse_expression(text: str, symbols: dict[str, sp.Symbol]) -> sp.Expr:
    """Build a SymPy expression from ``text`` without evaluating any Python."""
    if not isinstance(text, str) or not text.strip():
        raise ExpressionError(f"Expected a non-empty expression, but got {text!r}")
    if len(text) > 2000:
        raise ExpressionError(f"Expected an expression of at most 2000 characters, but got {len(text)}")
    try:
        tree = ast.parse(text.strip(), mode="eval")
    except SyntaxError as exc:
        raise ExpressionError(f"Malformed expression {text!r}: {exc.msg} at column {exc.offset}") from None
    return _build(tree.body, symbols, text)


def _build(node: ast.AST, symbols: dict[str, sp.Symbol], text: str) -> sp.Expr:
    if isinstance(node, ast.BinOp) and type(node.op) in _BINOPS:
        return _BINOPS[type(node.op)](_build(node.left, symbols, text), _build(node.right, symbols, text))
    if isinstance(node, ast.UnaryOp) and isinstance(node.op, (ast.USub, ast.UAdd)):
        inner = _build(node.operand, symbols, text)
        return -inner if isinstance(node.op, ast.USub) else inner
    if isinstance(node, ast.Constant) and type(node.value) in (int, float):
        return sp.Rational(repr(node.value)) if isinstance(node.value, float) else sp.Integer(node.value)
    if isinstance(node, ast.Name):
        name = node.id
        if name.startswith("_"):
            raise ExpressionError(f"Names may not start with '_', but got {name!r} in {text!r}")
        if name not in symbols:
            symbols[name] = sp.Symbol(name, real=True)
        return symbols[name]
    if isinstance(node, ast.Call):
        if not isinstance(node.func, ast.Name):
            raise ExpressionError(f"Only calls to named functions are allowed, but got {ast.unparse(node.func)!r}")
        name = node.func.id
        if name not in FUNCTIONS:
            raise UnknownNameError(f"Expected a function among {', '.join(FUNCTIONS)}, but got {name!r} in {text!r}")
        if node.keywords:
            raise ExpressionError(f"Keyword arguments are not allowed: {FUNCTIONS[name][2]}")
        fn, arity, signature = FUNCTIONS[name]
        args = [_build(a, symbols, text) for a in node.args]
        if arity is not None and len(args) != arity:
            raise ExpressionError(f"Expected {signature}, but got {len(args)} argument(s)")
        if arity is None and not args:
            raise ExpressionError(f"Expected {signature}, but got no arguments")
        return fn(*args)
    kind = type(node).__name__
    raise ExpressionError(
        f"Only numbers, names, + - * / **, and calls to known functions are allowed; {kind} is not (in {text!r})"
    )


_SIGN_ASSUMPTIONS = {
    (ast.Gt, "0"): "positive",
    (ast.GtE, "0"): "nonnegative",
    (ast.Lt, "0"): "negative",
    (ast.LtE, "0"): "nonpositive",
    (ast.NotEq, "0"): "nonzero",
}


def _parse_assumptions(assume: Sequence[str], symbols: dict[str, sp.Symbol]) -> list[sp.Basic]:
    """Sign facts about single names become SymPy assumptions; other relations are kept as filters."""
    filters: list[sp.Basic] = []
    for text in assume:
        try:
            tree = ast.parse(text.strip(), mode="eval").body
        except SyntaxError as exc:
            raise ExpressionError(f"Malformed assumption {text!r}: {exc.msg}") from None
        if not (isinstance(tree, ast.Compare) and len(tree.ops) == 1):
            raise ExpressionError(f"Expected an assumption like 'eps > 0', but got {text!r}")
        op, left, right = tree.ops[0], tree.left, tree.comparators[0]
        if isinstance(left, ast.Name) and isinstance(right, ast.Constant) and right.value == 0:
            kind = _SIGN_ASSUMPTIONS.get((type(op), "0"))
            if kind and not left.id.startswith("_"):
                symbols[left.id] = sp.Symbol(left.id, real=True, **{kind: True})
                continue
        lhs, rhs = _build(left, symbols, text), _build(right, symbols, text)
        rel = {ast.Gt: sp.Gt, ast.GtE: sp.Ge, ast.Lt: sp.Lt, ast.LtE: sp.Le, ast.NotEq: sp.Ne}.get(type(op))
        if rel is None:
            raise ExpressionError(f"Expected one of > >= < <= != in {text!r}")
        filters.append(rel(lhs, rhs))
    return filters


@dataclass
class IdentityResult:
    status: str  # "proven" | "refuted" | "undecided"
    lhs: str
    rhs: str
    assumptions: list[str]
    method: str | None = None
    steps: list[str] = field(default_factory=list)
    counterexample: dict[str, str] | None = None
    lhs_value: str | None = None
    rhs_value: str | None = None

    @property
    def exit_code(self) -> int:
        return {"proven": 0, "refuted": 1, "undecided": 3}[self.status]  # 2 is bad input, as everywhere

    def as_dict(self) -> dict[str, Any]:
        return dict(self.__dict__)


_VALUES = [sp.Integer(v) for v in (0, 1, 2, 3, -1, -2, 5, 7)] + [
    sp.Rational(1, 2),
    sp.Rational(1, 3),
    sp.Rational(-3, 4),
    sp.Rational(1, 10**5),
]


def _admissible(sym: sp.Symbol, value: sp.Expr) -> bool:
    checks = {
        "positive": value > 0,
        "nonnegative": value >= 0,
        "negative": value < 0,
        "nonpositive": value <= 0,
        "nonzero": value != 0,
    }
    return all(bool(ok) for name, ok in checks.items() if sym.assumptions0.get(name))


def _points(syms: list[sp.Symbol], budget: int, seed: int) -> Any:
    rng = np.random.default_rng(seed)
    yielded = 0
    if len(syms) <= 4:  # a small grid first: it finds the classic counterexamples
        for combo in itertools.product(_VALUES[:6], repeat=len(syms)):
            yield dict(zip(syms, combo, strict=True))
            yielded += 1
            if yielded >= budget // 2:
                break
    while yielded < budget:
        yield {s: sp.Rational(int(rng.integers(-40, 41)), int(rng.integers(1, 9))) for s in syms}
        yielded += 1


def _finite(v: sp.Expr) -> bool:
    return bool(v.is_real) and v.is_finite is not False and v not in (sp.nan, sp.zoo, sp.oo, -sp.oo)


def check_identity(
    lhs: str, rhs: str, assume: Sequence[str] = (), *, budget: int = 400, seed: int = 0
) -> IdentityResult:
    """Prove, refute or leave undecided ``lhs == rhs`` under ``assume``."""
    symbols: dict[str, sp.Symbol] = {}
    filters = _parse_assumptions(list(assume), symbols)
    left, right = parse_expression(lhs, symbols), parse_expression(rhs, symbols)
    result = IdentityResult("undecided", str(left), str(right), list(assume))
    method = prove_equal(left, right)
    if method is not None:
        result.status, result.method = "proven", method
        result.steps = [f"LHS = {left}", f"RHS = {right}", f"LHS - RHS reduces to 0 by {method}"]
        return result
    syms = sorted(left.free_symbols | right.free_symbols | set().union(*(f.free_symbols for f in filters)), key=str)
    for point in _points(syms, budget, seed):
        if not all(_admissible(s, val) for s, val in point.items()):
            continue
        try:
            if not all(bool(f.subs(point)) for f in filters):
                continue
            lv, rv = sp.simplify(left.subs(point)), sp.simplify(right.subs(point))
        except (TypeError, ZeroDivisionError, ValueError):
            continue
        if not (_finite(lv) and _finite(rv)):
            continue
        d60, d120 = sp.N(lv - rv, 60), sp.N(lv - rv, 120)
        if d60 != 0 and abs(d120) > sp.Float(10) ** -40 * (1 + abs(sp.N(lv, 30)) + abs(sp.N(rv, 30))):
            result.status = "refuted"
            result.counterexample = {str(s): str(val) for s, val in point.items()}
            result.lhs_value = f"{lv} = {sp.N(lv, 20)}"
            result.rhs_value = f"{rv} = {sp.N(rv, 20)}"
            result.steps = [
                f"LHS = {left}",
                f"RHS = {right}",
                f"at {result.counterexample}: LHS = {result.lhs_value}, RHS = {result.rhs_value}",
            ]
            return result
    result.steps = [
        f"LHS = {left}",
        f"RHS = {right}",
        f"no rewrite reduced LHS - RHS to 0, and {budget} sample points found no difference",
    ]
    return result
