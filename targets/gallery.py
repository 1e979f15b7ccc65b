"""The findings gallery: live audits of the installed libraries, each true finding with a
standalone reproducer.

:func:`standalone_reproducer` turns an audit target's own adapter (the code that produced the
finding) into a script that needs only that library and NumPy: the adapter's function and the
helpers it calls are copied in as source, the case is read from ``case.npz`` and the exact
output (computed here by the oracle) from ``exact.npz``; the script prints the worst element,
the exact and observed values and their distance in ULPs.  :func:`build_gallery` audits every
target it is given and writes ``findings.md`` and one folder per finding.
"""

from __future__ import annotations

import importlib
import inspect
import json
import re
import shutil
import types
from collections.abc import Callable, Iterable
from pathlib import Path
from typing import Any

import numpy as np
from normspec.targets.base import Adapter

__all__ = ["standalone_reproducer", "build_gallery", "PUBLIC_REPORTS"]

# Public reports of a finding, by (target, case); everything else says "no public report known".
PUBLIC_REPORTS: dict[tuple[str, str], str] = {
    ("torch", "huge_magnitude"): "https://github.com/pytorch/pytorch/issues/162489",
    ("torch_raw", "huge_magnitude"): "https://github.com/pytorch/pytorch/issues/162489",
    ("keras_numpy", "keras_trigger"): "https://github.com/keras-team/keras/pull/18795",
    ("keras_torch", "keras_trigger"): "https://github.com/keras-team/keras/pull/18795",
    ("onnx_reference_bn9", "probe (evaluation_uses)"): "https://github.com/onnx/onnx/issues/5799",
    ("mxnet_group_norm", "random"): "https://github.com/apache/mxnet/issues/17139",
    ("onnx_reference_layer_norm17", "probe (precision)"): "https://github.com/onnx/onnx/pull/8439",
    # the same pull request makes RMSNormalization-23's reference compute in float32 and cast back
    **{
        ("onnx_reference_rms_norm23", f"probe ({p})"): "https://github.com/onnx/onnx/pull/8439"
        for p in ("precision", "rounding")
    },
    # the same float32 overflow of the squared deviations in LayerNorm, GroupNorm and InstanceNorm
    ("torch_layer_norm", "huge_magnitude"): "https://github.com/pytorch/pytorch/issues/162489",
    ("torch_group_norm", "huge_magnitude"): "https://github.com/pytorch/pytorch/issues/162489",
    ("torch_instance_norm", "huge_magnitude"): "https://github.com/pytorch/pytorch/issues/162489",
    # Keras 3's moments use E[x^2] - E[x]^2; the fix covered the TensorFlow and JAX backends only
    **{
        ("keras_layer_norm" if layer else "keras_group_norm", case): (
            "related: https://github.com/keras-team/keras/pull/18795 (fixed the TensorFlow and JAX backends only)"
        )
        for layer in (True, False)
        for case in ("raw_moments_trigger", "constant", "huge_magnitude")
    },
    ("onnx_reference_instance_norm", "probe (precision)"): (
        "convention difference: InstanceNormalization-6 states no precision; normspec's profiles keep the "
        "statistics of float16 inputs in float32, as LayerNormalization's stash_type=1 asks"
    ),
}


def _globals_used(code: types.CodeType) -> set[str]:
    names = set(code.co_names)
    for const in code.co_consts:
        if isinstance(const, types.CodeType):
            names |= _globals_used(const)
    return names


def _call_expression(run: Callable[..., Any]) -> tuple[Callable[..., Any], str]:
    """The module-level function behind an adapter's ``run`` and the expression that calls it on
    ``case``: ``f(case)``, a factory's closure ``factory(layer="...")(case)``, or a lambda's body."""
    if run.__name__ == "<lambda>":
        line = inspect.getsource(run).strip()
        body = re.search(r"lambda c: (.*?)(,\s*)?$", line)
        if body is None:
            raise ValueError(f"cannot read the adapter's lambda: {line!r}")
        expr = body.group(1).replace("(c,", "(case,").replace("(c)", "(case)")
        module = importlib.import_module(run.__module__)
        name = expr.split("(")[0]
        return getattr(module, name), expr
    if "<locals>" in run.__qualname__ and run.__closure__:
        factory_name = run.__qualname__.split(".<locals>")[0]
        module = importlib.import_module(run.__module__)
        values = {n: c.cell_contents for n, c in zip(run.__code__.co_freevars, run.__closure__, strict=True)}
        args = ", ".join(f"{k}={v!r}" for k, v in values.items())
        return getattr(module, factory_name), f"{factory_name}({args})(case)"
    return run, f"{run.__name__}(case)"


def _sources(fn: Callable[..., Any]) -> list[str]:
    """The source of ``fn`` and of every module-level name of its module that it uses, in order."""
    module = importlib.import_module(fn.__module__)
    text = inspect.getsource(module)
    seen: list[str] = []
    chunks: dict[str, str] = {}

    def visit(name: str) -> None:
        if name in chunks or not hasattr(module, name):
            return
        value = getattr(module, name)
        if isinstance(value, types.FunctionType) and value.__module__ == module.__name__:
            chunks[name] = inspect.getsource(value)
            for used in sorted(_globals_used(value.__code__)):
                visit(used)
        elif not isinstance(value, types.ModuleType):
            m = re.search(rf"^{re.escape(name)}(: [^=]+)? = .*$", text, flags=re.M)
            if m is not None:
                chunks[name] = m.group(0) + "\n"
        seen.append(name)

    visit(fn.__name__)
    return [chunks[n] for n in reversed(seen) if n in chunks]


_SCRIPT = '''"""Standalone reproducer: {target}, case {case} ({version}).

{message}

Needs only {library} and NumPy.  Run from this folder: python repro.py
The exact output was computed by normspec's oracle under the profile {convention} and stored in exact.npz.
"""
from __future__ import annotations

import os
{env}
from collections.abc import Callable
from typing import Any

import numpy as np

Case = dict[str, Any]
Result = dict[str, np.ndarray]

{sources}

with np.load("case.npz", allow_pickle=False) as data:
    case = {{k: data[k] for k in data.files}}
case["training"], case["momentum"], case["eps"] = bool(case["training"]), float(case["momentum"]), float(case["eps"])
case["backward"] = bool(case.get("backward", True))
with np.load("exact.npz", allow_pickle=False) as data:
    exact = {{k: data[k] for k in data.files}}

observed = {call}


def ulps(a, b):
    """Distance in representable steps between arrays of one float dtype (NaN: infinite)."""
    width = {{2: np.int16, 4: np.int32, 8: np.int64}}[a.dtype.itemsize]
    ia, ib = a.view(width).astype(np.int64), b.view(width).astype(np.int64)
    top = np.int64(np.iinfo(width).max)
    oa, ob = np.where(ia < 0, -(ia & top), ia), np.where(ib < 0, -(ib & top), ib)
    d = np.abs(oa - ob).astype(np.float64)
    return np.where(np.isnan(a) | np.isnan(b), np.inf, d)


for key in ("y", "running_mean", "running_var"):
    if key not in exact or key not in observed:
        continue
    want = exact[key]
    got = np.asarray(observed[key]).astype(want.dtype).reshape(want.shape)
    d = ulps(got, want)
    i = np.unravel_index(int(np.argmax(np.where(np.isnan(d), np.inf, d))), d.shape)
    kind = np.asarray(observed[key]).dtype
    print(f"{{key}} ({{kind}}, exact in {{want.dtype}}): worst element {{tuple(int(v) for v in i)}}: "
          f"observed {{got[i]!r}}, exact {{want[i]!r}}, {{d[i]:.3g}} ULP (max over all {{d.size}} elements)")
'''


def standalone_reproducer(adapter: Adapter, case_name: str, message: str, convention: str, version: str) -> str:
    """The text of ``repro.py`` for a finding on ``case_name`` of ``adapter``."""
    fn, call = _call_expression(adapter.run)
    env = "\n".join(f"os.environ.setdefault({k!r}, {v!r})" for k, v in adapter.env)
    return _SCRIPT.format(
        target=adapter.name,
        case=case_name,
        version=version,
        message=message,
        library=adapter.library,
        convention=convention,
        env=env,
        sources="\n\n".join(s.rstrip() + "\n" for s in _sources(fn)),
        call=call,
    )


def _exact(case: Any, conv: Any, family: bool) -> dict[str, Any]:
    from normspec.targets.audit import oracle_sequence
    from normspec.vectors.family import family_forward

    if family:
        a = case.arrays()
        y = family_forward(conv, a["x"][0], a["weight"], a["bias"], float(a["eps"]), a["groups"])
        return {"y": np.asarray(y)[None]}
    seq = oracle_sequence(case, conv.name)
    return {k: seq[k] for k in ("y", "running_mean", "running_var")}


def build_gallery(
    targets: Iterable[str],
    page: Path,
    *,
    progress: Callable[[str], None] | None = None,
) -> dict[str, Any]:
    """Audit ``targets``, write ``page`` (markdown) and, in the folder of the same name beside it,
    one reproducer folder per finding with exit-status weight and ``findings.json``."""
    out_dir = page.with_suffix("")
    from normspec.targets.adapters import ADAPTERS
    from normspec.targets.audit import interpreter, library_version, probe_case_name, resolve_target, run_audit
    from normspec.targets.family import FAMILY_ADAPTERS
    from normspec.targets.verdict import FAILING

    out_dir.mkdir(parents=True, exist_ok=True)
    entries: list[dict[str, Any]] = []
    for target in targets:
        if progress is not None:
            progress(target)
        adapter, conv = resolve_target(target)
        family = conv.layer != "batch_norm"
        rep = run_audit(target)
        findings, cases = rep.findings, rep.audited
        missing = [f for f in findings if f["kind"] == "unavailable"]
        python = None
        if not missing and adapter.venv is not None:
            import tempfile

            with tempfile.TemporaryDirectory() as tmp:
                python = interpreter(adapter, Path(tmp))[0]
        version = missing[0]["message"] if missing else library_version(adapter, python)
        for f in findings:
            if f["kind"] not in FAILING:
                continue
            case_name = probe_case_name(f["case"])
            case = cases.get(case_name)
            entry = {
                "target": target,
                "library": adapter.library,
                "version": version,
                "kind": f["kind"],
                "case": f["case"],
                "message": f["message"],
                "report": PUBLIC_REPORTS.get((target, f["case"]), "no public report known"),
            }
            if case is not None and target in {**ADAPTERS, **FAMILY_ADAPTERS}:
                folder = out_dir / target / case_name
                folder.mkdir(parents=True, exist_ok=True)
                np.savez(folder / "case.npz", **case.arrays())
                try:
                    np.savez(folder / "exact.npz", **_exact(case, conv, family))
                except Exception as exc:  # the profile refuses the case: say so, keep going
                    entry["reproducer_note"] = f"no exact output ({type(exc).__name__}: {exc})"
                text = standalone_reproducer(adapter, case_name, f["message"], conv.name, version)
                (folder / "repro.py").write_text(text)
                entry["reproducer"] = str(folder.relative_to(page.parent))
                entry["python"] = "the target's venv" if adapter.venv else "python"
            entries.append(entry)
        if missing:
            entries.append({"target": target, "kind": "unavailable", "message": missing[0]["message"]})
    kept = {out_dir / e["reproducer"].split("/", 1)[1] for e in entries if "reproducer" in e}
    for target in targets:  # a finding that is gone takes its reproducer folder with it
        for folder in sorted((out_dir / target).glob("*")) if (out_dir / target).is_dir() else []:
            if folder.is_dir() and folder not in kept:
                shutil.rmtree(folder)
    (out_dir / "findings.json").write_text(json.dumps(entries, indent=2))
    page.write_text(_markdown(entries))
    return {"entries": entries}


def _markdown(entries: list[dict[str, Any]]) -> str:
    lines = [
        "# Findings on the installed libraries",
        "",
        "Regenerated by `python scripts/findings_gallery.py` from live audits (`normspec audit TARGET`)",
        "of the versions installed where it ran. Each finding below has exit-status weight (semantic,",
        "accuracy, non-finite or crash; see the README's table of kinds) and a folder with a standalone",
        "reproducer: `repro.py` needs only the library and NumPy, with the exact output stored beside it.",
        "",
    ]
    by_target: dict[str, list[dict[str, Any]]] = {}
    for e in entries:
        by_target.setdefault(e["target"], []).append(e)
    for target, items in by_target.items():
        head = items[0]
        if head["kind"] == "unavailable":
            lines += [f"## {target}", "", f"Not audited: {head['message']}", ""]
            continue
        lines += [f"## {target} ({head['version']})", ""]
        lines += ["| kind | case | what | public report | reproducer |", "|---|---|---|---|---|"]
        for e in items:
            what = e["message"].replace("|", "\\|")
            repro = f"`{e['reproducer']}/repro.py`" if "reproducer" in e else "-"
            lines.append(f"| {e['kind']} | {e['case']} | {what} | {e['report']} | {repro} |")
        lines.append("")
    if not by_target:
        lines.append("No findings with exit-status weight.")
    return "\n".join(lines) + "\n"
