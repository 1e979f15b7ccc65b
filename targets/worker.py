"""Run cases on one adapter, in a process of its own.

    python -m normspec.targets.worker TARGET OUTDIR CASE.npz [CASE.npz ...]

For each case, OUTDIR/NAME.npz holds the result, or OUTDIR/NAME.json says
which exception the library raised (it refused the case).  A case with
neither did not finish: the process crashed or hung there, and the auditor
runs the remaining cases again in a fresh process.  The worker prints
``start NAME`` and ``done NAME`` lines, which is how the auditor times each case.
"""

from __future__ import annotations

import json
import sys
import traceback
from pathlib import Path
from typing import Any

import numpy as np


def main(argv: list[str]) -> int:
    target, outdir, *case_paths = argv
    from normspec.targets.adapters import get_adapter, prepare_environment

    adapter = get_adapter(target)
    prepare_environment(adapter)
    for case_path in case_paths:
        name = Path(case_path).stem
        sys.stdout.write(f"start {name}\n")
        sys.stdout.flush()
        with np.load(case_path, allow_pickle=False) as data:
            case = {k: data[k] for k in data.files}
        case["training"] = bool(case["training"])
        case["momentum"] = float(case["momentum"])
        case["eps"] = float(case["eps"])
        case["backward"] = bool(case.get("backward", True))
        try:
            if "dy" in case:  # a backward case
                if adapter.backward is None:
                    raise NotImplementedError(f"no backward adapter for {target}")
                result = adapter.backward(case)
            else:
                result = adapter.run(case)
        except Exception as exc:  # the library refused: a result, reported as such
            (Path(outdir) / f"{name}.json").write_text(
                json.dumps(
                    {
                        "error": type(exc).__name__,
                        "message": str(exc)[:2000],
                        "where": traceback.format_exc(limit=3)[-2000:],
                    }
                )
            )
            sys.stdout.write(f"done {name}\n")
            sys.stdout.flush()
            continue
        arrays: dict[str, Any] = {k: np.asarray(v) for k, v in result.items()}
        np.savez(Path(outdir) / f"{name}.npz", **arrays)
        sys.stdout.write(f"done {name}\n")
        sys.stdout.flush()
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
