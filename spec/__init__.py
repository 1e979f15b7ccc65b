"""The specification: correct formulas (SymPy) and every implementation's conventions as data.

:mod:`~normspec.spec.conventions` is plain data and imports no SymPy;
:mod:`~normspec.spec.core` and :mod:`~normspec.spec.batchnorm` hold the
formulas.
"""

from normspec.spec.conventions import CONVENTIONS, Convention, convention_names, get_convention
from normspec.spec.family_conventions import FAMILY_CONVENTIONS, FamilyConvention, get_family_convention

__all__ = [
    "CONVENTIONS",
    "Convention",
    "convention_names",
    "get_convention",
    "FAMILY_CONVENTIONS",
    "FamilyConvention",
    "get_family_convention",
]
