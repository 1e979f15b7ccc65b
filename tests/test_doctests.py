"""Every module's docstring examples run, by their installed names."""

import doctest
import importlib
import pkgutil

import pytest

import normspec


def _modules():
    names = ["normspec"]
    for info in pkgutil.walk_packages(normspec.__path__[:1], "normspec."):
        names.append(info.name)
    for sub in ("spec", "oracle", "proofs"):
        pkg = importlib.import_module(f"normspec.{sub}")
        names.append(pkg.__name__)
        names += [i.name for i in pkgutil.walk_packages(pkg.__path__, f"normspec.{sub}.")]
    return sorted({n for n in names if not n.endswith("__main__")})


@pytest.mark.parametrize("name", _modules())
def test_docstring_examples(name):
    module = importlib.import_module(name)
    result = doctest.testmod(module, optionflags=doctest.ELLIPSIS | doctest.NORMALIZE_WHITESPACE, verbose=False)
    assert result.failed == 0, f"{result.failed} doctest failure(s) in {name}"


def test_doctests_exist_where_the_style_promises():
    """Spec and oracle modules carry runnable examples (not just prose)."""
    for name in (
        "normspec.spec.core",
        "normspec.spec.batchnorm",
        "normspec.oracle.formats",
        "normspec.oracle.layers",
        "normspec.oracle.ulp",
    ):
        finder = doctest.DocTestFinder()
        assert sum(len(t.examples) for t in finder.find(importlib.import_module(name))) > 0, name
