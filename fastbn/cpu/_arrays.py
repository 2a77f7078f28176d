"""The host's array primitives, used by :mod:`fastbn.functional` after validation.

:mod:`fastbn.cuda._arrays` has the same names with the same meaning on device
arrays, so :mod:`fastbn.functional` validates and prepares a call once, for
either backend, and the op modules (``batch_norm``, ``group_norm``,
``layer_norm``, ``moments``) only compute.

See Also
--------
fastbn.cuda._arrays
"""

import functools

import numpy as np

from .._device import is_cuda_array

DEVICE = "host"
HINT = ""


def owns(a) -> bool:
    """True for what this backend computes on: anything but a device array."""
    return not is_cuda_array(a)


def wrap(a):
    """``a`` as an ndarray (zero-copy when it is one)."""
    return a if isinstance(a, np.ndarray) else np.asarray(a)


def empty(shape, dtype):
    return np.empty(shape, dtype)


def full(shape, value, dtype):
    return np.full(shape, value, dtype)


def contiguous(a, dtype=None):
    """``a`` itself when C-contiguous (and of ``dtype``), else a contiguous copy."""
    return np.ascontiguousarray(a, dtype=dtype)


def is_contiguous(a) -> bool:
    return bool(a.flags.c_contiguous)


def copy(src, dst):
    """``dst[...] = src`` (same shape, any strides, converting the dtype); returns ``dst``."""
    np.copyto(dst, src, casting="unsafe")
    return dst


def cast(a, dtype):
    """``a`` in ``dtype``: itself when it already is, else a converted copy."""
    return a.astype(dtype, copy=False)


@functools.lru_cache(maxsize=64)
def _constant(n: int, value, dtype):
    """A vector of ``n`` copies of ``value``, made once per (n, value, dtype) and shared:
    it only ever goes to kernels, which only read parameters.  (Not flagged
    read-only: Numba would compile a second specialization for it.)"""
    return np.full(n, value, dtype)


def param(a, n: int, default, dtype):
    """A per-channel parameter or statistic as the kernels read it: contiguous
    float64 (``n`` copies of ``default`` when ``a`` is None)."""
    if a is None:
        return None if default is None else _constant(n, default, np.dtype(np.float64))
    return np.ascontiguousarray(a, dtype=np.float64).reshape(n)


def elementwise(a, n: int, default, dtype):
    """A layer/RMS norm parameter as a flat contiguous (n,) array in the compute dtype."""
    if a is None:
        return _constant(n, default, np.dtype(dtype))
    return np.ascontiguousarray(a, dtype=dtype).reshape(n)


def to_host(a):
    """``a`` as a NumPy array (itself: host arrays are already there)."""
    return a


def from_host(a):
    """A NumPy array as this backend's array (itself on the host)."""
    return a


__all__ = ["owns", "wrap", "empty", "full", "contiguous", "is_contiguous", "copy", "cast",
           "param", "elementwise", "to_host", "from_host"]
