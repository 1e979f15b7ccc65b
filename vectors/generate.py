"""Named, seeded regression cases with correctly rounded expected outputs.

Every case is produced by code in this module from a name and a seed, so a
vector directory can be regenerated bit for bit (``normspec vectors
generate`` twice gives identical files).  A case is a short training or
evaluation *sequence*: ``steps`` forwards, each with its own ``x``, the
running statistics carried from one step to the next, and the oracle's
outputs after every step.

Each case file (.npz, no pickles) holds ``x`` (steps, ...), ``weight``,
``bias``, ``running_mean``, ``running_var`` (the initial state) and the
expected ``y`` (steps, ...), ``mean``, ``var``, ``running_mean_out``,
``running_var_out`` (steps, C); float32 cases also carry
``budget_naive_float32_pairwise`` (steps, ...), the rigorous error bound of
the spec's formula evaluated plainly in float32 (see ``REFERENCE_ALGORITHM``).
Family cases (LayerNorm, RMSNorm, GroupNorm, InstanceNorm) hold ``x``, the
parameters, ``groups`` and the expected ``y``; LayerNorm and RMSNorm cases also an
upstream gradient ``dy`` and the exact ``dx``, ``dweight`` (and ``dbias``).
bfloat16 arrays are stored as their uint16 bit patterns; the manifest records
every array's dtype.
"""

from __future__ import annotations

import json
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
from normspec.oracle import batch_norm
from normspec.oracle.formats import bfloat16_dtype
from normspec.spec.conventions import get_convention
from normspec.vectors.store import MANIFEST, sha256, write_manifest, write_npz

from normspec._version import __version__
from normspec.errors import InvalidArgumentError, expected

__all__ = ["VectorCase", "build_cases", "generate", "encode", "decode", "DTYPES"]

DTYPES = ("float16", "bfloat16", "float32", "float64")
FORMAT_VERSION = 1


@dataclass
class VectorCase:
    name: str
    convention: str
    kind: str
    seed: int
    dtype: str
    training: bool
    momentum: float
    eps: float
    axis: int
    inputs: dict[str, np.ndarray]
    expected: dict[str, np.ndarray] = field(default_factory=dict)
    note: str = ""

    @property
    def steps(self) -> int:
        return int(self.inputs["x"].shape[0])

    def meta(self) -> dict[str, Any]:
        return {
            "name": self.name,
            "convention": self.convention,
            "kind": self.kind,
            "seed": self.seed,
            "dtype": self.dtype,
            "training": self.training,
            "momentum": self.momentum,
            "eps": self.eps,
            "axis": self.axis,
            "steps": self.steps,
            "note": self.note,
        }


def _np_dtype(name: str) -> Any:
    if name == "bfloat16":
        dt = bfloat16_dtype()
        if dt is None:
            raise InvalidArgumentError("bfloat16 vectors need ml_dtypes: pip install 'normspec[bfloat16]'")
        return dt
    return np.dtype(name)


def encode(arr: np.ndarray) -> tuple[np.ndarray, str]:
    """An array as stored (bfloat16 as uint16 bits) and its dtype name."""
    name = np.dtype(arr.dtype).name
    return (arr.view(np.uint16), "bfloat16") if name == "bfloat16" else (arr, name)


def decode(arr: np.ndarray, dtype: str) -> np.ndarray:
    return arr.view(_np_dtype("bfloat16")) if dtype == "bfloat16" else arr


def _stat_dtype(dtype: str) -> Any:
    return np.float64 if dtype == "float64" else np.float32


def _x_kinds(dtype: str) -> Iterator[tuple[str, Callable[[np.random.Generator], np.ndarray], bool, str]]:
    """(name, x maker for one step, training, note)."""
    big = {"float16": 1234.5, "bfloat16": 1.2345678e7, "float32": 1.2345678e7, "float64": 1.2345678e7}[dtype]
    mean_hi = 1e3 if dtype == "float16" else 1e4
    yield "random_train", lambda r: r.standard_normal((4, 3, 5)), True, "standard normal"
    yield "random_eval", lambda r: r.standard_normal((4, 3, 5)) * 2 + 0.5, False, "normal, mean 0.5, std 2"
    yield "constant_channel", lambda r: np.full((2, 3, 4), big), True, "pytorch#5410: exact y = beta"
    yield "large_mean", lambda r: mean_hi + r.random((4, 3, 5)), True, "x = big + U[0,1): cancellation killer"
    if dtype in ("float32", "float64", "bfloat16"):
        yield (
            "huge_magnitude",
            lambda r: r.choice([-1.0, 1.0], (2, 3, 4)) * 1e30 * (1 + r.random((2, 3, 4))),
            True,
            "squares overflow float32 (pytorch#162489)",
        )
    tiny = {"float16": 2.0**-24, "bfloat16": 2.0**-133, "float32": 2.0**-149, "float64": 2.0**-1074}[dtype]
    yield "subnormal", lambda r: r.integers(-20, 21, (3, 3, 4)) * tiny, True, "subnormal inputs"
    yield "two_values", lambda r: r.standard_normal((2, 3, 1)), True, "n = 2 per channel"
    yield "one_value", lambda r: r.standard_normal((1, 3, 1)), True, "n = 1 per channel"


def _check_dtypes(dtypes: Any) -> None:
    if isinstance(dtypes, str) or not isinstance(dtypes, (tuple, list)):
        raise InvalidArgumentError(expected("a tuple of dtype names such as ('float32',)", "dtypes", dtypes))
    for d in dtypes:
        if d not in DTYPES:
            raise InvalidArgumentError(f"Expected dtypes among {', '.join(DTYPES)}, but got dtype={d!r}")


def build_cases(
    convention: str, dtypes: tuple[str, ...] = ("float32",), seed: int = 0, witnesses: bool = True
) -> list[VectorCase]:
    """Every case for one convention profile, with expected outputs filled in."""
    _check_dtypes(dtypes)
    conv = get_convention(convention)
    cases: list[VectorCase] = []
    for dtype in dtypes:
        dt = _np_dtype(dtype)
        sdt = _stat_dtype(dtype)
        for kind, make, training, note in _x_kinds(dtype):
            if kind == "one_value" and conv.one_value == "error":
                continue  # the convention refuses n = 1: nothing to expect
            rng = np.random.default_rng([seed, len(cases)])
            steps = 3 if kind == "random_train" else 1
            xs = np.stack([make(rng) for _ in range(steps)]).astype(dt)
            c = xs.shape[2]
            inputs = {
                "x": xs,
                "weight": (1 + 0.5 * rng.standard_normal((c,))).astype(dt),
                "bias": rng.standard_normal((c,)).astype(dt),
                "running_mean": rng.standard_normal((c,)).astype(sdt),
                "running_var": (0.5 + rng.random((c,))).astype(sdt),
            }
            cases.append(
                VectorCase(
                    f"{convention}-{dtype}-{kind}",
                    convention,
                    kind,
                    seed,
                    dtype,
                    training,
                    conv.momentum,
                    conv.default_eps(24),
                    1,
                    inputs,
                    note=note,
                )
            )
        if witnesses and dtype == "float32":
            cases.extend(_witness_cases(convention, seed, len(cases)))
    for case in cases:
        case.expected = expected_outputs(case)
    return cases


def _witness_cases(convention: str, seed: int, start: int) -> list[VectorCase]:
    from normspec.proofs.witnesses import find_witness
    from normspec.spec.bugzoo import VARIANTS

    out = []
    refuses_n1 = get_convention(convention).one_value == "error"
    for name in VARIANTS:
        if VARIANTS[name].operator != "batch_norm":
            continue
        w = find_witness(name).case
        if refuses_n1 and w["x"].size // w["x"].shape[1] == 1:
            continue
        out.append(
            VectorCase(
                f"{convention}-float32-witness-{name}",
                convention,
                "witness",
                seed,
                "float32",
                bool(w["training"]),
                float(w["momentum"])
                if get_convention(convention).momentum_direction == "new"
                else 1 - float(w["momentum"]),
                float(w["eps"]),
                1,
                {
                    "x": w["x"][None].astype(np.float32),
                    "weight": w["weight"],
                    "bias": w["bias"],
                    "running_mean": w["running_mean"],
                    "running_var": w["running_var"],
                },
                note=f"bug-zoo witness of {name}",
            )
        )
    return out


def expected_outputs(case: VectorCase) -> dict[str, np.ndarray]:
    """Run the oracle step by step, carrying its (rounded) running statistics."""
    inp = case.inputs
    rm, rv = inp["running_mean"], inp["running_var"]
    ys, means, variances, rms, rvs = [], [], [], [], []
    budgets: list[np.ndarray] = []
    for k in range(case.steps):
        res = batch_norm(
            inp["x"][k],
            inp["weight"],
            inp["bias"],
            rm,
            rv,
            training=case.training,
            momentum=case.momentum,
            eps=case.eps,
            convention=case.convention,
            axis=case.axis,
            num_batches_tracked=k,
        )
        assert res.running_mean is not None and res.running_var is not None
        if case.dtype == "float32":
            budgets.append(_reference_budget(case, k, rm, rv))
        rm, rv = res.running_mean, res.running_var
        ys.append(res.y)
        means.append(res.mean)
        variances.append(res.var)
        rms.append(rm)
        rvs.append(rv)
    return {
        "y": np.stack(ys),
        "mean": np.stack(means),
        "var": np.stack(variances),
        "running_mean_out": np.stack(rms),
        "running_var_out": np.stack(rvs),
        **({"budget_" + REFERENCE_ALGORITHM: np.stack(budgets)} if budgets else {}),
    }


# The per-element budget shipped with float32 vectors: the spec's formula evaluated plainly in float32
# with pairwise sums (normspec.budgets); an implementation farther than this from the exact value is
# less accurate than that simple evaluation order allows.
REFERENCE_ALGORITHM = "naive_float32_pairwise"


def _reference_budget(case: VectorCase, k: int, rm: np.ndarray, rv: np.ndarray) -> np.ndarray:
    from normspec.budgets import budget_for_batch_norm, get_algorithm
    from normspec.spec.conventions import get_convention

    eps = get_convention(case.convention).effective_eps(case.eps)
    return budget_for_batch_norm(
        get_algorithm(REFERENCE_ALGORITHM),
        case.inputs["x"][k],
        case.inputs["weight"],
        case.inputs["bias"],
        eps,
        training=case.training,
        running_mean=rm,
        running_var=rv,
        axis=case.axis,
    )


def build_family_cases(profile: str, seed: int = 0) -> list[VectorCase]:
    """Golden cases for a family layer (LayerNorm, RMSNorm, GroupNorm, InstanceNorm) under ``profile``.

    ``y`` is expected (these layers keep no running statistics); ``groups`` rides in the inputs.
    LayerNorm and RMSNorm cases also carry an upstream gradient ``dy`` (seeded, in x's dtype) and
    the exact ``dx``, ``dweight`` (and LayerNorm's ``dbias``), each correctly rounded.  A profile
    with a fused residual add takes a ``residual`` input and expects ``residual_out`` (the new
    stream) too; its gradient cases carry ``dresidual``, that stream's upstream gradient.
    """
    from normspec.spec.conventions import get_convention
    from normspec.vectors.family import GRADIENT_LAYERS, exact_family_gradients, exact_family_outputs, family_battery

    from normspec.errors import UnknownConventionError, expected

    conv = get_convention(profile)
    if conv.layer == "batch_norm":
        wanted = "a LayerNorm, RMSNorm, GroupNorm or InstanceNorm profile"
        raise UnknownConventionError(expected(wanted, "family", profile))
    out: list[VectorCase] = []
    for name, case, note in family_battery(conv, seed):
        x, w, b, eps = case["x"], case["weight"], case["bias"], float(case["eps"])
        outs = exact_family_outputs(conv, case)  # the profile's eps precision and affine form; a fused add's residual
        if conv.eps_cast == "float32" and not np.isnan(eps):
            eps = float(np.float32(eps))  # the eps the expected y was computed with, exactly
        inputs = {
            "x": x,
            "weight": w,
            "bias": b,
            "running_mean": case["running_mean"],
            "running_var": case["running_var"],
            "groups": np.asarray(case["groups"]),
        }
        if "residual" in case:
            inputs["residual"] = case["residual"][None]
        grads: dict[str, np.ndarray] = {}
        if conv.layer in GRADIENT_LAYERS:
            rng = np.random.default_rng([seed, len(out), 7])
            inputs["dy"] = rng.standard_normal(x.shape).astype(x.dtype)
            dres = None
            if "residual" in case:  # the new residual's upstream gradient
                inputs["dresidual"] = rng.standard_normal(x.shape).astype(x.dtype)
                dres = inputs["dresidual"][0]
            grads = {k: v[None] for k, v in exact_family_gradients(conv, case, inputs["dy"][0], dres).items()}
        dtype = np.dtype(x.dtype).name  # float32; float16 and bfloat16 for the LLM rows
        out.append(
            VectorCase(
                f"{profile}-{dtype}-{name}",
                profile,
                conv.layer,
                seed,
                dtype,
                True,
                0.0,
                eps,
                1,
                inputs,
                {**{k: v[None] for k, v in outs.items()}, **grads},
                note,
            )
        )
    return out


def generate(
    directory: Path | str,
    conventions: tuple[str, ...] = ("torch",),
    dtypes: tuple[str, ...] = ("float32",),
    seed: int = 0,
    *,
    onnx: bool = False,
    family: tuple[str, ...] = (),
    progress: Callable[[str], None] | None = None,
) -> dict[str, Any]:
    """Write every case's .npz and the manifest into ``directory``; returns the manifest."""
    _check_dtypes(dtypes)
    directory = Path(directory)
    directory.mkdir(parents=True, exist_ok=True)
    entries = []
    all_cases = []
    batches = [build_cases(convention, dtypes, seed) for convention in conventions]
    batches += [build_family_cases(profile, seed) for profile in family]
    for cases_of_one in batches:
        for case in cases_of_one:
            arrays, dtypes_of = {}, {}
            for key, arr in {**case.inputs, **case.expected}.items():
                arrays[key], dtypes_of[key] = encode(arr)
            rel = f"{case.name}.npz"
            write_npz(directory / rel, arrays)
            entries.append({**case.meta(), "file": rel, "sha256": sha256(directory / rel), "arrays": dtypes_of})
            all_cases.append(case)
            if progress is not None:
                progress(case.name)
    manifest: dict[str, Any] = {
        "format": FORMAT_VERSION,
        "generator": {
            "normspec": __version__,
            "numpy": np.__version__,
            "seed": seed,
            "conventions": list(conventions),
            "family": list(family),
            "dtypes": list(dtypes),
            "command": "normspec vectors generate "
            + json.dumps({"conventions": list(conventions), "dtypes": list(dtypes), "seed": seed}),
        },
        "protocol": "teacher-forced steps: each step starts from the expected running statistics of the previous one",
        "cases": entries,
    }
    if onnx:
        from normspec.vectors.onnx_export import export_onnx

        manifest["onnx"] = export_onnx(directory, all_cases)
    write_manifest(directory, manifest)
    return manifest


def manifest_path(directory: Path) -> Path:
    return directory / MANIFEST
