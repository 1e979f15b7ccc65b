"""Re-check an implementation against stored vectors.

A *target* follows the audit protocol: a callable
``f(x, weight, bias, running_mean, running_var, training, momentum, eps)``
returning ``(y, new_running_mean, new_running_var)`` as numpy arrays, where
``momentum`` and ``eps`` mean what the case's convention says they mean.
Built-in targets: ``oracle`` (normspec itself) and ``torch``
(``torch.nn.functional.batch_norm`` on CPU); anything else is named
``python:module:function`` or ``python:path/to/file.py:function``.

Steps are teacher-forced: each starts from the *expected* running
statistics of the step before, so every step is judged on its own.
"""

from __future__ import annotations

import math
import traceback
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
from normspec.oracle import batch_norm, ulp_distance
from normspec.vectors.generate import VectorCase, decode
from normspec.vectors.store import load_manifest, verified_path

from normspec._load import load_callable
from normspec._npz import load_npz
from normspec.errors import InputFileError, InvalidArgumentError, UnknownNameError

__all__ = ["load_cases", "resolve_target", "check_case", "CaseResult", "Target", "TargetFailedError"]

Target = Callable[..., tuple[Any, Any, Any]]
_INPUTS = ("x", "weight", "bias", "running_mean", "running_var")
_EXPECTED = ("y", "mean", "var", "running_mean_out", "running_var_out")
_GRADIENTS = ("dx", "dweight", "dbias")  # family cases with an upstream gradient dy


def load_cases(directory: Path, names: list[str] | None = None) -> Iterator[VectorCase]:
    """Cases of a vector directory, each file checked against its manifest hash first."""
    directory = Path(directory)
    manifest = load_manifest(directory)
    known = {e["name"] for e in manifest["cases"]}
    for n in names or []:
        if n not in known:
            raise UnknownNameError(f"Expected a case name from the manifest, but got case={n!r}")
    for entry in manifest["cases"]:
        if names and entry["name"] not in names:
            continue
        arrays = load_npz(verified_path(directory, entry))
        kinds = entry.get("arrays", {})
        try:
            data = {k: decode(v, kinds.get(k, v.dtype.name)) for k, v in arrays.items()}
            inputs = {k: data[k] for k in _INPUTS}
            inputs.update({k: data[k] for k in ("groups", "dy", "residual", "dresidual") if k in data})
            expected = {k: data[k] for k in _EXPECTED + _GRADIENTS + ("residual_out",) if k in data or k == "y"}
        except KeyError as exc:
            raise InputFileError(f"case {entry['name']!r} lacks array {exc}") from None
        if inputs["x"].shape[0] != entry["steps"] or expected["y"].shape[0] != entry["steps"]:
            raise InputFileError(
                f"case {entry['name']!r}: the manifest says {entry['steps']} step(s), x has {inputs['x'].shape[0]} "
                f"and y {expected['y'].shape[0]}"
            )
        expected.update({k: v for k, v in data.items() if k.startswith("budget_")})
        yield VectorCase(
            entry["name"],
            entry["convention"],
            entry["kind"],
            entry["seed"],
            entry["dtype"],
            bool(entry["training"]),
            float(entry["momentum"]),
            float(entry["eps"]),
            int(entry["axis"]),
            inputs,
            expected,
            entry.get("note", ""),
        )


class TargetFailedError(Exception):
    """Raised by a target that ran elsewhere (a worker process) to report its failure, already worded."""


def _failure(exc: Exception) -> str:
    if isinstance(exc, TargetFailedError):
        return str(exc)
    return traceback.format_exception_only(type(exc), exc)[-1].strip()


def _oracle_target(convention: str) -> Target:
    def run(x: Any, w: Any, b: Any, rm: Any, rv: Any, training: bool, momentum: float, eps: float) -> Any:
        r = batch_norm(x, w, b, rm, rv, training=training, momentum=momentum, eps=eps, convention=convention)
        return r.y, r.running_mean, r.running_var

    return run


def _to_torch(a: np.ndarray) -> Any:
    import torch

    if a.dtype.name == "bfloat16":  # torch cannot read ml_dtypes arrays: go through the bits
        return torch.from_numpy(np.ascontiguousarray(a).view(np.int16)).view(torch.bfloat16)
    return torch.from_numpy(np.ascontiguousarray(a))


def _from_torch(t: Any, like: np.ndarray) -> np.ndarray:
    import torch

    if t.dtype == torch.bfloat16:
        return t.view(torch.int16).numpy().view(like.dtype)
    return np.asarray(t.numpy())


def _torch_target(x: Any, w: Any, b: Any, rm: Any, rv: Any, training: bool, momentum: float, eps: float) -> Any:
    """PyTorch CPU; 16-bit inputs run with float32 parameters (PyTorch's mixed-type path), as in AMP."""
    import torch

    pdt = rm.dtype if x.dtype.itemsize == 2 else x.dtype
    rmt, rvt = torch.tensor(rm), torch.tensor(rv)
    y = torch.nn.functional.batch_norm(
        _to_torch(x),
        rmt,
        rvt,
        _to_torch(w.astype(pdt)),
        _to_torch(b.astype(pdt)),
        training=training,
        momentum=momentum,
        eps=eps,
    )
    return _from_torch(y, x), rmt.numpy(), rvt.numpy()


def _family_or(convention: str) -> Target | None:
    from normspec.spec.conventions import CONVENTIONS

    conv = CONVENTIONS.get(convention)
    return family_oracle_target(convention) if conv is not None and conv.layer != "batch_norm" else None


# The conventions a built-in target follows; a case generated under another one is not compared.
TARGET_CONVENTIONS: dict[str, tuple[str, ...]] = {"torch": ("torch",)}


def skipped_case(case: VectorCase, target: str, follows: tuple[str, ...] | None) -> CaseResult | None:
    """A result for a case the target does not claim to follow (another convention, another
    layer), or None when the case is to be compared."""
    if follows is None or case.convention in follows:
        return None
    why = f"generated for {case.convention}; {target} follows {', '.join(follows)}: not compared"
    return CaseResult(case.name, "other convention", 0.0, 1.0, why)


def resolve_target(spec: str) -> Callable[[str], Target]:
    """A factory: convention name -> callable following the protocol."""
    if spec == "oracle":
        return lambda convention: _family_or(convention) or _oracle_target(convention)
    if spec == "torch":
        try:
            import torch  # noqa: F401
        except ImportError:
            raise InvalidArgumentError("target 'torch' needs PyTorch: pip install 'normspec[torch]'") from None
        return lambda convention: _torch_target
    if spec.startswith("python:"):  # in this process; ``normspec vectors check`` runs it in a worker instead
        fn = load_callable(spec)
        return lambda convention: fn
    raise UnknownNameError(f"Expected oracle, torch or python:module:function, but got target={spec!r}")


@dataclass
class CaseResult:
    case: str
    status: str  # exact | differs | non-finite | crash | malformed | other convention (not compared)
    max_ulp: float = 0.0
    correctly_rounded: float = 1.0  # share of y elements at 0 ULP
    worst: str = ""
    beyond_budget: int = 0  # y elements farther than the stored reference budget (information, not a failure)

    @property
    def failed(self) -> bool:
        return self.status in ("non-finite", "crash", "malformed")


def _check_family(case: VectorCase, target: Target) -> CaseResult:
    """A family case: the target is called as f(x, weight, bias, eps, groups) -> y (eps NaN means None);
    where the case carries gradients and the target has a ``backward`` attribute, also as
    f.backward(x, weight, bias, eps, groups, dy) -> {"dx": ..., "dweight": ..., "dbias": ...}.
    A fused residual add's case passes its ``residual`` last and expects ``(y, new residual)``;
    its backward gets ``residual, dresidual`` after ``dy``."""
    inp = case.inputs
    args = (inp["x"][0], inp["weight"], inp["bias"])
    groups = int(np.asarray(inp["groups"]).ravel()[0])
    fused = (inp["residual"][0],) if "residual" in inp else ()
    try:
        out = target(*(a.copy() for a in args), case.eps, groups, *(a.copy() for a in fused))
        if fused:
            if not isinstance(out, tuple | list) or len(out) != 2:
                return CaseResult(case.name, "malformed", math.inf, 0.0, "expected (y, new residual)")
            got = {"y": np.asarray(out[0]), "residual_out": np.asarray(out[1])}
        else:
            got = {"y": np.asarray(out)}
    except Exception as exc:  # a crashing implementation is a result, not our crash
        return CaseResult(case.name, "crash", math.inf, 0.0, _failure(exc))
    backward: Callable[..., Any] | None = getattr(target, "backward", None)
    note = ""
    if "dx" in case.expected and backward is None:
        note = "gradients not compared (the target has no backward)"
    elif "dx" in case.expected and backward is not None:
        more: tuple[np.ndarray, ...] = (*fused, inp["dresidual"][0]) if fused else ()
        try:
            grads = backward(*(a.copy() for a in args), case.eps, groups, inp["dy"][0].copy(),
                             *(a.copy() for a in more))  # fmt: skip
            got.update({k: np.asarray(grads[k]) for k in _GRADIENTS if k in case.expected})
        except Exception as exc:  # a crashing implementation is a result, not our crash
            return CaseResult(case.name, "crash", math.inf, 0.0, f"backward: {_failure(exc)}")
    worst, share, where = 0.0, 1.0, note
    for name, value in got.items():
        want = case.expected[name][0]
        if value.shape != want.shape:
            return CaseResult(
                case.name, "malformed", math.inf, 0.0, f"{name} shape {value.shape}, expected {want.shape}"
            )
        with np.errstate(invalid="ignore", over="ignore"):
            d = ulp_distance(value.astype(want.dtype), want)
        finite = np.isfinite(want.astype(np.float64))
        bad = finite & ~np.isfinite(value.astype(np.float64))
        if bad.any():
            i = tuple(int(v) for v in np.argwhere(bad)[0])
            return CaseResult(
                case.name, "non-finite", math.inf, float(np.mean(d == 0)), f"{name}{list(i)}: got {value[i]!r}"
            )
        here = float(d[finite].max()) if finite.any() else 0.0
        if name == "y":
            share = float(np.mean(d == 0))
        if here > worst:
            worst, where = here, f"{name}: {here:.0f} ULP" + (f"; {note}" if note else "")
    return CaseResult(case.name, "exact" if worst == 0 else "differs", worst, share, where)


def family_oracle_target(convention: str) -> Target:
    """The oracle as a family target, through the one dispatch (:func:`normspec.oracle.forward`)."""
    from normspec.spec.conventions import get_convention
    from normspec.vectors.family import GRADIENT_LAYERS, family_backward, family_forward

    conv = get_convention(convention)

    def run(x: Any, w: Any, b: Any, eps: float, groups: int, residual: Any = None) -> Any:
        return family_forward(conv, x, w, b, eps, groups, residual)

    def backward(x: Any, w: Any, b: Any, eps: float, groups: int, dy: Any, *fused: Any) -> Any:
        return family_backward(conv, x, w, b, eps, groups, dy, *fused)

    if conv.layer in GRADIENT_LAYERS:
        run.backward = backward  # type: ignore[attr-defined]
    return run


def check_case(case: VectorCase, target: Target) -> CaseResult:
    if case.kind in ("layer_norm", "rms_norm", "group_norm", "instance_norm", "mean_variance_norm"):
        return _check_family(case, target)
    inp, exp = case.inputs, case.expected
    worst_ulp, shares, worst = 0.0, [], ""
    beyond = 0
    status = "exact"
    for k in range(case.steps):
        rm = inp["running_mean"] if k == 0 else exp["running_mean_out"][k - 1]
        rv = inp["running_var"] if k == 0 else exp["running_var_out"][k - 1]
        try:
            out = target(
                inp["x"][k].copy(),
                inp["weight"].copy(),
                inp["bias"].copy(),
                rm.copy(),
                rv.copy(),
                case.training,
                case.momentum,
                case.eps,
            )
            y, new_rm, new_rv = (np.asarray(o) for o in out)
        except Exception as exc:  # a crashing implementation is a result, not our crash
            return CaseResult(case.name, "crash", math.inf, 0.0, f"step {k}: {_failure(exc)}")
        fields = [("y", y, exp["y"][k])]
        if case.training:
            fields += [
                ("running_mean", new_rm, exp["running_mean_out"][k]),
                ("running_var", new_rv, exp["running_var_out"][k]),
            ]
        for name, got, want in fields:
            if got.shape != want.shape:
                return CaseResult(
                    case.name, "malformed", math.inf, 0.0, f"step {k} {name}: shape {got.shape}, expected {want.shape}"
                )
            got = got.astype(want.dtype) if got.dtype != want.dtype else got
            with np.errstate(invalid="ignore", over="ignore"):
                dist = ulp_distance(got, want)
            bad_nan = ~np.isfinite(got.astype(np.float64)) & np.isfinite(want.astype(np.float64))
            if name == "y":
                shares.append(float(np.mean(dist == 0)) if dist.size else 1.0)
                for key in (k for k in exp if k.startswith("budget_")):
                    with np.errstate(invalid="ignore", over="ignore"):
                        err = np.abs(got.astype(np.float64) - want.astype(np.float64))
                    # |got - rounded exact| <= budget + half an ULP covers |got - exact| <= budget
                    slack = exp[key][k] + 0.5 * np.spacing(np.abs(want)).astype(np.float64)
                    beyond += int(np.sum(np.isfinite(got) & (err > slack)))
            if bad_nan.any():
                i = tuple(int(v) for v in np.argwhere(bad_nan)[0])
                return CaseResult(
                    case.name,
                    "non-finite",
                    math.inf,
                    float(np.mean(shares)) if shares else 0.0,
                    f"step {k} {name}{list(i)}: got {got[i]!r}, exact {want[i]!r}",
                )
            if dist.size and dist.max() > worst_ulp:
                i = tuple(int(v) for v in np.unravel_index(int(np.argmax(dist)), dist.shape))
                worst_ulp = float(dist.max())
                worst = f"step {k} {name}{list(i)}: got {float(got[i])!r}, exact {float(want[i])!r}"
                status = "differs"
    return CaseResult(case.name, status, worst_ulp, float(np.mean(shares)) if shares else 1.0, worst, beyond)
