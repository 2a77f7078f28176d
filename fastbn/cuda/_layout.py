"""Strided device arrays: made contiguous, and results scattered back, on the device.

The GPU kernels read C-contiguous ``(A, C, B)`` views.  A strided device
array (a torch channels-last CUDA tensor, a sliced CuPy or numba array) is
first gathered into a new C-contiguous array by :func:`copy`, a grid-stride
kernel over arbitrary strides (one per number of dimensions), and a strided
``out=``/``dresidual=`` receives its result from a contiguous temporary the
same way.  The cost is one extra read and one extra write of the array (and
a temporary of its size); contiguous arrays are taken as they are, for free.
:func:`copy` also converts dtypes (float16 <-> float32 widening and
narrowing), so a strided float16 array costs no more than a contiguous one.
Nothing goes through the host.

See Also
--------
fastbn._checks.result_buffer, fastbn._checks.deliver, fastbn.cuda._arrays
"""

import math

import numpy as np
from numba import cuda

from . import grid_stride

try:  # launches with a legal geometry (fastbn.cuda.Kernel) where available
    from . import kernel as _jit
except ImportError:  # pragma: no cover
    _jit = cuda.jit

_KERNELS: dict = {}


def _copy_kernel(ndim: int):
    """``dst[i] = src[i]`` for every multi-index ``i``, ``ndim`` dimensions, any strides."""
    k = _KERNELS.get(ndim)
    if k is None:
        idx = ", ".join(f"i{j}" for j in range(ndim))
        lines = ["def copy_nd(src, dst, n):",
                 "    for i in range(cuda.grid(1), n, cuda.gridsize(1)):",
                 "        r = i"]
        for j in reversed(range(ndim)):
            lines.append(f"        i{j} = r % dst.shape[{j}]")
            if j:
                lines.append(f"        r = r // dst.shape[{j}]")
        lines.append(f"        dst[{idx}] = src[{idx}]")
        namespace = {"cuda": cuda}
        exec("\n".join(lines), namespace)  # noqa: S102  (generated from ndim only)
        k = _KERNELS[ndim] = _jit(namespace["copy_nd"])
    return k


def is_contiguous(d) -> bool:
    return bool(d.is_c_contiguous())


def copy(src, dst):
    """Copy ``src`` into ``dst`` (same shape; any strides, any float dtypes); returns ``dst``.

    Contiguous pairs run as one flat loop; otherwise each thread unravels its
    flat index over ``dst``'s shape (a grid-stride loop, so any size fits in
    CUDA's grid limits).  Nothing is launched for an empty array.
    """
    shape = tuple(dst.shape)
    if tuple(src.shape) != shape:
        raise ValueError(f"copy between shapes {tuple(src.shape)} and {shape}")
    n = math.prod(shape)
    if n == 0:
        return dst
    if is_contiguous(src) and is_contiguous(dst):
        if np.dtype(src.dtype) == np.dtype(dst.dtype):
            dst.copy_to_device(src)
            return dst
        _copy_kernel(1)[grid_stride(n)](src.reshape(n), dst.reshape(n), n)
        return dst
    _copy_kernel(len(shape))[grid_stride(n)](src, dst, n)
    return dst


def contiguous(d, dtype=None):
    """``d`` itself when C-contiguous (and of ``dtype``), else a new contiguous copy
    made on the device (one extra read and write of ``d``)."""
    dtype = np.dtype(d.dtype if dtype is None else dtype)
    if is_contiguous(d) and np.dtype(d.dtype) == dtype:
        return d
    return copy(d, cuda.device_array(tuple(d.shape), dtype))


__all__ = ["copy", "contiguous", "is_contiguous"]
