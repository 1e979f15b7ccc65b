"""The CUDA BatchNorm kernel against torch's (cuDNN) and against HBM bandwidth, on one GPU, in one run.

For each shape: device-to-device copy bandwidth (bytes read + written), torch.nn.functional.
batch_norm on CUDA tensors (training; evaluation), and normspec.kernels.cuda.batch_norm on the
same values in device memory (training; evaluation), each synchronized.  Both sides allocate
their output on every call (torch through its caching allocator, the kernel through numba's).
Reported: medians (min-max) of ``--repeat`` calls after a warm-up, the speed-up over torch, the
kernel's traffic as a share of copy bandwidth (training reads x twice and writes y; evaluation
reads x and writes y), and the kernel's accuracy against the oracle (every element correctly
rounded is the claim).  The first call (JIT compilation) is timed separately.  One run of the
default shapes takes about a minute of GPU time.

    python benchmarks/bench_kernels_cuda.py                  # on a machine with an NVIDIA GPU
    python benchmarks/bench_kernels_cuda.py --json results.json
    NUMBA_ENABLE_CUDASIM=1 python benchmarks/bench_kernels_cuda.py --shapes 2x3x4x4 --repeat 1
        # the simulator: checks that the script runs; its times mean nothing

Without a GPU (and without the simulator) it says so and exits with status 2.
"""

from __future__ import annotations

import argparse
import json
import sys
import time

import numpy as np


def timed(fn, sync, repeat: int) -> dict[str, float]:
    """Median, minimum and maximum seconds of ``repeat`` synchronized calls after a warm-up."""
    import statistics

    fn()
    times = []
    for _ in range(repeat):
        sync()
        t = time.perf_counter()
        fn()
        sync()
        times.append(time.perf_counter() - t)
    return {"median": statistics.median(times), "min": min(times), "max": max(times)}


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--shapes", nargs="+", default=["32x64x56x56", "256x256x14x14", "8x32x224x224"])
    p.add_argument("--repeat", type=int, default=20)
    p.add_argument("--json", metavar="FILE", help="also write the figures to FILE as JSON")
    args = p.parse_args()

    from normspec.kernels import cuda as kc

    ok, why = kc.available()
    if not ok:
        print(f"not run: {why}", file=sys.stderr)
        return 2
    from normspec.oracle import batch_norm as oracle
    from normspec.oracle import ulp_distance
    from numba import cuda

    try:
        import torch

        has_torch = torch.cuda.is_available()
    except ImportError:
        has_torch = False

    def sync() -> None:
        cuda.synchronize()
        if has_torch:
            torch.cuda.synchronize()

    first = time.perf_counter()
    kc.batch_norm(np.ones((2, 3, 4), np.float32) + np.arange(4, dtype=np.float32))
    jit_s = time.perf_counter() - first
    rows = []
    for spec in args.shapes:
        shape = tuple(int(v) for v in spec.split("x"))
        rng = np.random.default_rng(0)
        x = rng.standard_normal(shape).astype(np.float32)
        c = shape[1]
        w, b = rng.standard_normal(c).astype(np.float32), rng.standard_normal(c).astype(np.float32)
        rm, rv = np.zeros(c, np.float32), np.ones(c, np.float32)
        xd, yd = cuda.to_device(x), cuda.device_array_like(x)
        t_copy = timed(lambda xd=xd, yd=yd: yd.copy_to_device(xd), sync, args.repeat)
        bw = 2 * x.nbytes / t_copy["median"]
        t_train = timed(lambda xd=xd: kc.batch_norm(xd, w, b, rm, rv, True), sync, args.repeat)
        t_eval = timed(lambda xd=xd: kc.batch_norm(xd, w, b, rm, rv, False), sync, args.repeat)
        row = {
            "shape": spec,
            "copy_GBps": bw / 1e9,
            "train_s": t_train,
            "eval_s": t_eval,
            "train_bandwidth_share": 3 * x.nbytes / t_train["median"] / bw,
            "eval_bandwidth_share": 2 * x.nbytes / t_eval["median"] / bw,
        }
        if has_torch:
            xt = torch.from_numpy(x).cuda()
            wt, bt = torch.from_numpy(w).cuda(), torch.from_numpy(b).cuda()
            rmt, rvt = torch.from_numpy(rm).cuda(), torch.from_numpy(rv).cuda()
            fn = torch.nn.functional.batch_norm
            row["torch_train_s"] = timed(lambda: fn(xt, rmt, rvt, wt, bt, training=True), sync, args.repeat)
            row["torch_eval_s"] = timed(lambda: fn(xt, rmt, rvt, wt, bt, training=False), sync, args.repeat)
            row["train_speedup_vs_torch"] = row["torch_train_s"]["median"] / t_train["median"]
            row["eval_speedup_vs_torch"] = row["torch_eval_s"]["median"] / t_eval["median"]
        rows.append(row)
    shape = tuple(int(v) for v in args.shapes[0].split("x"))
    acc = {}
    for kind in ("normal", "large_mean"):
        rng = np.random.default_rng(1)
        x = rng.standard_normal(shape) if kind == "normal" else 1e4 + rng.random(shape)
        x = x.astype(np.float32)
        y, _, _ = kc.batch_norm(x, training=True)
        d = ulp_distance(y, oracle(x, training=True).y)
        acc[kind] = {"max_ulp": float(d.max()), "correctly_rounded_share": float(np.mean(d == 0))}
    result = {"device": why, "jit_first_call_s": jit_s, "torch_cuda": has_torch, "rows": rows, "accuracy": acc}
    if args.json:
        with open(args.json, "w") as fh:
            json.dump(result, fh, indent=1)
    print(f"{why}; first call (JIT): {jit_s:.2f} s; torch on CUDA: {has_torch}; medians of {args.repeat} calls")
    print(
        f"{'shape':15} {'copy GB/s':>9} | {'train ms':>8} {'x torch':>7} {'%bw':>5} | {'eval ms':>7} {'x torch':>7} {'%bw':>5}"
    )
    for r in rows:
        tx, ex = r.get("train_speedup_vs_torch", float("nan")), r.get("eval_speedup_vs_torch", float("nan"))
        print(
            f"{r['shape']:15} {r['copy_GBps']:9.1f} | {1e3 * r['train_s']['median']:8.3f} {tx:7.2f} "
            f"{100 * r['train_bandwidth_share']:5.0f} | {1e3 * r['eval_s']['median']:7.3f} {ex:7.2f} "
            f"{100 * r['eval_bandwidth_share']:5.0f}"
        )
    print("Goals: >= 80 % of copy bandwidth and at least cuDNN's speed, every element correctly rounded.")
    for kind, a in acc.items():
        print(
            f"accuracy ({kind}, {args.shapes[0]}, training): max {a['max_ulp']:.0f} ULP, "
            f"{100 * a['correctly_rounded_share']:.4f} % correctly rounded"
        )
    return 0


if __name__ == "__main__":
    sys.exit(main())
