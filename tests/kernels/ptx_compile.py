"""Compile every CUDA kernel to PTX for a real GPU target, without a GPU (run as a script).

The simulator runs the kernels' Python; it cannot catch what only the CUDA target refuses to
type or lower.  NVVM (the CUDA toolkit) compiles without a driver; numba asks the driver for
the device's compute capability only when compiling device functions, so that one question is
answered here.  Exit status 77: no NVVM on this machine (the test skips, saying so).
"""

import os
import sys
import types

os.environ["NUMBA_ENABLE_CUDASIM"] = "0"

from numba import cuda, float32, float64, int32, int64

CC = (9, 0)  # H100 / H200


def main() -> int:
    import numba.cuda.dispatcher as disp

    disp.get_current_device = lambda: types.SimpleNamespace(compute_capability=CC)  # no driver needed
    from normspec.kernels import _numba_cuda as k

    f32, f64 = float32[:, :, ::1], float64[::1]
    launches = {  # the argument types the drivers in normspec.kernels.cuda launch with
        "shifts_kernel": (f32, f64),
        "partial_sums_kernel": (f32, f64, float64[:, :, ::1]),
        "combine_kernel": (float64[:, :, ::1], f64, int64, float64[:, ::1]),
        "normalize_kernel": (f32, f64, f64, f64, f64, f64, f32, int32[:, ::1]),
        "exact_bins_kernel": (int32[:, :, ::1], int64, int64[::1], int64[:, ::1]),
        "backward_partials_kernel": (f32, f32, f64, float64[:, :, ::1]),
        "backward_dx_kernel": (f32, f32, f64, f64, f64, f64, f32),
    }
    try:
        cuda.compile_ptx(lambda a: None, (f64,), cc=CC)
    except Exception as exc:
        print(f"no NVVM here: {type(exc).__name__}: {str(exc).splitlines()[0]}")
        return 77
    for name, sig in launches.items():
        ptx, _ = cuda.compile_ptx(getattr(k, name).py_func, sig, cc=CC)
        assert ".entry" in ptx, name
        print(f"{name}: {len(ptx)} characters of PTX for sm_{CC[0]}{CC[1]}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
