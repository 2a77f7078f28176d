"""Layer norm and RMS norm on the GPU: the numba-cuda twin of :mod:`fastbn.cpu.layer_norm`.

x is seen as ``(1, R, D)`` rows.  Statistics: one block per chunk of a row
(row kernels), merged per row.  Backward: per-row weighted sums, then dx
elementwise, then ``dweight``/``dbias`` as column sums over the rows (tiles
of rows by a block of columns, partials added in row-block order).

Strided input, float16 parameters and empty batches are handled as
described in :mod:`fastbn.cuda.batch_norm` (a strided array costs one extra
read and write on the device).

See Also
--------
fastbn.cpu.layer_norm, fastbn.reference.layer_norm
"""

import math

from numba import cuda

from .. import config
from . import _checks as C
from . import _half, _layout, _require_gpu, _stats, grid_1d, threads
from . import _kernels as K
from .batch_norm import _cast, _zeros


def _rows(d_x, normalized_shape):
    shape = C.normalized_shape(normalized_shape, tuple(d_x.shape))
    d = math.prod(shape)
    lead = tuple(d_x.shape)[:len(d_x.shape) - len(shape)]
    return shape, d, lead, d_x.reshape(1, math.prod(lead), d)


def _nan(lead, dtype):
    n = math.prod(lead)
    return (_stats.full(n, math.nan, dtype) if n else cuda.device_array(0, dtype)).reshape(lead)


def _param(a, name, shape, d):
    """An elementwise parameter of ``normalized_shape`` as a flat (D,) device view."""
    if a is None:
        return None
    da = C.float_device(a, name, half=True)
    if tuple(da.shape) != tuple(shape):
        raise ValueError(f"{name} must have normalized_shape {tuple(shape)}; got shape "
                         f"{tuple(da.shape)}")
    # contiguous (copied on the device if strided), float16 widened to float32
    return _layout.contiguous(da, "float32" if da.dtype == "float16" else None).reshape(d)


def forward(x, normalized_shape, weight, bias, *, eps, out, center):
    """Layer norm (``center``) or RMS norm: ``(y, mean, rstd)`` device arrays."""
    _require_gpu()
    if _half.is_half(x):
        d_out = _half.check_out(out, x)
        y, mean, rstd = forward(_half.up(x), normalized_shape, _half.up(weight), _half.up(bias),
                                eps=eps, out=None, center=center)
        return (_half.down(y) if d_out is None else _half.down_into(y, d_out)), mean, rstd
    d_x = C.array(x, "x")
    shape, d, lead, d_x3 = _rows(d_x, normalized_shape)
    d_w = _param(weight, "weight", shape, d)
    d_b = _param(bias, "bias", shape, d)
    eps = C.positive_eps(eps)
    d_out = C.output(out, d_x)
    dtype = d_x.dtype
    if d_x.size == 0:  # an empty input: NaN statistics per (empty) row, as on the CPU
        y = d_out if d_out is not None else cuda.device_array(tuple(d_x.shape), dtype)
        return y, _nan(lead, dtype), _nan(lead, dtype)
    # out=x runs in place (statistics first, then y[i] written after x[i] is read);
    # any other overlap with x, weight or bias goes through a temporary
    d_y, copy_back = C.target(d_out, tuple(d_x.shape), dtype, d_x, d_w, d_b)
    d_w = d_w if d_w is not None else _stats.full(d, 1.0, dtype)
    d_b = d_b if d_b is not None else _stats.full(d, 0.0, dtype)
    d_mean, _, d_rstd, d_coef = _stats.rows_stats(d_x3, eps, center)
    _stats.rows_apply(d_x3, d_coef, d_w, d_b, 1, 1, d_y.reshape(d_x3.shape))
    return (C.finish(d_y, d_out, copy_back), _cast(d_mean, dtype).reshape(lead),
            _cast(d_rstd, dtype).reshape(lead))


def backward(dy, x, normalized_shape, mean, rstd, weight, *, center):
    """``(dx, dweight, dbias)`` device arrays (dbias is zero-cost for RMS norm)."""
    _require_gpu()
    if _half.is_half(x):
        dy = _half.require_half(dy, "dy")
        dx, dw, db = backward(_half.up(dy), _half.up(x), normalized_shape, _half.up(mean),
                              _half.up(rstd), _half.up(weight), center=center)
        return _half.down(dx), dw, db
    d_x = C.array(x, "x")
    d_dy = C.same_as(dy, d_x, "dy")
    shape, d, lead, d_x3 = _rows(d_x, normalized_shape)
    r = d_x3.shape[1]
    d_rstd = C.vector(rstd, "rstd", lead, d_x).reshape(r)
    d_mean = (C.vector(mean, "mean", lead, d_x).reshape(r) if center
              else _zeros(r, d_x.dtype))
    dtype = d_x.dtype
    d_w = _param(weight, "weight", shape, d)
    if d_x.size == 0:  # an empty input: zero gradients, as on the CPU
        return (cuda.device_array(tuple(d_x.shape), dtype), _zeros(d, dtype).reshape(shape),
                _zeros(d, dtype).reshape(shape))
    d_w = d_w if d_w is not None else _stats.full(d, 1.0, dtype)
    d_dy3 = d_dy.reshape(1, r, d)
    d_sa, d_ss = _stats.rows_grad_sums(d_x3, d_dy3, d_mean, d_w, 1, 1)
    d_coef = cuda.device_array((5, r), dtype)
    K.row_grad_coef[grid_1d(r)](d_mean, d_rstd, d_sa, d_ss, float(d), center, d_coef)
    d_dx = cuda.device_array(tuple(d_x.shape), dtype)
    K.rows_grad_apply[_stats.grid_stride(d_x.size)](d_x3, d_dy3, d_coef, d_w, 1, 1, True,
                                                    d_dx.reshape(1, r, d), d_x3, False, d_x3,
                                                    False)
    rows = config.CUDA_TILE_ROWS
    nqb = math.ceil(r / rows)
    tpb = threads()
    d_psw, d_psb = cuda.device_array((1, nqb, d)), cuda.device_array((1, nqb, d))
    K.row_param_sums[(math.ceil(d / tpb), nqb), tpb](d_x3, d_dy3, d_coef, rows, d_psw, d_psb)
    d_dw, d_db = cuda.device_array(d), cuda.device_array(d)
    K.fold_sums[grid_1d(d)](d_psw, d_psb, d_dw, d_db)
    return d_dx, _cast(d_dw, dtype).reshape(shape), _cast(d_db, dtype).reshape(shape)
