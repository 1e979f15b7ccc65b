"""Speed of the exact LLM RMSNorm references against PyTorch's float32 F.rms_norm.

The issue's goal: on a (4096, 4096) bfloat16 tensor, the exact forward of each profile within 5x
the time of torch's float32 ``F.rms_norm`` on the same values, and the exact backward within 20x
(here read against torch's float32 backward of the same call).  Each side runs in a process of its
own (``--side``), one after the other in this run, on the same seeded data; torch uses its default
thread count (reported; ``--torch-threads`` sets it), the oracle one thread.  The figures are
medians with min-max over ``--repeat`` calls after a warm-up.  ``fused_add_rms_norm`` is read
against torch's float32 ``F.rms_norm(x + residual)`` and its backward with the sum's own gradient
(the new stream's) joining the layer's.

    python benchmarks/bench_llm_norm.py                 # table; --json for the figures
    python benchmarks/bench_llm_norm.py --shape 1024 4096 --repeat 3
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys

import numpy as np
from _timing import spread

PROFILES = ("torch_rms_norm", "hf_llama_rms_norm", "gemma_rms_norm", "fused_add_rms_norm")
GOALS = {"forward": 5.0, "backward": 20.0}


def _data(shape: tuple[int, int]) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    import ml_dtypes

    rng = np.random.default_rng(0)
    x = rng.standard_normal(shape).astype(ml_dtypes.bfloat16)
    w = (1 + 0.1 * rng.standard_normal(shape[-1])).astype(ml_dtypes.bfloat16)
    dy = rng.standard_normal(shape).astype(ml_dtypes.bfloat16)
    return x, w, dy


def _torch_side(shape: tuple[int, int], repeat: int, threads: int | None) -> dict[str, object]:
    import torch

    if threads is not None:
        torch.set_num_threads(threads)
    x, w, dy = (torch.from_numpy(a.astype(np.float32)) for a in _data(shape))
    r, dr = (torch.from_numpy(a.astype(np.float32)) for a in _fused_data(shape))
    f = torch.nn.functional.rms_norm
    forward = spread(lambda: f(x, (shape[-1],), w, 1e-6), repeat)
    xg, wg, rg = x.clone().requires_grad_(), w.clone().requires_grad_(), r.clone().requires_grad_()

    def backward() -> None:
        xg.grad = wg.grad = None
        f(xg, (shape[-1],), wg, 1e-6).backward(dy)

    def fused_backward() -> None:  # the sum is an output too: its gradient joins the layer's
        xg.grad = wg.grad = rg.grad = None
        h = xg + rg
        torch.autograd.backward([f(h, (shape[-1],), wg, 1e-6), h], [dy, dr])

    return {
        "forward": forward,
        "backward": spread(backward, repeat),
        "fused_forward": spread(lambda: f(x + r, (shape[-1],), w, 1e-6), repeat),
        "fused_backward": spread(fused_backward, repeat),
        "version": torch.__version__,
        "threads": torch.get_num_threads(),
    }


def _fused_data(shape: tuple[int, int]) -> tuple[np.ndarray, np.ndarray]:
    """A fused add's residual (three times the activations, so that sums round) and the new
    stream's upstream gradient."""
    x, _, dy = _data(shape)
    return (3 * x.astype(np.float32)[::-1]).astype(x.dtype), dy[::-1].copy()


def _oracle_side(shape: tuple[int, int], repeat: int, profile: str) -> dict[str, object]:
    from normspec.oracle import rms_norm, rms_norm_backward
    from normspec.spec.conventions import get_convention

    x, w, dy = _data(shape)
    fwd: dict[str, object] = {}
    bwd: dict[str, object] = {}
    if get_convention(profile).residual:
        r, dr = _fused_data(shape)
        fwd = {"residual": r}
        bwd = {**fwd, "dresidual": dr}
    return {
        "forward": spread(lambda: rms_norm(x, 1, w, eps=1e-6, convention=profile, **fwd), repeat),
        "backward": spread(lambda: rms_norm_backward(x, dy, 1, w, eps=1e-6, convention=profile, **bwd), repeat),
    }


def _child(args: list[str]) -> dict[str, object]:
    done = subprocess.run([sys.executable, __file__, *args], capture_output=True, text=True, check=True)
    return json.loads(done.stdout)


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--shape", type=int, nargs=2, default=[4096, 4096])
    p.add_argument("--repeat", type=int, default=5)
    p.add_argument("--side", choices=["torch", "oracle"], help=argparse.SUPPRESS)
    p.add_argument("--profile", default="torch_rms_norm", help=argparse.SUPPRESS)
    p.add_argument("--torch-threads", type=int, default=None, help="torch's thread count (default: its own)")
    p.add_argument("--json", action="store_true")
    a = p.parse_args()
    shape = (a.shape[0], a.shape[1])
    if a.side == "torch":
        print(json.dumps(_torch_side(shape, a.repeat, a.torch_threads)))
        return
    if a.side == "oracle":
        print(json.dumps(_oracle_side(shape, a.repeat, a.profile)))
        return
    common = ["--shape", *map(str, shape), "--repeat", str(a.repeat)]
    threads = [] if a.torch_threads is None else ["--torch-threads", str(a.torch_threads)]
    torch_t = _child(["--side", "torch", *common, *threads])
    rows = []
    for profile in PROFILES:
        ours = _child(["--side", "oracle", "--profile", profile, *common])
        fused = "fused_" if profile.startswith("fused") else ""
        for mode in ("forward", "backward"):
            o, t = ours[mode], torch_t[fused + mode]  # type: ignore[index]
            ratio = o["median"] / t["median"]  # type: ignore[index]
            call = "F.rms_norm(x + residual)" if fused else "F.rms_norm(x)"
            rows.append({"profile": profile, "mode": mode, "oracle": o, "torch_float32": t, "torch_call": call,
                         "ratio": ratio, "goal": GOALS[mode], "met": ratio <= GOALS[mode]})  # fmt: skip
    result = {
        "shape": list(shape),
        "cpus": os.cpu_count(),
        "torch": torch_t["version"],
        "torch_threads": torch_t["threads"],
        "oracle_threads": 1,
        "rows": rows,
    }
    if a.json:
        print(json.dumps(result, indent=1))
        return
    print(
        f"(rows, width) = {shape}, bfloat16 inputs; torch {torch_t['version']} float32 F.rms_norm on the same "
        f"values (fused_add_rms_norm: F.rms_norm(x + residual)), {torch_t['threads']} thread(s); the oracle on 1"
    )
    print(f"{'profile':20} {'mode':9} {'oracle median (min-max) s':28} {'torch f32 median s':19} {'ratio':>7}  goal")
    for r in rows:
        o, t = r["oracle"], r["torch_float32"]
        span = f"{o['median']:.3f} ({o['min']:.3f}-{o['max']:.3f})"
        verdict = "met" if r["met"] else "missed"
        print(
            f"{r['profile']:20} {r['mode']:9} {span:28} {t['median']:<19.4f} {r['ratio']:>6.1f}x  <= {r['goal']:g}x {verdict}"
        )


if __name__ == "__main__":
    main()
