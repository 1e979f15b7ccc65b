"""``normspec audit``: run a real implementation against the oracle and say what it computes.

Every case runs in its own worker process with a timeout (a segfault, a hang
or an exception in the library becomes a result, never an auditor crash).
Probe cases infer the conventions the implementation follows (momentum
direction and weight, running-variance correction, eps placement, updates
in forward, behaviour at one value per channel, statistics used in
evaluation), which are compared with the profile it claims.  Accuracy cases
(random data, the known killers, bug-zoo witnesses, eps at 0 and below
1e-5, a training sequence) are compared element by element with the
oracle's correctly rounded outputs.

Findings have a kind: ``convention`` (inferred differs from claimed, or an
input the claimed convention refuses is accepted, or the reverse),
``non-finite`` (NaN or infinity where the exact value is finite), ``crash``,
and ``accuracy`` (more than twice, and 2 ULPs beyond, the error of the spec's
formula evaluated plainly in float32 on the same case: a peer measured in the
same run, not a tolerance; rigorous error budgets are a separate issue).
Distances are reported in ULPs of the output and in ULPs of the terms'
scale ``|gamma xhat| + |gamma| + |beta|`` (never zero, unlike an output that
cancels); no flat tolerance judges anything.
"""

from __future__ import annotations

import json
import math
import os
import select
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
from normspec.oracle import batch_norm, ulp_distance
from normspec.spec.conventions import Convention, get_convention
from normspec.targets.adapters import ADAPTERS, Adapter, get_adapter
from normspec.targets.verdict import VACUOUS_FACTOR, VACUOUS_ULP, degenerate_reason, exit_status, status_word

import normspec
from normspec.errors import DomainError, NormspecError, TargetUnavailableError, UnknownNameError

__all__ = ["AuditCase", "Outcome", "AuditReport", "battery", "run_audit", "claimed_conventions"]

F32 = np.float32


@dataclass
class AuditCase:
    name: str
    kind: str  # probe | accuracy | refusal
    x: np.ndarray  # (steps, N, C, ...)
    weight: np.ndarray
    bias: np.ndarray
    running_mean: np.ndarray
    running_var: np.ndarray
    training: bool
    momentum: float
    eps: float
    note: str = ""
    backward: bool = True  # whether each training step also runs a backward pass (MXNet updates only there)
    dy: np.ndarray | None = None  # a gradient case: dy for a single training step
    extra: dict[str, np.ndarray] = field(default_factory=dict)  # more arrays for the worker (GroupNorm's groups)

    def arrays(self) -> dict[str, Any]:
        return {
            "x": self.x,
            "weight": self.weight,
            "bias": self.bias,
            "running_mean": self.running_mean,
            "running_var": self.running_var,
            "training": np.array(self.training),
            "momentum": np.array(self.momentum),
            "eps": np.array(self.eps),
            "backward": np.array(self.backward),
            **({} if self.dy is None else {"dy": self.dy}),
            **self.extra,
        }


@dataclass
class Outcome:
    status: str  # ok | refused | crash | timeout
    result: dict[str, np.ndarray] | None = None
    message: str = ""
    seconds: float = 0.0


@dataclass
class AuditReport:
    target: str
    convention: str
    description: str
    claimed: dict[str, str]
    inferred: dict[str, str] = field(default_factory=dict)
    cases: list[dict[str, Any]] = field(default_factory=list)
    findings: list[dict[str, Any]] = field(default_factory=list)
    trajectories: dict[str, Any] = field(default_factory=dict)
    seconds: float = 0.0

    @property
    def failed(self) -> bool:
        """A finding with exit-status weight (:mod:`normspec.targets.verdict`)."""
        return exit_status(self.findings) == 1

    def exit_code(self, strict: bool = False) -> int:
        return exit_status(self.findings, strict=strict)

    def as_dict(self) -> dict[str, Any]:
        return {
            "target": self.target,
            "convention": self.convention,
            "description": self.description,
            "claimed": self.claimed,
            "inferred": self.inferred,
            "findings": self.findings,
            "cases": self.cases,
            "seconds": round(self.seconds, 2),
        }


# ---------------------------------------------------------------- the battery


def _new_weight(conv: Convention, w: float) -> float:
    """The momentum argument that gives the new batch statistic weight ``w`` under ``conv``."""
    return w if conv.momentum_direction == "new" else 1.0 - w


def _case(
    name: str,
    kind: str,
    x: Any,
    conv: Convention,
    *,
    training: bool,
    momentum: float | None = None,
    eps: float | None = None,
    weight: Any = None,
    bias: Any = None,
    rm: Any = None,
    rv: Any = None,
    note: str = "",
    backward: bool = True,
) -> AuditCase:
    xa = np.asarray(x, F32)
    if xa.ndim == 3 and kind != "sequence":
        xa = xa[None]
    c = xa.shape[2]
    return AuditCase(
        name,
        kind,
        xa,
        np.asarray(np.ones(c) if weight is None else weight, F32),
        np.asarray(np.zeros(c) if bias is None else bias, F32),
        np.asarray(np.zeros(c) if rm is None else rm, F32),
        np.asarray(np.ones(c) if rv is None else rv, F32),
        training,
        float(conv.momentum if momentum is None else momentum),
        float(conv.default_eps(24) if eps is None else eps),
        note,
        backward,
    )


def battery(conv: Convention, seed: int = 0) -> list[AuditCase]:
    rng = np.random.default_rng(seed)
    probe_x = np.array([[[1.0, 2.0]], [[3.0, 6.0]]])  # one channel, n = 4: mean 3, biased var 3.5
    cases = [
        _case(
            "probe_momentum",
            "probe",
            probe_x,
            conv,
            training=True,
            momentum=_new_weight(conv, 0.25),
            rm=[0.0],
            rv=[0.0],
            note="new statistic weighted 0.25 under the claimed convention",
        ),
        _case(
            "probe_forward_only",
            "probe",
            probe_x,
            conv,
            training=True,
            momentum=_new_weight(conv, 0.25),
            rm=[0.0],
            rv=[0.0],
            backward=False,
            note="a training forward with no backward pass",
        ),
        _case(
            "probe_bessel",
            "probe",
            probe_x,
            conv,
            training=True,
            momentum=_new_weight(conv, 1.0),
            rm=[0.0],
            rv=[0.0],
            note="running variance takes the batch variance whole",
        ),
        _case(
            "probe_eps",
            "probe",
            [[[0.0, 1.0]]],
            conv,
            training=False,
            eps=0.125,
            rm=[0.0],
            rv=[0.25],
            note="var 0.25, eps 0.125: inside and outside the square root differ",
        ),
        _case(
            "probe_eps_clamp",
            "probe",
            [[[0.0, 1.0]]],
            conv,
            training=False,
            eps=2.0**-20,
            rm=[0.0],
            rv=[2.0**-20],
            note="eps 2**-20 below 1.001e-5: raised or used as given",
        ),
        _case(
            "probe_one_value",
            "probe",
            [[[3.0], [-2.0]]],
            conv,
            training=True,
            bias=[0.5, 0.25],
            note="one value per channel in training",
        ),
        _case(
            "probe_eval_statistics",
            "probe",
            [[[10.0, 12.0]], [[14.0, 16.0]]],
            conv,
            training=False,
            rm=[0.0],
            rv=[1.0],
            note="evaluation with running statistics far from the batch's",
        ),
    ]
    g3, b3 = 1 + 0.5 * rng.standard_normal(3), rng.standard_normal(3)
    seq = (
        rng.standard_normal((4, 8, 3, 5)) * np.array([1, 2, 0.5])[None, None, :, None]
        + np.arange(4)[:, None, None, None]
    )
    cases += [
        _case(
            "random_sequence",
            "sequence",
            seq,
            conv,
            training=True,
            weight=g3,
            bias=b3,
            rm=rng.standard_normal(3),
            rv=1 + rng.random(3),
            note="4 training steps, running statistics carried",
        ),
        _case(
            "random_eval",
            "accuracy",
            rng.standard_normal((8, 3, 5)) * 2 + 0.5,
            conv,
            training=False,
            weight=g3,
            bias=b3,
            rm=rng.standard_normal(3),
            rv=1 + rng.random(3),
        ),
        _case(
            "constant_channel",
            "accuracy",
            np.full((2, 3, 4), 1.2345678e7),
            conv,
            training=True,
            note="pytorch#5410: exact y = beta",
        ),
        _case(
            "constant_channel_affine",
            "accuracy",
            np.full((2, 3, 4), 1.2345678e7),
            conv,
            training=True,
            weight=g3,
            bias=b3,
            note="a constant channel with weight and bias: exact y = beta",
        ),
        _case(
            "large_mean",
            "accuracy",
            1e4 + rng.random((8, 3, 5)),
            conv,
            training=True,
            weight=g3,
            bias=b3,
            note="x = 1e4 + U[0,1)",
        ),
        _case(
            "keras_trigger",
            "accuracy",
            100 + 0.01 * rng.standard_normal((64, 4, 1)),
            conv,
            training=True,
            note="keras PR #18795 trigger: E[x^2]-E[x]^2 goes negative in float32",
        ),
        _case(
            "flax_trigger",
            "accuracy",
            1e3 + 1e-2 * rng.standard_normal((64, 4, 1)),
            conv,
            training=True,
            note="google/flax#1491: mean 1e3, std 1e-2",
        ),
        _case(
            "huge_magnitude",
            "accuracy",
            rng.choice([-1.0, 1.0], (2, 3, 4)) * 1e30 * (1 + rng.random((2, 3, 4))),
            conv,
            training=True,
            note="squares overflow float32 (pytorch#162489)",
        ),
        _case("subnormal", "accuracy", rng.integers(-20, 21, (3, 3, 4)) * 2.0**-149, conv, training=True),
        _case("two_values", "accuracy", rng.standard_normal((2, 3, 1)), conv, training=True),
        _case(
            "eps_zero_constant",
            "accuracy",
            np.full((2, 2, 3), 5.0),
            conv,
            training=True,
            eps=0.0,
            bias=[0.75, -1.0],
            note="var = eps = 0: the 0/0 guard",
        ),
        _case(
            "eps_small",
            "accuracy",
            np.array([[[0.0, 2e-3]], [[1e-3, 1e-3]]]),
            conv,
            training=True,
            eps=1e-6,
            note="eps below 1e-5 with a tiny variance (TF raised it to 1.001e-5 before 2.21)",
        ),
        _case(
            "eps_negative",
            "refusal",
            rng.standard_normal((4, 2, 3)),
            conv,
            training=True,
            eps=-1e-5,
            note="eps < 0 with var + eps > 0: computed (the oracle) or refused (pytorch#166405): degenerate-input",
        ),
    ]
    half = _case(
        "float16_random",
        "accuracy",
        rng.standard_normal((8, 3, 5)) * 2 + 0.5,
        conv,
        training=True,
        weight=g3,
        bias=b3,
        note="float16 input, float32 parameters (mixed precision)",
    )
    half.x = half.x.astype(np.float16)
    cases.append(half)
    for name, xb in (
        ("backward_random", rng.standard_normal((8, 3, 5)) * 2 + 1),
        ("backward_large_mean", 1e4 + rng.random((8, 3, 5))),
    ):
        grad = _case(
            name,
            "backward",
            xb,
            conv,
            training=True,
            weight=g3,
            bias=b3,
            note="dx, dgamma, dbeta of a training forward",
        )
        grad.dy = rng.standard_normal(grad.x.shape).astype(F32)
        cases.append(grad)
    from normspec.proofs.witnesses import find_witness
    from normspec.spec.bugzoo import VARIANTS

    for name in VARIANTS:
        if VARIANTS[name].operator != "batch_norm":
            continue
        w = find_witness(name).case
        cases.append(
            AuditCase(
                f"witness_{name}",
                "accuracy",
                w["x"][None].astype(F32),
                w["weight"],
                w["bias"],
                w["running_mean"],
                w["running_var"],
                bool(w["training"]),
                _new_weight(conv, float(w["momentum"])),
                float(w["eps"]),
                f"bug-zoo witness of {name}",
            )
        )
    return cases


# ---------------------------------------------------------------- running


def venv_root() -> Path:
    """Where scripts/setup-target-venvs.sh put the targets' own environments."""
    default = Path(normspec.__file__).resolve().parent.parent / ".venvs"
    return Path(os.environ.get("NORMSPEC_VENVS", default))


def interpreter(adapter: Adapter, workdir: Path) -> tuple[str, dict[str, str]]:
    """The Python that runs ``adapter`` and its environment (a venv sees normspec through a shim)."""
    env = dict(os.environ)
    if adapter.venv is None:
        return sys.executable, env
    python = venv_root() / adapter.venv / "bin" / "python"
    if not python.exists():
        raise TargetUnavailableError(
            f"target {adapter.name!r} runs in its own virtual environment, which is missing ({python}): "
            f"bash scripts/setup-target-venvs.sh {adapter.venv}"
        )
    shim = workdir / "pythonpath"
    shim.mkdir(exist_ok=True)
    if not (shim / "normspec").exists():
        (shim / "normspec").symlink_to(Path(normspec.__file__).resolve().parent)
    env["PYTHONPATH"] = str(shim)
    return str(python), env


def run_cases(
    target: str, cases: list[AuditCase], timeout: float, workdir: Path, progress: Callable[[int], None] | None = None
) -> dict[str, Outcome]:
    """Cases in one worker process, each with its own deadline.  If the process dies or a case
    overruns, that case is the crash (or the timeout) and the rest go on in a fresh process."""
    python, env = interpreter(get_adapter(target), workdir)
    indir = workdir / "in"
    indir.mkdir(exist_ok=True)
    for case in cases:
        np.savez(indir / f"{case.name}.npz", **case.arrays())
    outcomes: dict[str, Outcome] = {}
    pending = [c.name for c in cases]
    attempt = 0
    while pending:
        attempt += 1
        outdir = workdir / f"out{attempt}"
        outdir.mkdir()
        cmd = [
            python,
            "-m",
            "normspec.targets.worker",
            target,
            str(outdir),
            *(str(indir / f"{name}.npz") for name in pending),
        ]
        errfile = outdir / "stderr.txt"  # a file, not a pipe: a chatty library cannot block on it
        with open(errfile, "w") as errsink:
            proc = subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=errsink, bufsize=0, env=env)
        assert proc.stdout is not None
        fd = proc.stdout.fileno()
        buf = b""
        current, started = None, time.perf_counter()
        failure: tuple[str, str] | None = None
        while True:
            if b"\n" not in buf:  # wait for more output only when no whole line is buffered
                ready, _, _ = select.select([fd], [], [], max(0.0, started + timeout - time.perf_counter()))
                if not ready:  # the current case overran its deadline
                    proc.kill()
                    failure = ("timeout", f"no answer in {timeout:g} s")
                    break
                chunk = os.read(fd, 65536)
                if not chunk:  # the process ended
                    break
                buf += chunk
                continue
            raw, buf = buf.split(b"\n", 1)
            word, _, name = raw.decode(errors="replace").strip().partition(" ")
            now = time.perf_counter()
            if word == "start":
                current, started = name, now
            elif word == "done" and name == current:
                outcomes[name] = _read_outcome(outdir, name, now - started)
                pending.remove(name)
                current = None
                if progress is not None:
                    progress(1)
        proc.wait()
        proc.stdout.close()
        err = errfile.read_text(errors="replace")
        if current is not None:  # it died or hung inside this case
            status, message = failure or (
                "crash",
                f"exit status {proc.returncode}: " + " | ".join(err.strip().splitlines()[-3:]),
            )
            outcomes[current] = Outcome(status, message=message, seconds=time.perf_counter() - started)
            pending.remove(current)
            if progress is not None:
                progress(1)
        elif pending and proc.returncode != 0:  # died before starting a case: nothing can run
            for name in pending:
                outcomes[name] = Outcome("crash", message=f"worker failed: {err.strip()[-300:]}")
            pending = []
    return outcomes


def _read_outcome(outdir: Path, name: str, seconds: float) -> Outcome:
    npz, err = outdir / f"{name}.npz", outdir / f"{name}.json"
    if npz.exists():
        with np.load(npz, allow_pickle=False) as data:
            return Outcome("ok", {k: data[k] for k in data.files}, seconds=seconds)
    info = json.loads(err.read_text())
    return Outcome("refused", message=f"{info['error']}: {info['message']}", seconds=seconds)


def oracle_sequence(case: AuditCase, convention: str) -> dict[str, Any]:
    """The exact sequence (raises NormspecError where the convention refuses the case)."""
    rm, rv = case.running_mean, case.running_var
    ys, rms, rvs, mags = [], [], [], []
    identity = False
    for k, x in enumerate(case.x):
        r = batch_norm(
            x,
            case.weight,
            case.bias,
            rm,
            rv,
            training=case.training,
            momentum=case.momentum,
            eps=case.eps,
            convention=convention,
            num_batches_tracked=k,
            with_backward=case.backward,
        )
        assert r.running_mean is not None and r.running_var is not None
        rm, rv = r.running_mean, r.running_var
        identity = identity or r.exact.identity
        ys.append(r.y)
        rms.append(rm)
        rvs.append(rv)
        shape = (1, -1) + (1,) * (x.ndim - 2)
        g, b = (
            np.abs(case.weight.astype(np.float64)).reshape(shape),
            np.abs(case.bias.astype(np.float64)).reshape(shape),
        )
        with np.errstate(invalid="ignore"):  # |gamma xhat| + |gamma| + |beta|: the terms' scale, never 0
            mags.append(np.abs(r.y.astype(np.float64) - case.bias.reshape(shape)) + g + b)
    return {
        "y": np.stack(ys),
        "running_mean": np.stack(rms),
        "running_var": np.stack(rvs),
        "magnitude": np.stack(mags),
        "identity": identity,  # the profile defines y = x here (one value per channel, Paddle CPU)
    }


def _rel_ulp(got: np.ndarray, want: np.ndarray, mag: np.ndarray) -> float:
    """Largest |got - want| in ULPs of float32 at the magnitude |gamma xhat| + |beta|."""
    with np.errstate(invalid="ignore", over="ignore"):
        unit = np.spacing(np.maximum(np.abs(mag), np.float64(np.finfo(F32).tiny)).astype(F32)).astype(np.float64)
        diff = np.abs(got.astype(np.float64) - want.astype(np.float64)) / unit
    finite = np.isfinite(diff)
    return float(diff[finite].max()) if finite.any() else 0.0


def naive_float32(case: AuditCase, conv: Convention) -> np.ndarray:
    """The peer the accuracy findings compare with: the spec's formula in plain float32
    (two-pass statistics, unfolded affine), the same steps and running statistics."""
    ys = []
    rm, rv = case.running_mean, case.running_var
    eps = F32(conv.effective_eps(case.eps))
    for x in case.x:
        axes = (0, *range(2, x.ndim))
        shape = (1, -1) + (1,) * (x.ndim - 2)
        with np.errstate(all="ignore"):
            if case.training:
                mean = x.mean(axis=axes, dtype=F32)
                var = ((x - mean.reshape(shape)) ** 2).mean(axis=axes, dtype=F32)
            else:
                mean, var = rm, rv
            y = (x - mean.reshape(shape)) / np.sqrt(var.reshape(shape) + eps) * case.weight.reshape(shape)
            ys.append((y + case.bias.reshape(shape)).astype(F32))
    return np.stack(ys)


def _beyond_budget(case: AuditCase, got_y: np.ndarray, algorithm: str, conv: Convention) -> tuple[int, float, int]:
    """Elements farther from the exact value than the algorithm's budget allows, the worst
    error/budget ratio, and the number of elements whose budget is unbounded."""
    from normspec.budgets import budget_for_batch_norm, get_algorithm

    alg = get_algorithm(algorithm)
    rm, rv = case.running_mean, case.running_var
    beyond, worst, unbounded = 0, 0.0, 0
    eps = conv.effective_eps(case.eps)
    for k, x in enumerate(case.x):
        r = batch_norm(
            x,
            case.weight,
            case.bias,
            rm,
            rv,
            training=case.training,
            momentum=case.momentum,
            eps=eps,
            convention="torch_raw" if case.training else conv.name,
        )
        budget = budget_for_batch_norm(
            alg, x, case.weight, case.bias, eps, training=case.training, running_mean=rm, running_var=rv
        )
        exact = np.array([float(r.exact.y(i, prec=80)) for i in np.ndindex(x.shape)]).reshape(x.shape)
        with np.errstate(invalid="ignore"):
            err = np.abs(got_y[k].astype(np.float64) - exact)
            over = err > budget
        beyond += int(over.sum())
        unbounded += int((~np.isfinite(budget)).sum())
        finite = np.isfinite(budget) & (budget > 0)
        if finite.any():
            worst = max(worst, float((err[finite] / budget[finite]).max()))
        rm, rv = (
            r.running_mean if r.running_mean is not None else rm,
            r.running_var if r.running_var is not None else rv,
        )
    return beyond, worst, unbounded


def claimed_conventions(conv: Convention) -> dict[str, str]:
    return {
        "momentum": f"{'new' if conv.momentum_direction == 'new' else 'old'}-weight (new statistic weight "
        f"{_weight_text(conv)})",
        "running_var": conv.running_var_correction,
        "eps": "inside sqrt" + (f", raised to >= {conv.eps_min:g}" if conv.eps_min else ""),
        "updates_in_forward": "yes" if conv.update_time != "backward" else "no",
        "one_value": conv.one_value_outcome,
        "evaluation_uses": "running statistics",
    }


def _weight_text(conv: Convention) -> str:
    w = conv.momentum if conv.momentum_direction == "new" else 1 - conv.momentum
    return f"{w:g} by default"


def _clamp_seen(out: Outcome | None, conv: Convention) -> str:
    """ ", raised to >= E" when the target normalized with a larger eps than the 2**-20 it was given
    (x = 1, mean 0, var 2**-20), as the claim words it; "" when it used eps as given (or as claimed)."""
    if out is None or out.status != "ok" or out.result is None:
        return f", raised to >= {conv.eps_min:g}" if conv.eps_min else ""
    y = float(out.result["y"][0][0, 0, 1])
    used = 1 / (y * y) - 2.0**-20 if y > 0 else math.inf
    if conv.eps_min and abs(used - conv.effective_eps(2.0**-20)) <= 1e-3 * used:
        return f", raised to >= {conv.eps_min:g}"  # as claimed
    return "" if abs(used - 2.0**-20) <= 1e-3 * 2.0**-20 else f", raised to >= {used:.4g}"


def _infer(outcomes: dict[str, Outcome], conv: Convention) -> dict[str, str]:
    inferred: dict[str, str] = {}
    mom = outcomes["probe_momentum"]
    if mom.status == "ok" and mom.result is not None:
        w = float(mom.result["running_mean"][0][0]) / 3.0  # running 0, batch mean 3
        if abs(w - 0.25) <= 1e-6:
            inferred["momentum"] = f"{conv.momentum_direction}-weight as claimed"
        elif abs(w - 0.75) <= 1e-6:
            other = "old" if conv.momentum_direction == "new" else "new"
            inferred["momentum"] = f"{other}-weight: the momentum argument weighs the other statistic"
        elif w == 0:
            inferred["momentum"] = "running mean not updated by a training forward"
        else:
            inferred["momentum"] = f"new statistic weight {w:.6g} (expected 0.25)"
    fwd = outcomes.get("probe_forward_only")
    if fwd is not None and fwd.status == "ok" and fwd.result is not None:
        inferred["updates_in_forward"] = "no" if float(fwd.result["running_mean"][0][0]) == 0 else "yes"
    elif mom.status == "skipped":
        for key in ("momentum", "updates_in_forward", "running_var"):
            inferred[key] = "not run (evaluation-only target)"
    else:
        inferred["momentum"] = f"could not run: {mom.message}"
    bes = outcomes["probe_bessel"]
    if bes.status == "ok" and bes.result is not None:
        v = float(bes.result["running_var"][0][0])
        candidates = {"none": 3.5, "unbiased": 3.5 * 4 / 3, "unbiased_clamped": 3.5 * 4 / 3}
        best = min(("none", "unbiased"), key=lambda k: abs(v - candidates[k]))
        close = abs(v - candidates[best]) <= 1e-5 * candidates[best]
        claimed = conv.running_var_correction
        label = best if not (best == "unbiased" and claimed == "unbiased_clamped") else claimed
        inferred["running_var"] = label if close else f"neither biased nor unbiased: {v:.7g}"
    eps_o = outcomes["probe_eps"]
    if eps_o.status == "ok" and eps_o.result is not None:
        y = float(eps_o.result["y"][0][0, 0, 1])  # x = 1, mean 0, var 0.25, eps 0.125 (claimed cast/clamp)
        e = conv.effective_eps(0.125)
        inside, outside = 1 / math.sqrt(0.25 + e), 1 / (0.5 + e)
        inferred["eps"] = (
            "inside sqrt" + _clamp_seen(outcomes.get("probe_eps_clamp"), conv)
            if abs(y - inside) < abs(y - outside)
            else "outside sqrt (added to the standard deviation)"
        )
    one = outcomes["probe_one_value"]
    if one.status == "skipped":
        inferred["one_value"] = "not run (evaluation-only target)"
    elif one.status == "refused":
        inferred["one_value"] = "error"
    elif one.status == "ok" and one.result is not None:
        y, rv = one.result["y"][0], one.result["running_var"][0]
        if np.array_equal(np.ravel(y), np.array([3.0, -2.0], F32)):
            inferred["one_value"] = "identity"
        elif np.isnan(rv).any():
            inferred["one_value"] = "nan"
        else:
            inferred["one_value"] = "finite"
    else:
        inferred["one_value"] = f"crash: {one.message}"
    ev = outcomes["probe_eval_statistics"]
    if ev.status == "ok" and ev.result is not None:
        y = ev.result["y"][0][0, 0, 0]  # x = 10 with running mean 0, var 1
        e = conv.effective_eps(conv.default_eps(24))
        running = 10 / math.sqrt(1 + e)
        batch = (10 - 13) / math.sqrt(5 + e)
        inferred["evaluation_uses"] = (
            "running statistics"
            if abs(y - running) < 1e-3 * abs(running)
            else "batch statistics"
            if abs(y - batch) < 1e-3 * abs(batch)
            else f"neither running nor batch statistics (y = {float(y):.6g}, expected {running:.6g})"
        )
        if inferred["evaluation_uses"] != "running statistics" and "eps" in inferred:
            inferred["eps"] = "not run (evaluation does not normalize with the running statistics)"
    return inferred


def run_audit(
    target: str,
    convention: str | None = None,
    *,
    timeout: float = 120.0,
    seed: int = 0,
    progress: Callable[[int], None] | None = None,
    reproducers: Path | None = None,
) -> AuditReport:
    """Audit ``target`` (an adapter name or ``python:module:function``) against its claimed convention."""
    if not target.startswith("python:") and target not in ADAPTERS:
        raise UnknownNameError(
            f"Expected a target among {', '.join(ADAPTERS)} or python:module:function, but got target={target!r}"
        )
    adapter = get_adapter(target)
    conv = get_convention(convention or adapter.convention)
    report = AuditReport(target, conv.name, adapter.description, claimed_conventions(conv))
    t0 = time.perf_counter()
    missing = unavailable_reason(adapter)
    if missing is not None:  # one line, no cases, no other findings
        report.findings.append({"kind": "unavailable", "case": "-", "message": missing})
        return report
    cases = battery(conv, seed)
    skipped = [c for c in cases if adapter.evaluation_only and c.training]
    cases = [c for c in cases if c not in skipped]
    with tempfile.TemporaryDirectory(prefix="normspec-audit-") as tmp:
        outcomes = run_cases(target, cases, timeout, Path(tmp), progress)
    for c in skipped:
        outcomes[c.name] = Outcome("skipped", message="evaluation-only target")
    report.inferred = {k: v[:300] for k, v in _infer(outcomes, conv).items()}
    drift: str | None = None
    for key, value in report.inferred.items():
        if value.startswith("not run"):
            continue
        claimed = report.claimed.get(key, "")
        agree = value == claimed or value.endswith("as claimed") or (key == "running_var" and value == claimed)
        if not agree:
            # at one value per channel, refusing versus computing is a degenerate-input difference;
            # a field of the target's own profile that a newer version no longer follows is drift
            refusal = key == "one_value" and "error" in (claimed, value)
            if drift is None and not refusal and conv.name == adapter.convention:
                drift = profile_drift(adapter, conv) or ""
            kind = "degenerate-input" if refusal else "profile-drift" if drift else "semantic"
            report.findings.append(
                {
                    "kind": kind,
                    "case": f"probe ({key})",
                    "message": f"{key}: claimed {claimed!r}, observed {value!r}"
                    + (f" on {drift}" if kind == "profile-drift" else ""),
                }
            )
    for case in cases:
        report.cases.append(_judge(case, outcomes[case.name], conv, report, reproducers, target))
    for case in skipped:
        report.cases.append(
            {
                "case": case.name,
                "kind": case.kind,
                "status": "skipped",
                "note": case.note,
                "message": "evaluation-only target",
            }
        )
    report.seconds = time.perf_counter() - t0
    return report


def _judge(
    case: AuditCase, out: Outcome, conv: Convention, report: AuditReport, reproducers: Path | None, target: str
) -> dict[str, Any]:
    row: dict[str, Any] = {
        "case": case.name,
        "kind": case.kind,
        "status": out.status,
        "note": case.note,
        "seconds": round(out.seconds, 3),
    }
    unsupported_dtype = out.status == "refused" and case.x.dtype != F32  # a float16 case the library refuses
    if (out.status == "refused" and out.message.startswith("NotImplementedError")) or unsupported_dtype:
        row["status"] = "unsupported"
        row["message"] = out.message
        return row
    if case.dy is not None:
        return _judge_backward(case, out, conv, report, reproducers, target, row)
    step = case.x[0]
    channels = step.shape[1] if step.ndim > 1 else 0
    degenerate = degenerate_reason(step.size // max(channels, 1), case.eps, case.training, step.shape[0])
    outside_domain = False
    try:
        if conv.refuses_nonpositive_eps_in_training and case.training and case.eps is not None and case.eps <= 0:
            raise NormspecError(f"the convention refuses eps = {case.eps!r} <= 0 in training")
        exact = oracle_sequence(case, conv.name)
    except DomainError as exc:  # normspec's own domain (var + eps < 0): never charged to the target
        exact, outside_domain = None, True
        row["expected"] = f"outside normspec's domain: {exc}"
    except NormspecError as exc:
        exact = None
        row["expected"] = f"refused: {exc}"
    if out.status in ("crash", "timeout"):
        _finding(report, "crash", case, out.message, reproducers, target, exact)
        return row
    if exact is None:
        if out.status == "refused":
            row["status"] = "outside normspec's domain" if outside_domain else "refused as claimed"
        if out.status == "ok" and case.kind != "probe" and not outside_domain:
            kind = "degenerate-input" if degenerate else "semantic"
            what = f" ({degenerate})" if degenerate else ""
            _finding(
                report,
                kind,
                case,
                f"computed an input{what} that profile {conv.name} refuses ({row['expected']})",
                reproducers,
                target,
                exact,
            )
        return row
    if out.status == "refused":
        row["message"] = out.message
        if case.kind != "probe":
            kind = "degenerate-input" if degenerate else "semantic"
            what = f" ({degenerate})" if degenerate else ""
            _finding(
                report,
                kind,
                case,
                f"refused an input{what} that profile {conv.name} computes: {out.message}",
                reproducers,
                target,
                exact,
            )
        return row
    assert out.result is not None
    got_y = np.asarray(out.result["y"]).astype(case.x.dtype)
    if got_y.shape != exact["y"].shape:
        _finding(
            report,
            "crash",
            case,
            f"output shape {got_y.shape}, expected {exact['y'].shape}",
            reproducers,
            target,
            exact,
        )
        return row
    with np.errstate(invalid="ignore", over="ignore"):
        d = ulp_distance(got_y, exact["y"])
    finite_exact = np.isfinite(exact["y"].astype(np.float64))
    bad = finite_exact & ~np.isfinite(got_y.astype(np.float64))
    row["max_ulp"] = float(d[finite_exact].max()) if finite_exact.any() else 0.0
    row["rel_ulp"] = _rel_ulp(got_y[finite_exact], exact["y"][finite_exact], exact["magnitude"][finite_exact])
    row["correctly_rounded"] = float(np.mean(d == 0))
    if case.training:
        for key in ("running_mean", "running_var"):
            got_dtype, given = np.asarray(out.result[key]).dtype, getattr(case, key).dtype
            if got_dtype != given:
                _finding(
                    report,
                    "semantic",
                    case,
                    f"{key} returned as {got_dtype.name} where the running statistics given are {given.name}",
                    reproducers,
                    target,
                    exact,
                )
                break
        rv_got = out.result["running_var"].astype(F32)
        rm_got = out.result["running_mean"].astype(F32)
        with np.errstate(invalid="ignore"):
            row["running_max_ulp"] = float(
                max(ulp_distance(rm_got, exact["running_mean"]).max(), ulp_distance(rv_got, exact["running_var"]).max())
            )
        if case.kind == "sequence":
            report.trajectories[case.name] = {
                "target_mean": rm_got[:, 0].tolist(),
                "exact_mean": exact["running_mean"][:, 0].tolist(),
                "target_var": rv_got[:, 0].tolist(),
                "exact_var": exact["running_var"][:, 0].tolist(),
                "ulps": d[finite_exact].tolist(),
            }
    if case.kind == "probe" or (exact.get("identity") and not bad.any()):
        # probes feed the convention inference (their differences are semantic findings there); an
        # output the profile defines as x itself (one value per channel, Paddle) has no error budget
        _set_status(row, status_word(row["max_ulp"], non_finite=bool(bad.any())))
        return row
    declared = ADAPTERS[target].algorithm if target in ADAPTERS else None
    naive = naive_float32(case, conv)
    row["naive_rel_ulp"] = _rel_ulp(naive[finite_exact], exact["y"][finite_exact], exact["magnitude"][finite_exact])
    if not bad.any():
        from normspec.budgets.algorithm import plain_algorithm

        name = declared or plain_algorithm(case.x.dtype)
        beyond, worst_ratio, unbounded = _beyond_budget(case, got_y, name, conv)
        label = name if declared else f"{name} (none declared)"
        row["budget_algorithm"], row["beyond_budget"], row["unbounded"] = label, beyond, unbounded
        # where no algorithm is declared and the plain formula's budget says nothing (var + eps below its
        # statistics' error), the plain formula's own error on the case is the yardstick
        vacuous = (
            not beyond
            and declared is None
            and unbounded > 0
            and row["rel_ulp"] > max(VACUOUS_FACTOR * row["naive_rel_ulp"], row["naive_rel_ulp"] + VACUOUS_ULP)
        )
        if beyond:
            _finding(
                report,
                "accuracy",
                case,
                f"{beyond} element(s) beyond the error budget of {label} (worst error/budget {worst_ratio:.3g})",
                reproducers,
                target,
                exact,
            )
        elif vacuous:
            _finding(
                report,
                "accuracy",
                case,
                f"{row['rel_ulp']:.3g} ULP at the terms' scale where the budget of {label} is unbounded, more than "
                f"{VACUOUS_FACTOR:g} times the plain float32 formula's error on this case ({row['naive_rel_ulp']:.3g})",
                reproducers,
                target,
                exact,
            )
        _set_status(row, status_word(row["max_ulp"], non_finite=False, budget=label, beyond=beyond, inaccurate=vacuous))
        if unbounded and row["status"] == "within budget":
            row["verdict"] += f" (unbounded on {unbounded} element(s): var + eps below its statistics' error)"
        _judge_running(case, out, conv, exact, name, label, bool(beyond or vacuous), row, report, reproducers, target)
        return row
    _set_status(row, status_word(row["max_ulp"], non_finite=True))
    if bad.any():
        i = tuple(int(v) for v in np.argwhere(bad)[0])
        _finding(
            report,
            "non-finite",
            case,
            f"y{list(i)} = {got_y[i]!r} where the exact value is {exact['y'][i]!r}",
            reproducers,
            target,
            exact,
        )
    return row


def _judge_running(
    case: AuditCase,
    out: Outcome,
    conv: Convention,
    exact: dict[str, Any],
    algorithm: str,
    label: str,
    y_inaccurate: bool,
    row: dict[str, Any],
    report: AuditReport,
    reproducers: Path | None,
    target: str,
) -> None:
    """The running statistics of a training case against their budget, step by step: an update
    that is a different function (stale or skipped statistics, another momentum or correction)
    is semantic; one that is only as wrong as the normalized output is accuracy."""
    from normspec.budgets import get_algorithm
    from normspec.budgets.derive import running_budget

    if not case.training or not case.backward or conv.update_time != "forward" or out.result is None:
        return
    got_m = np.asarray(out.result["running_mean"], np.float64)
    got_v = np.asarray(out.result["running_var"], np.float64)
    want_m, want_v = exact["running_mean"].astype(np.float64), exact["running_var"].astype(np.float64)
    if got_m.shape != want_m.shape or got_v.shape != want_v.shape:
        return
    bm, bv = running_budget(
        get_algorithm(algorithm), conv, case.x, case.running_mean, case.running_var, case.momentum,
        eps=conv.effective_eps(case.eps),
    )  # fmt: skip
    with np.errstate(invalid="ignore"):
        over_m = np.abs(got_m - want_m) > bm
        over_v = np.abs(got_v - want_v) > bv
    both_nan_v = np.isnan(got_v) & np.isnan(want_v)
    over_v &= ~both_nan_v
    if not (over_m.any() or over_v.any()):
        return
    stat, over, got, want, bound = (
        ("running_mean", over_m, got_m, want_m, bm) if over_m.any() else ("running_var", over_v, got_v, want_v, bv)
    )
    k, c = (int(v) for v in np.argwhere(over)[0])
    row["running_beyond_budget"] = int(over_m.sum() + over_v.sum())
    _finding(
        report,
        "accuracy" if y_inaccurate else "semantic",
        case,
        f"{stat} after step {k + 1}, channel {c}: {got[k, c]!r}, exact {want[k, c]!r}, beyond the budget of "
        f"{label} ({bound[k, c]:.3g}); the normalized output is "
        + ("beyond its budget too" if y_inaccurate else "within its budget, so the update itself differs"),
        reproducers,
        target,
        exact,
    )


def _set_status(row: dict[str, Any], verdict: tuple[str, str]) -> None:
    row["status"], explanation = verdict
    if explanation:
        row["verdict"] = explanation


# The distribution that provides each adapter library (for the version).
_DISTRIBUTIONS = {
    "torch": "torch",
    "onnx": "onnx",
    "onnxruntime": "onnxruntime",
    "keras": "keras",
    "flax": "flax",
    "tensorflow": "tensorflow",
    "tf_keras": "tf_keras",
    "mxnet": "mxnet",
    "paddle": "paddlepaddle",
    "numba": "numba",
}


def library_version(adapter: Adapter, python: str | None = None) -> str:
    """``library version`` as installed where the target runs (its venv's Python, if any)."""
    dist = _DISTRIBUTIONS.get(adapter.library, adapter.library)
    code = f"import importlib.metadata as m; print(m.version({dist!r}))"
    if python is None:
        import importlib.metadata

        try:
            return f"{dist} {importlib.metadata.version(dist)}"
        except importlib.metadata.PackageNotFoundError:
            return f"{dist} (not installed)"
    out = subprocess.run([python, "-c", code], capture_output=True, text=True, timeout=120)
    return f"{dist} {out.stdout.strip() or '(unknown)'}"


def profile_drift(adapter: Adapter, conv: Convention) -> str | None:
    """The installed version, when ``conv`` was verified on another version of the same distribution
    (the record may be stale there); None when it was verified on this one, or never on this library."""
    python = None
    if adapter.venv is not None:
        with tempfile.TemporaryDirectory() as tmp:
            python = interpreter(adapter, Path(tmp))[0]
            installed = library_version(adapter, python)
    else:
        installed = library_version(adapter)
    dist = installed.split(" ")[0]
    recorded = [v for v in conv.verified_on if v.split(" ")[0] == dist]
    if not recorded or any(installed.startswith(v) for v in recorded):
        return None
    return f"{installed} (profile {conv.name} verified on {', '.join(recorded)})"


_EXTRAS = {"torch": "torch", "onnx": "onnx", "onnxruntime": "onnx", "numba": "kernels"}


def unavailable_reason(adapter: Adapter) -> str | None:
    """One line saying what to install when ``adapter``'s library is missing, else None."""
    import importlib.util

    if adapter.venv is not None:
        python = venv_root() / adapter.venv / "bin" / "python"
        if python.exists():
            return None
        return (
            f"{adapter.name} runs in its own virtual environment, which is missing ({python}): "
            f"bash scripts/setup-target-venvs.sh {adapter.venv}"
        )
    if importlib.util.find_spec(adapter.library) is not None:
        return None
    extra = _EXTRAS.get(adapter.library, "audit")
    return f"{adapter.library} is not installed (target {adapter.name}): pip install 'normspec[{extra}]'"


def _judge_backward(
    case: AuditCase,
    out: Outcome,
    conv: Convention,
    report: AuditReport,
    reproducers: Path | None,
    target: str,
    row: dict[str, Any],
) -> dict[str, Any]:
    from normspec.oracle import batch_norm_backward

    if out.status in ("crash", "timeout"):
        _finding(report, "crash", case, out.message, reproducers, target, None)
        return row
    if out.status != "ok" or out.result is None:
        row["message"] = out.message
        _finding(
            report,
            "semantic",
            case,
            f"refused a gradient the convention defines: {out.message}",
            reproducers,
            target,
            None,
        )
        return row
    assert case.dy is not None
    eps = conv.effective_eps(case.eps)
    dx, dg, db = batch_norm_backward(case.x[0], case.dy[0], case.weight, eps=eps)
    for name, want in (("dx", dx), ("dweight", dg), ("dbias", db)):
        got = np.asarray(out.result[name][0]).astype(want.dtype)
        if got.shape != want.shape:
            _finding(
                report, "crash", case, f"{name} shape {got.shape}, expected {want.shape}", reproducers, target, None
            )
            return row
        with np.errstate(invalid="ignore", over="ignore"):
            d = ulp_distance(got, want)
        row[f"{name}_max_ulp"] = float(d[np.isfinite(d)].max()) if np.isfinite(d).any() else math.inf
        bad = np.isfinite(want.astype(np.float64)) & ~np.isfinite(got.astype(np.float64))
        if bad.any():
            i = tuple(int(v) for v in np.argwhere(bad)[0])
            _finding(
                report,
                "non-finite",
                case,
                f"{name}{list(i)} = {got[i]!r} where the exact value is {want[i]!r}",
                reproducers,
                target,
                None,
            )
    row["max_ulp"] = row["dx_max_ulp"]
    worst = max(row.get(f"{n}_max_ulp", 0.0) for n in ("dx", "dweight", "dbias"))
    if not any(f["case"] == case.name and f["kind"] == "non-finite" for f in report.findings):
        row["status"] = "ok" if worst <= 1 else "no budget"
        if worst > 1:
            row["verdict"] = f"{worst:.3g} ULP from the exact gradients; the backward has no error budget yet"
    else:
        row["status"] = "non-finite"
    return row


def _finding(
    report: AuditReport,
    kind: str,
    case: AuditCase,
    message: str,
    reproducers: Path | None,
    target: str,
    exact: dict[str, Any] | None,
) -> None:
    item: dict[str, Any] = {"kind": kind, "case": case.name, "message": message}
    if reproducers is not None:
        item["reproducer"] = str(write_reproducer(reproducers, case, target, report.convention))
    report.findings.append(item)


_REPRO = '''"""Reproducer for normspec audit finding: {case} on {target} (convention {convention}).

Run from this folder: python repro.py
"""
import numpy as np

from normspec.oracle import batch_norm, ulp_distance
from normspec.targets.adapters import get_adapter, prepare_environment

adapter = get_adapter({target!r})
prepare_environment(adapter)
with np.load("case.npz", allow_pickle=False) as data:
    case = {{k: data[k] for k in data.files}}
case["training"], case["momentum"], case["eps"] = bool(case["training"]), float(case["momentum"]), float(case["eps"])
observed = adapter.run(case)
rm, rv = case["running_mean"], case["running_var"]
for k, x in enumerate(case["x"]):
    exact = batch_norm(x, case["weight"], case["bias"], rm, rv, training=case["training"],
                       momentum=case["momentum"], eps=case["eps"], convention={convention!r})
    rm, rv = exact.running_mean, exact.running_var
    got = np.asarray(observed["y"][k], dtype=np.float32)
    d = ulp_distance(got, exact.y)
    i = np.unravel_index(int(np.nanargmax(np.where(np.isnan(d), np.inf, d))), d.shape)
    print(f"step {{k}}: worst element {{tuple(int(v) for v in i)}}: x = {{x[i]!r}}, exact {{exact.y[i]!r}}, "
          f"observed {{got[i]!r}}, {{d[i]:.0f}} ULP")
    print(f"        running_mean exact {{exact.running_mean}} observed {{observed['running_mean'][k]}}")
    print(f"        running_var  exact {{exact.running_var}} observed {{observed['running_var'][k]}}")
'''


def write_reproducer(root: Path, case: AuditCase, target: str, convention: str) -> Path:
    safe = "".join(ch if ch.isalnum() or ch in "-_" else "_" for ch in target)
    folder = root / safe / case.name
    folder.mkdir(parents=True, exist_ok=True)
    np.savez(folder / "case.npz", **case.arrays())
    (folder / "repro.py").write_text(_REPRO.format(case=case.name, target=target, convention=convention))
    return folder
