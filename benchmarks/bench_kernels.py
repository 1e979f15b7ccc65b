"""The float32 CPU BatchNorm kernels against torch and against a memory copy, measured fairly.

Both sides run under the same allocation policy, in two modes:

* ``fresh``: each call returns a new output (``torch.nn.functional.batch_norm``; a plain
  ``normspec.kernels.batch_norm(...)`` call), its memory new from the system allocator on both
  sides: the kernels' cache of dropped outputs is turned off (``set_output_cache(0)``), and
  every output is kept alive until the timing loop ends, as a training loop keeps activations
  for the backward pass.  Each call pays for fresh pages, on both sides alike.
* ``prealloc``: each call writes into one preallocated output (torch's
  ``aten.native_batch_norm.out``, in training and in evaluation; the kernel's ``out=``).

Each library runs in a process of its own (``--side kernel`` / ``--side torch``), one after
the other, on the same seeded data and thread count; the copy reference (the faster of
numpy's copy and a parallel numba copy, under the same allocation mode) runs in the kernel's
process.  Figures are medians with min-max over ``--repeat`` calls after a warm-up call.
Accuracy against the oracle is measured in a third process.

Reported per shape, thread count, mode and phase: both times, torch's time over the kernel's
(``x torch``), the kernel's speed as a share of a copy of x (``copy``: copy time over kernel
time) and the bandwidth share (bytes the kernel's design moves per second over the copy's:
training reads x twice and writes y once, evaluation reads x once and writes y once).

    python benchmarks/bench_kernels.py                              # table
    python benchmarks/bench_kernels.py --json results.json          # also write the figures
    python benchmarks/bench_kernels.py --markdown results.json      # RESULTS.md table from a JSON
    python benchmarks/bench_kernels.py --shapes 32x64x56x56 --threads 1 --repeat 9
"""

from __future__ import annotations

import sys
from typing import Any

import numpy as np
from _timing import bench_main, copy_reference, header, spread

SHAPES = ["32x64x56x56", "256x256x14x14", "8x32x224x224"]
MODES = ("fresh", "prealloc")
PHASES = ("train", "eval")
TRAFFIC = {"train": 3, "eval": 2}  # passes over a tensor of x's size, by design
GOALS = {"x_torch": 3.0, "bandwidth_share": 0.8}  # training, both modes (issue: kernels, item 2)


def _data(spec: str) -> tuple[np.ndarray, ...]:
    shape = tuple(int(v) for v in spec.split("x"))
    rng = np.random.default_rng(0)
    c = shape[1]
    x = rng.standard_normal(shape).astype(np.float32)
    w, b = rng.standard_normal(c).astype(np.float32), rng.standard_normal(c).astype(np.float32)
    return x, w, b, np.zeros(c, np.float32), np.ones(c, np.float32)


def _kernel_side(shapes: list[str], threads: int, repeat: int) -> dict[str, Any]:
    import numba
    from normspec.kernels import batch_norm, set_output_cache
    from normspec.kernels import batchnorm as kb

    numba.set_num_threads(threads)
    set_output_cache(0)  # fresh outputs come from the system allocator, as torch's do
    out: dict[str, Any] = {"numba": numba.__version__, "rows": {}}
    for spec in shapes:
        x, w, b, rm, rv = _data(spec)
        y = np.empty_like(x)
        row: dict[str, Any] = {"copy": copy_reference(x, repeat)}
        for phase in PHASES:
            training = phase == "train"
            row[phase] = {
                "fresh": spread(lambda: batch_norm(x, w, b, rm, rv, training), repeat, hold=True),
                "prealloc": spread(lambda: batch_norm(x, w, b, rm, rv, training, out=y), repeat),
            }
            if training:
                row["fallback_elements"] = kb.last_run.fallback_elements
                row["fallback_channels"] = kb.last_run.fallback_channels
                row["resummed_channels"] = kb.last_run.resummed_channels
        out["rows"][spec] = row
    return out


def _torch_side(shapes: list[str], threads: int, repeat: int) -> dict[str, Any]:
    import torch

    torch.set_num_threads(threads)
    f, native = torch.nn.functional.batch_norm, torch.ops.aten.native_batch_norm.out
    out: dict[str, Any] = {"torch": torch.__version__, "rows": {}}
    for spec in shapes:
        xt, wt, bt, rmt, rvt = (torch.from_numpy(a) for a in _data(spec))
        yt, sm, si = torch.empty_like(xt), torch.empty(xt.shape[1]), torch.empty(xt.shape[1])
        row = {}
        for phase in PHASES:
            training = phase == "train"
            row[phase] = {
                "fresh": spread(lambda: f(xt, rmt, rvt, wt, bt, training=training), repeat, hold=True),
                "prealloc": spread(
                    lambda: native(xt, wt, bt, rmt, rvt, training, 0.1, 1e-5, out=yt, save_mean=sm, save_invstd=si),
                    repeat,
                ),
            }
        out["rows"][spec] = row
    return out


def _accuracy_side() -> dict[str, Any]:
    """The kernel in training against the oracle on (32,64,56,56): normal data, 1e4 + U[0,1)."""
    from normspec.kernels import batch_norm
    from normspec.kernels import batchnorm as kb
    from normspec.oracle import batch_norm as oracle
    from normspec.oracle import ulp_distance

    rng = np.random.default_rng(1)
    acc = {}
    for kind in ("normal", "large_mean"):
        x = rng.standard_normal((32, 64, 56, 56)) if kind == "normal" else 1e4 + rng.random((32, 64, 56, 56))
        x = x.astype(np.float32)
        y, _, _ = batch_norm(x, None, None, np.zeros(64, np.float32), np.ones(64, np.float32), True)
        fallbacks = kb.last_run.fallback_elements
        d = ulp_distance(y, oracle(x, training=True).y)
        acc[kind] = {
            "max_ulp": float(d.max()),
            "correctly_rounded_share": float(np.mean(d == 0)),
            "fallback_elements": fallbacks,
            "elements": int(x.size),
        }
    return acc


def combine(
    kernel: dict[str, Any], torch: dict[str, Any], threads: int, nbytes: dict[str, int]
) -> list[dict[str, Any]]:
    rows = []
    for spec, k in kernel["rows"].items():
        t = torch["rows"][spec]
        for mode in MODES:
            copy = k["copy"][mode]
            for phase in PHASES:
                km, tm = k[phase][mode], t[phase][mode]
                ratio = copy["median"] / km["median"]
                rows.append(
                    {
                        "shape": spec,
                        "threads": threads,
                        "mode": mode,
                        "phase": phase,
                        "kernel_s": km,
                        "torch_s": tm,
                        "copy_s": copy,
                        "copy_GBps": 2 * nbytes[spec] / copy["median"] / 1e9,
                        "x_torch": tm["median"] / km["median"],
                        "x_torch_range": [tm["min"] / km["max"], tm["max"] / km["min"]],
                        "copy_ratio": ratio,
                        "bandwidth_share": ratio * TRAFFIC[phase] / 2,
                        "fallback_elements": k.get("fallback_elements") if phase == "train" else None,
                        "fallback_channels": k.get("fallback_channels") if phase == "train" else None,
                        "resummed_channels": k.get("resummed_channels") if phase == "train" else None,
                    }
                )
    return rows


def markdown(result: dict[str, Any]) -> str:
    lines = [
        header(result),
        "",
        "| shape | threads | mode | phase | kernel ms | torch ms | x torch | copy GB/s | copy time / kernel time "
        "| bandwidth share | channels re-summed / exact |",
        "|---|---|---|---|---|---|---|---|---|---|---|",
    ]
    for r in result["rows"]:
        k, t = r["kernel_s"], r["torch_s"]
        refined = _channels(r)
        lines.append(
            f"| {r['shape']} | {r['threads']} | {r['mode']} | {r['phase']} | {1e3 * k['median']:.2f} "
            f"({1e3 * k['min']:.2f}-{1e3 * k['max']:.2f}) | {1e3 * t['median']:.2f} ({1e3 * t['min']:.2f}-"
            f"{1e3 * t['max']:.2f}) | {r['x_torch']:.2f} | {r['copy_GBps']:.1f} | {100 * r['copy_ratio']:.0f} % "
            f"| {100 * r['bandwidth_share']:.0f} % | {refined} |"
        )
    lines += ["", goal_summary(result), *accuracy_lines(result)]
    return "\n".join(lines)


def _channels(r: dict[str, Any]) -> str:
    """Training rows: channels re-summed error-free / given exact statistics in the last call
    (runs before the re-summing tier existed recorded the exact ones only)."""
    exact, resummed = r.get("fallback_channels"), r.get("resummed_channels")
    if exact is None:
        return ""
    return f"{exact}" if resummed is None else f"{resummed} / {exact}"


def accuracy_lines(result: dict[str, Any]) -> list[str]:
    return [
        f"Accuracy ({kind}, 32x64x56x56, training): max {a['max_ulp']:.0f} ULP from the exact value, "
        f"{100 * a['correctly_rounded_share']:.4f} % correctly rounded, {a['fallback_elements']} of "
        f"{a['elements']} elements decided by the exact fallback."
        for kind, a in result["accuracy"].items()
    ]


def goal_summary(result: dict[str, Any]) -> str:
    train = [r for r in result["rows"] if r["phase"] == "train"]
    met = [r for r in train if r["x_torch"] >= GOALS["x_torch"] and r["bandwidth_share"] >= GOALS["bandwidth_share"]]
    lo_x, hi_x = min(r["x_torch"] for r in train), max(r["x_torch"] for r in train)
    lo_b, hi_b = min(r["bandwidth_share"] for r in train), max(r["bandwidth_share"] for r in train)
    return (
        f"Training goal (>= {GOALS['x_torch']:g}x torch and >= {100 * GOALS['bandwidth_share']:.0f} % of copy "
        f"bandwidth, both modes): met in {len(met)} of {len(train)} cases; x torch {lo_x:.2f}-{hi_x:.2f}, "
        f"bandwidth share {100 * lo_b:.0f}-{100 * hi_b:.0f} %."
    )


def table(result: dict[str, Any]) -> str:
    lines = [
        f"numba {result['numba']}, torch {result['torch']}, medians of {result['repeat']} calls; "
        f"{result['machine'].get('Model name', '')}, {result['machine']['cpus']} CPUs",
        f"{'shape':14} {'thr':>3} {'mode':8} {'phase':5} {'kernel ms':>9} {'torch ms':>9} {'x torch':>7} "
        f"{'copy GB/s':>9} {'copy':>5} {'%bw':>5}",
    ]
    for r in result["rows"]:
        lines.append(
            f"{r['shape']:14} {r['threads']:3d} {r['mode']:8} {r['phase']:5} {1e3 * r['kernel_s']['median']:9.2f} "
            f"{1e3 * r['torch_s']['median']:9.2f} {r['x_torch']:7.2f} {r['copy_GBps']:9.1f} "
            f"{100 * r['copy_ratio']:4.0f}% {100 * r['bandwidth_share']:4.0f}%"
        )
    lines.append("copy: a copy of x's time over the kernel's; %bw: bytes the design moves (training 3x, evaluation 2x")
    lines.append("x's size) per second over the copy's (2x).  " + goal_summary(result))
    return "\n".join(lines + accuracy_lines(result))


def main() -> None:
    bench_main(sys.modules[__name__])


if __name__ == "__main__":
    main()
