"""README's Python examples run as written."""

import re
from pathlib import Path

README = Path(__file__).resolve().parent.parent / "README.md"


def test_readme_python_blocks_run():
    """In order, in one namespace, as a reader pasting them into one session would run them."""
    blocks = re.findall(r"```python\n(.*?)```", README.read_text(), re.S)
    assert blocks, "README has Python examples"
    namespace: dict = {}
    for code in blocks:
        exec(compile(code, str(README), "exec"), namespace)


def test_readme_opens_with_install_then_test_command():
    commands = re.findall(r"```bash\n(.*?)```", README.read_text(), re.S)[:2]
    assert commands[0].strip().startswith("pip install") and "normspec demo" in commands[0]
    assert commands[1].strip() == "python -m pytest"
    ci = (README.parent / ".ci" / "run").read_text()
    assert commands[0].strip() in ci and commands[1].strip() in ci
