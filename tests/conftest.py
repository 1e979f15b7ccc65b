import os

# The CUDA kernels' tests run on a real GPU where there is one, and under numba's CUDA simulator
# elsewhere (CI).  numba reads this at import, so it is decided before any test imports numba.
if not any(os.path.exists(p) for p in ("/dev/nvidiactl", "/dev/nvidia0")):
    os.environ.setdefault("NUMBA_ENABLE_CUDASIM", "1")

from hypothesis import HealthCheck, settings

# CI: more examples, derandomized so a red run reproduces; locally the default.
settings.register_profile(
    "ci", max_examples=200, derandomize=True, deadline=None, suppress_health_check=[HealthCheck.too_slow]
)
settings.register_profile("dev", max_examples=60, deadline=None, suppress_health_check=[HealthCheck.too_slow])
settings.load_profile("ci" if os.environ.get("CI") else os.environ.get("HYPOTHESIS_PROFILE", "dev"))


def pytest_terminal_summary(terminalreporter, exitstatus, config):
    """Print what the peer-suite tests found in the peers themselves (tests/peer_suites.py)."""
    import sys

    peers = sys.modules.get("peer_suites")
    findings = getattr(peers, "FINDINGS", None)
    if not findings:
        return
    tr = terminalreporter
    tr.section("peer suites: outputs more than 1 ULP from the exact value (the peer's, not failures)")
    worst: dict[tuple[str, str], dict] = {}
    for f in findings:
        key = (f["suite"], f["output"])
        if key not in worst or f["ulp"] > worst[key]["ulp"]:
            worst[key] = f
    tr.write_line(
        f"{len(findings)} outputs in {len({f['case'] for f in findings})} cases; the worst per suite and output:"
    )
    for (suite, out), f in sorted(worst.items()):
        tr.write_line(
            f"  {suite:5} {out:12} {f['ulp']:>10.0f} ULP  {f['case']}: peer {f['peer']!r}, exact {f['exact']!r}"
        )
