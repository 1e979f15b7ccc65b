"""The specification: correct formulas (SymPy) and every implementation's conventions as data.

:mod:`~normspec.spec.conventions` is plain data and imports no SymPy: one
:class:`Convention` record per implementation of every layer.
:mod:`~normspec.spec.core`, :mod:`~normspec.spec.batchnorm` and
:mod:`~normspec.spec.family` hold the formulas.
"""

from typing import Any

from normspec.spec.conventions import CONVENTIONS, LAYERS, Convention, convention_names, get_convention

__all__ = [
    "CONVENTIONS",
    "LAYERS",
    "Convention",
    "convention_names",
    "get_convention",
]


def __getattr__(name: str) -> Any:  # the deprecated family names, with a warning
    if name in ("FAMILY_CONVENTIONS", "FamilyConvention", "get_family_convention"):
        from normspec.spec import family_conventions

        return getattr(family_conventions, name)
    raise AttributeError(name)
