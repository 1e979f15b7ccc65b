"""Float32 BatchNorm on an NVIDIA GPU (numba.cuda), correctly rounded.

Why numba.cuda and not CuPy: the kernels stay in Python beside the CPU kernels they mirror
(the same blocked, compensated sums, the same certificate), they run unchanged under numba's
CUDA simulator, so CI checks their logic without a GPU, and no second toolchain is needed.

:func:`batch_norm` takes host (numpy) arrays or device arrays (anything with
``__cuda_array_interface__``: numba device arrays, CuPy arrays, PyTorch CUDA tensors).  The bulk
work stays on the device: statistics (per-thread blocked sums, compensated combination),
per-channel plans (a few numbers a channel, computed on the host by the CPU kernels' code, so
both share one error analysis) and the normalization with its per-element rounding certificate.  The
rare rows that the certificate leaves open go through the CPU driver's tiers: the row is copied
to the host and rechecked with the full bound; in training the channel's exact statistics come
from an integer exponent-bin kernel on the device; what is still open is decided exactly.

:func:`batch_norm_backward` gives the gradients on the device with the CPU's arithmetic and bound.
"""

from __future__ import annotations

import os
from fractions import Fraction
from typing import Any

import numpy as np
from normspec.kernels import _exact
from normspec.kernels.batchnorm import KernelStats, _backward, _finish, _Plan, _plan, _setup, _shape3

from normspec.errors import DTypeError, ShapeError, expected

__all__ = ["batch_norm", "batch_norm_backward", "available", "last_run"]

last_run = KernelStats()


def available() -> tuple[bool, str]:
    """Whether the CUDA kernels can run here, and if not, why (the reason tests print on skip)."""
    try:
        from numba import cuda
    except Exception as exc:  # pragma: no cover - numba is a dependency of the kernels extra
        return False, f"numba.cuda cannot be imported: {exc}"
    if os.environ.get("NUMBA_ENABLE_CUDASIM") == "1":
        return True, "numba's CUDA simulator (NUMBA_ENABLE_CUDASIM=1): correct but slow, small shapes only"
    try:
        if cuda.is_available():
            return True, f"GPU: {cuda.get_current_device().name}"
    except Exception as exc:  # pragma: no cover - depends on the machine's driver
        return False, f"no usable CUDA driver: {exc}"
    return False, "no CUDA GPU on this machine (set NUMBA_ENABLE_CUDASIM=1 for the simulator)"


class _DeviceData:
    """The driver's per-row access to device arrays: rows copied to the host, channels' exact
    statistics from the device's exponent-bin kernel."""

    def __init__(self, x3: Any, y3: Any, kern: Any) -> None:
        self.x3, self.y3, self.kern = x3, y3, kern
        self._rows: dict[tuple[int, int], np.ndarray] = {}
        self._outs: dict[tuple[int, int], np.ndarray] = {}

    def row(self, a: int, c: int) -> np.ndarray:
        if (a, c) not in self._rows:
            self._rows[a, c] = self.x3[a, c].copy_to_host()
        return self._rows[a, c]

    def out_row(self, a: int, c: int) -> np.ndarray:
        if (a, c) not in self._outs:
            self._outs[a, c] = self.y3[a, c].copy_to_host()
        return self._outs[a, c]

    def store_row(self, a: int, c: int, r: np.ndarray) -> None:
        self.y3[a, c].copy_to_device(np.ascontiguousarray(r))

    def channel_stats_many(self, channels: list[int]) -> list[tuple[Fraction, Fraction]]:
        return [self.channel_stats(c) for c in channels]

    def channel_sums_eft(self, channels: list[int]) -> None:
        """No error-free re-summing on the device: open channels go to exact statistics."""
        return None

    def channel_stats(self, c: int) -> tuple[Fraction, Fraction]:
        from numba import cuda

        k = self.kern
        bins1 = cuda.to_device(np.zeros(254, np.int64))
        bins2 = cuda.to_device(np.zeros((254, 2), np.int64))
        a_n, _, b_n = self.x3.shape
        k.exact_bins_kernel[k.blocks_for(a_n * b_n), k.THREADS](self.x3.view(np.int32), c, bins1, bins2)
        return _exact.stats_from_bins(bins1.copy_to_host(), bins2.copy_to_host(), a_n * b_n)


def _is_device_array(x: Any) -> bool:
    # the simulator's device arrays carry no __cuda_array_interface__
    return hasattr(x, "__cuda_array_interface__") or type(x).__name__ == "FakeCUDAArray"


def _slabs(n: int, c_n: int, kern: Any) -> int:
    """Blocks per channel: each thread sums at least about 4 blocks of values; about 2048 in all."""
    return max(1, min(-(-n // (kern.THREADS * 4 * kern.CHUNK)), max(1, 2048 // max(c_n, 1))))


def _check_grid(shape3: tuple[int, int, int]) -> tuple[int, int, int]:
    if shape3[1] > 65535:  # channels index the grid's second dimension
        raise ShapeError(expected("at most 65535 channels on the GPU", "channels", shape3[1]))
    return shape3


def _device_stats(x3: Any, kern: Any) -> tuple[np.ndarray, int, int]:
    """Per channel [shift, S1, comp1, S2, bound on sum|d|] on the device, and the m of the bound."""
    from normspec.kernels._numba_cpu import STATS_COLUMNS
    from numba import cuda

    a_n, c_n, b_n = x3.shape
    n = a_n * b_n
    if c_n == 0:
        return np.empty((0, STATS_COLUMNS)), 0, kern.CHUNK
    shift = cuda.device_array(c_n, np.float64)
    kern.shifts_kernel[kern.blocks_for(c_n), kern.THREADS](x3, shift)
    slabs = _slabs(n, c_n, kern)
    parts = cuda.device_array((c_n, slabs, 4), np.float64)
    kern.partial_sums_kernel[(slabs, c_n), kern.THREADS](x3, shift, parts)
    out = cuda.device_array((c_n, STATS_COLUMNS), np.float64)
    kern.combine_kernel[kern.blocks_for(c_n), kern.THREADS](parts, shift, n, out)
    terms = n // kern.CHUNK + 6 * kern.THREADS * slabs + 130
    return out.copy_to_host(), 2 * terms, kern.CHUNK  # sequential blocks of CHUNK values


def batch_norm(
    x: Any,
    weight: Any = None,
    bias: Any = None,
    running_mean: Any = None,
    running_var: Any = None,
    training: bool = True,
    momentum: float | None = None,
    eps: float | None = None,
    convention: str = "torch",
    *,
    axis: int = 1,
) -> tuple[Any, np.ndarray | None, np.ndarray | None]:
    """Float32 BatchNorm on the GPU; returns ``(y, new_running_mean, new_running_var)``.

    Same contract, semantics and accuracy as :func:`normspec.kernels.batch_norm`: every element
    of ``y`` whose exact value is finite is the exact value correctly rounded, and so are the
    running statistics (tested under numba's CUDA simulator; not yet run on a GPU).  ``y`` is a
    device array when ``x`` is one (which must be C-contiguous), a numpy array otherwise; the
    running statistics are numpy arrays.
    ``weight``, ``bias`` and the running statistics are host arrays (C values each).

    >>> import numpy as np
    >>> from normspec.kernels import cuda as kc
    >>> ok, why = kc.available()
    >>> x = np.arange(24, dtype=np.float32).reshape(2, 3, 4)
    >>> y, _, _ = kc.batch_norm(x, training=True) if ok else (np.zeros(1), None, None)
    """
    global last_run
    from normspec.kernels import _numba_cpu as cpu
    from normspec.kernels import _numba_cuda as kern
    from numba import cuda

    stats = KernelStats()
    xd, on_device = _device_input(x, "x")
    shape = tuple(xd.shape)
    setup = _setup(shape, xd.dtype, axis, weight, bias, running_mean, running_var, training, momentum, eps, convention)
    _check_grid(setup.shape3)
    x3 = xd.reshape(setup.shape3)
    a_n, c_n, b_n = setup.shape3
    rm, rv = setup.rm, setup.rv
    if setup.identity:
        last_run = stats
        y_id = x3.copy_to_host().reshape(shape)
        return (cuda.to_device(y_id) if on_device else y_id), *(None if v is None else v.copy() for v in (rm, rv))
    y3 = cuda.device_array(setup.shape3, np.float32)
    plan = _Plan(np.empty((c_n, cpu.PLAN_COLUMNS)))
    _plan(x3, plan, setup, training, cpu, stats=lambda x3: _device_stats(x3, kern))
    flags_d = cuda.to_device(np.zeros((a_n, c_n), np.int32))
    if a_n * c_n * b_n:
        kern.normalize_kernel[kern.blocks_for(a_n * c_n * b_n, cap=8192), kern.THREADS](
            x3,
            cuda.to_device(np.ascontiguousarray(plan.mu)),
            cuda.to_device(np.ascontiguousarray(plan.s)),
            cuda.to_device(np.ascontiguousarray(plan.beta_eff)),
            cuda.to_device(np.ascontiguousarray(plan.gap_k)),
            cuda.to_device(np.ascontiguousarray(plan.big_g)),
            y3,
            flags_d,
        )
    flags = flags_d.copy_to_host().astype(np.int64)
    new_rm, new_rv = _finish(_DeviceData(x3, y3, kern), flags, plan, setup, training, stats, cpu)
    last_run = stats
    y = y3.reshape(shape)
    return (y if on_device else y.copy_to_host()), new_rm, new_rv


def _device_input(x: Any, name: str) -> tuple[Any, bool]:
    """A device array for ``x`` (copied there when it is a host array) and whether it was one."""
    from numba import cuda

    on_device = _is_device_array(x)
    if on_device:
        xd = x if type(x).__name__ == "FakeCUDAArray" else cuda.as_cuda_array(x)
        if not xd.is_c_contiguous():
            raise ShapeError(expected("a C-contiguous device array", f"{name} (device)", "non-contiguous"))
    else:
        xd = np.ascontiguousarray(np.asarray(x))
    if np.dtype(xd.dtype) != np.float32:
        raise DTypeError(expected("float32 (the CUDA kernels' dtype)", f"{name}.dtype", np.dtype(xd.dtype).name))
    return (xd if on_device else cuda.to_device(xd)), on_device


def batch_norm_backward(
    x: Any,
    dy: Any,
    weight: Any = None,
    running_mean: Any = None,
    running_var: Any = None,
    training: bool = True,
    eps: float | None = None,
    convention: str = "torch",
    *,
    axis: int = 1,
) -> tuple[Any, np.ndarray, np.ndarray]:
    """Gradients ``(dx, dweight, dbias)`` of :func:`batch_norm` on the GPU, float32.

    The formulas, the float64 arithmetic and the bound of
    :func:`normspec.kernels.batch_norm_backward`: each ``dx`` within 1 ULP of float32 at the
    magnitude of its terms, ``dweight``/``dbias`` within 1 ULP at ``sum|dy xhat|``/``sum|dy|``.
    ``dx`` is a device array when ``x`` is one, a numpy array otherwise.
    """
    from normspec.kernels import _numba_cuda as kern
    from numba import cuda

    xd, on_device = _device_input(x, "x")
    dyd, _ = _device_input(dy, "dy")
    if tuple(dyd.shape) != tuple(xd.shape):
        raise ShapeError(expected(f"dy of shape {tuple(xd.shape)}", "dy.shape", tuple(dyd.shape)))
    shape = tuple(xd.shape)
    x3 = xd.reshape(_check_grid(_shape3(shape, axis)))
    dy3 = dyd.reshape(x3.shape)
    a_n, c_n, b_n = x3.shape
    slabs = _slabs(a_n * b_n, c_n, kern)

    def sums(x3: Any, dy3: Any, mu: np.ndarray) -> np.ndarray:
        parts = cuda.device_array((c_n, slabs, 2), np.float64)
        kern.backward_partials_kernel[(slabs, c_n), kern.THREADS](x3, dy3, cuda.to_device(mu), parts)
        return parts.copy_to_host().sum(axis=1)

    def dx(x3: Any, dy3: Any, mu: np.ndarray, coef: np.ndarray, mean_dy: np.ndarray, proj: np.ndarray) -> Any:
        dx3 = cuda.device_array(x3.shape, np.float32)
        args = [cuda.to_device(np.ascontiguousarray(v, np.float64)) for v in (mu, coef, mean_dy, proj)]
        kern.backward_dx_kernel[kern.blocks_for(dx3.size, cap=8192), kern.THREADS](x3, dy3, *args, dx3)
        return dx3

    dx3, dweight, dbias = _backward(
        x3,
        dy3,
        weight,
        running_mean,
        running_var,
        training,
        eps,
        convention,
        lambda x3: _device_stats(x3, kern),
        sums,
        dx,
    )
    dxr = dx3.reshape(shape)
    return (dxr if on_device else dxr.copy_to_host()), dweight, dbias
