"""float16 on the GPU, as API.md has it: computed in float32, returned as float16.

The public GPU entry points call :func:`half` first: float16 device arrays
are widened into new float32 device arrays by a cast kernel (never through
the host), the float32 kernels run, and the float16 results are cast back.
Statistics and parameter gradients stay float32.
"""

import math

import numpy as np
from numba import cuda

from . import _kernels as K
from . import device, grid_1d


def is_half(a) -> bool:
    return a is not None and np.dtype(device(a, "array").dtype) == np.float16


def up(a):
    """A float16 device array as a new float32 one; anything else unchanged."""
    if not is_half(a):
        return a
    d = device(a, "array")
    n = math.prod(d.shape)
    out = cuda.device_array(tuple(d.shape), np.float32)
    if n:
        K.cast[grid_1d(n)](d.reshape(n), out.reshape(n))
    return out


def down_into(src, dst):
    """Cast ``src`` (float32) into the float16 device array ``dst``; returns ``dst``."""
    n = math.prod(src.shape)
    if n:
        K.cast[grid_1d(n)](src.reshape(n), device(dst, "out").reshape(n))
    return dst


def down(src):
    return down_into(src, cuda.device_array(tuple(src.shape), np.float16))


def check_out(out, x, name="out"):
    """A float16 ``out`` must match x (float16) exactly; checked before anything runs."""
    if out is None:
        return None
    d = device(out, name)
    if tuple(d.shape) != tuple(device(x, "x").shape) or np.dtype(d.dtype) != np.float16:
        raise ValueError(f"{name} must have x's shape {tuple(device(x, 'x').shape)} and dtype "
                         f"float16; got shape {tuple(d.shape)} and dtype {d.dtype}")
    return d


def require_half(a, name):
    """x-shaped companions of a float16 x (dy, y, residual) must be float16 too."""
    if a is not None and not is_half(a):
        raise TypeError(f"{name} must have x's dtype float16; got {device(a, name).dtype}")
    return a
