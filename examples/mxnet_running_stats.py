"""MXNet's BatchNorm on all-ones input: the running statistics on CPU against the cuDNN profile.

An MXNet user fed an all-ones batch to a BatchNorm for 100 training-mode forward passes: on CPU
the running mean and variance never moved, on GPU they converged.  MXNet's CPU operator updates
its running statistics in the backward pass only; cuDNN updates them in the forward, with the
unbiased variance (NaN for a batch of one).  This example runs MXNet 1.9.1 on CPU (in its own
venv: ``bash scripts/setup-target-venvs.sh mxnet``) with and without a backward pass, computes
the ``mxnet_cpu`` and ``mxnet_cudnn`` profiles exactly with ``normspec.diagnose``, prints them
side by side and plots them::

    python examples/mxnet_running_stats.py --out out/mxnet
"""

from __future__ import annotations

import argparse
import sys
import tempfile
from pathlib import Path

import numpy as np
from normspec.diagnose import diagnose
from normspec.oracle import ulp_distance
from normspec.targets.adapters import ADAPTERS
from normspec.targets.runner import AuditCase, run_cases, unavailable_reason

STEPS, BATCH, CHANNELS, MOMENTUM = 100, (8, 3), 3, 0.9


def mxnet_cpu(x: np.ndarray, backward: bool) -> tuple[np.ndarray, np.ndarray]:
    """MXNet Gluon BatchNorm on CPU, trained on ``x`` (steps, N, C): running mean and variance after each step."""
    c = x.shape[2]
    case = AuditCase(
        "all_ones",
        "sequence",
        x,
        np.ones(c, np.float32),
        np.zeros(c, np.float32),
        np.zeros(c, np.float32),
        np.ones(c, np.float32),
        True,
        MOMENTUM,
        1e-5,
        backward=backward,
    )
    with tempfile.TemporaryDirectory() as tmp:
        out = run_cases("mxnet_cpu", [case], 600.0, Path(tmp))["all_ones"]
    if out.status != "ok" or out.result is None:
        raise SystemExit(f"MXNet failed: {out.message}")
    return out.result["running_mean"].astype(np.float64), out.result["running_var"].astype(np.float64)


def experiment() -> dict[str, np.ndarray]:
    """Running mean and variance of channel 0 over the steps, for each setting."""
    x = np.ones((STEPS, *BATCH), np.float32)
    rows = {}
    for backward in (False, True):
        rm, rv = mxnet_cpu(x, backward)
        rows[f"MXNet CPU, {'with' if backward else 'no'} backward"] = np.stack([rm[:, 0], rv[:, 0]])
        exact = diagnose(x, "mxnet_cpu", momentum=MOMENTUM, backward=backward)
        rows[f"mxnet_cpu profile, {'with' if backward else 'no'} backward"] = np.stack(
            [exact.running_mean[1:, 0], exact.running_var[1:, 0]]
        )
    gpu = diagnose(x, "mxnet_cudnn", momentum=MOMENTUM)
    rows["mxnet_cudnn profile"] = np.stack([gpu.running_mean[1:, 0], gpu.running_var[1:, 0]])
    one = diagnose(np.ones((STEPS, 1, CHANNELS), np.float32), "mxnet_cudnn", momentum=MOMENTUM)
    rows["mxnet_cudnn profile, batch of 1"] = np.stack([one.running_mean[1:, 0], one.running_var[1:, 0]])
    return rows


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--out", type=Path, default=None, help="folder for mxnet_running_stats.png")
    args = parser.parse_args(argv)
    missing = unavailable_reason(ADAPTERS["mxnet_cpu"])
    if missing:
        print(f"skipped: {missing}")
        return 0
    rows = experiment()
    print(f"all-ones batches {BATCH}, momentum {MOMENTUM} (old-weight), channel 0; running mean / running variance\n")
    print(f"{'':38}" + "".join(f"{'step ' + str(k):>20}" for k in (1, 10, 50, 100)))
    for name, traj in rows.items():
        cells = "".join(f"{traj[0, k - 1]:>9.4g} / {traj[1, k - 1]:<8.4g}" for k in (1, 10, 50, 100))
        print(f"{name:38}{cells}")
    for setting in ("no", "with"):
        got, want = rows[f"MXNet CPU, {setting} backward"], rows[f"mxnet_cpu profile, {setting} backward"]
        d = ulp_distance(got.astype(np.float32), want.astype(np.float32))
        print(f"\nMXNet CPU, {setting} backward, against its profile: max {np.nanmax(d):.3g} ULP over the 100 steps")
    if args.out is not None:
        try:
            import matplotlib

            matplotlib.use("Agg")
            import matplotlib.pyplot as plt
        except ImportError:
            print("(the plot needs matplotlib: pip install 'normspec[audit]')")
            return 0
        args.out.mkdir(parents=True, exist_ok=True)
        fig, axes = plt.subplots(1, 2, figsize=(11, 3.8))
        steps = np.arange(1, STEPS + 1)
        for name, traj in rows.items():
            style = "-" if name.startswith("MXNet") else "--"
            for ax, row in zip(axes, traj, strict=True):
                ax.plot(steps, np.where(np.isfinite(row), row, np.nan), style, label=name)
        axes[0].set_title("running mean, channel 0")
        axes[1].set_title("running variance, channel 0 (batch of 1: NaN, not drawn)")
        for ax in axes:
            ax.set_xlabel("training-mode forward pass")
        axes[0].legend(fontsize=7)
        fig.tight_layout()
        png = args.out / "mxnet_running_stats.png"
        fig.savefig(png, dpi=90)
        plt.close(fig)
        print(f"plot: {png}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
