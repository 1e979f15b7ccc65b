"""One exception hierarchy for everything normspec refuses.

Every error a user can trigger with bad input is a :class:`NormspecError`.
Argument errors also derive from the matching built-in (``ValueError``,
``TypeError``, ``LookupError``) so generic ``except ValueError`` code keeps
working.  Messages follow one pattern: what was expected, then the offending
value quoted as ``name=value``.

>>> from normspec.errors import DomainError, NormspecError
>>> issubclass(DomainError, NormspecError) and issubclass(DomainError, ValueError)
True
"""

from __future__ import annotations

from typing import Any

__all__ = [
    "NormspecError",
    "InvalidArgumentError",
    "ShapeError",
    "DTypeError",
    "DomainError",
    "DegenerateInputError",
    "UnknownNameError",
    "UnknownConventionError",
    "InputFileError",
    "TargetUnavailableError",
    "MissingExtraError",
    "expected",
]


class NormspecError(Exception):
    """Base class of every error normspec raises on purpose."""


class InvalidArgumentError(NormspecError, ValueError):
    """An argument has a value the operation cannot accept."""


class ShapeError(InvalidArgumentError):
    """Array shapes do not fit together (weight length, axis, ...)."""


class DTypeError(InvalidArgumentError, TypeError):
    """An array has a dtype normspec does not support, or dtypes disagree."""


class DomainError(InvalidArgumentError):
    """A value lies outside the formula's domain (negative eps or variance, NaN parameter)."""


class DegenerateInputError(InvalidArgumentError):
    """The input is too small for the statistic asked for (empty batch, n=1 where it is an error)."""


class UnknownNameError(NormspecError, LookupError):
    """A name (fact, variant, function, profile) that normspec does not know."""


class UnknownConventionError(UnknownNameError):
    """A convention profile name that normspec does not know."""


class TargetUnavailableError(NormspecError):
    """An audit target whose library (or virtual environment) is not installed here."""


class MissingExtraError(NormspecError, ImportError):
    """An optional dependency (a normspec extra) is not installed; the message says what to install."""


class InputFileError(NormspecError, OSError):
    """An input file is missing, malformed, or would need unpickling to read."""


def _short(value: Any) -> str:
    text = repr(value)
    return text if len(text) <= 120 else text[:117] + "..."


def expected(what: str, name: str, value: Any) -> str:
    """The standard message: ``Expected <what>, but got <name>=<value>``.

    >>> expected("eps >= 0", "eps", -1e-05)
    'Expected eps >= 0, but got eps=-1e-05'
    """
    return f"Expected {what}, but got {name}={_short(value)}"
