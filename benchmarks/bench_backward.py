"""Exact backward throughput: normspec.oracle's layer_norm_backward against a naive float64 numpy backward.

Both run on the same float32 tensor in the same process, one after the other, each --runs
times; the report gives medians with min-max, elements per second, and the ratio.  The
naive backward is the textbook closed form in float64 (not correctly rounded); it is the
peer a user would otherwise write.  Also reported: how many outputs the exact path settled.

    python benchmarks/bench_backward.py                    # (8192, 768), 5 runs
    python benchmarks/bench_backward.py --shape 4096x4096 --runs 3 --json out.json
"""

from __future__ import annotations

import argparse
import json
import statistics
import time

import numpy as np


def naive_backward(x: np.ndarray, dy: np.ndarray, w: np.ndarray, eps: float) -> tuple[np.ndarray, ...]:
    xd, gd, wd = x.astype(np.float64), dy.astype(np.float64), w.astype(np.float64)
    mu = xd.mean(axis=-1, keepdims=True)
    r = 1.0 / np.sqrt(((xd - mu) ** 2).mean(axis=-1, keepdims=True) + eps)
    xhat = (xd - mu) * r
    h = gd * wd
    dx = r * (h - h.mean(axis=-1, keepdims=True) - xhat * (h * xhat).mean(axis=-1, keepdims=True))
    return dx.astype(x.dtype), (gd * xhat).sum(axis=0).astype(w.dtype), gd.sum(axis=0).astype(w.dtype)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--shape", default="8192x768", help="rows x features (default 8192x768)")
    ap.add_argument("--runs", type=int, default=5, help="timed runs of each side (default 5)")
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--json", help="also write the figures to this file")
    args = ap.parse_args()
    from normspec.oracle.backward import layer_norm_backward

    rows, feat = (int(v) for v in args.shape.split("x"))
    rng = np.random.default_rng(args.seed)
    x = rng.standard_normal((rows, feat)).astype(np.float32)
    dy = rng.standard_normal((rows, feat)).astype(np.float32)
    w = rng.standard_normal(feat).astype(np.float32)
    eps = 1e-5

    def timed(f):  # type: ignore[no-untyped-def]
        out, times = None, []
        for _ in range(args.runs):
            t0 = time.perf_counter()
            out = f()
            times.append(time.perf_counter() - t0)
        return out, times

    exact, t_exact = timed(lambda: layer_norm_backward(x, dy, 1, w, eps=eps))
    naive, t_naive = timed(lambda: naive_backward(x, dy, w, eps))
    n = x.size
    med_e, med_n = statistics.median(t_exact), statistics.median(t_naive)
    differs = int((naive[0] != exact.dx).sum())
    report = {
        "shape": [rows, feat],
        "dtype": "float32",
        "runs": args.runs,
        "exact_s": {"median": med_e, "min": min(t_exact), "max": max(t_exact)},
        "naive_float64_s": {"median": med_n, "min": min(t_naive), "max": max(t_naive)},
        "exact_elements_per_s": n / med_e,
        "exact_over_naive": med_e / med_n,
        "settled_exactly": exact.undecided,
        "naive_dx_elements_not_correctly_rounded": differs,
    }
    print(f"LayerNorm backward, ({rows}, {feat}) float32, {args.runs} runs each (median, min-max)")
    print(
        f"  exact (normspec)   {med_e:8.3f} s  ({min(t_exact):.3f}-{max(t_exact):.3f})  {n / med_e / 1e6:6.2f} M elements/s"
    )
    print(
        f"  naive float64      {med_n:8.3f} s  ({min(t_naive):.3f}-{max(t_naive):.3f})  {n / med_n / 1e6:6.2f} M elements/s"
    )
    print(f"  exact / naive      {med_e / med_n:8.1f}x the time")
    print(f"  outputs settled by exact arithmetic: {exact.undecided}")
    print(f"  naive dx elements that are not the correctly rounded value: {differs} of {n}")
    if args.json:
        with open(args.json, "w") as fh:
            json.dump(report, fh, indent=2)


if __name__ == "__main__":
    main()
