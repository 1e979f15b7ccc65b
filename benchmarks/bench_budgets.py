"""How tight are the derived error budgets?  Ratio of the bound to the worst observed error.

Each algorithm is emulated exactly (tests/budgets/emulate.py) on normal data and on the
adversarial x = 1e4 + U[0,1); the observed error is measured against the oracle's exact
value.  Reported: the worst error, the largest finite budget, their ratio (goal: within
100x), and the share of elements whose budget is infinite (the algorithm may give NaN there).

    python benchmarks/bench_budgets.py [--n 1024]
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent.parent / "tests" / "budgets"))
from emulate import emulate
from normspec.budgets import ALGORITHMS, budget_for_batch_norm
from normspec.oracle import batch_norm


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--n", type=int, default=1024, help="values per channel")
    p.add_argument("--channels", type=int, default=4)
    args = p.parse_args()
    rng = np.random.default_rng(0)
    eps = 2.0**-17
    print(f"{'algorithm':26} {'data':10} {'worst error':>12} {'max budget':>12} {'ratio':>8} {'inf budget':>10}")
    for name, alg in ALGORITHMS.items():
        for kind in ("normal", "large_mean"):
            shape = (args.n // 8, args.channels, 8)
            x = rng.standard_normal(shape) if kind == "normal" else 1e4 + rng.random(shape)
            x = x.astype(np.float32)
            g, b = np.ones(args.channels, np.float32), np.zeros(args.channels, np.float32)
            budget = budget_for_batch_norm(alg, x, g, b, eps, training=True)
            y = emulate(alg, x, g, b, eps, True)
            r = batch_norm(x, training=True, eps=eps, convention="torch_raw")
            exact = np.array([float(r.exact.y(i, prec=80)) for i in np.ndindex(x.shape)]).reshape(x.shape)
            err = np.abs(y.astype(np.float64) - exact)
            finite = np.isfinite(budget)
            worst = err[finite].max() if finite.any() else np.nan
            top = budget[finite].max() if finite.any() else np.nan
            ratio = top / worst if worst > 0 else np.inf
            print(f"{name:26} {kind:10} {worst:12.3g} {top:12.3g} {ratio:8.1f} {100 * (1 - finite.mean()):9.1f}%")
    print(
        "ratio > 100 means the bound is looser than the goal: recursive summation bounds grow like n u, "
        "observed errors like sqrt(n) u."
    )


if __name__ == "__main__":
    main()
