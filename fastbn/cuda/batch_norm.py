"""Batch normalization on the GPU: the numba-cuda twin of :mod:`fastbn.cpu.batch_norm`.

Channels-first data runs the row kernels on the ``(A, C, B)`` view (blocks
stride along each channel's contiguous runs); channels-last and 2-D data
(``B == 1``) run the column kernels on ``(1, A, C)``, a warp reading
consecutive channels of a row and each thread walking its channel down the
rows.  Backward: per-channel sums in one phase, elementwise dx in the next.

Strided device input (a torch channels-last CUDA tensor, a sliced CuPy or
numba array) is accepted: x, dy, y, residual and the parameters are first
copied into C-contiguous arrays on the device (:mod:`fastbn.cuda._layout`),
which costs one extra read and one extra write of each strided array; a
strided ``out=`` (or ``dresidual=``) is computed into a contiguous temporary
and scattered into it on the device, at the same cost.  Contiguous arrays
cost nothing extra.  float16 parameters or statistics next to float32 x are
widened on the device, as the CPU accepts them.  Empty batches give what the
CPU gives.
float16 running statistics are updated in place as the CPU updates them
(:func:`fastbn.cuda._half.running_update`).

See Also
--------
fastbn.cpu.batch_norm, fastbn.reference.batch_norm_train
"""

import math

import numpy as np
from numba import cuda

from .. import _checks as _host_checks
from . import _checks as C
from . import _half, _require_gpu, _stats, grid_1d
from . import _kernels as K


def _view(d_x, ax):
    shape = tuple(d_x.shape)
    a, c, b = math.prod(shape[:ax]), shape[ax], math.prod(shape[ax + 1:])
    return d_x.reshape(a, c, b), (a, c, b)


def batch_norm(x, weight, bias, running_mean, running_var, *, training, momentum, eps, axis,
               out, activation=None, residual=None, _caller=None):
    """``_caller``: the caller's own arrays when the float16 path calls in with
    float32 copies, so the running statistics' overlap check sees the originals.

    ``out`` identical to x is computed in place (statistics first, then the
    apply kernel reads ``x[i]`` before it writes ``y[i]``); any other overlap
    of ``out`` with x, residual, weight or bias goes through a temporary copied
    into ``out`` at the end.  Running statistics overlapping another argument
    are refused (ValueError) before anything is written.
    """
    _require_gpu()
    caller = _caller or (x, weight, bias, running_mean, running_var, residual, out)
    if _half.is_half(x):
        d_out = _half.check_out(out, x)
        # y comes back in a new float32 array: out is written last, after every read.
        # float16 running statistics go through as they are (updated in place by
        # _half.running_update, as the CPU does it)
        y, mean, rstd = batch_norm(
            _half.up(x), _half.up(weight), _half.up(bias), running_mean, running_var,
            training=training, momentum=momentum, eps=eps, axis=axis, out=None,
            activation=activation, residual=_half.up(_half.require_half(residual, "residual")),
            _caller=caller)
        y = _half.down(y) if d_out is None else _half.down_into(y, d_out)
        return y, mean, rstd
    d_x = C.array(x, "x")
    ax = C.channel_axis(axis, len(d_x.shape), tuple(d_x.shape))
    d_x3, (a, c, b) = _view(d_x, ax)
    d_w = C.vector(weight, "weight", (c,), d_x)
    d_b = C.vector(bias, "bias", (c,), d_x)
    d_rm = C.vector(running_mean, "running_mean", (c,), d_x, writeable=True)
    d_rv = C.vector(running_var, "running_var", (c,), d_x, writeable=True)
    if (d_rm is None) != (d_rv is None):
        raise ValueError("pass both running_mean and running_var or neither")
    if not training and d_rm is None:
        raise ValueError("running_mean and running_var are required when training=False")
    eps = C.positive_eps(eps)
    momentum = C.unit_momentum(momentum)
    if training and (a * b if c else 0) <= 1:  # as the CPU: no channel, no values
        raise ValueError("expected more than 1 value per channel when training; got x of "
                         f"shape {tuple(d_x.shape)}")
    d_out = C.output(out, d_x)
    relu = _host_checks.activation(activation)
    d_res = None if residual is None else C.same_as(residual, d_x, "residual")
    C.refuse_running_overlap(training, *caller)
    dtype = d_x.dtype
    d_y, copy_back = C.target(d_out, tuple(d_x.shape), dtype, d_x, d_res, d_w, d_b)
    d_w = d_w if d_w is not None else _stats.full(c, 1.0, dtype)
    d_b = d_b if d_b is not None else _stats.full(c, 0.0, dtype)
    d_y3 = d_y.reshape(a, c, b)
    if training:
        if b == 1:
            d_xc = d_x3.reshape(1, a, c)
            d_mean, d_m2, d_rstd, d_coef = _stats.cols_stats(d_xc, 1, eps)
        else:
            d_mean, d_m2, d_rstd, d_coef = _stats.rows_stats(d_x3, eps, True)
        if d_rm is not None:
            # One int comes back to the host: the count of channels whose batch
            # statistics were not finite (skipped, with a warning, as on the CPU).
            d_skipped = cuda.to_device(np.zeros(1, np.int32))
            if _half.is_half(d_rm) or _half.is_half(d_rv):
                _half.running_update(d_rm, d_rv, d_mean, d_m2, a * b, momentum, d_skipped)
            else:
                K.running_update[grid_1d(c)](d_rm, d_rv, d_mean, d_m2, a * b, momentum,
                                             d_skipped)
            skipped = int(d_skipped.copy_to_host()[0])
            if skipped:
                _host_checks.warn_skipped_update(skipped, c)
    else:
        d_mean, d_rstd = cuda.device_array(c), cuda.device_array(c)
        d_coef = cuda.device_array((3, c), dtype)
        if c:  # float16 running statistics are read as the CPU does: as float32
            K.running_coef[grid_1d(c)](_half.up(d_rm), _half.up(d_rv), eps, d_mean, d_rstd,
                                       d_coef)
    if d_x.size == 0:  # an empty batch (eval): nothing to normalize, as on the CPU
        pass
    elif b == 1:
        _stats.cols_apply(d_x3.reshape(1, a, c), d_coef, 1, d_w, d_b, d_y3.reshape(1, a, c),
                          None if d_res is None else d_res.reshape(1, a, c), relu)
    else:
        _stats.rows_apply(d_x3, d_coef, d_w, d_b, c, b, d_y3,
                          None if d_res is None else d_res.reshape(a, c, b), relu)
    return C.finish(d_y, d_out, copy_back), _cast(d_mean, dtype), _cast(d_rstd, dtype)


def _zeros(n, dtype):
    return _stats.full(n, 0.0, dtype) if n else cuda.device_array(0, dtype)


def _cast(d, dtype):
    if d.dtype == dtype:
        return d
    out = cuda.device_array(d.shape, dtype)
    if d.shape[0]:
        K.cast[grid_1d(d.shape[0])](d, out)
    return out


def batch_norm_backward(dy, x, mean, rstd, weight, *, training, axis, activation=None, y=None,
                        dresidual=None):
    """The grad-apply kernels write ``dresidual[i]`` before they read ``x[i]``: a
    ``dresidual`` overlapping dy, x, y, mean, rstd or weight (identical included)
    is computed into a temporary and copied into it at the end."""
    _require_gpu()
    if _half.is_half(x):
        # dresidual is computed into a new float32 array and cast into the caller's
        # one after every input has been read: exact whatever it overlaps
        d_dres = _half.check_out(dresidual, x, "dresidual")
        dres32 = None if d_dres is None else cuda.device_array(tuple(d_dres.shape), "float32")
        _half.require_half(dy, "dy")
        _half.require_half(y, "y")
        dx, dw, db = batch_norm_backward(
            _half.up(dy), _half.up(x), _half.up(mean), _half.up(rstd), _half.up(weight),
            training=training, axis=axis, activation=activation, y=_half.up(y),
            dresidual=dres32)
        if d_dres is not None:
            _half.down_into(dres32, d_dres)
        return _half.down(dx), dw, db
    d_x = C.array(x, "x")
    d_dy = C.same_as(dy, d_x, "dy")
    ax = C.channel_axis(axis, len(d_x.shape), tuple(d_x.shape))
    d_x3, (a, c, b) = _view(d_x, ax)
    d_mean = C.vector(mean, "mean", (c,), d_x)
    d_rstd = C.vector(rstd, "rstd", (c,), d_x)
    d_w = C.vector(weight, "weight", (c,), d_x)
    dtype = d_x.dtype
    relu = _host_checks.activation(activation)
    if relu and y is None:
        raise ValueError("activation='relu' needs y, the forward's saved output, for the mask")
    d_yy = d_x if y is None else C.same_as(y, d_x, "y")
    d_dres = C.output(dresidual, d_x, "dresidual")
    has_dres = d_dres is not None
    if d_x.size == 0:  # an empty batch: zero gradients, as on the CPU
        return cuda.device_array(tuple(d_x.shape), dtype), _zeros(c, dtype), _zeros(c, dtype)
    if has_dres:
        d_dr, copy_back = C.target(d_dres, tuple(d_x.shape), dtype, None, d_dy, d_x, d_yy,
                                   d_mean, d_rstd, d_w)
    d_w = d_w if d_w is not None else _stats.full(c, 1.0, dtype)
    d_dx = cuda.device_array(tuple(d_x.shape), dtype)
    one = _stats.full(1, 1.0, dtype)
    if b == 1:
        d_xc, d_dyc = d_x3.reshape(1, a, c), d_dy.reshape(1, a, c)
        d_sdy, d_sdxc = _stats.cols_grad_sums(d_xc, d_dyc, d_mean.reshape(1, c),
                                              d_yy.reshape(1, a, c), relu)
    else:
        d_sdy, d_sdxc = _stats.rows_grad_sums(d_x3, d_dy.reshape(a, c, b), d_mean, one, 1, b,
                                              d_yy.reshape(a, c, b), relu)
    d_coef = cuda.device_array((5, c), dtype)
    K.group_grad_coef[grid_1d(c)](d_mean, d_rstd, d_w, d_sdy, d_sdxc, c, float(a * b),
                                  bool(training), d_coef)
    d_dw, d_db = cuda.device_array(c, dtype), cuda.device_array(c, dtype)
    K.param_grads[grid_1d(c)](d_sdy, d_sdxc, d_rstd, c, d_dw, d_db)
    d_dr = d_dr if has_dres else d_x
    if b == 1:
        shape = (1, a, c)
        K.cols_grad_apply[_stats.grid_stride(d_x.size)](
            d_x3.reshape(shape), d_dy.reshape(shape), d_coef, bool(training),
            d_dx.reshape(shape), d_yy.reshape(shape), relu, d_dr.reshape(shape), has_dres)
    else:
        shape = (a, c, b)
        K.rows_grad_apply[_stats.grid_stride(d_x.size)](
            d_x3, d_dy.reshape(shape), d_coef, one, 1, b, bool(training), d_dx.reshape(shape),
            d_yy.reshape(shape), relu, d_dr.reshape(shape), has_dres)
    if has_dres:
        C.finish(d_dr, d_dres, copy_back)
    return d_dx, d_dw, d_db


__all__ = ["batch_norm", "batch_norm_backward"]
