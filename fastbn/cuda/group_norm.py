"""Group norm and instance norm on the GPU: the numba-cuda twin of :mod:`fastbn.cpu.group_norm`.

Channels first, ``(N, C, S)``: statistics with the row kernels on the
``(1, N*G, C/G*S)`` view (a group is one contiguous run), gradient sums per
(sample, channel) on ``(1, N*C, S)``.  Channels last, ``(N, S, C)``: the
column kernels per sample, sets of ``C/G`` adjacent columns.  Backward:
per-(sample, channel) sums, then per-group coefficients, then dx.

Strided input, float16 parameters and empty batches are handled as
described in :mod:`fastbn.cuda.batch_norm` (a strided array costs one extra
read and write on the device).

See Also
--------
fastbn.cpu.group_norm, fastbn.reference.group_norm
"""

import math

from numba import cuda

from . import _checks as C
from . import _half, _require_gpu, _stats, grid_1d
from . import _kernels as K
from .batch_norm import _cast, _zeros


def _view(d_x, num_groups, axis, check=True):
    """``check``: refuse groups of one value (the forward does, as the CPU; the
    backward does not check it on the CPU either)."""
    shape = tuple(d_x.shape)
    ax = C.group_axis(axis, shape)
    n, c = shape[0], shape[ax]
    g = C.groups(num_groups, c, shape)
    # the values per (sample, channel), from the shape alone when the batch is empty
    s = math.prod(shape) // (n * c) if n * c else math.prod(
        d for i, d in enumerate(shape) if i not in (0, ax))
    last = ax == len(shape) - 1
    if check and c // g * s <= 1:
        raise ValueError(f"expected more than 1 value per group; got x of shape {shape} with "
                         f"{g} groups of {c // g} channels")
    return n, c, s, g, last


def forward(x, num_groups, weight, bias, *, eps, axis, out):
    _require_gpu()
    if _half.is_half(x):
        d_out = _half.check_out(out, x)
        y, mean, rstd = forward(_half.up(x), num_groups, _half.up(weight), _half.up(bias),
                                eps=eps, axis=axis, out=None)
        return (_half.down(y) if d_out is None else _half.down_into(y, d_out)), mean, rstd
    d_x = C.array(x, "x")
    n, c, s, g, last = _view(d_x, num_groups, axis)
    d_w = C.vector(weight, "weight", (c,), d_x)
    d_b = C.vector(bias, "bias", (c,), d_x)
    eps = C.positive_eps(eps)
    d_out = C.output(out, d_x)
    dtype = d_x.dtype
    if d_x.size == 0:  # an empty batch: empty results, as on the CPU
        y = d_out if d_out is not None else cuda.device_array(tuple(d_x.shape), dtype)
        return y, cuda.device_array((n, g), dtype), cuda.device_array((n, g), dtype)
    # out=x runs in place (statistics first, then y[i] written after x[i] is read);
    # any other overlap with x, weight or bias goes through a temporary
    d_y, copy_back = C.target(d_out, tuple(d_x.shape), dtype, d_x, d_w, d_b)
    d_w = d_w if d_w is not None else _stats.full(c, 1.0, dtype)
    d_b = d_b if d_b is not None else _stats.full(c, 0.0, dtype)
    cg = c // g
    if last:
        d_x3 = d_x.reshape(n, s, c)
        d_mean, _, d_rstd, d_coef = _stats.cols_stats(d_x3, cg, eps)
        _stats.cols_apply(d_x3, d_coef, cg, d_w, d_b, d_y.reshape(n, s, c))
    else:
        d_xg = d_x.reshape(1, n * g, cg * s)
        d_mean, _, d_rstd, d_coef = _stats.rows_stats(d_xg, eps, True)
        _stats.rows_apply(d_xg, d_coef, d_w, d_b, g, s, d_y.reshape(1, n * g, cg * s))
    return (C.finish(d_y, d_out, copy_back), _cast(d_mean, dtype).reshape(n, g),
            _cast(d_rstd, dtype).reshape(n, g))


def backward(dy, x, num_groups, mean, rstd, weight, *, axis):
    _require_gpu()
    if _half.is_half(x):
        dy = _half.require_half(dy, "dy")
        dx, dw, db = backward(_half.up(dy), _half.up(x), num_groups, _half.up(mean),
                              _half.up(rstd), _half.up(weight), axis=axis)
        return _half.down(dx), dw, db
    d_x = C.array(x, "x")
    d_dy = C.same_as(dy, d_x, "dy")
    n, c, s, g, last = _view(d_x, num_groups, axis, check=False)
    d_mean = C.vector(mean, "mean", (n, g), d_x).reshape(n * g)
    d_rstd = C.vector(rstd, "rstd", (n, g), d_x).reshape(n * g)
    d_w = C.vector(weight, "weight", (c,), d_x)
    dtype = d_x.dtype
    if d_x.size == 0:  # an empty batch: zero gradients, as on the CPU
        return cuda.device_array(tuple(d_x.shape), dtype), _zeros(c, dtype), _zeros(c, dtype)
    d_w = d_w if d_w is not None else _stats.full(c, 1.0, dtype)
    cg = c // g
    # the group mean of every (sample, channel)
    d_cmean = cuda.device_array(n * c)
    K.expand_groups[grid_1d(n * c)](d_mean, cg, d_cmean)
    d_dx = cuda.device_array(tuple(d_x.shape), dtype)
    if last:
        d_x3, d_dy3 = d_x.reshape(n, s, c), d_dy.reshape(n, s, c)
        d_sdy, d_sdxc = _stats.cols_grad_sums(d_x3, d_dy3, d_cmean.reshape(n, c))
    else:
        d_x3, d_dy3 = d_x.reshape(1, n * c, s), d_dy.reshape(1, n * c, s)
        one = _stats.full(1, 1.0, dtype)
        d_sdy, d_sdxc = _stats.rows_grad_sums(d_x3, d_dy3, d_cmean, one, 1, s)
    d_coef = cuda.device_array((5, n * c), dtype)
    K.group_grad_coef[grid_1d(n * g)](d_mean, d_rstd, d_w, d_sdy, d_sdxc, g, float(cg * s),
                                      True, d_coef)
    d_dw, d_db = cuda.device_array(c, dtype), cuda.device_array(c, dtype)
    K.param_grads[grid_1d(c)](d_sdy, d_sdxc, d_rstd, g, d_dw, d_db)
    if last:
        K.cols_grad_apply[_stats.grid_stride(d_x.size)](d_x3, d_dy3, d_coef, True,
                                                        d_dx.reshape(n, s, c), d_x3, False, d_x3,
                                                        False)
    else:
        K.rows_grad_apply[_stats.grid_stride(d_x.size)](d_x3, d_dy3, d_coef, one, 1, s, True,
                                                        d_dx.reshape(1, n * c, s), d_x3, False,
                                                        d_x3, False)
    return d_dx, d_dw, d_db
