"""The CLI's argument space, explored by Hypothesis within a bound: whatever mix of flags, numbers,
names and files a user types, each command answers with its exit scheme (0 or 1 a verdict, 2 bad
input, 3 undecided) and never with 4 (an internal error) or an escaped exception.

The audit is left out (a valid target runs a whole audit; its bad input has its own tests), and so
are ``python:`` callables that exist (they run user code in worker processes: tests/vectors).
"""

from __future__ import annotations

import contextlib
import io

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from normspec.cli import main

NUMBERS = ["0", "-1", "1", "2", "0.1", "1e-5", "nan", "inf", "-inf", "1e999", "1e-320", "abc", "", "9" * 400, "True"]
NAMES = ["torch", "keras3", "onnx_bn15", "torch_raw", "torch_layer_norm", "onnx_group_norm21", "nope", "", "../x"]
AXES = ["1", "-1", "0", "5", "-9", "1.5", "x"]


@pytest.fixture(scope="module")
def files(tmp_path_factory: pytest.TempPathFactory) -> dict[str, str]:
    d = tmp_path_factory.mktemp("fuzz")
    rng = np.random.default_rng(0)
    x = rng.standard_normal((4, 3, 2)).astype(np.float32)
    arrays = {
        "good": {"x": x, "running_mean": np.zeros(3, np.float32), "running_var": np.ones(3, np.float32), "y": x},
        "batches": {"x": rng.standard_normal((3, 4, 3, 2)).astype(np.float32)},
        "nan": {"x": np.full((4, 3, 2), np.nan, np.float32), "y": x},
        "scalar": {"x": np.float32(1.0)},
        "ints": {"x": np.ones((4, 3), np.int64)},
        "objects": {"x": np.array([{"a": 1}], dtype=object)},
        "empty": {},
        "negative_var": {"x": x, "running_mean": np.zeros(3, np.float32), "running_var": -np.ones(3, np.float32)},
    }
    out = {}
    for name, content in arrays.items():
        np.savez(d / f"{name}.npz", **content)
        out[name] = str(d / f"{name}.npz")
    (d / "text.npz").write_text("not a zip")
    out["text"] = str(d / "text.npz")
    out["missing"] = str(d / "missing.npz")
    out["folder"] = str(d)
    out["devnull"] = "/dev/null"
    vec = d / "vectors"
    assert main(["vectors", "generate", str(vec), "--family", "torch_layer_norm"]) == 0
    out["vectors"] = str(vec)
    out["outdir"] = str(d / "out")
    return out


def _flags(options: dict[str, st.SearchStrategy[str]], switches: list[str]) -> st.SearchStrategy[list[str]]:
    """Any subset of the options, each with a drawn value, and of the switches, in any order."""
    pairs = [st.tuples(st.just(f), v).map(list) for f, v in options.items()] + [st.just([s]) for s in switches]
    if not pairs:
        return st.just([])
    return st.lists(st.sampled_from(range(len(pairs))), unique=True, max_size=5).flatmap(
        lambda picks: st.tuples(*(pairs[i] for i in picks)).map(lambda groups: [w for g in groups for w in g])
    )


def _argv(files: dict[str, str]) -> st.SearchStrategy[list[str]]:
    path = st.sampled_from(sorted(files.values()))
    number, name, axis = st.sampled_from(NUMBERS), st.sampled_from(NAMES), st.sampled_from(AXES)
    out = st.sampled_from([files["outdir"] + "/o.npz", files["outdir"], files["good"], "/nonexistent/dir/o.npz"])
    commands = {
        "eval": (
            [path],
            {
                "--convention": name,
                "--momentum": number,
                "--eps": number,
                "--axis": axis,
                "--num-batches-tracked": number,
                "-o": out,
            },
            ["--training", "--eval"],
        ),
        "budget": (
            [path],
            {
                "--algorithm": st.sampled_from(["torch_cpu", "nope", "{", '{"variance": 1}', '{"rsqrt_ulps": -1}']),
                "--eps": number,
                "--axis": axis,
                "--observed": st.sampled_from(["y", "x", "nope"]),
            },
            ["--training", "--eval", "--json"],
        ),
        "diagnose": (
            [path],
            {"--convention": name, "--momentum": number, "--eps": number, "--observed": path},
            ["--json", "--no-backward"],
        ),
        "vectors check": (
            [st.sampled_from([files["vectors"], files["folder"], files["good"], files["missing"]])],
            {
                "--target": st.sampled_from(["oracle", "torch", "nope", "python:", "python:no_such_mod:f"]),
                "--max-ulp": number,
                "--follows": name,
                "--case": st.sampled_from(["nope", ""]),
                "--timeout": number,
            },
            ["--json"],
        ),
        "identity": (
            [st.sampled_from(["x", "sqrt(x)", "x**", "x**(2**99)", "mean()", "1e999", ""]), st.just("x")],
            {"--assume": st.sampled_from(["x > 0", "x", "x >", "y != 1"]), "--time-limit": number},
            ["--json"],
        ),
        "zoo": ([st.sampled_from(["eps_outside_sqrt", "nope", ""])], {}, ["--json"]),
        "conventions": ([name], {}, []),
        "prove": ([st.sampled_from(["nope", "", "total_variance_k"])], {}, ["--json"]),
    }
    parts = []
    for command, (positional, options, switches) in commands.items():
        head = st.tuples(*positional).map(list)
        parts.append(st.tuples(head, _flags(options, switches)).map(lambda p, c=command: [*c.split(), *p[0], *p[1]]))
    return st.one_of(parts)


@settings(max_examples=120)
@given(data=st.data())
def test_every_command_answers_in_its_exit_scheme(files, data):
    argv = data.draw(_argv(files), label="argv")
    out, err = io.StringIO(), io.StringIO()
    with contextlib.redirect_stdout(out), contextlib.redirect_stderr(err):
        try:
            code = main(argv)
        except SystemExit as exc:  # argparse's usage errors (and --help)
            code = exc.code
    assert code in (0, 1, 2, 3), f"exit {code} for {argv}:\n{err.getvalue()[-2000:]}"
    assert "Traceback" not in err.getvalue(), f"{argv}:\n{err.getvalue()[-2000:]}"
    if code == 2 and "usage:" not in err.getvalue():
        assert err.getvalue().startswith("normspec: error: "), f"{argv}: {err.getvalue()[:300]!r}"
