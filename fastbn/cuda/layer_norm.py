"""Layer norm and RMS norm on the GPU: the numba-cuda twin of :mod:`fastbn.cpu.layer_norm`.

The same functions with the same signatures as the CPU module, on inputs
validated and prepared by :mod:`fastbn.functional` (see
:mod:`fastbn.cuda.batch_norm`).  x is seen as ``(1, R, D)`` rows.
Statistics: one block per chunk of a row (row kernels), merged per row.
Backward: per-row weighted sums, then dx elementwise, then
``dweight``/``dbias`` as column sums over the rows (tiles of rows by a block
of columns, partials added in row-block order).

See Also
--------
fastbn.cpu.layer_norm, fastbn.reference.layer_norm
"""

import math

from numba import cuda

from .. import config
from . import _kernels as K
from . import _stats, grid_1d, threads


def forward(x3, weight, bias, eps, center, y3):
    """Layer norm (``center``) or RMS norm of each row into ``y3``; returns float64
    ``(mean, rstd)`` of shape (R,)."""
    mean, _, rstd, coef = _stats.rows_stats(x3, eps, center)
    _stats.rows_apply(x3, coef, weight, bias, 1, 1, y3)
    return mean, rstd


def backward(dy3, x3, mean, rstd, weight, center, dx3):
    """dx into ``dx3``; returns float64 ``(dweight, dbias)`` of shape (D,)."""
    _, r, d = x3.shape
    dtype = x3.dtype
    sa, ss = _stats.rows_grad_sums(x3, dy3, mean, weight, 1, 1)
    coef = cuda.device_array((5, r), dtype)
    K.row_grad_coef[grid_1d(r)](mean, rstd, sa, ss, float(d), center, coef)
    K.rows_grad_apply[_stats.grid_stride(x3.size)](x3, dy3, coef, weight, 1, 1, True, dx3, x3,
                                                   False, x3, False)
    rows = config.CUDA_TILE_ROWS
    nqb = math.ceil(r / rows)
    tpb = threads()
    psw, psb = cuda.device_array((1, nqb, d)), cuda.device_array((1, nqb, d))
    K.row_param_sums[(math.ceil(d / tpb), nqb), tpb](x3, dy3, coef, rows, psw, psb)
    dweight, dbias = cuda.device_array(d), cuda.device_array(d)
    K.fold_sums[grid_1d(d)](psw, psb, dweight, dbias)
    return dweight, dbias


__all__ = ["forward", "backward"]
