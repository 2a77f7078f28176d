"""Mergeable statistics on the GPU: the device twin of :mod:`fastbn.cpu.moments`.

The compute behind :func:`fastbn.merge_moments` and :func:`fastbn.moments_to_stats`
on device arrays (``moments`` itself is :func:`fastbn.cuda.batch_norm.moments`).
The arrays arrive validated, flat and contiguous (float16 widened), and both
counts positive (:mod:`fastbn.functional` handles empty parts); results are
new float64 device arrays.  The formulas are the CPU's, in the CPU's order of
operations (on hardware the compiler may fuse a multiply-add: within one
float64 rounding).  Nothing goes through the host but the counts, which are
Python ints already.

See Also
--------
fastbn.cpu.moments
"""

import math

import numpy as np
from numba import cuda
from numba import float64 as float64_

from . import _kernels as K
from . import grid_1d

try:  # launches with a legal geometry (fastbn.cuda.Kernel) where available
    from . import kernel as _jit
except ImportError:  # pragma: no cover
    _jit = cuda.jit


@_jit
def _merge(mean_a, m2_a, mean_b, m2_b, fb, fab, mean, m2):
    """Chan's merge, the CPU's expression: ``mean_a + delta * (nb / n)``,
    ``(m2_a + m2_b) + (delta * delta) * (na * nb / n)``."""
    for i in range(cuda.grid(1), mean.shape[0], cuda.gridsize(1)):
        mean[i], m2[i] = K.chan_step(float64_(mean_a[i]), float64_(m2_a[i]),
                                     float64_(mean_b[i]), float64_(m2_b[i]), fb, fab)


@_jit
def _to_stats(mean_in, m2, count, eps, has_unbiased, mean, rstd, unbiased):
    for i in range(cuda.grid(1), mean.shape[0], cuda.gridsize(1)):
        v = float64_(m2[i])
        mean[i] = mean_in[i]
        rstd[i] = 1.0 / math.sqrt(v / count + eps)
        unbiased[i] = v / (count - 1.0) if has_unbiased else math.nan


def merge(na, mean_a, m2_a, nb, mean_b, m2_b):
    """Chan's merge of two parts with positive counts: new float64 ``(mean, m2)``."""
    k = mean_a.shape[0]
    n = na + nb
    mean = cuda.device_array(k, np.float64)
    m2 = cuda.device_array(k, np.float64)
    _merge[grid_1d(k)](mean_a, m2_a, mean_b, m2_b, nb / n, na * nb / n, mean, m2)
    return mean, m2


def to_stats(count, mean, m2, eps):
    """New float64 ``(mean, rstd, unbiased_var)`` device arrays (unbiased NaN for a
    count of 1)."""
    k = mean.shape[0]
    out = [cuda.device_array(k, np.float64) for _ in range(3)]
    _to_stats[grid_1d(k)](mean, m2, float(count), eps, count > 1, *out)
    return tuple(out)


__all__ = ["merge", "to_stats"]
