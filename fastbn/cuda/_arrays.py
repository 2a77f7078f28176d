"""The device's array primitives, used by :mod:`fastbn.functional` after validation.

The same names with the same meaning as :mod:`fastbn.cpu._arrays`, on numba
device arrays: anything with ``__cuda_array_interface__`` (numba, CuPy, torch
CUDA tensors) is taken zero-copy.  Strided arrays are made contiguous and
dtypes converted by a copy kernel on the device (:mod:`fastbn.cuda._layout`:
one extra read and write of the array); nothing goes through the host.

See Also
--------
fastbn.cpu._arrays
"""

import math

import numpy as np
from numba import cuda

from .._device import is_cuda_array
from . import _layout, _stats

DEVICE = "GPU"
HINT = " (numba.cuda.to_device copies a host array over)"
HALF = np.dtype(np.float16)


def owns(a) -> bool:
    return is_cuda_array(a)


def wrap(a):
    """A numba device array over ``a``'s memory (zero-copy)."""
    if not hasattr(a, "__cuda_array_interface__"):
        return a  # the simulator's device arrays carry no interface
    return cuda.as_cuda_array(a)


def empty(shape, dtype):
    return cuda.device_array(shape, dtype)


def full(shape, value, dtype):
    """Filled on the device (no host transfer)."""
    shape = (shape,) if isinstance(shape, int) else tuple(shape)
    n = math.prod(shape)
    d = _stats.full(n, value, dtype) if n else cuda.device_array(0, dtype)
    return d.reshape(shape)


def contiguous(a, dtype=None):
    """``a`` itself when C-contiguous (and of ``dtype``), else a contiguous copy made on
    the device."""
    return _layout.contiguous(a, dtype)


def is_contiguous(a) -> bool:
    return _layout.is_contiguous(a)


def copy(src, dst):
    """``dst[...] = src`` on the device (same shape, any strides, converting the dtype);
    returns ``dst``."""
    return _layout.copy(src, dst)


def cast(a, dtype):
    return _layout.contiguous(a, dtype)


def _widened(a):
    """float16 companions are widened to float32 (on the device); others kept."""
    return _layout.contiguous(a, np.float32 if np.dtype(a.dtype) == HALF else None)


def param(a, n: int, default, dtype):
    """A per-channel parameter or statistic as the kernels read it: contiguous,
    float16 widened, other dtypes kept (``n`` copies of ``default`` in ``dtype``
    when ``a`` is None)."""
    if a is None:
        return None if default is None else full(n, default, dtype)
    return _widened(a).reshape(n)


def elementwise(a, n: int, default, dtype):
    """A layer/RMS norm parameter as a flat contiguous (n,) device array."""
    if a is None:
        return full(n, default, dtype)
    return _widened(a).reshape(n)


def to_host(a):
    """A device array copied to a new NumPy array (used only for per-channel
    statistics, never for x)."""
    return a.copy_to_host()


def from_host(a):
    """A NumPy array copied to a new device array."""
    return cuda.to_device(np.ascontiguousarray(a))


__all__ = ["owns", "wrap", "empty", "full", "contiguous", "is_contiguous", "copy", "cast",
           "param", "elementwise", "to_host", "from_host"]
