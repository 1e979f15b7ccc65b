"""``python:module:function`` and ``python:path/file.py:function``: a user's callable, loaded once
for every command that takes one (audit targets, vectors check targets, diagnose batches)."""

from __future__ import annotations

import importlib
import importlib.util
import sys
from collections.abc import Callable
from pathlib import Path
from typing import Any

from normspec.errors import InputFileError, InvalidArgumentError, UnknownNameError

__all__ = ["check_callable_spec", "load_callable"]


def _split(spec: str, what: str) -> tuple[str, str]:
    body = spec[len("python:") :] if spec.startswith("python:") else spec
    module_name, sep, func_name = body.rpartition(":")
    if not sep or not module_name or not func_name:
        raise InvalidArgumentError(f"Expected python:module:function, but got {what}={spec!r}")
    return module_name, func_name


def check_callable_spec(spec: str, what: str = "target") -> None:
    """What can be said of ``spec`` without running any of its code: the form, the file, the module's
    top-level package (for code that will run in another process, where its crash cannot hurt us)."""
    module_name, _ = _split(spec, what)
    if module_name.endswith(".py"):
        if not Path(module_name).is_file():
            raise InputFileError(f"no such file: {module_name!r}")
        return
    if "" not in sys.path:
        sys.path.insert(0, "")
    top = module_name.split(".")[0]
    try:
        found = importlib.util.find_spec(top)
    except (ImportError, ValueError):
        found = None
    if found is None:
        raise UnknownNameError(f"cannot import module {module_name!r}: no module named {top!r}")


def load_callable(spec: str, what: str = "target") -> Callable[..., Any]:
    """The function ``spec`` names; a missing file, module or function is a normspec error naming it."""
    module_name, func_name = _split(spec, what)
    try:
        if module_name.endswith(".py"):
            path = Path(module_name)
            if not path.is_file():
                raise InputFileError(f"no such file: {module_name!r}")
            loader = importlib.util.spec_from_file_location(path.stem, path)
            if loader is None or loader.loader is None:
                raise InputFileError(f"cannot import {module_name!r}")
            module = importlib.util.module_from_spec(loader)
            loader.loader.exec_module(module)
        else:
            if "" not in sys.path:  # a module in the working directory, as `python -m` finds it
                sys.path.insert(0, "")
            module = importlib.import_module(module_name)
    except ImportError as exc:
        raise UnknownNameError(f"cannot import module {module_name!r}: {exc}") from None
    except SyntaxError as exc:
        raise InputFileError(f"cannot import {module_name!r}: {type(exc).__name__}: {exc}") from None
    fn = getattr(module, func_name, None)
    if not callable(fn):
        raise UnknownNameError(f"module {module_name!r} has no callable {func_name!r}")
    return fn
