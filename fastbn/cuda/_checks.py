"""Validation of device arrays (shapes and dtypes only: nothing is copied), and
where an op writes a result that may overlap its inputs (:func:`target`)."""

import math

import numpy as np
from numba import cuda

from .. import _checks
from . import device

GPU_DTYPES = (np.dtype(np.float32), np.dtype(np.float64))


def float_device(a, name: str):
    d = device(a, name)
    dtype = np.dtype(d.dtype)
    if dtype not in GPU_DTYPES:
        # float16 x is widened by fastbn.cuda._half before it gets here
        raise TypeError(f"{name} must be a float16, float32 or float64 device array matching "
                        f"x; got dtype {dtype} with shape {tuple(d.shape)}")
    if not d.is_c_contiguous():
        raise ValueError(f"{name} must be C-contiguous on the GPU; got strides {d.strides} "
                         f"for shape {tuple(d.shape)}")
    return d


def same_as(d, x, name: str):
    d = float_device(d, name)
    if tuple(d.shape) != tuple(x.shape):
        raise ValueError(f"{name} must have x's shape {tuple(x.shape)}; got {tuple(d.shape)}")
    if d.dtype != x.dtype:
        raise TypeError(f"{name} must have x's dtype {x.dtype}; got {d.dtype}")
    return d


def vector(a, name: str, shape, x, *, writeable: bool = False):
    """A parameter or statistic on the device with the given shape (any float dtype)."""
    if a is None:
        return None
    d = float_device(a, name)
    if tuple(d.shape) != tuple(shape):
        raise ValueError(f"{name} must have shape {tuple(shape)} for x of shape "
                         f"{tuple(x.shape)}; got shape {tuple(d.shape)}")
    return d


def output(out, x):
    if out is None:
        return None
    return same_as(out, x, "out")


def target(d_out, shape, dtype, src, *inputs):
    """``(d_y, copy_back)``: where a kernel writes a result of ``shape``/``dtype``.

    The GPU twin of :func:`fastbn._checks.result_buffer`, on pointer ranges
    (:func:`fastbn._checks.may_overlap`): ``d_out`` itself (already checked to
    be C-contiguous with x's shape and dtype) when the kernel cannot read what
    it writes, else a new device array that :func:`finish` copies into
    ``d_out`` on the device once every input has been read.  ``src`` may be
    ``d_out`` itself (the apply kernels read ``src[i]`` before they write
    ``y[i]``, so ``out=x`` runs in place) but must not partly overlap it;
    ``inputs`` (``None`` allowed) must not overlap ``d_out`` at all.
    """
    if d_out is None:
        return cuda.device_array(tuple(shape), dtype), False
    if ((src is None or not _checks.may_overlap(d_out, src) or _checks.same_array(d_out, src))
            and not any(_checks.may_overlap(d_out, a) for a in inputs)):
        return d_out, False
    return cuda.device_array(tuple(shape), dtype), True


def finish(d_y, d_out, copy_back):
    """The result array: ``d_out`` (filled from ``d_y`` device-to-device if
    :func:`target` gave a temporary) or ``d_y`` when no ``out`` was given."""
    if not copy_back:
        return d_y
    if math.prod(d_y.shape):
        d_out.copy_to_device(d_y)
    return d_out


def refuse_running_overlap(training, x, weight, bias, running_mean, running_var, residual,
                           out):
    """Batch norm's running statistics are written in place: refused if they overlap
    (:func:`fastbn._checks.refuse_overlap`, the CPU's check and message).  Called on
    the caller's own arrays, before anything is written."""
    if training and running_mean is not None:
        _checks.refuse_overlap({"running_mean": running_mean, "running_var": running_var},
                               {"x": x, "weight": weight, "bias": bias, "residual": residual,
                                "out": out})
    elif not training:
        _checks.refuse_overlap({"out": out},
                               {"running_mean": running_mean, "running_var": running_var})


positive_eps = _checks.positive_eps
unit_momentum = _checks.unit_momentum
channel_axis = _checks.channel_axis
group_axis = _checks.group_axis
groups = _checks.groups
normalized_shape = _checks.normalized_shape
