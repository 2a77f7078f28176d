"""Mergeable statistics on the GPU: the device twins of :func:`fastbn.moments`,
:func:`fastbn.merge_moments` and :func:`fastbn.moments_to_stats`.

``moments`` runs batch norm's statistics kernels (:func:`fastbn.cuda._stats.rows_stats`
on the ``(A, C, B)`` view, :func:`~fastbn.cuda._stats.cols_stats` when ``B == 1``)
and returns ``(count, mean, m2)`` with ``count`` a Python int and ``mean``,
``m2`` float64 device arrays.  ``merge_moments`` and ``moments_to_stats`` take
and return device arrays, with the CPU's formulas in the CPU's order of
operations (on hardware the compiler may fuse a multiply-add: within one
float64 rounding).  Nothing goes through the host but the counts, which are
Python ints already.  A strided x is made contiguous on the device first
(:mod:`fastbn.cuda._layout`: one extra read and write).

See Also
--------
fastbn.functional.moments, fastbn.cpu.batch_norm
"""

import math

import numpy as np
from numba import cuda
from numba import float64 as float64_

from .. import _checks as _host_checks
from . import _checks as C
from . import _half, _layout, _require_gpu, _stats, grid_1d
from . import _kernels as K

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


def _vector(a, name):
    """A statistic as a device array of any float dtype (float16 too), any strides."""
    return C.float_device(a, name, half=True)


def moments(x, axis=1):
    """``(count, mean, m2)`` of a device array per channel: mean and m2 float64 (C,)
    device arrays; an empty batch gives count 0 and zeros, as on the CPU."""
    _require_gpu()
    if _half.is_half(x):
        x = _half.up(x)
    d_x = C.array(x, "x")
    shape = tuple(d_x.shape)
    ax = C.channel_axis(axis, len(shape), shape)
    c = shape[ax]
    a, b = math.prod(shape[:ax]), math.prod(shape[ax + 1:])
    count = a * b if c else 0
    if count == 0:
        return 0, _zeros(c), _zeros(c)
    d_x3 = d_x.reshape(a, c, b)
    if b == 1:
        d_mean, d_m2, _, _ = _stats.cols_stats(d_x3.reshape(1, a, c), 1, 1.0)
    else:
        d_mean, d_m2, _, _ = _stats.rows_stats(d_x3, 1.0, True)
    return count, d_mean, d_m2


def _zeros(n):
    return _stats.full(n, 0.0, np.float64) if n else cuda.device_array(0, np.float64)


def _f64(d):
    """A new float64 contiguous copy of a device statistic (on the device)."""
    return _layout.copy(d, cuda.device_array(tuple(d.shape), np.float64))


def _shape(a):
    return tuple(a.shape) if hasattr(a, "shape") else np.shape(a)


def merge_moments(a, b):
    """Chan's exact merge of two ``(count, mean, m2)`` triples of device arrays.

    A part with count 0 is not read (its arrays may live anywhere; only their
    shape is checked); the result is always new float64 device arrays.
    """
    _require_gpu()
    na, mean_a, m2_a = a
    nb, mean_b, m2_b = b
    shapes = [_shape(v) for v in (mean_a, m2_a, mean_b, m2_b)]
    if shapes[0] != shapes[2] or shapes[0] != shapes[1] or shapes[2] != shapes[3]:
        raise ValueError(f"moments to merge must have the same shape; got {shapes[0]} "
                         f"and {shapes[2]}")
    na, nb = int(na), int(nb)
    if na < 0 or nb < 0:
        raise ValueError(f"counts must be >= 0; got {na} and {nb}")
    if nb == 0 or na == 0:
        n, mean, m2 = (na, mean_a, m2_a) if nb == 0 else (nb, mean_b, m2_b)
        if n == 0 and not _host_checks.is_cuda_array(mean):
            return 0, _zeros_like(shapes[0], mean), _zeros_like(shapes[0], m2)
        return n, _f64(_vector(mean, "mean")), _f64(_vector(m2, "m2"))
    ds = [_vector(v, name) for v, name in ((mean_a, "mean_a"), (m2_a, "m2_a"),
                                           (mean_b, "mean_b"), (m2_b, "m2_b"))]
    ds = [_layout.contiguous(d).reshape(math.prod(d.shape)) if len(d.shape) != 1 else d
          for d in ds]
    shape = shapes[0]
    k = math.prod(shape)
    n = na + nb
    mean = cuda.device_array(k, np.float64)
    m2 = cuda.device_array(k, np.float64)
    if k:
        _merge[grid_1d(k)](*ds, nb / n, na * nb / n, mean, m2)
    return n, mean.reshape(shape), m2.reshape(shape)


def _zeros_like(shape, host):
    """Both parts empty with host arrays: the CPU's answer (their float64 copies) on
    the device would be a host transfer, so zeros of that shape (the only values an
    empty part can meaningfully carry) are made on the device."""
    k = math.prod(shape)
    return _zeros(k).reshape(shape)


def moments_to_stats(count, mean, m2, eps=1e-5):
    """``(mean, rstd, unbiased_var)`` float64 device arrays from device moments."""
    _require_gpu()
    eps = _host_checks.positive_eps(eps)
    count = int(count)
    if count <= 0:
        raise ValueError(f"count must be positive; got {count}")
    d_mean = _vector(mean, "mean")
    d_m2 = _vector(m2, "m2")
    if tuple(d_mean.shape) != tuple(d_m2.shape):
        raise ValueError(f"mean and m2 must have the same shape; got {tuple(d_mean.shape)} "
                         f"and {tuple(d_m2.shape)}")
    shape = tuple(d_m2.shape)
    k = math.prod(shape)
    flat = [_layout.contiguous(d).reshape(k) for d in (d_mean, d_m2)]
    out = [cuda.device_array(k, np.float64) for _ in range(3)]
    if k:
        _to_stats[grid_1d(k)](*flat, float(count), eps, count > 1, *out)
    return tuple(o.reshape(shape) for o in out)


__all__ = ["moments", "merge_moments", "moments_to_stats"]
