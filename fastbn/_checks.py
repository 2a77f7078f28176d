"""Validation, layout normalisation and output allocation shared by the backends.

Everything here runs in Python before any kernel starts, so a bad call raises
before a single output element or running statistic is written.
"""

import math
import numbers

import numpy as np

FLOAT_DTYPES = (np.dtype(np.float16), np.dtype(np.float32), np.dtype(np.float64))


def is_cuda_array(a) -> bool:
    return hasattr(a, "__cuda_array_interface__") and not isinstance(a, np.ndarray)


def float_array(a, name: str) -> np.ndarray:
    """``a`` as an ndarray of float16/32/64, else TypeError naming ``name``."""
    if is_cuda_array(a):
        raise TypeError(
            f"{name} is a GPU array, but this call's other arrays are on the host; "
            "pass all arrays on the same device")
    if not isinstance(a, np.ndarray):
        a = np.asarray(a)
    if a.dtype not in FLOAT_DTYPES:
        raise TypeError(
            f"{name} must be a floating-point array (float16, float32 or float64); "
            f"got dtype {a.dtype} with shape {a.shape}")
    return a


def compute_dtype(dtype: np.dtype) -> np.dtype:
    """Kernels run float32 and float64 natively; float16 is computed in float32."""
    return np.dtype(np.float32) if dtype == np.float16 else dtype


def stats_dtype(dtype: np.dtype) -> np.dtype:
    """Statistics and parameter gradients: float64 for float64 input, else float32."""
    return np.dtype(np.float64) if dtype == np.float64 else np.dtype(np.float32)


def channel_axis(axis, ndim: int, shape, min_ndim: int = 2) -> int:
    if ndim < min_ndim:
        raise ValueError(f"x must have at least {min_ndim} dimensions; got shape {tuple(shape)}")
    if isinstance(axis, bool) or not isinstance(axis, numbers.Integral):
        raise TypeError(f"axis must be an integer; got {axis!r}")
    if not -ndim <= axis < ndim:
        raise ValueError(f"axis {axis} is out of range for x of shape {tuple(shape)}")
    return int(axis) % ndim


def positive_eps(eps) -> float:
    try:
        value = float(eps)
    except (TypeError, ValueError):
        raise TypeError(f"eps must be a positive number; got {eps!r}") from None
    if not (value > 0.0 and math.isfinite(value)):
        raise ValueError(f"eps must be positive and finite; got {eps!r}")
    return value


def unit_momentum(momentum) -> float:
    try:
        value = float(momentum)
    except (TypeError, ValueError):
        raise TypeError(f"momentum must be a number in [0, 1]; got {momentum!r}") from None
    if not 0.0 <= value <= 1.0:
        raise ValueError(f"momentum must be in [0, 1]; got {momentum!r}")
    return value


def channel_vector(a, name: str, channels: int, x_shape, *, default: float | None = None):
    """A per-channel parameter as a float64 (C,) array; ``default`` fills it when None."""
    if a is None:
        return None if default is None else np.full(channels, default)
    a = float_array(a, name)
    if a.shape != (channels,):
        raise ValueError(
            f"{name} must have shape ({channels},) for x of shape {tuple(x_shape)} "
            f"with {channels} channels; got shape {a.shape}")
    return np.ascontiguousarray(a, dtype=np.float64)


def running_stats(running_mean, running_var, channels: int, x_shape, *, required: bool):
    """Check the running statistics (both or neither; writeable when they will be updated)."""
    if running_mean is None and running_var is None:
        if required:
            raise ValueError(
                "running_mean and running_var are required when training=False")
        return
    if running_mean is None or running_var is None:
        missing = "running_mean" if running_mean is None else "running_var"
        raise ValueError(f"{missing} is None but the other running statistic is given; "
                         "pass both or neither")
    for name, a in (("running_mean", running_mean), ("running_var", running_var)):
        if not isinstance(a, np.ndarray):
            raise TypeError(f"{name} must be a NumPy array; got {type(a).__name__}")
        float_array(a, name)
        if a.shape != (channels,):
            raise ValueError(
                f"{name} must have shape ({channels},) for x of shape {tuple(x_shape)} "
                f"with {channels} channels; got shape {a.shape}")
        if not required and not a.flags.writeable:
            raise ValueError(f"{name} is read-only but must be updated in place in training")


def output(out, shape, dtype, name: str = "out"):
    if out is None:
        return None
    if not isinstance(out, np.ndarray):
        raise TypeError(f"{name} must be a NumPy array; got {type(out).__name__}")
    if out.shape != tuple(shape) or out.dtype != dtype:
        raise ValueError(
            f"{name} must have shape {tuple(shape)} and dtype {dtype}; "
            f"got shape {out.shape} and dtype {out.dtype}")
    if not out.flags.writeable:
        raise ValueError(f"{name} is read-only")
    return out


def same_array(a: np.ndarray, b: np.ndarray) -> bool:
    """True when ``a`` and ``b`` are the same memory with the same layout."""
    ia, ib = a.__array_interface__, b.__array_interface__
    return ia["data"][0] == ib["data"][0] and a.strides == b.strides and a.shape == b.shape


def as_3d(x: np.ndarray, axis: int) -> np.ndarray:
    """C-contiguous ``(A, C, B)`` view (a copy only for non-contiguous or float16 input)."""
    shape = x.shape
    a = math.prod(shape[:axis])
    b = math.prod(shape[axis + 1:])
    xc = np.ascontiguousarray(x, dtype=compute_dtype(x.dtype))
    return xc.reshape(a, shape[axis], b)


def result_buffer(out, x3: np.ndarray, src: np.ndarray):
    """Where a kernel writes a result shaped like ``x3``: ``out`` itself when its
    memory can take the kernel's layout and dtype directly, else a new array."""
    if (out is not None and out.dtype == x3.dtype and out.flags.c_contiguous
            and (not np.may_share_memory(out, src) or same_array(out, src))):
        return out.reshape(x3.shape)
    return np.empty_like(x3)


def deliver(buf: np.ndarray, out, shape, dtype):
    """Return the result in the caller's shape and dtype, writing ``out`` if given."""
    if out is not None:
        if not np.may_share_memory(buf, out):
            np.copyto(out, buf.reshape(shape), casting="unsafe")
        return out
    return buf.reshape(shape).astype(dtype, copy=False)
