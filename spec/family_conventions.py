"""Deprecated: the family's profiles are :class:`~normspec.spec.conventions.Convention` records now.

Every layer's profile lives in :data:`normspec.spec.conventions.CONVENTIONS`; look one up with
:func:`~normspec.spec.conventions.get_convention` (``layer=`` restricts it to one layer).  The
names below keep working for now and warn.
"""

from __future__ import annotations

import warnings
from typing import Any

from normspec.spec.conventions import CONVENTIONS, Convention, get_convention

from normspec.errors import UnknownConventionError, expected

__all__ = ["get_family_convention"]  # and, with a warning, FamilyConvention and FAMILY_CONVENTIONS


def _warn(old: str, new: str) -> None:
    warnings.warn(f"normspec.spec.{old} is deprecated; use normspec.spec.{new}", DeprecationWarning, stacklevel=3)


def get_family_convention(name: str) -> Convention:
    """Deprecated: :func:`normspec.spec.get_convention`."""
    _warn("get_family_convention", "get_convention")
    conv = get_convention(name)
    if conv.layer == "batch_norm":
        family = ", ".join(n for n, c in CONVENTIONS.items() if c.layer != "batch_norm")
        raise UnknownConventionError(expected("one of " + family, "convention", name))
    return conv


def __getattr__(name: str) -> Any:
    if name == "FamilyConvention":
        _warn("FamilyConvention", "Convention")
        return Convention
    if name == "FAMILY_CONVENTIONS":
        _warn("FAMILY_CONVENTIONS", "CONVENTIONS")
        return {n: c for n, c in CONVENTIONS.items() if c.layer != "batch_norm"}
    raise AttributeError(name)
