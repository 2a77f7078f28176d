"""Batch normalization on the GPU: the numba-cuda twin of :mod:`fastbn.cpu.batch_norm`.

The same functions with the same signatures as the CPU module.  Every input
arrives validated by :mod:`fastbn.functional` and prepared by
:mod:`fastbn.cuda._arrays`: x as a C-contiguous ``(A, C, B)`` device view in
float32/float64 (float16 and strided input were copied on the device), the
parameters contiguous; these functions only launch kernels.

Channels-first data runs the row kernels on ``(A, C, B)`` (blocks stride
along each channel's contiguous runs); channels-last and 2-D data (``B ==
1``) run the column kernels on ``(1, A, C)``, a warp reading consecutive
channels of a row and each thread walking its channel down the rows.
Backward: per-channel sums in one phase, elementwise dx in the next.

See Also
--------
fastbn.cpu.batch_norm, fastbn.reference.batch_norm_train
"""

import numpy as np
from numba import cuda

from . import _half, _stats, grid_1d
from . import _kernels as K


def _cols(d, a, c):
    return None if d is None else d.reshape(1, a, c)


def moments(x3):
    """Per-channel ``(mean, m2)``, float64 device arrays, of an ``(A, C, B)`` view."""
    a, c, b = x3.shape
    if b == 1:
        mean, m2, _, _ = _stats.cols_stats(x3.reshape(1, a, c), 1, 1.0)
    else:
        mean, m2, _, _ = _stats.rows_stats(x3, 1.0, True)
    return mean, m2


def _apply(x3, coef, weight, bias, y3, res3, relu):
    a, c, b = x3.shape
    if x3.size == 0:
        return
    if b == 1:
        _stats.cols_apply(x3.reshape(1, a, c), coef, 1, weight, bias, y3.reshape(1, a, c),
                          _cols(res3, a, c), relu)
    else:
        _stats.rows_apply(x3, coef, weight, bias, c, b, y3, res3, relu)


def forward_train(x3, weight, bias, eps, y3, res3=None, relu=False):
    """Training forward into ``y3`` (epilogue: ``+ res3``, ReLU); returns float64
    ``(mean, m2, rstd)`` device arrays."""
    a, c, b = x3.shape
    if b == 1:
        mean, m2, rstd, coef = _stats.cols_stats(x3.reshape(1, a, c), 1, eps)
    else:
        mean, m2, rstd, coef = _stats.rows_stats(x3, eps, True)
    _apply(x3, coef, weight, bias, y3, res3, relu)
    return mean, m2, rstd


def update_running(running_mean, running_var, mean, m2, m, momentum):
    """The running statistics (any strides, float16 included) updated in place on the
    device; returns how many channels were skipped (statistics not finite).  That
    count is the one value that comes back to the host."""
    c = mean.shape[0]
    if c == 0:
        return 0
    skipped = cuda.to_device(np.zeros(1, np.int32))
    if _half.is_half(running_mean) or _half.is_half(running_var):
        _half.running_update(running_mean, running_var, mean, m2, m, momentum, skipped)
    else:
        K.running_update[grid_1d(c)](running_mean, running_var, mean, m2, m, momentum, skipped)
    return int(skipped.copy_to_host()[0])


def inference(x3, running_mean, running_var, eps, weight, bias, y3, mean, rstd, res3=None,
              relu=False):
    """Inference forward into ``y3``; ``mean``/``rstd`` (any float dtype) are filled."""
    c = x3.shape[1]
    coef = cuda.device_array((3, c), x3.dtype)
    if c:
        K.running_coef[grid_1d(c)](running_mean, running_var, eps, mean, rstd, coef)
    _apply(x3, coef, weight, bias, y3, res3, relu)


def backward(dy3, x3, mean, rstd, weight, training, dx3, y3=None, relu=False, dres3=None):
    """dx into ``dx3`` (and the residual's gradient into ``dres3``); returns
    ``(dweight, dbias)`` device arrays.  With ``relu``, ``dy`` is masked by
    ``y3 > 0`` on the fly.  The grad-apply kernels write ``dres3[i]`` before they
    read ``x3[i]``: the caller gives a ``dres3`` that overlaps no input."""
    a, _, b = x3.shape
    sdy, sdxc = grad_sums(dy3, x3, mean, y3, relu)
    return backward_apply(dy3, x3, mean, rstd, weight, sdy, sdxc, a * b, training, dx3, y3,
                          relu, dres3)


def grad_sums(dy3, x3, mean, y3=None, relu=False):
    """Per-channel float64 ``(sum(dy), sum(dy * (x - mean)))`` device arrays (``dy``
    masked by ``y3 > 0`` with ``relu``): the backward pass's first phase."""
    a, c, b = x3.shape
    y3 = x3 if y3 is None else y3
    if b == 1:
        return _stats.cols_grad_sums(x3.reshape(1, a, c), dy3.reshape(1, a, c),
                                     mean.reshape(1, c), y3.reshape(1, a, c), relu)
    return _stats.rows_grad_sums(x3, dy3, mean, _stats.full(1, 1.0, x3.dtype), 1, b, y3, relu)


def backward_apply(dy3, x3, mean, rstd, weight, sdy, sdxc, m, training, dx3, y3=None,
                   relu=False, dres3=None):
    """The backward pass's second phase: dx into ``dx3`` from per-channel sums over
    ``m`` values; returns ``(dweight, dbias)`` device arrays made from those sums."""
    a, c, b = x3.shape
    dtype = x3.dtype
    y3 = x3 if y3 is None else y3
    has_dres = dres3 is not None
    dres3 = dres3 if has_dres else x3
    coef = cuda.device_array((5, c), dtype)
    K.group_grad_coef[grid_1d(c)](mean, rstd, weight, sdy, sdxc, c, float(m), bool(training),
                                  coef)
    dweight, dbias = cuda.device_array(c, dtype), cuda.device_array(c, dtype)
    K.param_grads[grid_1d(c)](sdy, sdxc, rstd, c, dweight, dbias)
    if b == 1:
        shape = (1, a, c)
        K.cols_grad_apply[_stats.grid_stride(x3.size)](
            x3.reshape(shape), dy3.reshape(shape), coef, bool(training), dx3.reshape(shape),
            y3.reshape(shape), relu, dres3.reshape(shape), has_dres)
    else:
        K.rows_grad_apply[_stats.grid_stride(x3.size)](
            x3, dy3, coef, _stats.full(1, 1.0, dtype), 1, b, bool(training), dx3, y3, relu,
            dres3, has_dres)
    return dweight, dbias


__all__ = ["moments", "forward_train", "update_running", "inference", "backward", "grad_sums",
           "backward_apply"]
