"""Timing shared by the benchmark scripts (run as ``python benchmarks/NAME.py``, so this folder is on sys.path)."""

from __future__ import annotations

import datetime
import json
import math
import os
import platform
import subprocess
import sys
import time
from collections.abc import Callable
from typing import Any


def best_of(fn: Callable[[], Any], repeat: int) -> float:
    """Seconds of the fastest of ``repeat`` calls, after one warm-up call (JIT, caches, allocation)."""
    return spread(fn, repeat)["min"]


def spread(fn: Callable[[], Any], repeat: int, *, hold: bool = False) -> dict[str, float]:
    """Median, minimum and maximum seconds of ``repeat`` calls after one warm-up call.

    ``hold``: keep every call's result alive until all calls are timed (the warm-up's too), as a
    training loop keeps its activations for the backward pass.  A library that recycles the
    memory of dropped outputs then cannot recycle it, and neither can the other side: each call
    pays for fresh memory, on both sides alike.
    """
    import statistics

    held = [fn()]
    if not hold:
        held.clear()
    times = []
    for _ in range(repeat):
        t0 = time.perf_counter()
        out = fn()
        times.append(time.perf_counter() - t0)
        if hold:
            held.append(out)
        del out
    held.clear()
    return {"median": statistics.median(times), "min": min(times), "max": max(times), "runs": repeat}


def run_side(script: str, name: str, shapes: list[str], threads: int, repeat: int) -> dict[str, Any]:
    """``python script --side name ...`` in a process of its own (one library per process, its
    thread pools sized before it starts them); the JSON on its last line of output."""
    env = dict(os.environ, OMP_NUM_THREADS=str(threads), NUMBA_NUM_THREADS=str(max(threads, 1)))
    cmd = [sys.executable, script, "--side", name, "--threads", str(threads), "--repeat", str(repeat)]
    done = subprocess.run([*cmd, "--shapes", *shapes] if shapes else cmd, env=env, capture_output=True, text=True)
    if done.returncode != 0:
        raise SystemExit(f"the {name} side failed:\n{done.stderr[-3000:]}")
    result: dict[str, Any] = json.loads(done.stdout.strip().splitlines()[-1])
    return result


def machine() -> dict[str, Any]:
    """What the figures were measured on."""
    info: dict[str, Any] = {
        "date": datetime.date.today().isoformat(),
        "platform": platform.platform(),
        "python": platform.python_version(),
        "cpus": os.cpu_count(),
    }
    try:
        lines = subprocess.run(["lscpu"], capture_output=True, text=True, check=True).stdout.splitlines()
        for line in lines:
            key, _, value = line.partition(":")
            if key.strip() in ("Model name", "L1d cache", "L2 cache", "L3 cache"):
                info[key.strip()] = value.strip()
    except (OSError, subprocess.CalledProcessError):
        pass
    return info


def machine_line(m: dict[str, Any]) -> str:
    return (
        f"{m['date']}, {m.get('Model name', '?')}, {m['cpus']} CPUs (L2 {m.get('L2 cache', '?')}, "
        f"L3 {m.get('L3 cache', '?')}), {m['platform']}, Python {m['python']}"
    )


def copy_reference(x: Any, repeat: int) -> dict[str, dict[str, float]]:
    """A copy of x in both allocation modes ("fresh": a new array per copy, kept alive;
    "prealloc": into one array), each the faster of numpy's copy and a parallel numba copy on
    numba's threads (the kernel's process sets their number)."""
    import numpy as np
    from numba import njit, prange

    @njit(parallel=True, cache=True)
    def copy(src: Any, dst: Any) -> None:  # pragma: no cover - compiled
        for i in prange(src.size):
            dst[i] = src[i]

    def copy_new(flat: Any) -> Any:
        dst = np.empty_like(flat)
        copy(flat, dst)
        return dst

    flat = x.ravel().view(np.dtype(f"u{x.itemsize}"))  # bits: numba has no bfloat16
    dst = np.empty_like(flat)
    fresh = (spread(lambda: copy_new(flat), repeat, hold=True), spread(lambda: np.copy(flat), repeat, hold=True))
    pre = (spread(lambda: copy(flat, dst), repeat), spread(lambda: np.copyto(dst, flat), repeat))
    return {"fresh": min(fresh, key=lambda s: s["median"]), "prealloc": min(pre, key=lambda s: s["median"])}


def bench_main(module: Any) -> None:
    """The command line shared by the kernel benchmarks, for a benchmark module that defines
    SHAPES, ``_kernel_side`` and ``_torch_side`` (shapes, threads, repeat -> figures),
    ``_accuracy_side``, ``combine``, ``table`` and ``markdown``: the two sides in processes of
    their own per thread count, accuracy in a third, JSON and Markdown out."""
    import argparse

    doc, script, markdown = module.__doc__, module.__file__, module.markdown
    sides = {"kernel": module._kernel_side, "torch": module._torch_side}
    p = argparse.ArgumentParser(description=doc, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument(
        "--shapes", nargs="+", default=module.SHAPES, help="shapes, dimensions joined by x (default: %(default)s)"
    )
    p.add_argument("--threads", nargs="+", type=int, default=[1, 2], help="thread counts (default: 1 2)")
    p.add_argument("--repeat", type=int, default=9, help="timed calls per figure, after a warm-up (default: 9)")
    p.add_argument("--json", metavar="FILE", help="write the figures to FILE as JSON")
    p.add_argument("--markdown", metavar="FILE", help="print the RESULTS.md section for a JSON written by --json")
    p.add_argument("--side", choices=(*sides, "accuracy"), help=argparse.SUPPRESS)
    args = p.parse_args()
    if args.markdown:
        with open(args.markdown) as fh:
            print(markdown(json.load(fh)))
        return
    if args.repeat < 1:
        p.error(f"--repeat must be at least 1, not {args.repeat}")
    if args.side in sides:
        print(json.dumps(sides[args.side](args.shapes, args.threads[0], args.repeat)))
        return
    if args.side == "accuracy":
        print(json.dumps(module._accuracy_side()))
        return
    size = getattr(module, "nbytes", lambda spec: 4 * math.prod(int(v) for v in spec.split("x")))
    nbytes = {s: size(s) for s in args.shapes}
    rows: list[dict[str, Any]] = []
    versions: dict[str, str] = {}
    for threads in args.threads:
        got = {}
        for name in ("kernel", "torch"):
            print(f"{threads} thread(s): {name} side ...", file=sys.stderr, flush=True)
            got[name] = run_side(script, name, args.shapes, threads, args.repeat)
        versions = {"numba": got["kernel"]["numba"], "torch": got["torch"]["torch"]}
        rows += module.combine(got["kernel"], got["torch"], threads, nbytes)
    print("accuracy against the oracle ...", file=sys.stderr, flush=True)
    result = {**versions, "repeat": args.repeat, "machine": machine(), "rows": rows}
    result["accuracy"] = run_side(script, "accuracy", [], 2, 1)
    if args.json:
        with open(args.json, "w") as fh:
            json.dump(result, fh, indent=1)
    print(module.table(result))


def header(result: dict[str, Any]) -> str:
    """The first line of a RESULTS.md section: machine, versions, how the figures were taken."""
    return (
        f"{machine_line(result['machine'])}, numba {result['numba']}, torch {result['torch']}; medians (min-max) "
        f"of {result['repeat']} calls after a warm-up, each library in its own process."
    )
