"""LayerNorm and RMSNorm float32 kernels against torch 2.13 CPU and memory bandwidth, in one run.

Traffic: x read once (a row stays in cache between its statistics and its outputs) and y written once.
Reported: time, speed-up over torch, share of the copy bandwidth, and accuracy against the oracle.

    python benchmarks/bench_kernels_family.py [--shapes 8192x768 2048x4096] [--threads 1 2]
"""

from __future__ import annotations

import argparse

import numpy as np
from _timing import best_of


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--shapes", nargs="+", default=["8192x768", "2048x4096", "65536x128"])
    p.add_argument("--threads", nargs="+", type=int, default=[1, 2])
    p.add_argument("--repeat", type=int, default=5)
    args = p.parse_args()

    import numba
    import torch
    from normspec.kernels import layer_norm, rms_norm
    from normspec.oracle import layer_norm as exact_ln
    from normspec.oracle import rms_norm as exact_rms
    from normspec.oracle import ulp_distance

    print(f"numba {numba.__version__}, torch {torch.__version__}")
    print(
        f"{'shape':11} {'thr':>3} {'copy GB/s':>9} | {'LN ms':>6} {'torch':>6} {'x torch':>7} {'%bw':>4} | "
        f"{'RMS ms':>6} {'torch':>6} {'x torch':>7} {'%bw':>4}"
    )
    for threads in args.threads:
        numba.set_num_threads(threads)
        torch.set_num_threads(threads)
        for spec in args.shapes:
            r, f = (int(v) for v in spec.split("x"))
            rng = np.random.default_rng(0)
            x = rng.standard_normal((r, f)).astype(np.float32)
            g, b = rng.standard_normal(f).astype(np.float32), rng.standard_normal(f).astype(np.float32)
            dst = np.empty_like(x)
            bw = 2 * x.nbytes / best_of(lambda x=x, dst=dst: np.copyto(dst, x), args.repeat)
            xt, gt, bt = torch.from_numpy(x), torch.from_numpy(g), torch.from_numpy(b)
            t_ln = best_of(lambda: layer_norm(x, 1, g, b), args.repeat)
            t_tln = best_of(lambda: torch.nn.functional.layer_norm(xt, (f,), gt, bt), args.repeat)
            t_rms = best_of(lambda: rms_norm(x, 1, g), args.repeat)
            t_trms = best_of(lambda: torch.nn.functional.rms_norm(xt, (f,), gt), args.repeat)
            print(
                f"{spec:11} {threads:3d} {bw / 1e9:9.1f} | {1e3 * t_ln:6.2f} {1e3 * t_tln:6.2f} {t_tln / t_ln:7.2f} "
                f"{100 * 2 * x.nbytes / t_ln / bw:4.0f} | {1e3 * t_rms:6.2f} {1e3 * t_trms:6.2f} "
                f"{t_trms / t_rms:7.2f} {100 * 2 * x.nbytes / t_rms / bw:4.0f}"
            )
    rng = np.random.default_rng(1)
    x = (rng.standard_normal((256, 768)) + 2000).astype(np.float32)
    for name, got, want in (("LayerNorm", layer_norm(x), exact_ln(x, 1)), ("RMSNorm", rms_norm(x), exact_rms(x, 1))):
        d = ulp_distance(got, want)
        print(
            f"accuracy, {name} on rows of mean 2000 (pytorch#51102): max {d.max():.0f} ULP, "
            f"{100 * np.mean(d == 0):.3f} % correctly rounded"
        )


if __name__ == "__main__":
    main()
