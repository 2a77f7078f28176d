"""Validation, layout normalisation and output allocation shared by the backends.

Everything here runs in Python before any kernel starts, so a bad call raises
before a single output element or running statistic is written.
"""

import math
import numbers
import operator
import warnings

import numpy as np

FLOAT_DTYPES = (np.dtype(np.float16), np.dtype(np.float32), np.dtype(np.float64))


def is_cuda_array(a) -> bool:
    """Device arrays: ``__cuda_array_interface__`` (numba, CuPy, torch CUDA), or the
    CUDA simulator's arrays (which do not carry the interface)."""
    if isinstance(a, np.ndarray) or a is None:
        return False
    return (hasattr(a, "__cuda_array_interface__")
            or type(a).__module__.startswith("numba.cuda.simulator"))


def float_array(a, name: str) -> np.ndarray:
    """``a`` as an ndarray of float16/32/64, else TypeError naming ``name``."""
    if is_cuda_array(a):
        raise TypeError(
            f"{name} is a GPU array, but this call's other arrays are on the host; "
            "pass all arrays on the same device")
    if not isinstance(a, np.ndarray):
        a = np.asarray(a)
    if a.dtype.kind == "f" and not a.dtype.isnative:
        raise TypeError(
            f"{name} has non-native byte order (dtype {a.dtype.str}, shape {a.shape}); "
            f"convert it first: {name}.astype({name}.dtype.newbyteorder('='))")
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
        if default is None:
            return None
        return np.ones(channels) if default == 1.0 else np.full(channels, default)
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


def _layout(a) -> tuple[int, tuple, tuple, int]:
    """``(address, shape, strides, itemsize)`` of a NumPy array, an object with
    ``__cuda_array_interface__``, or a CUDA-simulator array (which wraps a NumPy one)."""
    if not isinstance(a, np.ndarray) and hasattr(a, "__cuda_array_interface__"):
        iface = a.__cuda_array_interface__
        shape = tuple(iface["shape"])
        itemsize = np.dtype(iface["typestr"]).itemsize
        strides = iface.get("strides")
        if strides is None:  # C-contiguous
            strides, step = [], itemsize
            for n in reversed(shape):
                strides.insert(0, step)
                step *= n
        return iface["data"][0], shape, tuple(strides), itemsize
    a = a if isinstance(a, np.ndarray) else getattr(a, "_ary", a)
    return a.__array_interface__["data"][0], a.shape, a.strides, a.itemsize


def byte_range(a) -> tuple[int, int]:
    """``[start, end)``: the addresses ``a``'s elements span (host or device)."""
    address, shape, strides, itemsize = _layout(a)
    if 0 in shape:
        return address, address
    reach = [(n - 1) * s for n, s in zip(shape, strides, strict=True)]
    start = address + sum(r for r in reach if r < 0)
    end = address + sum(r for r in reach if r > 0) + itemsize
    return start, end


def may_overlap(a, b) -> bool:
    """True when the address ranges of ``a`` and ``b`` intersect (either may be None).

    Conservative (interleaved views that share no element still count), which
    is what an output check wants: a false alarm costs a copy or an error
    message, a miss costs a wrong result.  Host and device addresses are
    compared only among arrays of one kind (the callers never mix them).
    """
    if a is None or b is None:
        return False
    a0, a1 = byte_range(a)
    b0, b1 = byte_range(b)
    return a0 < b1 and b0 < a1


def same_array(a, b) -> bool:
    """True when ``a`` and ``b`` are the same memory with the same layout."""
    la, lb = _layout(a), _layout(b)
    return la[0] == lb[0] and la[1:] == lb[1:]


def refuse_overlap(outputs: dict, inputs: dict) -> None:
    """ValueError if an output that is written in place (running statistics, ``out``)
    may share memory with another argument: such calls are refused, not guessed at."""
    names = list(outputs)
    for i, name in enumerate(names):
        others = {**{k: v for k, v in outputs.items() if k in names[i + 1:]}, **inputs}
        for other, b in others.items():
            if may_overlap(outputs[name], b):
                raise ValueError(
                    f"{name} shares memory with {other}; {name} is written in place, so it "
                    f"must not overlap any other argument (pass a separate array)")


def as_3d(x: np.ndarray, axis: int) -> np.ndarray:
    """C-contiguous ``(A, C, B)`` view (a copy only for non-contiguous or float16 input)."""
    shape = x.shape
    a = math.prod(shape[:axis])
    b = math.prod(shape[axis + 1:])
    xc = np.ascontiguousarray(x, dtype=compute_dtype(x.dtype))
    return xc.reshape(a, shape[axis], b)


def refuse_running_overlap(training, x, weight, bias, running_mean, running_var, residual,
                           out) -> None:
    """Batch norm's overlap rule for its running statistics (both backends): written in
    place in training, so they may overlap no other argument; read in inference, so
    ``out`` may not overlap them.  Called on the caller's own arrays, before anything
    is written."""
    if training and running_mean is not None:
        refuse_overlap({"running_mean": running_mean, "running_var": running_var},
                       {"x": x, "weight": weight, "bias": bias, "residual": residual,
                        "out": out})
    elif not training:
        refuse_overlap({"out": out}, {"running_mean": running_mean, "running_var": running_var})


def result_buffer(out, x3: np.ndarray, src, *inputs):
    """Where a kernel writes a result shaped like ``x3``: ``out`` itself when its
    memory can take the kernel's layout and dtype directly and the kernel cannot
    read what it has written, else a new array (that :func:`deliver` copies into
    ``out`` once the kernel has read every input).

    ``src`` may be ``out`` itself (the kernels read each element of ``src``
    before they write that element of the result: ``out=x`` works in place) but
    must not partly overlap it; ``inputs`` (``None`` allowed) must not overlap
    ``out`` at all.
    """
    if (out is not None and out.dtype == x3.dtype and out.flags.c_contiguous
            and (src is None or not may_overlap(out, src) or same_array(out, src))
            and not any(may_overlap(out, a) for a in inputs)):
        return out.reshape(x3.shape)
    return np.empty_like(x3)


def deliver(buf: np.ndarray, out, shape, dtype):
    """Return the result in the caller's shape and dtype, writing ``out`` if given."""
    if out is not None:
        if not np.may_share_memory(buf, out):
            np.copyto(out, buf.reshape(shape), casting="unsafe")
        return out
    return buf.reshape(shape).astype(dtype, copy=False)


def normalized_shape(shape, x_shape) -> tuple:
    """``normalized_shape`` as a tuple matching the trailing dims of ``x``."""
    if isinstance(shape, numbers.Integral) and not isinstance(shape, bool):
        shape = (int(shape),)
    try:
        if isinstance(shape, (str, bytes)):
            raise TypeError
        shape = tuple(operator.index(d) for d in shape)
    except TypeError:
        raise TypeError(f"normalized_shape must be an int or a tuple of ints; got {shape!r}") \
            from None
    if not shape:
        raise ValueError("normalized_shape must name at least one trailing dimension; got ()")
    k = len(shape)
    if len(x_shape) < k or tuple(x_shape[len(x_shape) - k:]) != shape:
        raise ValueError(
            f"normalized_shape {shape} must match the trailing dimensions of x; "
            f"got x of shape {tuple(x_shape)}")
    return shape


def elementwise_param(a, name: str, shape, x_shape, dtype, default: float):
    """A layer/RMS norm parameter as a contiguous (D,) array in the compute dtype."""
    if a is None:
        return np.full(math.prod(shape), default, dtype=dtype)
    a = float_array(a, name)
    if a.shape != tuple(shape):
        raise ValueError(
            f"{name} must have normalized_shape {tuple(shape)} for x of shape {tuple(x_shape)}; "
            f"got shape {a.shape}")
    return np.ascontiguousarray(a, dtype=dtype).reshape(-1)


def stat_vector(a, name: str, shape, x_shape):
    """Saved statistics (mean, rstd) of a given shape, as contiguous float64."""
    a = float_array(a, name)
    if a.shape != tuple(shape):
        raise ValueError(
            f"{name} must have shape {tuple(shape)} for x of shape {tuple(x_shape)}; "
            f"got shape {a.shape}")
    return np.ascontiguousarray(a, dtype=np.float64).reshape(-1)


def groups(num_groups, channels: int, x_shape) -> int:
    if isinstance(num_groups, bool) or not isinstance(num_groups, numbers.Integral):
        raise TypeError(f"num_groups must be an integer; got {num_groups!r}")
    if num_groups <= 0:
        raise ValueError(f"num_groups must be positive; got {num_groups}")
    if channels % num_groups:
        raise ValueError(
            f"num_groups {num_groups} must divide the {channels} channels of x of shape "
            f"{tuple(x_shape)}")
    return int(num_groups)


def same_as_x(dy, x, name: str = "dy"):
    dy = float_array(dy, name)
    if dy.shape != x.shape:
        raise ValueError(f"{name} must have x's shape {x.shape}; got shape {dy.shape}")
    if dy.dtype != x.dtype:
        raise TypeError(f"{name} must have x's dtype {x.dtype}; got {dy.dtype}")
    return dy


def as_rows(x: np.ndarray, d: int) -> np.ndarray:
    """C-contiguous ``(1, R, D)`` view of ``x`` (a copy only when needed)."""
    xc = np.ascontiguousarray(x, dtype=compute_dtype(x.dtype))
    return xc.reshape(1, -1, d) if d else xc.reshape(1, 0, 0)


def as_groups(x: np.ndarray, axis: int):
    """C-contiguous ``(N, C, S)`` (``axis=1``) or ``(N, S, C)`` (``axis=-1``) view, and
    whether it is channels-last (2-D input counts as channels-last, ``S = 1``)."""
    n, c = x.shape[0], x.shape[axis]
    last = axis == x.ndim - 1
    xc = np.ascontiguousarray(x, dtype=compute_dtype(x.dtype))
    return (xc.reshape(n, -1, c) if last else xc.reshape(n, c, -1)), last


def group_axis(axis, x_shape) -> int:
    """Group norm's channel axis: 1 (N, C, *spatial) or -1 (N, *spatial, C)."""
    ax = channel_axis(axis, len(x_shape), x_shape)
    if ax not in (1, len(x_shape) - 1):
        raise ValueError(
            f"axis must be 1 (N, C, *spatial) or -1 (N, *spatial, C) for group norm; got {axis} "
            f"for x of shape {tuple(x_shape)}")
    return ax


def activation(activation) -> bool:
    """The fused epilogue's activation: True for ReLU, False for none."""
    if activation is None:
        return False
    if activation == "relu":
        return True
    raise ValueError(f"activation must be None or 'relu'; got {activation!r}")


def warn_skipped_update(skipped: int, channels: int) -> None:
    """The running-statistics policy for a batch whose statistics are not finite
    (both backends): those channels keep their running values, and the user is told."""
    warnings.warn(
        f"batch statistics are not finite (NaN or inf in the batch) in {skipped} of "
        f"{channels} channels; their running_mean/running_var were left unchanged",
        RuntimeWarning, stacklevel=4)
