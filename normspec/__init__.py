"""normspec: the exact reference for normalization layers.

The public facade.  Heavy pieces (SymPy formulas, the oracle) load on first
use, so ``import normspec`` stays cheap.

>>> import normspec
>>> sorted(normspec.__all__)[:3]
['BatchNormResult', 'Convention', 'NormspecError']
"""

from __future__ import annotations

import importlib
from pathlib import Path
from typing import Any

from normspec._version import __version__
from normspec.errors import NormspecError

# In a source checkout without the installed mapping (python -m pytest from
# the repository root, say), let spec/, oracle/ and proofs/ beside this
# folder resolve as normspec.spec, normspec.oracle and normspec.proofs.
_root = Path(__file__).resolve().parent.parent
if (_root / "pyproject.toml").is_file() and (_root / "oracle" / "__init__.py").is_file():
    __path__.append(str(_root))

__all__ = [
    "__version__",
    "NormspecError",
    "batch_norm",
    "BatchNormResult",
    "Convention",
    "get_convention",
    "ulp_distance",
]

_LAZY = {
    "batch_norm": "normspec.oracle",
    "BatchNormResult": "normspec.oracle",
    "ulp_distance": "normspec.oracle",
    "Convention": "normspec.spec",
    "get_convention": "normspec.spec",
}


def __getattr__(name: str) -> Any:
    if name in _LAZY:
        return getattr(importlib.import_module(_LAZY[name]), name)
    raise AttributeError(f"module 'normspec' has no attribute {name!r}")
