"""Speed of the correctly rounded oracle against a naive float64 numpy layer.

Both run in this process, on the same tensor, best of --repeat; the ratio is
what to compare across machines (absolute times vary 10-20 % run to run on
shared machines).  The oracle's time includes its exact statistics.

    python benchmarks/bench_oracle.py                     # (32,64,56,56) float32, normal data
    python benchmarks/bench_oracle.py --data large_mean   # x = 1e4 + U[0,1)
    python benchmarks/bench_oracle.py --shape 8 32 224 224 --json
    python benchmarks/bench_oracle.py --layer layer_norm  # (8192, 768), over the last axis
    python benchmarks/bench_oracle.py --layer group_norm  # (32,64,56,56), 32 groups

The family layers (layer_norm, rms_norm over the last axis; group_norm with 32
groups; instance_norm) have one mode: normalize with the statistics of the input.
"""

from __future__ import annotations

import argparse
import json
from typing import Any

import numpy as np
from _timing import best_of
from normspec.oracle import batch_norm, group_norm, instance_norm, layer_norm, rms_norm

from normspec import __version__


def naive_train(x: np.ndarray, eps: float = 1e-5) -> np.ndarray:
    axes = (0, *range(2, x.ndim))
    xd = x.astype(np.float64)
    m = xd.mean(axis=axes, keepdims=True)
    v = ((xd - m) ** 2).mean(axis=axes, keepdims=True)
    return ((xd - m) / np.sqrt(v + eps)).astype(x.dtype)


def naive_eval(x: np.ndarray, rm: np.ndarray, rv: np.ndarray, eps: float = 1e-5) -> np.ndarray:
    shape = (1, -1) + (1,) * (x.ndim - 2)
    xd = x.astype(np.float64)
    return ((xd - rm.reshape(shape)) / np.sqrt(rv.reshape(shape) + eps)).astype(x.dtype)


def naive_family(layer: str, x: np.ndarray, groups: int, eps: float = 1e-5) -> np.ndarray:
    xd = x.astype(np.float64)
    if layer == "rms_norm":
        return (xd / np.sqrt((xd * xd).mean(axis=-1, keepdims=True) + eps)).astype(x.dtype)
    rows = xd.reshape(x.shape[0], groups, -1) if layer == "group_norm" else xd.reshape(-1, x.shape[-1])
    if layer == "instance_norm":
        rows = xd.reshape(x.shape[0] * x.shape[1], -1)
    m = rows.mean(axis=-1, keepdims=True)
    v = ((rows - m) ** 2).mean(axis=-1, keepdims=True)
    return ((rows - m) / np.sqrt(v + eps)).reshape(x.shape).astype(x.dtype)


def oracle_family(layer: str, x: np.ndarray, groups: int, eps: float = 1e-5) -> np.ndarray:
    if layer == "layer_norm":
        return layer_norm(x, 1, eps=eps).y
    if layer == "rms_norm":
        return rms_norm(x, 1, eps=eps).y
    if layer == "group_norm":
        return group_norm(x, groups, eps=eps).y
    return instance_norm(x, eps=eps)


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument(
        "--layer",
        choices=["batch_norm", "layer_norm", "rms_norm", "group_norm", "instance_norm"],
        default="batch_norm",
    )
    p.add_argument("--shape", type=int, nargs="+", default=None, help="default (32,64,56,56); (8192,768) for LN/RMS")
    p.add_argument("--groups", type=int, default=32, help="GroupNorm's groups")
    p.add_argument("--data", choices=["normal", "large_mean"], default="normal")
    p.add_argument("--repeat", type=int, default=5)
    p.add_argument("--json", action="store_true", help="print one JSON object instead of a table")
    args = p.parse_args()

    rng = np.random.default_rng(0)
    if args.shape is None:
        args.shape = [8192, 768] if args.layer in ("layer_norm", "rms_norm") else [32, 64, 56, 56]
    shape = tuple(args.shape)
    x = rng.standard_normal(shape) if args.data == "normal" else 1e4 + rng.random(shape)
    x = x.astype(np.float32)
    c = shape[1]
    rm = rng.standard_normal(c).astype(np.float32)
    rv = (1 + rng.random(c)).astype(np.float32)

    undecided: dict[str, Any] = {}

    def oracle_train() -> None:
        undecided["train"] = batch_norm(x, None, None, rm, rv, training=True).undecided

    def oracle_eval() -> None:
        undecided["eval"] = batch_norm(x, None, None, rm, rv, training=False).undecided

    cases: list[tuple[str, Any, Any]] = [
        ("train", lambda: naive_train(x), oracle_train),
        ("eval", lambda: naive_eval(x, rm, rv), oracle_eval),
    ]
    if args.layer != "batch_norm":
        undecided["forward"] = None  # the family functions return only y

        def oracle_forward() -> None:
            oracle_family(args.layer, x, args.groups)

        cases = [("forward", lambda: naive_family(args.layer, x, args.groups), oracle_forward)]
    rows = []
    for mode, naive, oracle in cases:
        tn = best_of(naive, args.repeat)
        to = best_of(oracle, args.repeat)
        rows.append(
            {
                "mode": mode,
                "naive_float64_ms": 1e3 * tn,
                "oracle_ms": 1e3 * to,
                "ratio": to / tn,
                "oracle_Melem_per_s": x.size / to / 1e6,
                "exact_decisions": undecided[mode],
            }
        )
    result = {
        "normspec": __version__,
        "numpy": np.__version__,
        "layer": args.layer,
        "shape": list(shape),
        "dtype": "float32",
        "data": args.data,
        "goal_ratio": 3.0,
        "rows": rows,
    }
    if args.json:
        print(json.dumps(result, indent=2))
        return
    print(
        f"normspec {__version__}, numpy {np.__version__}: {args.layer} {list(shape)} float32, {args.data} data, "
        f"best of {args.repeat}"
    )
    print(f"{'mode':7} {'naive f64 ms':>13} {'oracle ms':>10} {'ratio':>6} {'Melem/s':>8} {'exact decisions':>16}")
    for r in rows:
        print(
            f"{r['mode']:7} {r['naive_float64_ms']:13.1f} {r['oracle_ms']:10.1f} {r['ratio']:6.2f} "
            f"{r['oracle_Melem_per_s']:8.1f} {'n/a' if r['exact_decisions'] is None else r['exact_decisions']:>16}"
        )
    print("goal: ratio <= 3.0 (correctly rounded, exact statistics, vs naive float64 numpy in the same run)")


if __name__ == "__main__":
    main()
