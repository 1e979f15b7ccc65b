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
