"""Group norm and instance norm on the GPU: the numba-cuda twin of :mod:`fastbn.cpu.group_norm`.

The same functions with the same signatures as the CPU module, on inputs
validated and prepared by :mod:`fastbn.functional` (see
:mod:`fastbn.cuda.batch_norm`).  Channels first, ``x3`` of shape ``(N, C,
S)``: statistics with the row kernels on the ``(1, N*G, C/G*S)`` view (a
group is one contiguous run), gradient sums per (sample, channel) on ``(1,
N*C, S)``.  Channels last, ``(N, S, C)``: the column kernels per sample, sets
of ``C/G`` adjacent columns.  Backward: per-(sample, channel) sums, then
per-group coefficients, then dx.

See Also
--------
fastbn.cpu.group_norm, fastbn.reference.group_norm
"""

from numba import cuda

from . import _kernels as K
from . import _stats, grid_1d


def _dims(x3, channels_last):
    n = x3.shape[0]
    s, c = (x3.shape[1], x3.shape[2]) if channels_last else (x3.shape[2], x3.shape[1])
    return n, c, s


def forward(x3, G, weight, bias, eps, channels_last, y3):
    """Normalize each group into ``y3``; returns float64 ``(mean, rstd)`` of shape (N*G,)."""
    n, c, s = _dims(x3, channels_last)
    cg = c // G
    if channels_last:
        mean, _, rstd, coef = _stats.cols_stats(x3, cg, eps)
        _stats.cols_apply(x3, coef, cg, weight, bias, y3)
    else:
        xg = x3.reshape(1, n * G, cg * s)
        mean, _, rstd, coef = _stats.rows_stats(xg, eps, True)
        _stats.rows_apply(xg, coef, weight, bias, G, s, y3.reshape(1, n * G, cg * s))
    return mean, rstd


def backward(dy3, x3, G, mean, rstd, weight, channels_last, dx3):
    """dx into ``dx3``; returns ``(dweight, dbias)`` of shape (C,)."""
    n, c, s = _dims(x3, channels_last)
    dtype = x3.dtype
    cg = c // G
    cmean = cuda.device_array(n * c)  # the group mean of every (sample, channel)
    K.expand_groups[grid_1d(n * c)](mean, cg, cmean)
    if channels_last:
        xv, dyv, dxv = x3, dy3, dx3
        sdy, sdxc = _stats.cols_grad_sums(xv, dyv, cmean.reshape(n, c))
    else:
        xv, dyv, dxv = (d.reshape(1, n * c, s) for d in (x3, dy3, dx3))
        one = _stats.full(1, 1.0, dtype)
        sdy, sdxc = _stats.rows_grad_sums(xv, dyv, cmean, one, 1, s)
    coef = cuda.device_array((5, n * c), dtype)
    K.group_grad_coef[grid_1d(n * G)](mean, rstd, weight, sdy, sdxc, G, float(cg * s), True,
                                      coef)
    dweight, dbias = cuda.device_array(c, dtype), cuda.device_array(c, dtype)
    K.param_grads[grid_1d(c)](sdy, sdxc, rstd, G, dweight, dbias)
    if channels_last:
        K.cols_grad_apply[_stats.grid_stride(x3.size)](xv, dyv, coef, True, dxv, xv, False, xv,
                                                       False)
    else:
        K.rows_grad_apply[_stats.grid_stride(x3.size)](xv, dyv, coef, one, 1, s, True, dxv, xv,
                                                       False, xv, False)
    return dweight, dbias


__all__ = ["forward", "backward"]
