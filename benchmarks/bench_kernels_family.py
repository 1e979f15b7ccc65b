"""The float32 LayerNorm and RMSNorm CPU kernels against torch and a memory copy, measured fairly.

The same rules as ``bench_kernels.py``: each library in a process of its own on the same seeded
rows, medians with min-max of ``--repeat`` calls after a warm-up, two allocation modes applied
to both sides alike:

* ``fresh``: a new output per call, kept alive until the loop ends (the kernels' output cache
  off): ``F.layer_norm`` / ``F.rms_norm`` against ``layer_norm(...)`` / ``rms_norm(...)``.
* ``prealloc``: one preallocated output: ``aten.native_layer_norm.out`` against ``out=``.
  torch 2.13 has no out= form of RMSNorm, so RMSNorm has no preallocated comparison (the
  kernel's time is still reported, without a ratio).

The copy reference (the faster of numpy's copy and a parallel numba copy, in the same mode) runs
in the kernel's process.  A row stays in cache between its statistics and its outputs, so the
kernels' design moves x once and y once: the bandwidth share is the copy's time over the
kernel's.  Accuracy against the oracle on rows of mean 2000 (pytorch#51102) in a third process.

    python benchmarks/bench_kernels_family.py                          # table
    python benchmarks/bench_kernels_family.py --json results.json      # also write the figures
    python benchmarks/bench_kernels_family.py --markdown results.json  # RESULTS.md table from a JSON
"""

from __future__ import annotations

import sys
from typing import Any

import numpy as np
from _timing import bench_main, copy_reference, header, spread

# ROWSxFEATURES, optionally :DTYPE (float32 when absent; bfloat16 and float16 inputs keep float32 statistics)
SHAPES = ["8192x768", "4096x4096", "16384x1024", "8192x768:bfloat16", "4096x4096:bfloat16", "16384x1024:float16"]


def _dtype(name: str) -> Any:
    if name == "bfloat16":
        import ml_dtypes

        return np.dtype(ml_dtypes.bfloat16)
    return np.dtype(name)


def nbytes(spec: str) -> int:
    shape, _, dtype = spec.partition(":")
    r, f = (int(v) for v in shape.split("x"))
    return r * f * _dtype(dtype or "float32").itemsize


LAYERS = ("layer_norm", "rms_norm")
MODES = ("fresh", "prealloc")


def _data(spec: str) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Seeded rows and parameters, all in the spec's dtype (as a model's parameters are)."""
    shape, _, dtype = spec.partition(":")
    r, f = (int(v) for v in shape.split("x"))
    dt = _dtype(dtype or "float32")
    rng = np.random.default_rng(0)
    x = rng.standard_normal((r, f)).astype(dt)
    return x, rng.standard_normal(f).astype(dt), rng.standard_normal(f).astype(dt)


def _kernel_side(shapes: list[str], threads: int, repeat: int) -> dict[str, Any]:
    import numba
    from normspec.kernels import layer_norm, rms_norm, set_output_cache

    numba.set_num_threads(threads)
    set_output_cache(0)  # fresh outputs come from the system allocator, as torch's do
    out: dict[str, Any] = {"numba": numba.__version__, "rows": {}}
    for spec in shapes:
        x, g, b = _data(spec)
        y = np.empty_like(x)
        row: dict[str, Any] = {
            "copy": copy_reference(x, repeat),
            "layer_norm": {
                "fresh": spread(lambda: layer_norm(x, 1, g, b), repeat, hold=True),
                "prealloc": spread(lambda: layer_norm(x, 1, g, b, out=y), repeat),
            },
            "rms_norm": {
                "fresh": spread(lambda: rms_norm(x, 1, g), repeat, hold=True),
                "prealloc": spread(lambda: rms_norm(x, 1, g, out=y), repeat),
            },
        }
        out["rows"][spec] = row
    return out


def _torch_side(shapes: list[str], threads: int, repeat: int) -> dict[str, Any]:
    import torch

    torch.set_num_threads(threads)
    fn = torch.nn.functional
    out: dict[str, Any] = {"torch": torch.__version__, "rows": {}}
    for spec in shapes:
        x, g, b = (_tensor(a) for a in _data(spec))
        f = x.shape[1]
        y, m, r = torch.empty_like(x), x.new_empty(x.shape[0], 1), x.new_empty(x.shape[0], 1)
        native = torch.ops.aten.native_layer_norm.out
        out["rows"][spec] = {
            "layer_norm": {
                "fresh": spread(lambda: fn.layer_norm(x, (f,), g, b), repeat, hold=True),
                "prealloc": spread(lambda: native(x, [f], g, b, 1e-5, out0=y, out1=m, out2=r), repeat),
            },
            "rms_norm": {"fresh": spread(lambda: fn.rms_norm(x, (f,), g), repeat, hold=True), "prealloc": None},
        }
    return out


def _tensor(a: np.ndarray) -> Any:
    import torch

    if a.dtype.name == "bfloat16":
        return torch.from_numpy(a.view(np.int16)).view(torch.bfloat16)
    return torch.from_numpy(a)


def _accuracy_side() -> dict[str, Any]:
    from normspec.kernels import layer_norm, rms_norm
    from normspec.oracle import layer_norm as exact_ln
    from normspec.oracle import rms_norm as exact_rms
    from normspec.oracle import ulp_distance

    rng = np.random.default_rng(1)
    x = (rng.standard_normal((256, 768)) + 2000).astype(np.float32)
    g, b = rng.standard_normal(768).astype(np.float32), rng.standard_normal(768).astype(np.float32)
    eps32 = float(np.finfo(np.float32).eps)
    xb, gb, bb = _data("256x4096:bfloat16")
    acc = {}
    for name, got, want in (
        ("layer_norm", layer_norm(x, 1, g, b), exact_ln(x, 1, g, b).y),
        ("rms_norm", rms_norm(x, 1, g), exact_rms(x, 1, g, eps=eps32).y),
        ("layer_norm bfloat16 256x4096", layer_norm(xb, 1, gb, bb), exact_ln(xb, 1, gb, bb).y),
        ("rms_norm bfloat16 256x4096", rms_norm(xb, 1, gb, eps=1e-6), exact_rms(xb, 1, gb, eps=1e-6).y),
    ):
        d = ulp_distance(got, want)
        acc[name] = {"max_ulp": float(d.max()), "correctly_rounded_share": float(np.mean(d == 0))}
    return acc


def combine(
    kernel: dict[str, Any], torch: dict[str, Any], threads: int, nbytes: dict[str, int]
) -> list[dict[str, Any]]:
    rows = []
    for spec, k in kernel["rows"].items():
        for layer in LAYERS:
            for mode in MODES:
                km, tm, copy = k[layer][mode], torch["rows"][spec][layer][mode], k["copy"][mode]
                rows.append(
                    {
                        "shape": spec,
                        "threads": threads,
                        "layer": layer,
                        "mode": mode,
                        "kernel_s": km,
                        "torch_s": tm,
                        "copy_s": copy,
                        "copy_GBps": 2 * nbytes[spec] / copy["median"] / 1e9,
                        "x_torch": None if tm is None else tm["median"] / km["median"],
                        "bandwidth_share": copy["median"] / km["median"],
                    }
                )
    return rows


def _ms(s: dict[str, float] | None) -> str:
    return "n/a" if s is None else f"{1e3 * s['median']:.2f} ({1e3 * s['min']:.2f}-{1e3 * s['max']:.2f})"


def goal_summary(result: dict[str, Any]) -> str:
    rows = [r for r in result["rows"] if r["x_torch"] is not None]
    met = [r for r in rows if r["x_torch"] >= 1]
    return (
        f"Goal (at least torch's speed): met in {len(met)} of {len(rows)} comparisons; x torch "
        f"{min(r['x_torch'] for r in rows):.2f}-{max(r['x_torch'] for r in rows):.2f}."
    )


def markdown(result: dict[str, Any]) -> str:
    lines = [
        header(result),
        "",
        "| shape | threads | layer | mode | kernel ms | torch ms | x torch | copy GB/s | bandwidth share |",
        "|---|---|---|---|---|---|---|---|---|",
    ]
    for r in result["rows"]:
        x = "n/a" if r["x_torch"] is None else f"{r['x_torch']:.2f}"
        lines.append(
            f"| {r['shape']} | {r['threads']} | {r['layer']} | {r['mode']} | {_ms(r['kernel_s'])} | "
            f"{_ms(r['torch_s'])} | {x} | {r['copy_GBps']:.1f} | {100 * r['bandwidth_share']:.0f} % |"
        )
    lines += ["", goal_summary(result), *accuracy_lines(result)]
    return "\n".join(lines)


def accuracy_lines(result: dict[str, Any]) -> list[str]:
    return [
        f"Accuracy ({name if ' ' in name else name + ', 256x768 rows of mean 2000'}): max {a['max_ulp']:.0f} ULP "
        "from the exact value, "
        f"{100 * a['correctly_rounded_share']:.4f} % correctly rounded."
        for name, a in result["accuracy"].items()
    ]


def table(result: dict[str, Any]) -> str:
    lines = [
        f"numba {result['numba']}, torch {result['torch']}, medians of {result['repeat']} calls",
        f"{'shape':19} {'thr':>3} {'layer':10} {'mode':8} {'kernel ms':>9} {'torch ms':>9} {'x torch':>7} "
        f"{'copy GB/s':>9} {'%bw':>5}",
    ]
    for r in result["rows"]:
        t = "n/a" if r["torch_s"] is None else f"{1e3 * r['torch_s']['median']:.2f}"
        x = "n/a" if r["x_torch"] is None else f"{r['x_torch']:.2f}"
        lines.append(
            f"{r['shape']:19} {r['threads']:3d} {r['layer']:10} {r['mode']:8} {1e3 * r['kernel_s']['median']:9.2f} "
            f"{t:>9} {x:>7} {r['copy_GBps']:9.1f} {100 * r['bandwidth_share']:4.0f}%"
        )
    lines.append("%bw: a copy of x's time over the kernel's (x read once, y written once).  " + goal_summary(result))
    return "\n".join(lines + accuracy_lines(result))


def main() -> None:
    bench_main(sys.modules[__name__])


if __name__ == "__main__":
    main()
