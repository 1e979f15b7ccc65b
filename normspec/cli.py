"""The ``normspec`` command line."""

from __future__ import annotations

import argparse
import math
import sys
import time
import zipfile
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np

from normspec._version import __version__
from normspec.errors import InputFileError, NormspecError

_EPILOG = """\
examples:
  normspec demo                              catch a real float32 BatchNorm error
  normspec eval in.npz -o out.npz --training  correctly rounded outputs of an .npz
  normspec conventions                       what each framework computes
  normspec conventions keras3                one profile in full
"""


def _parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(
        prog="normspec",
        description="The exact reference for normalization layers: correctly rounded BatchNorm and its conventions.",
        epilog=_EPILOG,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    p.add_argument("--version", action="version", version=f"normspec {__version__}")
    sub = p.add_subparsers(dest="command", metavar="COMMAND")

    d = sub.add_parser("demo", help="run the oracle against a real float32 BatchNorm on known killers")
    d.add_argument(
        "--no-torch", action="store_true", help="emulate PyTorch's CPU formula in numpy even if torch is installed"
    )

    e = sub.add_parser(
        "eval",
        help="evaluate the oracle on arrays from an .npz file",
        description=(
            "Read x (required) and optionally weight, bias, running_mean, running_var from an .npz file "
            "(never unpickled) and write the correctly rounded y, mean, var, running_mean, running_var "
            "and num_batches_tracked to another .npz."
        ),
    )
    e.add_argument("input", type=Path, help="input .npz")
    e.add_argument("-o", "--output", type=Path, required=True, help="output .npz")
    mode = e.add_mutually_exclusive_group(required=True)
    mode.add_argument("--training", action="store_true", help="batch statistics, running update")
    mode.add_argument("--eval", action="store_true", help="running statistics")
    e.add_argument("--convention", default="torch", help="convention profile (see 'normspec conventions')")
    e.add_argument("--momentum", default=None, help="a number, or 'cumulative'; default: the convention's")
    e.add_argument("--eps", type=float, default=None, help="default: the convention's")
    e.add_argument("--axis", type=int, default=1, help="channel axis (default 1)")
    e.add_argument("--num-batches-tracked", type=int, default=0)
    e.add_argument(
        "--progress",
        choices=["auto", "always", "never"],
        default="auto",
        help="progress bar on stderr: auto draws on a terminal when the work takes over a second",
    )

    c = sub.add_parser("conventions", help="list convention profiles, or show one")
    c.add_argument("name", nargs="?", help="a profile name")
    return p


def main(argv: Sequence[str] | None = None) -> int:
    parser = _parser()
    args = parser.parse_args(argv)
    try:
        return _dispatch(parser, args)
    except BrokenPipeError:  # output piped into head, say
        sys.stderr.close()
        return 0


def _dispatch(parser: argparse.ArgumentParser, args: argparse.Namespace) -> int:
    try:
        if args.command == "demo":
            return _demo(use_torch=not args.no_torch)
        if args.command == "eval":
            return _eval(args)
        if args.command == "conventions":
            return _conventions(args.name)
    except NormspecError as exc:
        print(f"normspec: error: {exc}", file=sys.stderr)
        return 2
    parser.print_help()
    return 0


# ---------------------------------------------------------------- eval


def load_npz(path: Path) -> dict[str, np.ndarray]:
    """Arrays of an .npz file, refusing anything that would need unpickling."""
    if path.exists() and not zipfile.is_zipfile(path):
        raise InputFileError(f"{str(path)!r} is not a readable .npz file (not a zip archive)")
    try:
        with np.load(path, allow_pickle=False) as data:
            return {k: data[k] for k in data.files}
    except FileNotFoundError:
        raise InputFileError(f"no such file: {str(path)!r}") from None
    except ValueError as exc:  # object arrays need pickle
        raise InputFileError(f"{str(path)!r} holds arrays that need unpickling, refused: {exc}") from None
    except (zipfile.BadZipFile, OSError) as exc:
        raise InputFileError(f"{str(path)!r} is not a readable .npz file: {exc}") from None


def _eval(args: argparse.Namespace) -> int:
    from normspec._progress import Progress
    from normspec.oracle import batch_norm

    arrays = load_npz(args.input)
    if "x" not in arrays:
        raise InputFileError(f"{str(args.input)!r} has no array named 'x' (found: {', '.join(arrays) or 'none'})")
    unknown = set(arrays) - {"x", "weight", "bias", "running_mean", "running_var"}
    if unknown:
        raise InputFileError(f"{str(args.input)!r} has arrays normspec does not read: {', '.join(sorted(unknown))}")
    x = arrays["x"]
    momentum: float | str | None = args.momentum
    if momentum is not None and momentum != "cumulative":
        try:
            momentum = float(momentum)
        except ValueError:
            raise InputFileError(f"Expected a number or 'cumulative', but got --momentum={momentum!r}") from None
    passes = 2 if args.training else 1
    bar = Progress(passes * x.size, "normspec eval", mode=args.progress)
    t0 = time.perf_counter()
    res = batch_norm(
        x,
        arrays.get("weight"),
        arrays.get("bias"),
        arrays.get("running_mean"),
        arrays.get("running_var"),
        training=args.training,
        momentum=momentum,
        eps=args.eps,
        convention=args.convention,
        axis=args.axis,
        num_batches_tracked=args.num_batches_tracked,
        progress=bar,
    )
    bar.close()
    out: dict[str, Any] = {
        "y": res.y,
        "mean": res.mean,
        "var": res.var,
        "num_batches_tracked": np.array(res.num_batches_tracked),
    }
    if res.running_mean is not None:
        out["running_mean"] = res.running_mean
        out["running_var"] = res.running_var
    np.savez(args.output, **out)
    print(
        f"wrote {args.output}: y {res.y.dtype.name}{list(res.y.shape)}, convention {res.convention}, "
        f"{'training' if args.training else 'eval'}; {res.undecided} element(s) settled by exact arithmetic; "
        f"{time.perf_counter() - t0:.2f} s"
    )
    return 0


# ---------------------------------------------------------------- conventions


def _conventions(name: str | None) -> int:
    from dataclasses import fields

    from normspec.spec.conventions import CONVENTIONS, get_convention

    if name:
        conv = get_convention(name)
        for f in fields(conv):
            print(f"{f.name:24} {getattr(conv, f.name)!s}")
        print(f"{'one_value_outcome':24} {conv.one_value_outcome}")
        return 0
    rows: list[tuple[str, ...]] = [("profile", "momentum", "eps", "running var", "update", "n=1", "0/0 guard")]
    for c in CONVENTIONS.values():
        rows.append(
            (
                c.name,
                f"{c.momentum_direction}-weight {c.momentum_default:g}",
                f"{c.eps_default:g}" + (f" (>= {c.eps_min:g})" if c.eps_min else ""),
                c.running_var_correction,
                c.update_time,
                c.one_value_outcome,
                "yes" if c.zero_var_guard else "no",
            )
        )
    _table(rows)
    return 0


def _table(rows: list[tuple[str, ...]]) -> None:
    widths = [max(len(r[i]) for r in rows) for i in range(len(rows[0]))]
    for k, r in enumerate(rows):
        print("  ".join(cell.ljust(w) for cell, w in zip(r, widths, strict=True)).rstrip())
        if k == 0:
            print("  ".join("-" * w for w in widths))


# ---------------------------------------------------------------- demo


def _torch_cpu_batch_norm(x: np.ndarray) -> tuple[np.ndarray, str]:
    try:
        import torch
    except ImportError:
        return _folded_float32(x), "numpy emulation of PyTorch's CPU formula (torch not installed)"
    y = torch.nn.functional.batch_norm(torch.from_numpy(x), None, None, training=True).numpy()
    return y, f"torch {torch.__version__} F.batch_norm (real)"


def _folded_float32(x: np.ndarray) -> np.ndarray:
    """PyTorch CPU's evaluation order, emulated: float64 statistics, then
    ``a = float32(1/sqrt(var + eps))``, ``b = float32(0 - mean * a)`` and the
    fused ``x * a + b`` rounded once to float32 (x * a is exact in float64).
    Bit-identical to torch 2.13 on the constant channel; close elsewhere."""
    axes = (0, *range(2, x.ndim))
    xd = x.astype(np.float64)
    mean = xd.mean(axis=axes, keepdims=True)
    var = ((xd - mean) ** 2).mean(axis=axes, keepdims=True)
    a = (1.0 / np.sqrt(var + 1e-5)).astype(np.float32).astype(np.float64)
    b = (0.0 - mean * a).astype(np.float32).astype(np.float64)
    return (xd * a + b).astype(np.float32)


def _demo(use_torch: bool) -> int:
    from normspec.oracle import batch_norm, ulp_distance

    print(f"normspec {__version__}: every float32 BatchNorm output against its exact value, rounded once.\n")
    rng = np.random.default_rng(20261121)
    cases = [
        ("constant channel at 1.2345678e7 (pytorch#5410)", np.full((2, 3, 4, 4), 1.2345678e7, dtype=np.float32)),
        ("large mean, small spread: x = 1e4 + U[0,1)", (1e4 + rng.random((8, 3, 4, 4))).astype(np.float32)),
        ("standard normal", rng.standard_normal((8, 3, 4, 4)).astype(np.float32)),
    ]
    worst_overall = 0.0
    for title, x in cases:
        exact = batch_norm(x, training=True)
        if use_torch:
            observed, who = _torch_cpu_batch_norm(x)
        else:
            observed, who = _folded_float32(x), "numpy emulation of PyTorch's CPU formula (--no-torch)"
        dist = ulp_distance(observed, exact.y)
        worst = int(np.argmax(dist))
        idx = np.unravel_index(worst, x.shape)
        ex = exact.exact.y(tuple(int(i) for i in idx), prec=60)
        print(f"{title}")
        print(f"  implementation : {who}")
        print(f"  worst element  : index {tuple(int(i) for i in idx)}, x = {float(x[idx])!r}")
        print(f"  exact y        : {_fmt_mpf(ex)}")
        print(f"  oracle float32 : {float(exact.y[idx])!r}  (the exact value, rounded once)")
        print(f"  observed       : {float(observed[idx])!r}")
        print(
            f"  distance       : {dist[idx]:.0f} ULP (float32); correctly rounded: "
            f"{100.0 * float(np.mean(dist == 0)):.1f} % of {x.size} elements"
        )
        loose = np.abs(observed.astype(np.float64) - exact.y) <= 1e-5 + 1.3e-6 * np.abs(exact.y.astype(np.float64))
        print(
            f"  flat tolerance : torch.testing's float32 default (rtol 1.3e-6, atol 1e-5) "
            f"{'passes' if loose.all() else 'fails'} this case\n"
        )
        worst_overall = max(worst_overall, float(dist.max()))
    print("Run 'normspec --help' for more; README.md has the tour.")
    return 0 if math.isfinite(worst_overall) else 1


def _fmt_mpf(v: Any) -> str:
    import mpmath

    return mpmath.nstr(v, 17, min_fixed=-5, max_fixed=8)
