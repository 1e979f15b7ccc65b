"""Fast float32 BatchNorm, LayerNorm and RMSNorm kernels (CPU with numba; BatchNorm on CUDA with
numba.cuda), correctly rounded: every output is the exact value rounded once, as the oracle's.

The public contract, shared with the audit's protocol for user implementations:
``batch_norm(x, weight, bias, running_mean, running_var, training, momentum, eps,
convention="torch") -> (y, new_running_mean, new_running_var)`` and
``batch_norm_backward(...) -> (dx, dweight, dbias)``.  Kernels import nothing
from ``normspec.spec``, ``normspec.oracle``, SymPy or mpmath.

numba is the optional ``kernels`` extra: ``pip install 'normspec[kernels]'``.
"""

import importlib.util

from normspec.errors import MissingExtraError

if importlib.util.find_spec("numba") is None:
    raise MissingExtraError("normspec.kernels needs numba: pip install 'normspec[kernels]'")

from normspec.kernels._buffers import output_cache_info, set_output_cache
from normspec.kernels.batchnorm import KernelStats, batch_norm, batch_norm_backward
from normspec.kernels.layernorm import layer_norm, rms_norm

__all__ = [
    "batch_norm",
    "batch_norm_backward",
    "KernelStats",
    "layer_norm",
    "rms_norm",
    "set_output_cache",
    "output_cache_info",
]
