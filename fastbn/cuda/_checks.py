"""Validation of device arrays, and where an op writes a result that may overlap
its inputs or be strided (:func:`target`, :func:`finish`).

Inputs that are not C-contiguous (a torch channels-last CUDA tensor, a sliced
CuPy/numba array) are gathered into a contiguous copy on the device
(:mod:`fastbn.cuda._layout`: one extra read and write of the array); float16
parameters and statistics next to float32/float64 x are widened on the
device.  Running statistics are taken as they are (any strides, float16
included), since they are updated in place.
"""

import math

import numpy as np
from numba import cuda

from .. import _checks
from . import _layout, device

GPU_DTYPES = (np.dtype(np.float32), np.dtype(np.float64))
HALF = np.dtype(np.float16)


def float_device(a, name: str, *, half: bool = False):
    """``a`` as a numba device array (zero-copy, any strides) of a GPU dtype, float16
    too when ``half`` (parameters and statistics); else TypeError."""
    d = device(a, name)
    dtype = np.dtype(d.dtype)
    if dtype not in GPU_DTYPES and not (half and dtype == HALF):
        # float16 x is widened by fastbn.cuda._half before it gets here
        raise TypeError(f"{name} must be a float16, float32 or float64 device array matching "
                        f"x; got dtype {dtype} with shape {tuple(d.shape)}")
    return d


def array(a, name: str):
    """An x-shaped input as a C-contiguous device array (strided ones copied on the
    device: one extra read and write)."""
    return _layout.contiguous(float_device(a, name))


def _like_x(d, x, name: str):
    d = float_device(d, name)
    if tuple(d.shape) != tuple(x.shape):
        raise ValueError(f"{name} must have x's shape {tuple(x.shape)}; got {tuple(d.shape)}")
    if d.dtype != x.dtype:
        raise TypeError(f"{name} must have x's dtype {x.dtype}; got {d.dtype}")
    return d


def same_as(d, x, name: str):
    """An input with x's shape and dtype, C-contiguous (copied on the device if strided)."""
    return _layout.contiguous(_like_x(d, x, name))


def vector(a, name: str, shape, x, *, writeable: bool = False):
    """A parameter or statistic on the device with the given shape (any float dtype).

    Read-only ones come back C-contiguous, float16 widened to float32 (on the
    device); ``writeable`` ones (running statistics) are the caller's array itself.
    """
    if a is None:
        return None
    d = float_device(a, name, half=True)
    if tuple(d.shape) != tuple(shape):
        raise ValueError(f"{name} must have shape {tuple(shape)} for x of shape "
                         f"{tuple(x.shape)}; got shape {tuple(d.shape)}")
    if writeable:
        return d
    return _layout.contiguous(d, np.float32 if np.dtype(d.dtype) == HALF else None)


def output(out, x, name: str = "out"):
    """``out`` (x's shape and dtype) as the caller's device array, any strides:
    :func:`target` gives a strided one a contiguous temporary."""
    if out is None:
        return None
    return _like_x(out, x, name)


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
    if (_layout.is_contiguous(d_out)
            and (src is None or not _checks.may_overlap(d_out, src)
                 or _checks.same_array(d_out, src))
            and not any(_checks.may_overlap(d_out, a) for a in inputs)):
        return d_out, False
    return cuda.device_array(tuple(shape), dtype), True


def finish(d_y, d_out, copy_back):
    """The result array: ``d_out`` (filled from ``d_y`` device-to-device if
    :func:`target` gave a temporary, whatever ``d_out``'s strides) or ``d_y``
    when no ``out`` was given."""
    if not copy_back:
        return d_y
    if math.prod(d_y.shape):
        _layout.copy(d_y, d_out)  # device to device; scatters into a strided d_out
    return d_out


refuse_running_overlap = _checks.refuse_running_overlap
positive_eps = _checks.positive_eps
unit_momentum = _checks.unit_momentum
channel_axis = _checks.channel_axis
group_axis = _checks.group_axis
groups = _checks.groups
normalized_shape = _checks.normalized_shape
