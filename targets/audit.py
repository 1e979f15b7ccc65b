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

import dataclasses
import math
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
from normspec.targets.probes import Probe, infer
from normspec.targets.runner import (
    PROBE_OF,
    AuditCase,
    Outcome,
    interpreter,
    library_version,
    probe_case_name,
    profile_drift,
    run_cases,
    unavailable_reason,
    venv_root,
    write_reproducer,
)
from normspec.targets.verdict import degenerate_reason, exit_status, judge_output

from normspec.errors import (
    DomainError,
    InvalidArgumentError,
    NormspecError,
    UnknownNameError,
    expected,
)

__all__ = [
    "AuditCase",
    "Outcome",
    "AuditReport",
    "battery",
    "run_audit",
    "resolve_target",
    "audit_size",
    "reproduce",
    "claimed_conventions",
    # re-exported from normspec.targets.runner
    "interpreter",
    "library_version",
    "probe_case_name",
    "profile_drift",
    "unavailable_reason",
    "venv_root",
    "write_reproducer",
]

F32 = np.float32


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
    layer: str = "batch_norm"
    audited: dict[str, AuditCase] = field(default_factory=dict, repr=False)  # the cases as run, by name
    judged_under: dict[str, str] = field(default_factory=dict)  # probed differences the cases are judged under

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
            "layer": self.layer,
            "description": self.description,
            "claimed": self.claimed,
            "inferred": self.inferred,
            "judged_under": self.judged_under,
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


def oracle_sequence(case: AuditCase, convention: str | Convention) -> dict[str, Any]:
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


def _budget(case: AuditCase, algorithm: str, conv: Convention) -> tuple[np.ndarray, np.ndarray]:
    """The algorithm's per-element error budget over the case's steps, and the exact y (float64)
    of the plain formula it bounds (edge conventions aside)."""
    from normspec.budgets import budget_for_batch_norm, get_algorithm

    alg = get_algorithm(algorithm)
    rm, rv = case.running_mean, case.running_var
    budgets, exacts = [], []
    eps = conv.effective_eps(case.eps)
    for x in case.x:
        r = batch_norm(
            x,
            case.weight,
            case.bias,
            rm,
            rv,
            training=case.training,
            momentum=case.momentum,
            eps=eps,
            convention="torch_raw" if case.training else conv,
        )
        budgets.append(
            budget_for_batch_norm(
                alg, x, case.weight, case.bias, eps, training=case.training, running_mean=rm, running_var=rv
            )
        )
        exacts.append(np.array([float(r.exact.y(i, prec=80)) for i in np.ndindex(x.shape)]).reshape(x.shape))
        rm, rv = (
            r.running_mean if r.running_mean is not None else rm,
            r.running_var if r.running_var is not None else rv,
        )
    return np.stack(budgets), np.stack(exacts)


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


STUCK = "never updated (still its initial value)"
# Why running statistics stay at their initial values through training forwards.
STUCK_CAUSE = (
    "likely cause: the update runs apart from the forward and was not run (TF1 graph code: the UPDATE_OPS "
    "collection must run with the train op, e.g. under tf.control_dependencies(update_ops)), or runs only in "
    "a backward pass (MXNet's CPU BatchNorm)"
)


def batch_norm_probes(conv: Convention, cases: list[AuditCase]) -> list[Probe]:
    """BatchNorm's convention probes as records: each reads one battery case, and each alternative
    is the oracle's answer under the claimed record with one field changed."""
    by_name = {c.name: c for c in cases}
    other: Any = "old" if conv.momentum_direction == "new" else "new"

    def exact(name: str, changed: Convention, **case_changes: Any) -> dict[str, Any]:
        return oracle_sequence(dataclasses.replace(by_name[name], **case_changes), changed)

    def first(key: str, index: tuple[int, ...] = (0, 0)) -> Callable[[Any], Any]:
        return lambda out: np.asarray(out[key], np.float64)[index]

    def momentum() -> Probe:
        m = by_name["probe_momentum"]
        direction = f"{conv.momentum_direction}-weight as claimed"
        swapped = exact(m.name, dataclasses.replace(conv, momentum_direction=other))["running_mean"][0][0]
        return Probe(
            "momentum",
            m.name,
            direction,
            {
                direction: exact(m.name, conv)["running_mean"][0][0],
                f"{other}-weight: the momentum argument weighs the other statistic": swapped,
                STUCK: float(m.running_mean[0]),
            },
            first("running_mean"),
        )

    def updates_in_forward() -> Probe:
        f = by_name["probe_forward_only"]
        forward = dataclasses.replace(conv, update_time="forward")
        swapped = dataclasses.replace(forward, momentum_direction=other)
        moved = (exact(f.name, forward)["running_mean"][0][0], exact(f.name, swapped)["running_mean"][0][0])
        claimed = "yes" if conv.update_time != "backward" else "no"
        return Probe(
            "updates_in_forward", f.name, claimed, {"yes": moved, "no": float(f.running_mean[0])}, first("running_mean")
        )

    def running_var() -> Probe:
        b = by_name["probe_bessel"]
        unbiased = "unbiased_clamped" if conv.running_var_correction == "unbiased_clamped" else "unbiased"

        def var_with(correction: Any) -> Any:
            return exact(b.name, dataclasses.replace(conv, running_var_correction=correction))["running_var"][0][0]

        return Probe(
            "running_var",
            b.name,
            conv.running_var_correction,
            {"none": var_with("none"), unbiased: var_with("unbiased"), STUCK: float(b.running_var[0])},
            first("running_var"),
        )

    def eps() -> Probe:
        e = by_name["probe_eps"]
        outside = exact(e.name, dataclasses.replace(conv, eps_placement="outside"))["y"][0][0, 0, 1]
        return Probe(
            "eps",
            e.name,
            "inside sqrt",
            {
                "inside sqrt": exact(e.name, conv)["y"][0][0, 0, 1],
                "outside sqrt (added to the standard deviation)": outside,
            },
            first("y", (0, 0, 0, 1)),
        )

    def evaluation_uses() -> Probe:
        v = by_name["probe_eval_statistics"]
        batch = exact(v.name, conv, training=True)["y"][0][0, 0, 0]
        return Probe(
            "evaluation_uses",
            v.name,
            "running statistics",
            {"running statistics": exact(v.name, conv)["y"][0][0, 0, 0], "batch statistics": batch},
            first("y", (0, 0, 0, 0)),
        )

    probes: list[Probe] = []
    for build in (momentum, updates_in_forward, running_var, eps, evaluation_uses):
        try:
            probes.append(build())
        except (KeyError, NormspecError):  # a probe the profile cannot evaluate: that field is not inferred
            continue
    return probes


def _infer(outcomes: dict[str, Outcome], conv: Convention, cases: list[AuditCase]) -> dict[str, str]:
    """What the target does, field by field: the probe records (:func:`batch_norm_probes`,
    :func:`normspec.targets.probes.infer`), then the categorical one-value probe and eps's clamp."""
    inferred: dict[str, str] = {}
    for probe in batch_norm_probes(conv, cases):
        out = outcomes.get(probe.case)
        if out is None or out.status == "skipped":
            inferred[probe.field] = "not run (evaluation-only target)" if out is not None else "not run"
        elif out.status != "ok" or out.result is None:
            inferred[probe.field] = f"could not run: {out.message}"
        else:
            inferred[probe.field] = infer(probe, out.result)
    if inferred.get("eps") == "inside sqrt":
        inferred["eps"] += _clamp_seen(outcomes.get("probe_eps_clamp"), conv)
    if inferred.get("running_var") == STUCK and inferred.get("momentum", "").startswith(("old-weight:", "new-weight:")):
        # swapped weights give this probe's batch statistic the weight 0: it cannot see the correction
        inferred["running_var"] = "not run (the momentum weights are swapped: this probe's batch weight is 0)"
    if inferred.get("evaluation_uses", "running statistics") != "running statistics" and "eps" in inferred:
        inferred["eps"] = "not run (evaluation does not normalize with the running statistics)"
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
    return inferred


def observed_convention(
    conv: Convention, claimed: dict[str, str], inferred: dict[str, str]
) -> tuple[Convention, dict[str, str]]:
    """``conv`` with each field the probes observed to differ replaced by the observed value, where
    the record can express it, and those changes (field -> observed); "evaluation_uses" has no
    field, so evaluation cases then carry the probe's finding instead of findings of their own."""
    changes: dict[str, Any] = {}
    said: dict[str, str] = {}
    for key, value in inferred.items():
        claim = claimed.get(key, "")
        if value == claim or value.endswith("as claimed") or value.startswith(("not run", "could not run")):
            continue
        if key == "momentum" and value.startswith(("old-weight", "new-weight")):
            changes["momentum_direction"] = value.split("-")[0]
        elif key == "running_var" and value in ("none", "unbiased", "unbiased_clamped"):
            changes["running_var_correction"] = value
        elif key == "eps" and value.startswith("outside"):
            changes["eps_placement"] = "outside"
        elif key == "one_value" and value in ("error", "identity", "finite", "nan"):
            changes["one_value"] = value if value in ("error", "identity") else "compute"
        elif key == "evaluation_uses":
            said[key] = value
            continue
        else:
            continue
        said[key] = value
    return (dataclasses.replace(conv, **changes) if changes else conv), said


def resolve_target(target: str, convention: str | None = None) -> tuple[Adapter, Convention]:
    """The adapter of ``target`` and the convention it is audited under (its own, or ``convention``:
    a profile of the same layer; a user's ``python:`` target takes any)."""
    from normspec.targets.family_adapters import FAMILY_ADAPTERS

    if not target.startswith("python:") and target not in ADAPTERS and target not in FAMILY_ADAPTERS:
        raise UnknownNameError(
            f"Expected a target among {', '.join([*ADAPTERS, *FAMILY_ADAPTERS])} or python:module:function, "
            f"but got target={target!r}"
        )
    adapter = get_adapter(target)
    conv = get_convention(convention or adapter.convention)
    own = get_convention(adapter.convention).layer
    if not target.startswith("python:") and conv.layer != own:
        raise InvalidArgumentError(
            expected(f"a {own} profile for target {target!r}", "convention", f"{conv.name} ({conv.layer})")
        )
    return adapter, conv


def audit_size(conv: Convention) -> int:
    """How many cases an audit under ``conv`` runs (for a progress bar)."""
    if conv.layer == "batch_norm":
        return len(battery(conv))
    from normspec.targets.family import family_battery, family_probes

    return len(family_probes(conv)) + len(family_battery(conv))


def run_audit(
    target: str,
    convention: str | None = None,
    *,
    timeout: float = 120.0,
    seed: int = 0,
    progress: Callable[[int], None] | None = None,
    reproducers: Path | None = None,
) -> AuditReport:
    """Audit ``target`` (an adapter name or ``python:module:function``) against its claimed
    convention, BatchNorm and the rest of the family alike: probes and the convention inference,
    the battery, the judge (:func:`normspec.targets.verdict.judge_output`), reproducers."""
    adapter, conv = resolve_target(target, convention)
    if isinstance(timeout, bool) or not isinstance(timeout, (int, float)) or not 0 < timeout < math.inf:
        raise InvalidArgumentError(expected("a finite number of seconds > 0", "timeout", timeout))
    report = AuditReport(target, conv.name, adapter.description, {}, layer=conv.layer)
    t0 = time.perf_counter()
    missing = unavailable_reason(adapter)
    if missing is not None:  # one line, no cases, no other findings
        report.findings.append({"kind": "unavailable", "case": "-", "message": missing})
        return report
    if conv.layer != "batch_norm":
        from normspec.targets.family import audit_family

        audit_family(report, adapter, conv, timeout=timeout, progress=progress, reproducers=reproducers)
        report.seconds = time.perf_counter() - t0
        return report
    report.claimed = claimed_conventions(conv)
    cases = battery(conv, seed)
    report.audited = {c.name: c for c in cases}
    skipped = [c for c in cases if adapter.evaluation_only and c.training]
    cases = [c for c in cases if c not in skipped]
    with tempfile.TemporaryDirectory(prefix="normspec-audit-") as tmp:
        outcomes = run_cases(target, cases, timeout, Path(tmp), progress)
    for c in skipped:
        outcomes[c.name] = Outcome("skipped", message="evaluation-only target")
    report.inferred = {k: v[:300] for k, v in _infer(outcomes, conv, cases + skipped).items()}
    drift: str | None = None
    seen_var = report.inferred.get("running_var", "")
    for key, value in report.inferred.items():
        if value.startswith("not run"):
            continue
        if key == "one_value" and seen_var in ("none", "unbiased") and seen_var != conv.running_var_correction:
            correction: Any = seen_var  # "none" or "unbiased", checked above
            if value == dataclasses.replace(conv, running_var_correction=correction).one_value_outcome:
                continue  # what the observed running-variance correction gives at n = 1: charged there
        claimed = report.claimed.get(key, "")
        agree = value == claimed or value.endswith("as claimed") or (key == "running_var" and value == claimed)
        stuck_elsewhere = value == STUCK and report.inferred.get("updates_in_forward") == "no"
        if not agree and stuck_elsewhere and report.claimed.get("updates_in_forward") == "yes":
            continue  # the same missing update, reported once under updates_in_forward
        if not agree:
            # at one value per channel, refusing versus computing is a degenerate-input difference;
            # a field of the target's own profile that a newer version no longer follows is drift
            refusal = key == "one_value" and "error" in (claimed, value)
            if drift is None and not refusal and conv.name == adapter.convention:
                drift = profile_drift(adapter, conv) or ""
            kind = "degenerate-input" if refusal else "profile-drift" if drift else "semantic"
            item = {
                "kind": kind,
                "case": f"probe ({key})",
                "message": f"{key}: claimed {claimed!r}, observed {value!r}"
                + (f" on {drift}" if kind == "profile-drift" else "")
                + (
                    f": the running statistics keep their initial values through training forwards; {STUCK_CAUSE}"
                    if key == "updates_in_forward" and value == "no"
                    else ""
                ),
            }
            probe = next((c for c in cases if c.name == PROBE_OF.get(key)), None)
            if reproducers is not None and probe is not None:  # an inference finding reproduces on its probe
                item["reproducer"] = str(write_reproducer(reproducers, probe, target, conv.name))
            report.findings.append(item)
    # a field the probes saw differ is charged once, by its probe finding: the other cases are judged
    # under what the target was observed to do (where the record can say it)
    observed, report.judged_under = observed_convention(conv, report.claimed, report.inferred)
    for case in cases:
        report.cases.append(_judge(case, outcomes[case.name], observed, report, reproducers, target))
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
    if out.status in ("not run", "skipped"):
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
        exact = oracle_sequence(case, conv)
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
    for key in ("running_mean", "running_var") if case.training else ():
        got_shape = np.asarray(out.result[key]).shape if key in out.result else None
        if got_shape != exact[key].shape:
            what = f"{key} missing" if got_shape is None else f"{key} shape {got_shape}"
            _finding(report, "crash", case, f"{what}, expected {exact[key].shape}", reproducers, target, exact)
            return row
    declared = ADAPTERS[target].algorithm if target in ADAPTERS else None
    # probes feed the convention inference (their differences are semantic findings there); an output
    # the profile defines as x itself (one value per channel, Paddle) has no error budget
    judged = case.kind != "probe" and not exact.get("identity")
    verdict = judge_output(
        row,
        got_y,
        exact["y"],
        x=case.x,
        magnitude=exact["magnitude"],
        naive=naive_float32(case, conv) if judged else None,
        budget_of=(lambda name: _budget(case, name, conv)) if judged else None,
        declared=declared,
    )
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
            with np.errstate(invalid="ignore", over="ignore"):
                d = ulp_distance(got_y, exact["y"])
            report.trajectories[case.name] = {
                "target_mean": rm_got[:, 0].tolist(),
                "exact_mean": exact["running_mean"][:, 0].tolist(),
                "target_var": rv_got[:, 0].tolist(),
                "exact_var": exact["running_var"][:, 0].tolist(),
                "ulps": d[np.isfinite(exact["y"].astype(np.float64))].tolist(),
            }
    if case.kind == "probe":
        return row
    if verdict is not None and not case.training and "evaluation_uses" in report.judged_under:
        row["verdict"] = f"{verdict[1][:160]} (charged once: probe (evaluation_uses))"
        verdict = None
    if verdict is not None:
        _finding(report, verdict[0], case, verdict[1], reproducers, target, exact)
    if judged and (verdict is None or verdict[0] == "accuracy"):
        from normspec.budgets.algorithm import plain_algorithm

        name = declared or plain_algorithm(case.x.dtype)
        label = row["budget_algorithm"]
        _judge_running(case, out, conv, exact, name, label, verdict is not None, row, report, reproducers, target)
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
    never = report.inferred.get("updates_in_forward") == "no" and report.claimed.get("updates_in_forward") == "yes"
    initial_m = np.broadcast_to(case.running_mean.astype(np.float64), got_m.shape)
    initial_v = np.broadcast_to(case.running_var.astype(np.float64), got_v.shape)
    if never and np.array_equal(got_m, initial_m) and np.array_equal(got_v, initial_v):
        row["running"] = f"{STUCK}: reported once, under probe (updates_in_forward)"
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
    if row.get("status") in ("ok", "within budget", "no budget"):  # y is fine; the running statistics are not
        row["status"] = "running stats differ"
        row["verdict"] = f"{stat} beyond its budget after step {k + 1} (y: {row.get('verdict') or 'ok'})"
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


def reproduce(path: str | Path, target: str, convention: str, timeout: float = 120.0) -> dict[str, Any]:
    """Run one saved case (a reproducer's ``case.npz``) on ``target`` again, judge it under
    ``convention`` as the audit did, print the verdict and return the case's row."""
    with np.load(path, allow_pickle=False) as data:
        arrays = {k: data[k] for k in data.files}
    name, kind = str(arrays.pop("case_name", "case")), str(arrays.pop("case_kind", "accuracy"))
    adapter, conv = resolve_target(target, convention)
    report = AuditReport(target, conv.name, adapter.description, {}, layer=conv.layer)
    if conv.layer != "batch_norm":
        from normspec.targets.family import family_probes, infer_family, judge_family

        rows, report.findings, _ = judge_family(target, conv, [(name, arrays, "")], timeout, None, adapter.algorithm)
        row = rows[0]
        probe = next((p for p in family_probes(conv) if p.name == name), None)
        if probe is not None:  # a probe: what it says of the field it observes
            seen = infer_family(conv, [probe], [row], report.findings)[probe.field]
            print(f"{probe.field}: claimed {probe.claimed}, observed {seen}")
    else:
        case = AuditCase(
            name,
            kind,
            arrays["x"],
            arrays["weight"],
            arrays["bias"],
            arrays["running_mean"],
            arrays["running_var"],
            bool(arrays["training"]),
            float(arrays["momentum"]),
            float(arrays["eps"]),
            backward=bool(arrays.get("backward", True)),
            dy=arrays.get("dy"),
        )
        with tempfile.TemporaryDirectory(prefix="normspec-repro-") as tmp:
            out = run_cases(target, [case], timeout, Path(tmp), None)[name]
        row = _judge(case, out, conv, report, None, target)
        if case.training and out.result is not None:  # what the probes and the sequences are about
            try:
                exact = oracle_sequence(case, conv)
            except NormspecError:
                exact = None
            for key in ("running_mean", "running_var"):
                seen = np.asarray(out.result.get(key)).tolist()
                want = "refused by the profile" if exact is None else exact[key].tolist()
                print(f"{key} after each step: observed {seen}, exact {want}")
    print(f"{target} under {conv.name}, case {name}: {row['status']}, max {row.get('max_ulp', float('nan')):.3g} ULP")
    if "worst" in row:
        w = row["worst"]
        print(f"worst element {tuple(w['index'])}: x = {w['x']!r}, exact {w['exact']!r}, observed {w['observed']!r}")
    for f in report.findings:
        print(f"[{f['kind']}] {f['message']}")
    return row
