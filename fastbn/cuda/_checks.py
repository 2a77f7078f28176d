"""Validation of device arrays (shapes and dtypes only: nothing is copied)."""

import numpy as np

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


positive_eps = _checks.positive_eps
unit_momentum = _checks.unit_momentum
channel_axis = _checks.channel_axis
group_axis = _checks.group_axis
groups = _checks.groups
normalized_shape = _checks.normalized_shape
