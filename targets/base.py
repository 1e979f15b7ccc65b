"""The adapter record, shared by the BatchNorm adapters (:mod:`~normspec.targets.adapters`) and the
family adapters (:mod:`~normspec.targets.family_adapters`).

Kept apart from both so that neither imports the other: ``adapters.get_adapter`` looks family
targets up in ``family_adapters``, which builds its table from this record.  Workers import it in
the targets' own venvs: NumPy only.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import numpy as np

__all__ = ["Adapter", "Case", "Result"]

Case = dict[str, Any]
Result = dict[str, np.ndarray]


@dataclass(frozen=True)
class Adapter:
    name: str
    convention: str
    library: str  # the import that must succeed
    run: Callable[[Case], Result]
    description: str
    env: tuple[tuple[str, str], ...] = ()  # set before the library is imported
    evaluation_only: bool = False  # the library offers no training step we can drive
    venv: str | None = None  # runs in .venvs/<venv> (scripts/setup-target-venvs.sh), not in normspec's own
    backward: Callable[[Case], Result] | None = None  # gradients (dx, dweight, dbias) of a training forward
    # The evaluation order the target is documented to use (a key of normspec.budgets.ALGORITHMS;
    # docs/conventions.md, Table 2), for the audit's budget check; None: no budget verdict.
    algorithm: str | None = None
    # A deliberately wrong use of the library, kept to show what the audit says of it (why); not a
    # finding on the library, so the findings gallery and the profile checks leave it out.
    deliberate: str | None = None
    # runs only where a CUDA GPU is (Triton and CUDA kernels: Liger-Kernel, vLLM, FlashInfer)
    needs_gpu: bool = False
