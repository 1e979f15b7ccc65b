"""Every command in README.md runs as written, in README order, in a scratch folder holding the
input files it names (in.npz, observed.npz, batches.npz, my_module.py).

What is left out, and why: the install lines (``pip install ...``) and the test command itself,
which .ci/run executes on a clean checkout.  A command exits 0 or 1 (a verdict), never 2 (bad
input), 3 or 4 (an internal error), and never prints a traceback; where README states the exit
status in a comment ("# exit 1: refuted") that exact status is checked.
"""

from __future__ import annotations

import importlib.util
import re
import shlex
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
from normspec.oracle import batch_norm

ROOT = Path(__file__).resolve().parent.parent
README = (ROOT / "README.md").read_text()

MY_MODULE = '''
from normspec.oracle import batch_norm

def my_batch_norm(x, w, b, rm, rv, training, momentum, eps):
    """A stand-in for a user's implementation: exact, under Keras 3's convention."""
    r = batch_norm(x, w, b, rm, rv, training=training, momentum=momentum, eps=eps, convention="keras3")
    return r.y, r.running_mean, r.running_var
'''


def _commands() -> list[tuple[str, int | None]]:
    """(command, the exit status README states for it or None), in README order."""
    found = []
    for block in re.findall(r"```bash\n(.*?)```", README, re.S):
        for line in block.splitlines():
            words = shlex.split(line, comments=True)
            if not words or words[0] == "pip" or words[:3] == ["python", "-m", "pytest"]:
                continue
            said = re.search(r"#\s*exit (\d)", line)
            found.append((shlex.join(words), int(said.group(1)) if said else None))
    return found


COMMANDS = _commands()
NEEDS = {"torch": "torch", "demo": "torch", "keras_numpy": "keras"}


@pytest.fixture(scope="module")
def scratch(tmp_path_factory: pytest.TempPathFactory) -> Path:
    d = tmp_path_factory.mktemp("readme")
    rng = np.random.default_rng(0)
    x = rng.standard_normal((4, 3, 5, 3)).astype(np.float32)  # C = 3 on axis 1 and on axis -1
    params = {
        "weight": (1 + rng.random(3)).astype(np.float32),
        "bias": rng.standard_normal(3).astype(np.float32),
        "running_mean": np.zeros(3, np.float32),
        "running_var": np.ones(3, np.float32),
    }
    np.savez(d / "in.npz", x=x, **params)
    y = batch_norm(x, params["weight"], params["bias"], training=True, convention="torch").y
    np.savez(d / "observed.npz", x=x, weight=params["weight"], bias=params["bias"], y=y)
    np.savez(d / "batches.npz", x=rng.standard_normal((6, 8, 3, 2, 2)).astype(np.float32))
    (d / "my_module.py").write_text(MY_MODULE)
    return d


def test_readme_lists_the_commands_this_file_runs():
    assert len(COMMANDS) >= 20 and any(c.startswith("normspec audit") for c, _ in COMMANDS)


@pytest.mark.parametrize(("command", "stated"), COMMANDS, ids=[c[:60] for c, _ in COMMANDS])
def test_readme_command_runs(scratch: Path, command: str, stated: int | None) -> None:
    words = shlex.split(command)
    for word, module in NEEDS.items():
        if word in words and importlib.util.find_spec(module) is None:
            pytest.skip(f"needs {module}: pip install 'normspec[all]'")
    if words[0] == "normspec":
        words = [sys.executable, "-m", "normspec", *words[1:]]
    elif words[0] == "python":
        words = [sys.executable, *(str(ROOT / w) if w.startswith("benchmarks/") else w for w in words[1:])]
    done = subprocess.run(words, cwd=scratch, capture_output=True, text=True, timeout=900)
    told = f"{command}\n--- stdout\n{done.stdout[-3000:]}\n--- stderr\n{done.stderr[-3000:]}"
    assert "Traceback" not in done.stderr, told
    if stated is not None:
        assert done.returncode == stated, told
    else:
        assert done.returncode in (0, 1), told
