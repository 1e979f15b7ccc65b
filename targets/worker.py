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
import os
import sys
import traceback
from pathlib import Path
from typing import Any

import numpy as np

_BF16_KEYS = "bfloat16 keys"  # .npz files carry bfloat16 arrays as their uint16 bits, named here


def pack(arrays: dict[str, Any]) -> dict[str, Any]:
    """Arrays as an .npz without pickles holds them: bfloat16 (numpy has no such type) as its bits."""
    out = {k: np.asarray(v) for k, v in arrays.items()}
    bf16 = [k for k, v in out.items() if v.dtype.name == "bfloat16"]
    for k in bf16:
        out[k] = out[k].view(np.uint16)
    return {**out, _BF16_KEYS: np.array(bf16, dtype=str)} if bf16 else out


def unpack(data: dict[str, Any]) -> dict[str, Any]:
    """The inverse of :func:`pack` (ml_dtypes is imported only where bfloat16 arrays travel)."""
    out = dict(data)
    keys = [str(k) for k in out.pop(_BF16_KEYS, np.array([], dtype=str))]
    if keys:
        import ml_dtypes

        for k in keys:
            out[k] = out[k].view(ml_dtypes.bfloat16)
    return out


def _numeric(result: Any) -> str | None:
    """Why a target's result is not a dict of numeric arrays, or None when it is."""
    if not isinstance(result, dict):
        return f"returned {type(result).__name__}, not the protocol's arrays"
    for key, value in result.items():
        try:
            arr = np.asarray(value)
        except Exception as exc:  # ragged sequences and the like
            return f"{key}: not an array ({type(exc).__name__}: {exc})"
        if arr.dtype.kind not in "fiub" and arr.dtype.name != "bfloat16":
            return f"{key}: {arr.dtype} values ({type(value).__name__}), not numbers"
    return None


def main(argv: list[str]) -> int:
    target, outdir, *case_paths = argv
    from normspec.targets.adapters import get_adapter, prepare_environment

    # the protocol's start/done lines get a descriptor of their own; whatever the library prints
    # on stdout goes to stderr, so a chatty target cannot be mistaken for the protocol
    protocol = os.fdopen(os.dup(1), "w", buffering=1)
    os.dup2(2, 1)

    adapter = get_adapter(target)
    prepare_environment(adapter)
    for case_path in case_paths:
        name = Path(case_path).stem
        protocol.write(f"start {name}\n")
        with np.load(case_path, allow_pickle=False) as data:
            case = unpack({k: data[k] for k in data.files})
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
            protocol.write(f"done {name}\n")
            continue
        malformed = _numeric(result)
        if malformed is not None:  # not a refusal: the target broke the protocol
            message = json.dumps({"error": "malformed output", "message": malformed[:2000], "crash": True})
            (Path(outdir) / f"{name}.json").write_text(message)
        else:
            np.savez(Path(outdir) / f"{name}.npz", **pack(result))
        protocol.write(f"done {name}\n")
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
