"""The findings gallery: a finding's standalone reproducer runs with only the library and NumPy."""

import importlib.util
import subprocess
import sys

import pytest
from normspec.targets.gallery import build_gallery


def test_a_gallery_reproducer_reruns_the_finding_without_normspec(tmp_path):
    if importlib.util.find_spec("torch") is None:
        pytest.skip("torch is not installed (pip install 'normspec[torch]')")
    page = tmp_path / "findings.md"
    data = build_gallery(["torch_group_norm"], page)
    constant = next(e for e in data["entries"] if e["case"] == "constant")  # -203 where the exact value is 1.15
    assert constant["kind"] == "accuracy" and "torch 2." in constant["version"]
    folder = tmp_path / constant["reproducer"]
    script = (folder / "repro.py").read_text()
    assert "normspec" not in script.split('"""')[2]  # the code after the docstring needs only torch and numpy
    # run it where normspec cannot be imported: drop the editable install's import hook first
    code = (
        "import sys; sys.meta_path = [f for f in sys.meta_path if 'normspec' not in repr(f)]\n"
        "try:\n    import normspec\nexcept ImportError:\n    pass\nelse:\n    raise SystemExit('normspec importable')\n"
        "exec(open('repro.py').read())"
    )
    out = subprocess.run([sys.executable, "-c", code], cwd=folder, capture_output=True, text=True, timeout=300)
    assert out.returncode == 0, out.stderr
    assert (
        "y (float32, exact in float32): worst element" in out.stdout and "exact np.float32(1.146627)" in out.stdout
    ), out.stdout
    assert "| accuracy | constant |" in page.read_text()
