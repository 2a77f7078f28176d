"""float16 running statistics on the GPU, updated in place as the CPU updates them.

Everything else about float16 is the shared path of :mod:`fastbn.functional`:
float16 x (and its x-shaped companions) is widened into a float32 device copy
by :func:`fastbn.cuda._arrays.contiguous` (a cast kernel, never the host), the
float32 kernels run, and results are cast back into float16; float16
parameters and statistics next to a float32/float64 x are widened the same
way.  Only running statistics are written in place, so a float16 one is
updated here: NumPy's float16 arithmetic replayed on the device.
"""

import math

import numpy as np
from numba import cuda, float64

from . import grid_1d

try:  # launches with a legal geometry (fastbn.cuda.Kernel) where available
    from . import kernel as _jit
except ImportError:  # pragma: no cover
    _jit = cuda.jit


def is_half(a) -> bool:
    return a is not None and np.dtype(a.dtype) == np.float16


@_jit
def _running_update(rm, rv, keep_m, keep_v, mean, m2, m, momentum, skipped):
    """NumPy's ``(1 - momentum) * running + momentum * batch`` on a float16 array:
    the product in the array's dtype (exact in float64, rounded by the store),
    the sum in float64, rounded once more by the store (as NumPy's assignment)."""
    for c in range(cuda.grid(1), mean.shape[0], cuda.gridsize(1)):
        if not (math.isfinite(mean[c]) and math.isfinite(m2[c])):
            cuda.atomic.add(skipped, 0, 1)
        else:
            rm[c] = keep_m * float64(rm[c])
            rm[c] = float64(rm[c]) + momentum * mean[c]
            rv[c] = keep_v * float64(rv[c])
            rv[c] = float64(rv[c]) + momentum * (m2[c] / (m - 1))


def running_update(d_rm, d_rv, d_mean, d_m2, m, momentum, d_skipped):
    """Running statistics with a float16 one among them, updated in place (any strides)
    as :func:`fastbn.functional._update_running` does on the CPU: ``1 - momentum``
    rounded to each array's dtype (NumPy's weak Python scalar), the product rounded
    to that dtype, the batch term added in float64.  On the simulator the result is
    bit-for-bit the CPU's; on hardware the float64 sum may be fused (one rounding
    fewer), which is within float16 rounding."""
    c = d_mean.shape[0]
    if c == 0:
        return
    keep_m = float(np.dtype(d_rm.dtype).type(1.0 - momentum))
    keep_v = float(np.dtype(d_rv.dtype).type(1.0 - momentum))
    _running_update[grid_1d(c)](d_rm, d_rv, keep_m, keep_v, d_mean, d_m2, m, float(momentum),
                                d_skipped)
