"""The float32 CPU kernels against torch 2.13 CPU and against memory bandwidth, in one run.

For each shape and thread count: copy bandwidth (the faster of numpy.copyto and a numba copy
of x, bytes read + written),
torch.nn.functional.batch_norm (training; evaluation into a preallocated output through
aten's native_batch_norm.out), and normspec.kernels.batch_norm (training; evaluation with
out=).  Reported: times, speed-up over torch, and the kernel's traffic as a share of copy
bandwidth (training moves x twice in and y once out; evaluation x once and y once).
The JIT compile time is measured separately, in a fresh process without numba's cache.

    python benchmarks/bench_kernels.py
    python benchmarks/bench_kernels.py --shapes 32x64x56x56 --threads 1 --json
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile

import numpy as np
from _timing import best_of


def compile_time() -> float:
    code = (
        "import time, numpy as np\n"
        "from normspec.kernels import batch_norm\n"
        "x = np.ones((2, 3, 4, 4), np.float32); x[0, 0, 0, 0] = 2\n"
        "t = time.perf_counter(); batch_norm(x, None, None, np.zeros(3, np.float32), np.ones(3, np.float32), True)\n"
        "print(time.perf_counter() - t)\n"
    )
    with tempfile.TemporaryDirectory() as cache:
        env = dict(os.environ, NUMBA_CACHE_DIR=cache)
        out = subprocess.run([sys.executable, "-c", code], env=env, capture_output=True, text=True, check=True)
    return float(out.stdout.strip().splitlines()[-1])


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--shapes", nargs="+", default=["32x64x56x56", "256x256x14x14", "8x32x224x224"])
    p.add_argument("--threads", nargs="+", type=int, default=[1, 2])
    p.add_argument("--repeat", type=int, default=5)
    p.add_argument("--json", action="store_true")
    args = p.parse_args()

    import numba
    import torch
    from normspec.kernels import batch_norm
    from normspec.kernels import batchnorm as kb
    from normspec.oracle import batch_norm as oracle
    from normspec.oracle import ulp_distance
    from numba import njit, prange

    @njit(parallel=True, cache=True)
    def copy(src, dst):  # pragma: no cover - compiled
        for i in prange(src.size):
            dst[i] = src[i]

    rows = []
    jit_s = compile_time()
    for threads in args.threads:
        numba.set_num_threads(threads)
        torch.set_num_threads(threads)
        for spec in args.shapes:
            shape = tuple(int(v) for v in spec.split("x"))
            rng = np.random.default_rng(0)
            x = rng.standard_normal(shape).astype(np.float32)
            c = shape[1]
            w, b = rng.standard_normal(c).astype(np.float32), rng.standard_normal(c).astype(np.float32)
            rm, rv = np.zeros(c, np.float32), np.ones(c, np.float32)
            y = np.empty_like(x)
            flat, dst = x.ravel(), np.empty(x.size, np.float32)
            # the copy reference: the faster of numpy's copy and a numba copy on the same threads
            t_copy = min(
                best_of(lambda flat=flat, dst=dst: copy(flat, dst), args.repeat),
                best_of(lambda flat=flat, dst=dst: np.copyto(dst, flat), args.repeat),
            )
            bw = 2 * x.nbytes / t_copy
            xt, wt, bt = torch.from_numpy(x), torch.from_numpy(w), torch.from_numpy(b)
            rmt, rvt = torch.from_numpy(rm.copy()), torch.from_numpy(rv.copy())
            yt, sm, si = torch.empty_like(xt), torch.empty(c), torch.empty(c)
            t_torch_train = best_of(
                lambda: torch.nn.functional.batch_norm(xt, rmt, rvt, wt, bt, training=True), args.repeat
            )
            t_torch_eval = best_of(
                lambda: torch.ops.aten.native_batch_norm.out(
                    xt, wt, bt, rmt, rvt, False, 0.1, 1e-5, out=yt, save_mean=sm, save_invstd=si
                ),
                args.repeat,
            )
            t_train = best_of(lambda: batch_norm(x, w, b, rm, rv, True, out=y), args.repeat)
            fallbacks = kb.last_run.fallback_elements
            t_eval = best_of(lambda: batch_norm(x, w, b, rm, rv, False, out=y), args.repeat)
            rows.append(
                {
                    "shape": spec,
                    "threads": threads,
                    "copy_GBps": bw / 1e9,
                    "train_ms": 1e3 * t_train,
                    "torch_train_ms": 1e3 * t_torch_train,
                    "train_speedup_vs_torch": t_torch_train / t_train,
                    "train_bandwidth_share": 3 * x.nbytes / t_train / bw,
                    "eval_ms": 1e3 * t_eval,
                    "torch_eval_prealloc_ms": 1e3 * t_torch_eval,
                    "eval_speedup_vs_torch": t_torch_eval / t_eval,
                    "eval_bandwidth_share": 2 * x.nbytes / t_eval / bw,
                    "fallback_elements_train": fallbacks,
                }
            )
    # accuracy on one shape, against the oracle
    rng = np.random.default_rng(1)
    acc = {}
    for kind in ("normal", "large_mean"):
        x = rng.standard_normal((32, 64, 56, 56)) if kind == "normal" else 1e4 + rng.random((32, 64, 56, 56))
        x = x.astype(np.float32)
        y, _, _ = batch_norm(x, None, None, np.zeros(64, np.float32), np.ones(64, np.float32), True)
        d = ulp_distance(y, oracle(x, training=True).y)
        acc[kind] = {"max_ulp": float(d.max()), "correctly_rounded_share": float(np.mean(d == 0))}
    result = {
        "numba": numba.__version__,
        "torch": torch.__version__,
        "jit_compile_s": jit_s,
        "rows": rows,
        "accuracy_32x64x56x56": acc,
    }
    if args.json:
        print(json.dumps(result, indent=2))
        return
    print(f"numba {numba.__version__}, torch {torch.__version__}; first call with a cold cache (JIT): {jit_s:.2f} s")
    hdr = (
        f"{'shape':15} {'thr':>3} {'copy GB/s':>9} | {'train ms':>8} {'torch':>7} {'x torch':>7} {'%bw':>5} | "
        f"{'eval ms':>7} {'torch*':>7} {'x torch':>7} {'%bw':>5}"
    )
    print(hdr)
    for r in rows:
        print(
            f"{r['shape']:15} {r['threads']:3d} {r['copy_GBps']:9.1f} | {r['train_ms']:8.2f} {r['torch_train_ms']:7.2f} "
            f"{r['train_speedup_vs_torch']:7.2f} {100 * r['train_bandwidth_share']:5.0f} | {r['eval_ms']:7.2f} "
            f"{r['torch_eval_prealloc_ms']:7.2f} {r['eval_speedup_vs_torch']:7.2f} {100 * r['eval_bandwidth_share']:5.0f}"
        )
    print(
        "torch* = native_batch_norm.out into a preallocated output.  Goals: train >= 3x torch and >= 80 % of copy "
        "bandwidth; eval >= torch."
    )
    for kind, a in acc.items():
        print(
            f"accuracy ({kind}, 32x64x56x56, training): max {a['max_ulp']:.0f} ULP from the exact value, "
            f"{100 * a['correctly_rounded_share']:.4f} % correctly rounded"
        )


if __name__ == "__main__":
    main()
