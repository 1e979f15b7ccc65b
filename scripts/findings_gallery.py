"""Regenerate docs/findings.md: audit every target named in the README on the installed versions and
write each finding with exit-status weight with a standalone reproducer (docs/findings/TARGET/CASE/).

    python scripts/findings_gallery.py                 # every target (venv targets need scripts/setup-target-venvs.sh)
    python scripts/findings_gallery.py torch keras_numpy --page /tmp/findings.md
"""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path


def main(argv: list[str] | None = None) -> int:
    from normspec.targets.adapters import ADAPTERS
    from normspec.targets.family_adapters import FAMILY_ADAPTERS
    from normspec.targets.gallery import build_gallery

    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("targets", nargs="*", help="targets to audit (default: all)")
    parser.add_argument("--page", type=Path, default=Path(__file__).resolve().parent.parent / "docs" / "findings.md")
    args = parser.parse_args(argv)
    every = {**ADAPTERS, **FAMILY_ADAPTERS}
    targets = args.targets or [t for t, a in every.items() if a.deliberate is None]  # not the deliberate misuses
    t0 = time.perf_counter()

    def progress(target: str) -> None:
        print(f"[{time.perf_counter() - t0:6.1f} s] auditing {target}", file=sys.stderr, flush=True)

    data = build_gallery(targets, args.page, progress=progress)
    weighty = [e for e in data["entries"] if e["kind"] != "unavailable"]
    print(f"{len(weighty)} finding(s) from {len(targets)} target(s); wrote {args.page}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
