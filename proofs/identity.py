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

What a user expression may cost is bounded before any work starts, so no
input hangs or eats the machine: at most :data:`LIMITS` characters, syntax
nodes, nesting depth and function arguments; exponents are rational
numbers with numerator and denominator of at most 64 (a number raised to a
power may have at most 4096 bits), and the whole expression at most degree
4096.  Past a bound, or past the time limit (20 s by default, enforced in
the main thread), the answer is **undecided** with the bound named in
``limit``; an error inside SymPy is never read as a refutation.

>>> r = check_identity("x**(10**10)", "x")
>>> r.status, r.limit
('undecided', 'an exponent of 10000000000 (the bound is 64)')

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
import math
import signal
import threading
import time
from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import sympy as sp
from normspec.proofs.symbolic import prove_equal
from normspec.spec import batchnorm as bn
from normspec.spec import core

from normspec.errors import InvalidArgumentError, NormspecError, UnknownNameError

__all__ = [
    "check_identity",
    "IdentityResult",
    "ExpressionError",
    "CostLimitError",
    "FUNCTIONS",
    "LIMITS",
    "parse_expression",
]


class ExpressionError(InvalidArgumentError):
    """An expression that is malformed, uses forbidden syntax, or calls an unknown function."""


class CostLimitError(NormspecError):
    """An expression past one of :data:`LIMITS`: :func:`check_identity` answers "undecided" and names the bound."""


# What one expression (or assumption) may cost.  Each bound is far above what a normalization identity
# needs (the spec's own facts use degree <= 8 and fewer than 100 nodes) and far below what hangs SymPy.
LIMITS = {
    "characters": 2000,  # per expression or assumption
    "assumptions": 50,
    "nodes": 1000,  # Python syntax nodes per expression (operators count)
    "depth": 200,  # nesting of operators and calls (a sum of k terms nests k deep)
    "arguments": 64,  # of one variadic call such as mean(...)
    "exponent": 64,  # numerator and denominator of an exponent with a symbolic or irrational base
    "constant_bits": 4096,  # a number raised to a number
    "degree": 4096,  # of the whole expression, counting x**k as k and a product as the sum of its factors
}
DEFAULT_TIME_LIMIT = 20.0


class _OutOfTime(BaseException):
    """Raised by the timer; a BaseException so that no ``except Exception`` inside SymPy swallows it."""


@contextmanager
def _deadline(seconds: float | None) -> Iterator[None]:
    """Interrupt the block after ``seconds`` (main thread only: elsewhere the static bounds alone hold).

    The timer repeats every quarter second until the block ends, and an alarm interrupts only SymPy,
    mpmath or normspec code: one landing in a garbage-collector callback or a finalizer would be
    swallowed by Python (and reported there), so it waits for the next."""
    in_main = threading.current_thread() is threading.main_thread()
    if seconds is None or not hasattr(signal, "SIGALRM") or not in_main:
        yield
        return
    armed = [True]

    def _ring(signum: int, frame: Any) -> None:
        # raise only inside the work being bounded (SymPy, mpmath, normspec): an exception raised in
        # someone else's garbage-collector callback or finalizer would be swallowed and reported
        # there; the next tick comes a quarter second later
        module = "" if frame is None else str(frame.f_globals.get("__name__", ""))
        if armed[0] and module.split(".")[0] in ("sympy", "mpmath", "normspec"):
            raise _OutOfTime

    previous = signal.signal(signal.SIGALRM, _ring)
    signal.setitimer(signal.ITIMER_REAL, float(seconds), 0.25)
    try:
        yield
    finally:
        armed[0] = False
        signal.setitimer(signal.ITIMER_REAL, 0)
        signal.signal(signal.SIGALRM, previous)


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
}


def _short(text: str) -> str:
    return repr(text) if len(text) <= 80 else repr(text[:77] + "...")


def _parse(text: str, what: str) -> ast.Expression:
    """``ast.parse`` behind the size bounds: characters first, then syntax nodes and nesting depth."""
    if not isinstance(text, str) or not text.strip():
        raise ExpressionError(f"Expected a non-empty {what}, but got {text!r}")
    if len(text) > LIMITS["characters"]:
        raise CostLimitError(f"an {what} of {len(text)} characters (the bound is {LIMITS['characters']})")
    try:
        tree = ast.parse(text.strip(), mode="eval")
    except SyntaxError as exc:
        raise ExpressionError(f"Malformed {what} {_short(text)}: {exc.msg} at column {exc.offset}") from None
    except (RecursionError, MemoryError):  # Python's own parser gives up on deep nesting
        raise CostLimitError(f"an {what} nested too deeply for Python's parser") from None
    nodes = 0
    stack: list[tuple[ast.AST, int]] = [(tree.body, 1)]
    while stack:  # iterative: a deep tree must not overflow the stack while it is being measured
        node, depth = stack.pop()
        nodes += 1
        if nodes > LIMITS["nodes"]:
            raise CostLimitError(f"an {what} of more than {LIMITS['nodes']} syntax nodes (the bound)")
        if depth > LIMITS["depth"]:
            raise CostLimitError(f"an {what} nested more than {LIMITS['depth']} deep (the bound)")
        stack.extend((child, depth + 1) for child in ast.iter_child_nodes(node))
    return tree


def parse_expression(text: str, symbols: dict[str, sp.Symbol]) -> sp.Expr:
    """Build a SymPy expression from ``text`` without evaluating any Python, within :data:`LIMITS`."""
    expr = _build(_parse(text, "expression").body, symbols, text)
    degree = _degree(expr)
    if degree > LIMITS["degree"]:
        raise CostLimitError(f"an expression of degree {degree} (the bound is {LIMITS['degree']})")
    return expr


def _degree(e: sp.Basic) -> int:
    """An upper bound on the polynomial degree: what expanding or substituting into ``e`` may cost."""
    if e.is_Symbol:
        return 1
    if e.is_Pow and e.exp.is_Rational:
        return _degree(e.base) * abs(int(e.exp.p))
    if e.is_Mul:
        return sum(_degree(a) for a in e.args)
    return max((_degree(a) for a in e.args), default=0)


def _power(base: sp.Expr, exp: sp.Expr, text: str) -> sp.Expr:
    """``base**exp`` for a rational ``exp`` whose result stays within :data:`LIMITS`."""
    if not exp.is_Rational:
        raise ExpressionError(f"Exponents must be numbers, but got {exp} in {_short(text)}")
    p, q = abs(int(exp.p)), int(exp.q)
    if base.is_Rational:  # a number raised to a number: bound the bits of the result
        bits = p * math.log2(max(abs(int(base.p)), int(base.q), 1)) / q
        if bits > LIMITS["constant_bits"]:
            raise CostLimitError(
                f"the number {base}**{exp} of about {bits:.0f} bits (the bound is {LIMITS['constant_bits']})"
            )
    elif max(p, q) > LIMITS["exponent"]:
        raise CostLimitError(f"an exponent of {exp} (the bound is {LIMITS['exponent']})")
    return base**exp


def _build(node: ast.AST, symbols: dict[str, sp.Symbol], text: str) -> sp.Expr:
    if isinstance(node, ast.BinOp) and isinstance(node.op, ast.Pow):
        return _power(_build(node.left, symbols, text), _build(node.right, symbols, text), text)
    if isinstance(node, ast.BinOp) and type(node.op) in _BINOPS:
        return _BINOPS[type(node.op)](_build(node.left, symbols, text), _build(node.right, symbols, text))
    if isinstance(node, ast.UnaryOp) and isinstance(node.op, (ast.USub, ast.UAdd)):
        inner = _build(node.operand, symbols, text)
        return -inner if isinstance(node.op, ast.USub) else inner
    if isinstance(node, ast.Constant) and type(node.value) is float and not np.isfinite(node.value):
        raise ExpressionError(f"Expected a finite number, but got {node.value} in {_short(text)}")
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
        if len(args) > LIMITS["arguments"]:
            raise CostLimitError(f"{name}(...) of {len(args)} arguments (the bound is {LIMITS['arguments']})")
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
    if len(assume) > LIMITS["assumptions"]:
        raise CostLimitError(f"{len(assume)} assumptions (the bound is {LIMITS['assumptions']})")
    for text in assume:
        tree = _parse(text, "assumption").body
        if not (isinstance(tree, ast.Compare) and len(tree.ops) == 1):
            raise ExpressionError(f"Expected an assumption like 'eps > 0', but got {text!r}")
        op, left, right = tree.ops[0], tree.left, tree.comparators[0]
        if isinstance(left, ast.Name) and isinstance(right, ast.Constant) and right.value == 0:
            kind = _SIGN_ASSUMPTIONS.get((type(op), "0"))
            if kind and not left.id.startswith("_"):
                symbols[left.id] = sp.Symbol(left.id, real=True, **{kind: True})
                continue
        lhs, rhs = _build(left, symbols, text), _build(right, symbols, text)
        degree = max(_degree(lhs), _degree(rhs))
        if degree > LIMITS["degree"]:
            raise CostLimitError(f"an assumption of degree {degree} (the bound is {LIMITS['degree']})")
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
    limit: str | None = None  # the bound that left it undecided, if one did

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
    lhs: str,
    rhs: str,
    assume: Sequence[str] = (),
    *,
    budget: int = 400,
    seed: int = 0,
    time_limit: float | None = DEFAULT_TIME_LIMIT,
) -> IdentityResult:
    """Prove, refute or leave undecided ``lhs == rhs`` under ``assume``.

    Malformed input raises :class:`ExpressionError`; an input past :data:`LIMITS`, or work past
    ``time_limit`` seconds (``None``: no limit), gives "undecided" with the bound in ``limit``.
    """
    if time_limit is not None and not (isinstance(time_limit, (int, float)) and 0 < time_limit < 1e6):
        raise InvalidArgumentError(f"Expected a time limit in seconds, 0 < time_limit < 1e6, but got {time_limit!r}")
    started = time.monotonic()
    try:
        with _deadline(time_limit):
            return _decide(lhs, rhs, list(assume), budget, seed)
    except CostLimitError as exc:
        reason = str(exc)
    except _OutOfTime:
        reason = f"the time limit of {time_limit:g} s"
    except RecursionError:
        reason = "SymPy's recursion limit (the expression is too deeply nested for its rewrites)"
    except MemoryError:
        reason = "the memory available"
    result = IdentityResult("undecided", lhs, rhs, list(assume), limit=reason)
    result.steps = [f"gave up after {time.monotonic() - started:.1f} s: the input reaches {reason}"]
    return result


def _decide(lhs: str, rhs: str, assume: list[str], budget: int, seed: int) -> IdentityResult:
    symbols: dict[str, sp.Symbol] = {}
    filters = _parse_assumptions(assume, symbols)
    left, right = parse_expression(lhs, symbols), parse_expression(rhs, symbols)
    result = IdentityResult("undecided", str(left), str(right), assume)
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
