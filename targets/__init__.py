"""Real implementations as audit targets, each run in a process of its own.

:mod:`~normspec.targets.adapters` drives the libraries, :mod:`~normspec.targets.worker`
runs one case in a subprocess, :mod:`~normspec.targets.audit` compares with the oracle.
"""
