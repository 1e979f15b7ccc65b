"""Running audit cases: the case record, the worker processes and their outcomes, which Python
runs a target (its own venv where it has one), the installed library's version and its profile's
provenance, and the reproducer folders.  Shared by every layer's audit
(:mod:`normspec.targets.audit`, :mod:`normspec.targets.family`), below both.
"""

from __future__ import annotations

import itertools
import json
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
from normspec.spec.conventions import Convention
from normspec.targets.adapters import Adapter, get_adapter
from normspec.targets.worker import pack, unpack

import normspec
from normspec.errors import TargetUnavailableError

__all__ = [
    "AuditCase",
    "Outcome",
    "check_vectors",
    "PROBE_OF",
    "interpreter",
    "library_version",
    "probe_case_name",
    "profile_drift",
    "run_cases",
    "unavailable_reason",
    "venv_root",
    "write_reproducer",
]


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
    status: str  # ok | refused | crash | timeout | not run (after a hang) | skipped
    result: dict[str, np.ndarray] | None = None
    message: str = ""
    seconds: float = 0.0


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
        np.savez(indir / f"{case.name}.npz", **pack(case.arrays()))
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
                    failure = ("timeout", f"no answer in {timeout:g} s; the cases after it are not run")
                    break
                chunk = os.read(fd, 65536)
                if not chunk:  # the process ended
                    break
                buf += chunk
                continue
            raw, buf = buf.split(b"\n", 1)
            word, _, name = raw.decode(errors="replace").strip().partition(" ")
            now = time.perf_counter()
            if word == "start" and name in pending:
                current, started = name, now
            elif word == "done" and name == current and name in pending:
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
            if status == "timeout":  # a target that hung once would cost the deadline on every case
                for name in pending:
                    outcomes[name] = Outcome("not run", message=f"not run: the target hung on {current}")
                    if progress is not None:
                        progress(1)
                pending = []
        elif pending and proc.returncode != 0:  # died before starting a case: nothing can run
            for name in pending:
                outcomes[name] = Outcome("crash", message=f"worker failed: {err.strip()[-300:]}")
            pending = []
    return outcomes


_FAMILY_KINDS = ("layer_norm", "rms_norm", "group_norm", "instance_norm", "mean_variance_norm")


def check_vectors(
    target: str, cases: list[Any], timeout: float, progress: Callable[[int], None] | None = None
) -> list[Any]:
    """``normspec vectors check`` for a ``python:`` target, in a worker process as the audit runs one:
    a target that segfaults, exits or hangs becomes that case's "crash", never the checker's.

    Each step of each case is one worker case, teacher-forced (it starts from the expected running
    statistics of the step before); the outputs are then judged by :func:`normspec.vectors.check_case`
    exactly as in-process outputs are.
    """
    from normspec.vectors.check import TargetFailedError, check_case

    jobs: list[AuditCase] = []
    for i, case in enumerate(cases):
        inp, exp = case.inputs, case.expected
        if case.kind in _FAMILY_KINDS:
            groups = {"groups": np.asarray(int(np.asarray(inp["groups"]).ravel()[0]))}
            if "residual" in inp:
                groups["residual"] = inp["residual"][:1]
            jobs.append(AuditCase(f"c{i}s0", "accuracy", inp["x"][:1], inp["weight"], inp["bias"],
                                  np.zeros(1), np.ones(1), True, case.momentum, case.eps, extra=groups))  # fmt: skip
            continue
        for k in range(case.steps):
            rm = inp["running_mean"] if k == 0 else exp["running_mean_out"][k - 1]
            rv = inp["running_var"] if k == 0 else exp["running_var_out"][k - 1]
            jobs.append(AuditCase(f"c{i}s{k}", "accuracy", inp["x"][k : k + 1], inp["weight"], inp["bias"],
                                  rm, rv, case.training, case.momentum, case.eps))  # fmt: skip
    with tempfile.TemporaryDirectory(prefix="normspec-vectors-") as tmp:
        outcomes = run_cases(target, jobs, timeout, Path(tmp), progress)

    def replay(i: int) -> Callable[..., Any]:
        step = itertools.count()

        def answer(*args: Any) -> Any:
            out = outcomes[f"c{i}s{next(step)}"]
            if out.status != "ok" or out.result is None:
                raise TargetFailedError(f"{out.status}: {out.message}" if out.status != "refused" else out.message)
            res = out.result
            missing = [k for k in ("y", "running_mean", "running_var") if k not in res]
            if missing:
                raise TargetFailedError(f"malformed output: no {', '.join(missing)}")
            if "residual" in cases[i].inputs:
                if "residual_out" not in res:
                    raise TargetFailedError("malformed output: no new residual")
                return res["y"][0], res["residual_out"][0]
            if cases[i].kind in _FAMILY_KINDS:
                return res["y"][0]
            return res["y"][0], res["running_mean"][0], res["running_var"][0]

        return answer

    return [check_case(case, replay(i)) for i, case in enumerate(cases)]


def _read_outcome(outdir: Path, name: str, seconds: float) -> Outcome:
    npz, err = outdir / f"{name}.npz", outdir / f"{name}.json"
    if npz.exists():
        with np.load(npz, allow_pickle=False) as data:
            return Outcome("ok", unpack({k: data[k] for k in data.files}), seconds=seconds)
    info = json.loads(err.read_text())
    status = "crash" if info.get("crash") else "refused"
    return Outcome(status, message=f"{info['error']}: {info['message']}", seconds=seconds)


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
    "transformers": "transformers",
    "liger_kernel": "liger-kernel",
    "vllm": "vllm",
    "flashinfer": "flashinfer-python",
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


_PIP_NAMES = {"liger_kernel": "liger-kernel", "vllm": "vllm", "flashinfer": "flashinfer-python"}
_EXTRAS = {"torch": "torch", "onnx": "onnx", "onnxruntime": "onnx", "numba": "kernels", "transformers": "audit"}


def unavailable_reason(adapter: Adapter) -> str | None:
    """One line saying what to install when ``adapter``'s library is missing, else None."""
    import importlib.util

    if adapter.needs_gpu and not any(os.path.exists(p) for p in ("/dev/nvidiactl", "/dev/nvidia0")):
        return f"{adapter.name} runs CUDA kernels and this machine has no NVIDIA GPU: it runs where one is"

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
    if adapter.library in _PIP_NAMES:  # GPU libraries outside normspec's extras
        return f"{adapter.library} is not installed (target {adapter.name}): pip install {_PIP_NAMES[adapter.library]}"
    extra = _EXTRAS.get(adapter.library, "audit")
    return f"{adapter.library} is not installed (target {adapter.name}): pip install 'normspec[{extra}]'"


# The probe case behind each inferred BatchNorm field (family probes are named probe_FIELD).
PROBE_OF = {
    "momentum": "probe_momentum",
    "updates_in_forward": "probe_forward_only",
    "running_var": "probe_bessel",
    "eps": "probe_eps",
    "one_value": "probe_one_value",
    "evaluation_uses": "probe_eval_statistics",
}


_REPRO = '''"""Reproducer for normspec audit finding: {case} on {target} (convention {convention}).

Run from this folder: python repro.py
"""
from normspec.targets.audit import reproduce

reproduce("case.npz", {target!r}, {convention!r})
'''


def probe_case_name(finding_case: str) -> str:
    """The case behind a finding: an inference finding ``probe (FIELD)`` reproduces on its probe."""
    if not finding_case.startswith("probe ("):
        return finding_case
    field_name = finding_case[len("probe (") : -1]
    return PROBE_OF.get(field_name, f"probe_{field_name}")


def write_reproducer(root: Path, case: AuditCase, target: str, convention: str) -> Path:
    """A folder ``root/TARGET/CASE`` with the case's arrays (``case.npz``) and ``repro.py``, which
    runs it again through :func:`reproduce`; for every layer."""
    safe = "".join(ch if ch.isalnum() or ch in "-_" else "_" for ch in target)
    folder = root / safe / case.name
    folder.mkdir(parents=True, exist_ok=True)
    np.savez(folder / "case.npz", **case.arrays(), case_name=np.array(case.name), case_kind=np.array(case.kind))
    (folder / "repro.py").write_text(_REPRO.format(case=case.name, target=target, convention=convention))
    return folder
