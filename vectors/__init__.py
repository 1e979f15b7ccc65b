"""Regression vectors: exact golden cases other libraries drop into their test suites.

``normspec vectors generate DIR`` writes named, seeded cases with correctly
rounded expected outputs (.npz, no pickles) and a manifest with a SHA-256 per
file; ``--onnx`` adds the ONNX backend node-test layout.  ``normspec vectors
check DIR --target T`` re-checks an implementation.  For pytest, see
:mod:`normspec.testing`.
"""

from normspec.vectors.check import CaseResult, check_case, load_cases, resolve_target
from normspec.vectors.generate import VectorCase, build_cases, generate

__all__ = ["VectorCase", "build_cases", "generate", "load_cases", "check_case", "resolve_target", "CaseResult"]
