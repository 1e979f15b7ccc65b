"""The normspec command line, run as a user would."""

import subprocess
import sys

import numpy as np
import pytest
from normspec.oracle import batch_norm

from normspec.cli import main


def run(*args):
    return subprocess.run([sys.executable, "-m", "normspec", *args], capture_output=True, text=True, timeout=300)


def test_help_and_version():
    out = run("--help")
    assert out.returncode == 0
    for word in ("demo", "eval", "conventions", "examples:"):
        assert word in out.stdout
    ver = run("--version")
    assert ver.returncode == 0 and ver.stdout.startswith("normspec ")


def test_eval_round_trip_is_bit_exact(tmp_path, capsys):
    rng = np.random.default_rng(4)
    x = (1e4 + rng.random((4, 3, 5))).astype(np.float32)
    rm, rv = np.zeros(3, np.float32), np.ones(3, np.float32)
    np.savez(tmp_path / "in.npz", x=x, running_mean=rm, running_var=rv)
    assert (
        main(
            [
                "eval",
                str(tmp_path / "in.npz"),
                "-o",
                str(tmp_path / "out.npz"),
                "--training",
                "--convention",
                "keras3",
                "--axis",
                "1",
            ]
        )
        == 0
    )
    assert "wrote" in capsys.readouterr().out
    want = batch_norm(x, None, None, rm, rv, training=True, convention="keras3")
    with np.load(tmp_path / "out.npz") as got:
        for key in ("y", "mean", "var", "running_mean", "running_var"):
            assert got[key].tobytes() == getattr(want, key).tobytes(), key
        assert int(got["num_batches_tracked"]) == 1


def test_eval_refuses_pickled_arrays(tmp_path, capsys):
    np.savez(tmp_path / "evil.npz", x=np.array([{"a": 1}], dtype=object))
    assert main(["eval", str(tmp_path / "evil.npz"), "-o", str(tmp_path / "o.npz"), "--eval"]) == 2
    assert "unpickling" in capsys.readouterr().err
    assert not (tmp_path / "o.npz").exists()


@pytest.mark.parametrize(
    "setup,message",
    [
        (lambda p: None, "no such file"),
        (lambda p: p.write_text("not a zip"), "not a readable .npz"),
        (lambda p: np.savez(p, y=np.ones(2)), "no array named 'x'"),
        (lambda p: np.savez(p, x=np.ones((2, 2), np.float32), gamma=np.ones(2)), "does not read: gamma"),
    ],
)
def test_eval_bad_files(tmp_path, capsys, setup, message):
    path = tmp_path / "in.npz"
    setup(path)
    assert main(["eval", str(path), "-o", str(tmp_path / "o.npz"), "--training"]) == 2
    assert message in capsys.readouterr().err


def test_eval_bad_values_exit_2_with_the_value(tmp_path, capsys):
    np.savez(tmp_path / "in.npz", x=np.ones((4, 2), np.float32))
    assert main(["eval", str(tmp_path / "in.npz"), "-o", str(tmp_path / "o.npz"), "--training", "--eps", "-1"]) == 2
    assert "eps = -1.0" in capsys.readouterr().err  # ones: var + eps = -1 in every group


def test_progress_bar_draws_when_asked(tmp_path, capsys):
    np.savez(tmp_path / "in.npz", x=np.ones((64, 2, 600), np.float32))
    assert (
        main(["eval", str(tmp_path / "in.npz"), "-o", str(tmp_path / "o.npz"), "--training", "--progress", "always"])
        == 0
    )
    err = capsys.readouterr().err
    assert "normspec eval [" in err and "100.0%" in err


def test_demo_catches_the_folded_affine_error():
    out = run("demo", "--no-torch")
    assert out.returncode == 0, out.stderr
    assert "constant channel at 1.2345678e7" in out.stdout
    assert "exact y        : 0.0" in out.stdout
    first = out.stdout.split("distance       : ")[1].split(" ULP")[0]
    assert int(first) > 10**6  # |y| near 70 where the exact value is 0


def test_demo_runs_real_torch_when_installed():
    pytest.importorskip("torch", reason="torch is an optional extra: pip install 'normspec[torch]'")
    out = run("demo")
    assert out.returncode == 0, out.stderr
    assert "F.batch_norm (real)" in out.stdout


def test_conventions_listing(capsys):
    assert main(["conventions"]) == 0
    table = capsys.readouterr().out
    assert "torch" in table and "keras3" in table and "paddle_cpu" in table
    assert main(["conventions", "paddle_cpu"]) == 0
    assert "identity" in capsys.readouterr().out
    assert main(["conventions", "nope"]) == 2


def test_conventions_shows_every_listed_profile_batch_norm_or_not(capsys):
    """Every profile that 'normspec conventions' lists can be shown by name (torch_layer_norm was refused)."""
    from normspec.spec import CONVENTIONS

    assert main(["conventions"]) == 0
    listing = capsys.readouterr().out
    for name, conv in CONVENTIONS.items():
        assert name in listing
        assert main(["conventions", name]) == 0
        shown = capsys.readouterr().out
        assert f"layer                    {conv.layer}" in shown and "sources" in shown
        assert ("momentum_direction" in shown) == conv.running_stats


def test_budget_help_names_every_preset_and_the_exit_codes(capsys):
    from normspec.budgets import ALGORITHMS

    from normspec.cli import BUDGET_PRESETS

    assert set(BUDGET_PRESETS) == set(ALGORITHMS)
    with pytest.raises(SystemExit):
        main(["budget", "--help"])
    text = " ".join(capsys.readouterr().out.split())
    assert all(name in text for name in ALGORITHMS) and "Exit status 0" in text
    for flag in ("--algorithm", "--training", "--eval", "--eps", "--axis"):
        assert flag in text


@pytest.mark.parametrize(
    "argv",
    [
        ["eval", "/nonexistent.npz", "-o", "/tmp/out.npz", "--training"],
        ["budget", "/nonexistent.npz", "--algorithm", "torch_cpu", "--training"],
        ["vectors", "check", "/nonexistent_dir", "--target", "oracle"],
        ["audit", "no_such_target"],
        ["conventions", "no_such_profile"],
        ["prove", "no_such_fact"],
        ["identity", "frobnicate(x)", "x"],
        ["zoo", "no_such_variant"],
        ["diagnose", "/nonexistent.npz"],
    ],
)
def test_bad_input_is_exit_status_2_for_every_command(argv, capsys):
    assert main(argv) == 2
    err = capsys.readouterr().err
    assert err.startswith("normspec: error:") and "Traceback" not in err


def test_argparse_errors_and_internal_errors_have_their_own_codes(monkeypatch, capsys):
    with pytest.raises(SystemExit) as usage:
        main(["audit"])  # the target is missing: argparse's usage error
    assert usage.value.code == 2
    import normspec.cli as cli

    def broken(args):
        raise RuntimeError("a bug")

    monkeypatch.setattr(cli, "_conventions", broken)
    assert main(["conventions"]) == 4
    err = capsys.readouterr().err
    assert "internal error (RuntimeError: a bug)" in err and "not a verdict" in err


def test_output_paths_are_checked_before_the_work(tmp_path, capsys):
    np.savez(tmp_path / "in.npz", x=np.ones((4, 3), np.float32))
    a_file = tmp_path / "a_file"
    a_file.write_text("")
    assert main(["eval", str(tmp_path / "in.npz"), "-o", str(tmp_path / "noext"), "--training"]) == 0
    assert f"wrote {tmp_path / 'noext.npz'}" in capsys.readouterr().out and (tmp_path / "noext.npz").exists()
    refused = [
        ["eval", str(tmp_path / "in.npz"), "-o", str(tmp_path / "missing" / "out.npz"), "--training"],
        ["vectors", "generate", str(a_file)],
        ["audit", "torch", "--report", str(a_file)],
        ["diagnose", "python:normspec.diagnose.examples:shuffled", "--plot", str(a_file)],
    ]
    for argv in refused:
        assert main(argv) == 2, argv
        err = capsys.readouterr().err
        assert "does not exist" in err or "is a file, not a folder" in err, err
