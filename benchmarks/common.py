"""Seeded, cached inputs and the bytes each pass must move, shared by the asv suite."""

import functools
import math

import numpy as np

SIZES = {
    # name: (NCHW shape, NHWC shape, layer-norm rows)
    "small": ((8, 16, 14, 14), (8, 14, 14, 16), (256, 256)),
    "large": ((32, 64, 56, 56), (32, 56, 56, 64), (4096, 1024)),
}
GROUPS = 32


def shape_of(layout, size):
    nchw, nhwc, rows = SIZES[size]
    return {"NCHW": nchw, "NHWC": nhwc, "rows": rows}[layout]


def axis_of(layout):
    return -1 if layout in ("NHWC", "rows") else 1


@functools.cache
def host_arrays(layout, size, dtype):
    """(x, dy, weight, bias) for a case; same seed, same data, every run."""
    shape = shape_of(layout, size)
    rng = np.random.default_rng(20261125)
    x = rng.standard_normal(shape).astype(dtype)
    dy = rng.standard_normal(shape).astype(dtype)
    c = shape[axis_of(layout)]
    return x, dy, np.ones(c, dtype), np.zeros(c, dtype)


def nbytes(layout, size, dtype, arrays):
    """Minimal traffic: ``arrays`` tensors of x's size (forward 2, backward 3)."""
    return arrays * math.prod(shape_of(layout, size)) * np.dtype(dtype).itemsize


def cuda_or_skip():
    """The numba.cuda module when a real GPU is usable, else NotImplementedError (asv skip)."""
    try:
        from numba import cuda
        from numba.core import config
    except ImportError:
        raise NotImplementedError("numba-cuda is not installed") from None
    if config.ENABLE_CUDASIM or not cuda.is_available():
        raise NotImplementedError("no CUDA GPU")
    return cuda
