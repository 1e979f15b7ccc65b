"""The project documents itself: citations point into ``docs/``, and what they cite exists."""

import re
import subprocess
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent
DOCS = ROOT / "docs"

# A citation of bug entries: "docs/bug-corpus.md #38", or a list "docs/bug-corpus.md #23, #38, #43".
# A number after anything else ("pytorch#1381, #77014") belongs to that tracker, not to the corpus.
_BUG_CITATION = re.compile(r"docs/bug-corpus\.md #(\d+)((?:,\s*#\d+)*)")
_BUG_ENTRY = re.compile(r"^### #(\d+)\b", re.M)
# A path from the repository root, "docs/<file>.md", not the tail of a URL or of another path.
_DOC_PATH = re.compile(r"(?<![\w/.-])docs/([\w.-]+\.md)\b")
# Spelled in pieces so that this file does not cite them itself.
_OUTSIDE = ("../" + "shared", "shared/" + "reference")


def _tracked_files() -> list[Path]:
    """Tracked files, plus new ones git does not ignore (so a file is checked before its first commit)."""
    try:
        out = subprocess.run(
            ["git", "ls-files", "-z", "--cached", "--others", "--exclude-standard"],
            cwd=ROOT,
            capture_output=True,
            text=True,
            check=True,
        ).stdout
    except (OSError, subprocess.CalledProcessError):
        pytest.skip("not a git checkout")
    names = sorted(set(out.split("\0")) - {""})
    return [ROOT / name for name in names if (ROOT / name).is_file()]


def _read(path: Path) -> str | None:
    try:
        return path.read_text(encoding="utf-8")
    except (UnicodeDecodeError, OSError):
        return None  # binary files cite nothing


def _texts() -> dict[str, str]:
    texts = {}
    for path in _tracked_files():
        text = _read(path)
        if text is not None:
            texts[path.relative_to(ROOT).as_posix()] = text
    return texts


def _bug_entries() -> set[int]:
    return {int(n) for n in _BUG_ENTRY.findall((DOCS / "bug-corpus.md").read_text(encoding="utf-8"))}


def test_bug_corpus_is_numbered_without_gaps():
    entries = [int(n) for n in _BUG_ENTRY.findall((DOCS / "bug-corpus.md").read_text(encoding="utf-8"))]
    assert entries == list(range(1, len(entries) + 1)), "entries are #1..#N in order, each once"
    assert len(entries) >= 61


def test_nothing_cites_material_outside_the_project():
    offenders = [
        f"{name}:{lineno}: {line.strip()}"
        for name, text in _texts().items()
        if not name.startswith("docs/")
        for lineno, line in enumerate(text.splitlines(), 1)
        if any(marker in line for marker in _OUTSIDE)
    ]
    assert not offenders, "cite docs/ instead of files outside the project:\n" + "\n".join(offenders)


def test_cited_bug_entries_exist():
    entries = _bug_entries()
    missing = []
    for name, text in _texts().items():
        for m in _BUG_CITATION.finditer(text):
            numbers = [int(m.group(1))] + [int(n) for n in re.findall(r"#(\d+)", m.group(2))]
            missing += [f"{name}: docs/bug-corpus.md #{n}" for n in numbers if n not in entries]
        if name.startswith("docs/") and name != "docs/bug-corpus.md":  # inside docs/, entries are cited as "bug #N"
            missing += [f"{name}: bug #{n}" for n in map(int, re.findall(r"\bbugs? #(\d+)", text)) if n not in entries]
    assert not missing, "cited entries absent from docs/bug-corpus.md:\n" + "\n".join(missing)


def test_bug_citations_name_the_projects_corpus():
    """Entry numbers cite docs/bug-corpus.md; a "bugs.md #N" names a file the project does not ship."""
    bare = [
        f"{name}:{lineno}: {line.strip()}"
        for name, text in _texts().items()
        for lineno, line in enumerate(text.splitlines(), 1)
        if re.search(r"\bbugs\.md\b", line) and name != "tests/test_docs.py"
    ]
    assert not bare, 'write "docs/bug-corpus.md #N":\n' + "\n".join(bare)


def test_cited_docs_files_exist():
    missing = sorted(
        {
            f"{name}: docs/{target}"
            for name, text in _texts().items()
            for target in _DOC_PATH.findall(text)
            if not (DOCS / target).is_file()
        }
    )
    assert not missing, "cited files absent from docs/:\n" + "\n".join(missing)


def test_relative_links_inside_docs_resolve():
    missing = [
        f"{path.name}: {target}"
        for path in DOCS.glob("*.md")
        for target in re.findall(r"\]\(([^)#:]+)(?:#[^)]*)?\)", path.read_text(encoding="utf-8"))
        if not (path.parent / target).exists()
    ]
    assert not missing, "broken relative links:\n" + "\n".join(missing)
