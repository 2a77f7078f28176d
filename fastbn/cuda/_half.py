"""float16 on the GPU, as API.md has it: computed in float32, returned as float16.

The public GPU entry points call :func:`half` first: float16 device arrays
are widened into new float32 device arrays by a cast kernel (never through
the host), the float32 kernels run, and the float16 results are cast back.
Statistics and parameter gradients stay float32.

float16 companions of a float32/float64 x (weight, bias, mean, rstd) are
widened the same way (:func:`fastbn.cuda._checks.vector`); float16 running
statistics are updated in place by :func:`running_update`, NumPy's float16
arithmetic replayed on the device (as the CPU backend does it).  The casts
take any strides (:mod:`fastbn.cuda._layout`).
"""

import math

import numpy as np
from numba import cuda, float64

from . import _layout, device, grid_1d

try:  # launches with a legal geometry (fastbn.cuda.Kernel) where available
    from . import kernel as _jit
except ImportError:  # pragma: no cover
    _jit = cuda.jit


def is_half(a) -> bool:
    return a is not None and np.dtype(device(a, "array").dtype) == np.float16


def up(a):
    """A float16 device array as a new float32 one; anything else unchanged."""
    if not is_half(a):
        return a
    d = device(a, "array")
    return _layout.copy(d, cuda.device_array(tuple(d.shape), np.float32))


def down_into(src, dst):
    """Cast ``src`` (float32) into the float16 device array ``dst`` (any strides);
    returns ``dst``."""
    _layout.copy(src, device(dst, "out"))
    return dst


def down(src):
    return down_into(src, cuda.device_array(tuple(src.shape), np.float16))


def check_out(out, x, name="out"):
    """A float16 ``out`` must match x (float16) exactly; checked before anything runs."""
    if out is None:
        return None
    d = device(out, name)
    if tuple(d.shape) != tuple(device(x, "x").shape) or np.dtype(d.dtype) != np.float16:
        raise ValueError(f"{name} must have x's shape {tuple(device(x, 'x').shape)} and dtype "
                         f"float16; got shape {tuple(d.shape)} and dtype {d.dtype}")
    return d


def require_half(a, name):
    """x-shaped companions of a float16 x (dy, y, residual) must be float16 too."""
    if a is not None and not is_half(a):
        raise TypeError(f"{name} must have x's dtype float16; got {device(a, name).dtype}")
    return a


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
