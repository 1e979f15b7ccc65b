"""The ``normspec`` command line."""

from __future__ import annotations

import argparse
import math
import sys
import time
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np

from normspec._npz import load_npz, output_folder, output_path
from normspec._version import __version__
from normspec.errors import InputFileError, InvalidArgumentError, MissingExtraError, NormspecError, expected

_EPILOG = """\
examples:
  normspec demo                              catch a real float32 BatchNorm error
  normspec eval in.npz -o out.npz --training  correctly rounded outputs of an .npz
  normspec conventions                       what each framework computes
  normspec conventions keras3                one profile in full
  normspec prove                             prove every fact about the spec (table)
  normspec prove momentum_maps               one fact with its derivation steps
  normspec identity "sqrt(var + eps)" "sqrt(var) + eps" --assume "eps > 0" --assume "var >= 0"
  normspec zoo                               known buggy variants and their witnesses
  normspec vectors generate out/vectors --convention torch --dtype float32 --dtype float16
  normspec vectors check out/vectors --target torch
  normspec audit torch --report out/audit-torch  what PyTorch computes, and where it is wrong
  normspec budget observed.npz --algorithm torch_cpu --training --plot errors.png
  normspec diagnose batches.npz --convention keras3 --plot out/diagnosis  why eval is worse than training
"""


# The presets of normspec.budgets.ALGORITHMS, named here so that --help needs no import of the
# budgets (tests/test_cli.py keeps the two lists equal).
BUDGET_PRESETS = (
    "torch_cpu",
    "two_pass_unfolded_f64acc",
    "welford_float32",
    "naive_float32",
    "naive_float32_pairwise",
    "raw_moments_float32",
    "flax_fast_variance",
    "plain_float32",
    "plain_float16",
    "tf_fused_cpu",
    "float64_inside",
)


def _audit_description() -> str:
    from normspec.targets.adapters import ADAPTERS
    from normspec.targets.family_adapters import FAMILY_ADAPTERS

    def names(table: dict[str, Any]) -> str:
        return ", ".join(f"{k}*" if v.venv else k for k, v in table.items())

    return (
        f"BatchNorm targets: {names(ADAPTERS)}. Family targets (LayerNorm, RMSNorm, GroupNorm, InstanceNorm): "
        f"{names(FAMILY_ADAPTERS)}. Starred targets run in venvs of their own (bash scripts/setup-target-venvs.sh). "
        "Or python:module:function (f(x, weight, bias, running_mean, running_var, training, momentum, eps) -> "
        "(y, running_mean, running_var); with a family --convention, f(x, weight, bias, eps, groups) -> y: "
        "LayerNorm and RMSNorm normalize the trailing weight.ndim axes, GroupNorm has channels on axis 1). "
        "Each runs in its own process with a timeout. Findings: semantic (a "
        "different function), accuracy (beyond the declared algorithm's budget, or the plain formula's error), "
        "non-finite, crash (also hangs and wrong shapes), degenerate-input (n = 1, eps <= 0 or an empty batch: "
        "refusing versus computing), profile-drift, unavailable (what to install). Exit status 1 for semantic, "
        "accuracy, non-finite and crash findings; --strict adds degenerate-input and profile-drift; 0 otherwise; "
        "2 for bad input."
    )


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
            "and num_batches_tracked to another .npz. Exit status 0, or 2 for bad input."
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

    c = sub.add_parser(
        "conventions",
        help="list convention profiles, or show one",
        description="Exit status 0, or 2 for an unknown profile name.",
    )
    c.add_argument("name", nargs="?", help="a profile name")

    pr = sub.add_parser(
        "prove",
        help="prove the derived facts (symbolically, then against the oracle)",
        description="Exit status 0 when every fact asked for is proven, 1 otherwise, 2 for bad input.",
    )
    pr.add_argument("name", nargs="?", help="one fact (default: all, as a table)")
    pr.add_argument("--json", action="store_true", help="machine-readable output")

    idn = sub.add_parser(
        "identity",
        help="prove or refute LHS == RHS over the spec's functions",
        description=(
            "Expressions use numbers, names, + - * / ** and the spec's functions (parsed safely, never evaluated "
            "by Python). Exponents are numbers. What one input may cost is bounded (2000 characters, 1000 syntax "
            "nodes, nesting 200, 64 arguments per call, exponents up to 64, degree 4096, and --time-limit); past a "
            "bound the answer is undecided and names the bound. Exit status: 0 proven, 1 refuted (a counterexample "
            "is printed with exact values), 2 bad input, 3 undecided."
        ),
        epilog="functions: "
        + "; ".join(
            [
                "sqrt(a)",
                "abs(a)",
                "batch_norm_eval(x, mean, var, gamma, beta, eps)",
                "batch_norm_train(k, gamma, beta, eps, x0, x1, ...)",
                "normalize(x, mean, var, eps)",
                "affine(xhat, gamma, beta)",
                "mean(...)",
                "biased_var(...)",
                "unbiased_var(...)",
                "running_update_new(r, b, m)",
                "running_update_old(r, b, m)",
                "eps_outside_sqrt(x, mean, var, gamma, beta, eps)",
            ]
        ),
    )
    idn.add_argument("lhs")
    idn.add_argument("rhs")
    idn.add_argument(
        "--assume", action="append", default=[], metavar="REL", help="an assumption such as 'eps > 0' (repeatable)"
    )
    idn.add_argument(
        "--time-limit",
        type=float,
        default=20.0,
        metavar="SECONDS",
        help="give up (undecided, exit 3) after this many seconds (default 20)",
    )
    idn.add_argument("--json", action="store_true", help="machine-readable output")

    vec = sub.add_parser("vectors", help="golden regression vectors: generate, or check an implementation")
    vsub = vec.add_subparsers(dest="vectors_command", metavar="ACTION", required=True)
    gen = vsub.add_parser(
        "generate",
        help="write seeded cases with correctly rounded outputs and a manifest",
        description="Deterministic: the same command twice writes byte-identical files.",
    )
    gen.add_argument("directory", type=Path)
    gen.add_argument(
        "--convention", action="append", default=None, help="profile to generate for (repeatable; default torch)"
    )
    gen.add_argument(
        "--dtype",
        action="append",
        default=None,
        choices=["float16", "bfloat16", "float32", "float64"],
        help="input dtype (repeatable; default float32)",
    )
    gen.add_argument("--seed", type=int, default=0)
    gen.add_argument(
        "--family",
        action="append",
        default=[],
        metavar="PROFILE",
        help="also cases for a family profile (repeatable), e.g. torch_layer_norm, onnx_group_norm21",
    )
    gen.add_argument(
        "--onnx",
        action="store_true",
        help="also write the ONNX backend node-test layout (for onnx_bn14/onnx_bn15 evaluation cases)",
    )
    chk = vsub.add_parser(
        "check",
        help="re-check an implementation against stored vectors",
        description="Targets: oracle, torch, python:module:function or python:path/file.py:function "
        "(f(x, weight, bias, running_mean, running_var, training, momentum, eps) -> "
        "(y, running_mean, running_var)). Exit status 1 on a crash, a non-finite output where the "
        "exact one is finite, a malformed output, or a distance above --max-ulp; 2 for bad input.",
    )
    chk.add_argument("directory", type=Path)
    chk.add_argument("--target", required=True)
    chk.add_argument("--case", action="append", default=None, help="only this case (repeatable)")
    chk.add_argument("--max-ulp", type=float, default=None, help="fail when any output is farther than this")
    chk.add_argument(
        "--follows",
        action="append",
        default=None,
        metavar="CONVENTION",
        help="the conventions the target follows (repeatable): cases generated for others are listed as "
        "'other convention', not compared (torch: torch; default for oracle and python: targets: every case)",
    )
    chk.add_argument(
        "--timeout",
        type=float,
        default=120.0,
        metavar="SECONDS",
        help="python: targets run in a worker process; seconds per step before it counts as a hang (default 120)",
    )
    chk.add_argument("--json", action="store_true")

    aud = sub.add_parser(
        "audit",
        help="run a real implementation against the oracle: conventions, errors, findings",
        description=_audit_description(),
    )
    aud.add_argument("target")
    aud.add_argument("--convention", default=None, help="the profile the target claims (default: the target's own)")
    aud.add_argument("--timeout", type=float, default=120.0, help="seconds per case before it counts as a hang")
    aud.add_argument("--json", action="store_true")
    aud.add_argument(
        "--strict",
        action="store_true",
        help="exit status 1 also for degenerate-input and profile-drift findings",
    )
    aud.add_argument(
        "--report",
        type=Path,
        default=None,
        help="write report.html (failing cases first, with plots) and report.json, and a reproducer (case.npz + "
        "repro.py) per finding",
    )
    aud.add_argument("--progress", choices=["auto", "always", "never"], default="auto")

    bud = sub.add_parser(
        "budget",
        help="judge observed outputs against a rigorous error budget for the algorithm they claim",
        description="Reads x (and weight, bias, running_mean, running_var) and the observed y from an .npz "
        "(never unpickled), or runs --target on x; derives the per-element error budget of --algorithm "
        "(a preset or a JSON object of Algorithm fields) and classifies every element: correctly "
        "rounded, within 1 ULP, within budget, beyond budget, non-finite. "
        "Exit status 0 when every element is within its budget, 1 when one is beyond it or non-finite, "
        "2 for bad input.",
        epilog=f"algorithm presets: {', '.join(BUDGET_PRESETS)}",
    )
    bud.add_argument("input", type=Path, help=".npz with x and the observed y (and the parameters, if any)")
    bud.add_argument(
        "--algorithm",
        required=True,
        help="the evaluation order the outputs claim: a preset (below) or a JSON object of "
        "normspec.budgets.Algorithm fields",
    )
    bmode = bud.add_mutually_exclusive_group(required=True)
    bmode.add_argument("--training", action="store_true", help="batch statistics (training-mode forward)")
    bmode.add_argument("--eval", action="store_true", help="the running statistics in the .npz (evaluation)")
    bud.add_argument("--eps", type=float, default=1e-5, help="default 1e-5")
    bud.add_argument("--axis", type=int, default=1, help="the channel axis (default 1)")
    bud.add_argument("--observed", default="y", help="name of the observed output in the .npz (default y)")
    bud.add_argument(
        "--target", default=None, help="python:module:function to run on x instead of reading observed outputs"
    )
    bud.add_argument("--json", action="store_true")
    bud.add_argument("--plot", type=Path, default=None, help="PNG histogram of error / budget")

    dg = sub.add_parser(
        "diagnose",
        help="why a BatchNorm model evaluates worse than it trains: running statistics against the data",
        description="Reads a sequence of training batches (N, C, ...) lazily: an .npz whose array (x, or its only "
        "one) has a leading batch axis, a directory of .npz files (one batch each, in name order), or "
        "python:module:function returning an iterable of arrays. Per channel: the running statistics a correct "
        "implementation of --convention holds after every step, the exact mean and variance of all the data, "
        "that variance split into the mean within-batch variance and the variance of the batch means, the weight "
        "the initial running values still carry, the evaluation-mode output of the data that follows, and a "
        "one-way ANOVA of the per-sample means across batches (not i.i.d. below P = 0.001). "
        "Exit status 0 when no cause of a train/eval gap is found, 1 when one is named, 2 for bad input.",
        epilog="example: normspec diagnose batches.npz --convention keras3 --plot out/diagnosis",
    )
    dg.add_argument("batches")
    dg.add_argument("--convention", default="torch", help="the BatchNorm profile the model follows (default torch)")
    dg.add_argument("--momentum", default=None, help="default: the profile's; 'cumulative' for PyTorch momentum=None")
    dg.add_argument("--eps", type=float, default=None, help="default: the profile's")
    dg.add_argument(
        "--no-backward", action="store_true", help="no backward pass ran (profiles that update only there never move)"
    )
    dg.add_argument(
        "--observed",
        type=Path,
        default=None,
        help=".npz with the running_mean and running_var the model really holds after these batches",
    )
    dg.add_argument("--json", action="store_true")
    dg.add_argument(
        "--plot", type=Path, default=None, help="folder for running_statistics.png and variance_decomposition.png"
    )
    dg.add_argument("--progress", choices=["auto", "always", "never"], default="auto")

    zoo = sub.add_parser(
        "zoo",
        help="the bug zoo: buggy BatchNorm variants, provenance and witnesses",
        description="Exit status 0, or 2 for an unknown variant name.",
    )
    zoo.add_argument("name", nargs="?", help="one variant in full")
    zoo.add_argument("--json", action="store_true", help="machine-readable output")
    return p


# One exit-code scheme for every command (README, "Exit status"): 0 the answer is yes (proven, no
# finding, within budget, no cause found), 1 it is no (refuted, a finding, beyond budget, a cause),
# 2 bad input (normspec's errors and argparse's usage errors alike), 3 undecided (identity only),
# 4 an internal error: a bug in normspec, never a verdict.
EXIT_OK, EXIT_NO, EXIT_BAD_INPUT, EXIT_UNDECIDED, EXIT_INTERNAL = 0, 1, 2, 3, 4


def main(argv: Sequence[str] | None = None) -> int:
    parser = _parser()
    args = parser.parse_args(argv)
    try:
        return _dispatch(parser, args)
    except BrokenPipeError:  # output piped into head, say
        sys.stderr.close()
        return EXIT_OK
    except RecursionError:
        print("normspec: error: the input is nested too deeply to process", file=sys.stderr)
        return EXIT_BAD_INPUT
    except MemoryError:
        print("normspec: error: the input needs more memory than is available", file=sys.stderr)
        return EXIT_BAD_INPUT
    except Exception as exc:  # not a verdict: say so, and how to report it
        import traceback

        traceback.print_exc()
        print(
            f"normspec: internal error ({type(exc).__name__}: {exc}); this is a bug in normspec, not a verdict: "
            "please report it with the command that caused it",
            file=sys.stderr,
        )
        return EXIT_INTERNAL


def _dispatch(parser: argparse.ArgumentParser, args: argparse.Namespace) -> int:
    try:
        if args.command == "demo":
            return _demo(use_torch=not args.no_torch)
        if args.command == "eval":
            return _eval(args)
        if args.command == "conventions":
            return _conventions(args.name)
        if args.command == "prove":
            return _prove(args.name, args.json)
        if args.command == "identity":
            return _identity(args.lhs, args.rhs, args.assume, args.json, args.time_limit)
        if args.command == "zoo":
            return _zoo(args.name, args.json)
        if args.command == "vectors":
            return _vectors(args)
        if args.command == "audit":
            return _audit(args)
        if args.command == "budget":
            return _budget(args)
        if args.command == "diagnose":
            return _diagnose(args)
    except NormspecError as exc:
        print(f"normspec: error: {exc}", file=sys.stderr)
        return EXIT_BAD_INPUT
    parser.print_help()
    return 0


# ---------------------------------------------------------------- eval


def _eval(args: argparse.Namespace) -> int:
    from normspec._progress import Progress
    from normspec.oracle import batch_norm

    arrays = load_npz(args.input)
    output = output_path(args.output)  # before the work: a missing folder is refused now, not after
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
    np.savez(output, **out)
    print(
        f"wrote {output}: y {res.y.dtype.name}{list(res.y.shape)}, convention {res.convention}, "
        f"{'training' if args.training else 'eval'}; {res.undecided} element(s) settled by exact arithmetic; "
        f"{time.perf_counter() - t0:.2f} s"
    )
    return 0


# ---------------------------------------------------------------- conventions


_RUNNING_FIELDS = (
    "momentum_direction",
    "momentum_default",
    "cumulative_average",
    "momentum_cast",
    "running_var_correction",
    "update_time",
    "running_mean_init",
    "running_var_init",
)


def _conventions(name: str | None) -> int:
    from dataclasses import fields

    from normspec.spec.conventions import CONVENTIONS, get_convention

    if name:
        conv = get_convention(name)
        for f in fields(conv):
            if f.name in _RUNNING_FIELDS and not conv.running_stats:
                continue  # no running statistics: these fields mean nothing here
            value = getattr(conv, f.name)
            if f.name == "eps_default" and value is None:
                value = "None (the input dtype's machine epsilon)"
            print(f"{f.name:24} {value!s}")
        print(f"{'one_value_outcome':24} {conv.one_value_outcome}")
        return 0
    rows: list[tuple[str, ...]] = [("profile", "momentum", "eps", "running var", "update", "n=1", "0/0 guard")]
    for c in CONVENTIONS.values():
        if c.layer != "batch_norm":
            continue
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
    print("BatchNorm:")
    _table(rows)
    print("\nthe rest of the family:")
    frows: list[tuple[str, ...]] = [("profile", "layer", "eps", "affine", "notes")]
    for fam in CONVENTIONS.values():
        if fam.layer == "batch_norm":
            continue
        eps = "finfo(dtype).eps" if fam.eps_default is None else f"{fam.eps_default:g}"
        notes = ", ".join(
            n
            for n in (
                "rms_scaling" if fam.rms_scaling else "",
                f"running stats ({fam.momentum_direction}-weight {fam.momentum_default:g})"
                if fam.running_stats
                else "",
                f"weight + {fam.weight_offset:g}" if fam.weight_offset else "",
                "casts " + ", ".join(f"{s} to {f}" for s, f in fam.cast_points) if fam.cast_points else "",
                fam.variance_algorithm if fam.variance_algorithm != "unspecified" else "",
            )
            if n
        )
        frows.append((fam.name, fam.layer, eps, fam.affine, notes))
    _table(frows)
    print("\n'normspec conventions NAME' shows one profile in full, with its sources.")
    return 0


def _table(rows: list[tuple[str, ...]]) -> None:
    widths = [max(len(r[i]) for r in rows) for i in range(len(rows[0]))]
    for k, r in enumerate(rows):
        print("  ".join(cell.ljust(w) for cell, w in zip(r, widths, strict=True)).rstrip())
        if k == 0:
            print("  ".join("-" * w for w in widths))


# ---------------------------------------------------------------- proofs


def _prove(name: str | None, as_json: bool) -> int:
    import json

    from normspec.proofs.checker import prove, prove_all

    results = [prove(name)] if name else prove_all()
    ok = all(r.status == "proven" for r in results)
    if as_json:
        print(json.dumps([r.as_dict() for r in results], indent=2))
        return 0 if ok else 1
    if name:
        r = results[0]
        print(f"{r.name}: {r.statement}")
        print(f"  assumptions: {', '.join(r.assumptions)}")
        print(f"  why it matters: {r.why}")
        for i, st in enumerate(r.steps, 1):
            print(f"  step {i}: {st.claim}")
            print(f"          {f'proven by {st.method}' if st.ok else 'NOT SHOWN'}")
        print(
            f"  oracle confirmation: {r.numeric_checks} check(s)"
            + (f", FAILED: {r.numeric_error}" if r.numeric_error else ", all exact")
        )
        print(f"  status: {r.status} ({r.seconds:.2f} s)")
        return 0 if ok else 1
    rows: list[tuple[str, ...]] = [("fact", "status", "steps", "oracle checks", "time")]
    for r in results:
        rows.append(
            (
                r.name,
                r.status,
                f"{sum(s.ok for s in r.steps)}/{len(r.steps)}",
                str(r.numeric_checks),
                f"{r.seconds:.2f} s",
            )
        )
    _table(rows)
    print(
        f"\n{sum(r.status == 'proven' for r in results)} of {len(results)} proven in "
        f"{sum(r.seconds for r in results):.1f} s"
    )
    return 0 if ok else 1


def _identity(lhs: str, rhs: str, assume: list[str], as_json: bool, time_limit: float) -> int:
    import json

    from normspec.proofs.identity import check_identity

    res = check_identity(lhs, rhs, assume, time_limit=time_limit)
    if as_json:
        print(json.dumps(res.as_dict(), indent=2))
    else:

        def clip(text: str) -> str:  # a 100 kB input is named, not echoed
            return text if len(text) <= 100 else f"{text[:60]}... ({len(text)} characters)"

        print(
            f"{res.status.upper()}: {clip(lhs)}  ==  {clip(rhs)}"
            + (f"   assuming {', '.join(clip(a) for a in assume)}" if assume else "")
        )
        for st in res.steps:
            print(f"  {st}")
    return res.exit_code


def _zoo(name: str | None, as_json: bool) -> int:
    import json

    from normspec.proofs.witnesses import find_witness
    from normspec.spec.bugzoo import VARIANTS, get_variant

    variants = [get_variant(name)] if name else list(VARIANTS.values())
    found = [(v, find_witness(v.name)) for v in variants]
    if as_json:
        print(
            json.dumps(
                [
                    {
                        "name": v.name,
                        "kind": v.kind,
                        "description": v.description,
                        "provenance": list(v.provenance),
                        "precondition": v.precondition,
                        "output": v.output,
                        "compared_with": v.convention,
                        "witness": {
                            "x": w.case["x"].tolist(),
                            "eps": w.case["eps"],
                            "momentum": w.case["momentum"],
                            "training": w.case["training"],
                            "running_mean": w.case["running_mean"].tolist(),
                            "running_var": w.case["running_var"].tolist(),
                            "field": w.field,
                            "index": list(w.index),
                            "spec": w.exact,
                            "variant": w.observed,
                            "ulps": w.ulps,
                        },
                    }
                    for v, w in found
                ],
                indent=2,
            )
        )
        return 0
    if name:
        v, w = found[0]
        print(f"{v.name} ({v.kind}): {v.description}")
        print(f"  seen in: {'; '.join(v.provenance)}")
        print(f"  precondition: {v.precondition}; compared with convention {v.convention!r}")
        print(f"  witness: {w.summary()}")
        return 0
    rows: list[tuple[str, ...]] = [("variant", "kind", "output", "witness distance", "seen in")]
    for v, w in found:
        dist = "NaN vs finite" if math.isinf(w.ulps) else f"{w.ulps:.0f} ULP"
        rows.append((v.name, v.kind, v.output, dist, v.provenance[0]))
    _table(rows)
    return 0


# ---------------------------------------------------------------- vectors


def _vectors(args: argparse.Namespace) -> int:
    import json

    if args.vectors_command == "generate":
        from normspec.vectors import generate

        t0 = time.perf_counter()
        output_folder(args.directory)
        manifest = generate(
            args.directory,
            tuple(args.convention or ["torch"]),
            tuple(args.dtype or ["float32"]),
            args.seed,
            onnx=args.onnx,
            family=tuple(args.family),
        )
        extra = f" and {len(manifest['onnx'])} ONNX node tests" if args.onnx else ""
        print(
            f"wrote {len(manifest['cases'])} cases{extra} to {args.directory} "
            f"({time.perf_counter() - t0:.1f} s); manifest: {args.directory / 'manifest.json'}"
        )
        return 0
    from normspec.vectors import check_case, load_cases, resolve_target
    from normspec.vectors.check import TARGET_CONVENTIONS, skipped_case

    in_worker = args.target.startswith("python:")  # user code: its crash or hang must not take us down
    if in_worker:
        from normspec._load import check_callable_spec

        check_callable_spec(args.target)  # a missing file or module is bad input, said before any work
    factory = None if in_worker else resolve_target(args.target)
    follows = tuple(args.follows) if args.follows else TARGET_CONVENTIONS.get(args.target)
    if args.max_ulp is not None and not (args.max_ulp >= 0 and math.isfinite(args.max_ulp)):
        raise InvalidArgumentError(expected("a finite number of ULPs >= 0", "--max-ulp", args.max_ulp))
    if not (0 < args.timeout < math.inf):
        raise InvalidArgumentError(expected("a finite number of seconds > 0", "--timeout", args.timeout))
    cases = list(load_cases(args.directory, args.case))
    skipped = [skipped_case(case, args.target, follows) for case in cases]
    compared = [case for case, skip in zip(cases, skipped, strict=True) if skip is None]
    if factory is not None:
        checked = iter([check_case(case, factory(case.convention)) for case in compared])
    else:
        from normspec.targets.runner import check_vectors

        checked = iter(check_vectors(args.target, compared, args.timeout))
    results = [skip if skip is not None else next(checked) for skip in skipped]
    too_far = [r for r in results if args.max_ulp is not None and r.max_ulp > args.max_ulp]
    bad = [r for r in results if r.failed] + [r for r in too_far if not r.failed]
    if args.json:
        print(
            json.dumps(
                {
                    "target": args.target,
                    "directory": str(args.directory),
                    "max_ulp": args.max_ulp,
                    "results": [r.__dict__ for r in results],
                },
                indent=2,
            )
        )
    else:
        rows: list[tuple[str, ...]] = [("case", "status", "max ULP", "y correctly rounded", "beyond ref. budget")]
        for r in results:
            rows.append(
                (
                    r.case,
                    r.status,
                    "-" if math.isinf(r.max_ulp) else f"{r.max_ulp:.0f}",
                    f"{100 * r.correctly_rounded:.1f} %",
                    str(r.beyond_budget),
                )
            )
        _table(rows)
        for r in bad:
            print(f"\n{r.case}: {r.status}{f' ({r.max_ulp:g} ULP)' if r.status == 'differs' else ''}: {r.worst}")
            print(f"  reproduce: normspec vectors check {args.directory} --target {args.target} --case {r.case}")
        print(
            f"\n{len(results)} cases: "
            + ", ".join(
                f"{sum(r.status == s for r in results)} {s}"
                for s in ("exact", "differs", "non-finite", "crash", "malformed", "other convention")
                if any(r.status == s for r in results)
            )
        )
    return 1 if bad else 0


# ---------------------------------------------------------------- audit


def _audit(args: argparse.Namespace) -> int:
    import json

    from normspec._progress import Progress
    from normspec.targets.audit import audit_size, resolve_target, run_audit
    from normspec.targets.report import render_text, write_html

    _, conv = resolve_target(args.target, args.convention)
    if args.report:
        output_folder(args.report)
    bar = Progress(audit_size(conv), f"normspec audit {args.target}", mode=args.progress)
    rep = run_audit(
        args.target,
        args.convention,
        timeout=args.timeout,
        progress=bar,
        reproducers=args.report / "reproducers" if args.report else None,
    )
    bar.close()
    if args.json:
        print(json.dumps(rep.as_dict(), indent=2))
    else:
        print(render_text(rep))
    if args.report:
        page = write_html(rep, args.report)
        if not args.json:
            print(f"report: {page} (and report.json)")
    return rep.exit_code(strict=args.strict)


# ---------------------------------------------------------------- diagnose


def _diagnose(args: argparse.Namespace) -> int:
    import json

    from normspec._progress import Progress
    from normspec.diagnose import diagnose, plot, read_batches, render_text

    momentum: float | str | None = None
    if args.momentum is not None:
        try:
            momentum = args.momentum if args.momentum == "cumulative" else float(args.momentum)
        except ValueError:
            raise InvalidArgumentError(expected("a number or 'cumulative'", "--momentum", args.momentum)) from None
    observed = load_npz(args.observed) if args.observed else None
    if args.plot:
        output_folder(args.plot)
    bar = Progress(0, f"normspec diagnose {args.batches} (elements)", mode=args.progress)
    diag = diagnose(
        read_batches(args.batches),
        args.convention,
        momentum=momentum,
        eps=args.eps,
        backward=not args.no_backward,
        observed=observed,
        progress=bar,
    )
    bar.close()
    print(json.dumps(diag.as_dict(), indent=2) if args.json else render_text(diag, args.batches))
    if args.plot:
        pngs = plot(diag, args.plot)
        if not args.json:
            print("plots: " + ", ".join(str(p) for p in pngs))
    return 1 if diag.causes else 0


# ---------------------------------------------------------------- budget


def _budget(args: argparse.Namespace) -> int:
    import json

    from normspec.budgets import budget_for_batch_norm, classify, get_algorithm
    from normspec.oracle import batch_norm

    alg = get_algorithm(args.algorithm)
    arrays = load_npz(args.input)
    plot_path = output_path(args.plot, ".png") if args.plot else None
    if "x" not in arrays:
        raise InputFileError(f"{str(args.input)!r} has no array named 'x'")
    x = arrays["x"]
    params = [arrays.get(k) for k in ("weight", "bias", "running_mean", "running_var")]
    if args.target:
        from normspec.vectors import resolve_target

        fn = resolve_target(args.target)("torch")
        observed = np.asarray(fn(x, *params, args.training, 0.1, args.eps)[0])
    elif args.observed in arrays:
        observed = arrays[args.observed]
    else:
        raise InputFileError(f"{str(args.input)!r} has no observed output named {args.observed!r}")
    if observed.shape != x.shape:
        raise InputFileError(f"observed output shape {observed.shape} differs from x.shape={x.shape}")
    res = batch_norm(
        x,
        params[0],
        params[1],
        params[2] if not args.training else None,
        params[3] if not args.training else None,
        training=args.training,
        eps=args.eps,
        convention="torch_raw",
        axis=args.axis,
    )
    exact = np.array([float(res.exact.y(i, prec=80)) for i in np.ndindex(x.shape)]).reshape(x.shape)
    budget = budget_for_batch_norm(
        alg,
        x,
        params[0],
        params[1],
        args.eps,
        training=args.training,
        running_mean=params[2],
        running_var=params[3],
        axis=args.axis,
    )
    c = classify(observed.astype(res.y.dtype), res.y, exact, budget)
    # the budget in ULPs of each output, and in ULPs of the terms' scale |gamma xhat| + |gamma| + |beta|
    shape = [1] * x.ndim
    shape[args.axis] = x.shape[args.axis]
    g = np.abs(np.ones(x.shape[args.axis]) if params[0] is None else params[0].astype(np.float64)).reshape(shape)
    b = np.abs(np.zeros(x.shape[args.axis]) if params[1] is None else params[1].astype(np.float64)).reshape(shape)
    with np.errstate(all="ignore"):
        unit_y = np.spacing(np.abs(res.y)).astype(np.float64)
        terms = (np.abs(exact - b) + g + b).astype(res.y.dtype)
        unit_t = np.spacing(terms).astype(np.float64)
        finite = np.isfinite(budget)
        in_ulps = {
            "budget_ulps_of_y_median": float(np.median(budget[finite] / unit_y[finite])) if finite.any() else None,
            "budget_ulps_of_terms_median": float(np.median(budget[finite] / unit_t[finite])) if finite.any() else None,
            "infinite_budget_elements": int((~finite).sum()),
        }
    if args.json:
        print(json.dumps({"algorithm": alg.as_dict(), **c.as_dict(), **in_ulps, "elements": int(x.size)}, indent=2))
    else:
        print(f"budget of {args.algorithm}: {json.dumps(alg.as_dict())}")
        rows: list[tuple[str, ...]] = [("class", "elements", "share")]
        for k, v in c.counts.items():
            rows.append((k, str(v), f"{100 * v / max(1, x.size):.2f} %"))
        _table(rows)
        print(f"worst |observed - exact| / budget: {c.worst_ratio:.3g}   (max {c.max_ulp:.0f} ULP)")
        if in_ulps["budget_ulps_of_y_median"] is not None:
            print(
                f"budget, median over elements: {in_ulps['budget_ulps_of_y_median']:.3g} ULP of y, "
                f"{in_ulps['budget_ulps_of_terms_median']:.3g} ULP of |gamma xhat| + |gamma| + |beta|; "
                f"{in_ulps['infinite_budget_elements']} element(s) with no finite budget (NaN possible)"
            )
        if c.worst:
            print(
                f"worst element {tuple(c.worst['index'])}: observed {c.worst['observed']!r}, exact "
                f"{c.worst['exact']!r}, budget {c.worst['budget']:.3g}"
            )
    if args.plot:
        try:
            import matplotlib

            matplotlib.use("Agg")
            import matplotlib.pyplot as plt
        except ImportError:
            raise MissingExtraError("--plot needs matplotlib: pip install 'normspec[audit]'") from None

        r = c.ratios[np.isfinite(c.ratios) & (c.ratios > 0)]
        fig, ax = plt.subplots(figsize=(6, 3.5))
        ax.hist(np.log10(r), bins=40)
        ax.axvline(0, color="red", label="budget")
        ax.set_xlabel("log10(|observed - exact| / budget)")
        ax.set_title(f"{args.input.name} against {args.algorithm}")
        ax.legend()
        fig.tight_layout()
        assert plot_path is not None  # checked with args.plot, before the work
        fig.savefig(plot_path, dpi=90)
        plt.close(fig)
    return 1 if c.counts["beyond budget"] or c.counts["non-finite"] else 0


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
