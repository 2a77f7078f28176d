"""Validation, layout normalisation and output allocation shared by the backends.

Everything here runs in Python before any kernel starts, so a bad call raises
before a single output element or running statistic is written.
"""

import math
import numbers
import operator
import warnings

import numpy as np

from ._device import is_cuda_array  # noqa: F401  (re-exported: fastbn._checks.is_cuda_array)

FLOAT_DTYPES = (np.dtype(np.float16), np.dtype(np.float32), np.dtype(np.float64))
_NATIVE_FLOATS = frozenset(FLOAT_DTYPES)


def _host():
    from .cpu import _arrays

    return _arrays


def float_array(a, name: str, xp=None):
    """``a`` as an array of float16/32/64 on ``xp``'s device (:mod:`fastbn.cpu._arrays`,
    the default, or :mod:`fastbn.cuda._arrays`), zero-copy; else TypeError naming ``name``."""
    if type(a) is np.ndarray and a.dtype in _NATIVE_FLOATS and (xp is None or
                                                                 xp.DEVICE == "host"):
        return a  # the common case, checked in one step
    xp = xp or _host()
    if a is None:
        raise TypeError(f"{name} must be a floating-point array (float16, float32 or "
                        "float64); got None")
    if not xp.owns(a):
        where = "a GPU array" if xp.DEVICE == "host" else "a NumPy (host) array"
        raise TypeError(
            f"{name} is {where} but x is on the {xp.DEVICE}; pass all arrays on the same "
            f"device{xp.HINT}")
    a = xp.wrap(a)
    dtype = np.dtype(a.dtype)
    if dtype.kind == "f" and not dtype.isnative:
        raise TypeError(
            f"{name} has non-native byte order (dtype {dtype.str}, shape {tuple(a.shape)}); "
            f"convert it first: {name}.astype({name}.dtype.newbyteorder('='))")
    if dtype not in FLOAT_DTYPES:
        raise TypeError(
            f"{name} must be a floating-point array (float16, float32 or float64); "
            f"got dtype {dtype} with shape {tuple(a.shape)}")
    return a


def shape_of(a) -> tuple:
    """The shape of an array on either device, or of anything NumPy reads as one."""
    return tuple(a.shape) if hasattr(a, "shape") else np.shape(a)


def count(n, name: str) -> int:
    """A sample count: an integer >= 0 (ValueError/TypeError otherwise)."""
    try:
        value = operator.index(n)
    except TypeError:
        raise TypeError(f"{name} must be an integer; got {n!r}") from None
    if value < 0:
        raise ValueError(f"counts must be >= 0; got {value}")
    return int(value)


def writeable(a) -> bool:
    """Whether ``a``'s memory may be written: NumPy's flag, the read-only flag of
    ``__cuda_array_interface__``, or the flag of the array a simulator array wraps."""
    if isinstance(a, np.ndarray):
        return bool(a.flags.writeable)
    iface = getattr(a, "__cuda_array_interface__", None)
    if iface is not None:
        return not iface["data"][1]
    inner = getattr(a, "_ary", None)
    return bool(inner.flags.writeable) if isinstance(inner, np.ndarray) else True


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
    if not -ndim <= int(axis) < ndim:
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


def _shaped(a, name: str, shape, xp, requirement):
    """``a`` (on ``xp``'s device, a float dtype) with exactly ``shape``, or ValueError
    whose message ends with ``requirement()``; None stays None."""
    if a is None:
        return None
    a = float_array(a, name, xp)
    if tuple(a.shape) != tuple(shape):
        raise ValueError(f"{name} must have {requirement()}; got shape {tuple(a.shape)}")
    return a


def channel_vector(a, name: str, channels: int, x_shape, xp=None):
    """A per-channel parameter or statistic of shape (C,), validated (None stays None)."""
    return _shaped(a, name, (channels,), xp, lambda: (
        f"shape ({channels},) for x of shape {tuple(x_shape)} with {channels} channels"))


def running_stats(running_mean, running_var, channels: int, x_shape, *, required: bool,
                  xp=None):
    """Check the running statistics (both or neither; writeable when they will be updated)."""
    xp = xp or _host()
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
        if not hasattr(a, "shape"):
            raise TypeError(f"{name} is updated in place, so it must be an array on x's "
                            f"device; got {type(a).__name__}")
        channel_vector(a, name, channels, x_shape, xp)
        if not required and not writeable(a):
            raise ValueError(f"{name} is read-only but must be updated in place in training")


def output(out, shape, dtype, name: str = "out", xp=None):
    """``out`` (x's shape and dtype, writeable, on x's device), or None."""
    if out is None:
        return None
    xp = xp or _host()
    if not hasattr(out, "shape"):
        raise TypeError(f"{name} is written in place, so it must be an array on x's device; "
                        f"got {type(out).__name__}")
    d = float_array(out, name, xp)
    if tuple(d.shape) != tuple(shape) or d.dtype != dtype:
        raise ValueError(
            f"{name} must have shape {tuple(shape)} and dtype {dtype}; "
            f"got shape {tuple(d.shape)} and dtype {d.dtype}")
    if not writeable(out):
        raise ValueError(f"{name} is read-only")
    return d


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
    if type(a) is np.ndarray and type(b) is np.ndarray:
        return bool(np.may_share_memory(a, b))  # the same bounds test, in C
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


def as_3d(x, axis: int, xp=None):
    """C-contiguous ``(A, C, B)`` view in the compute dtype (a copy only for strided or
    float16 input, made on x's device)."""
    xp = xp or _host()
    shape = tuple(x.shape)
    a = math.prod(shape[:axis])
    b = math.prod(shape[axis + 1:])
    xc = xp.contiguous(x, compute_dtype(x.dtype))
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


def result_buffer(xp, out, x3, src, *inputs):
    """Where a kernel writes a result shaped like ``x3``: ``out`` itself when its
    memory can take the kernel's layout and dtype directly and the kernel cannot
    read what it has written, else a new array on x's device (that
    :func:`deliver` copies into ``out`` once the kernel has read every input).

    ``src`` may be ``out`` itself (the kernels read each element of ``src``
    before they write that element of the result: ``out=x`` works in place) but
    must not partly overlap it; ``inputs`` (``None`` allowed) must not overlap
    ``out`` at all.  Pointer ranges decide, on the host and on the device alike.
    """
    if (out is not None and out.dtype == x3.dtype and xp.is_contiguous(out)
            and (src is None or not may_overlap(out, src) or same_array(out, src))
            and not any(may_overlap(out, a) for a in inputs)):
        return out.reshape(x3.shape)
    return xp.empty(x3.shape, x3.dtype)


def deliver(xp, buf, out, shape, dtype):
    """The result in the caller's shape and dtype, written into ``out`` if given (a
    copy only when the kernel wrote a temporary)."""
    if out is not None:
        if not may_overlap(buf, out):
            xp.copy(buf.reshape(shape), out)
        return out
    return xp.cast(buf.reshape(shape), dtype)


def normalized_shape(shape, x_shape) -> tuple:
    """``normalized_shape`` as a tuple matching the trailing dims of ``x``."""
    if not isinstance(shape, bool) and isinstance(shape, numbers.Integral):
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


def elementwise_param(a, name: str, shape, x_shape, xp=None):
    """A layer/RMS norm parameter of ``normalized_shape``, validated (None stays None)."""
    return _shaped(a, name, shape, xp, lambda: (
        f"normalized_shape {tuple(shape)} for x of shape {tuple(x_shape)}"))


def stat_vector(a, name: str, shape, x_shape, xp=None):
    """Saved statistics (mean, rstd) of a given shape, validated."""
    if a is None:
        raise TypeError(f"{name} must be a floating-point array (float16, float32 or "
                        "float64); got None")
    return _shaped(a, name, shape, xp,
                   lambda: f"shape {tuple(shape)} for x of shape {tuple(x_shape)}")


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


def same_as_x(dy, x, name: str = "dy", xp=None):
    """An input with x's shape and dtype, on x's device."""
    dy = float_array(dy, name, xp)
    if tuple(dy.shape) != tuple(x.shape):
        raise ValueError(f"{name} must have x's shape {tuple(x.shape)}; got shape "
                         f"{tuple(dy.shape)}")
    if dy.dtype != x.dtype:
        raise TypeError(f"{name} must have x's dtype {x.dtype}; got {dy.dtype}")
    return dy


def as_rows(x, d: int, xp=None):
    """C-contiguous ``(1, R, D)`` view of ``x`` in the compute dtype."""
    xp = xp or _host()
    xc = xp.contiguous(x, compute_dtype(x.dtype))
    return xc.reshape(1, xc.size // d if d else 0, d)


def as_groups(x, axis: int, xp=None):
    """C-contiguous ``(N, C, S)`` (``axis=1``) or ``(N, S, C)`` (``axis=-1``) view, and
    whether it is channels-last (2-D input counts as channels-last, ``S = 1``)."""
    xp = xp or _host()
    n, c = x.shape[0], x.shape[axis]
    last = axis == len(x.shape) - 1
    xc = xp.contiguous(x, compute_dtype(x.dtype))
    s = xc.size // (n * c)
    return (xc.reshape(n, s, c) if last else xc.reshape(n, c, s)), last


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


def mask(mask, x_shape, axis: int):
    """A batch-norm ``mask`` checked against x: a bool array of x's shape without the
    channel axis ``axis`` (0..ndim-1), on the host or the device.  Returns it as a host
    bool ``(A, B)`` array (the 3-D view's rows without the channel), or None when every
    position is True (the unmasked call).  TypeError for a non-bool mask, ValueError for
    a wrong shape, both naming ``mask``."""
    if mask is None:
        return None
    x_shape = tuple(x_shape)
    expected = x_shape[:axis] + x_shape[axis + 1:]
    arr = mask if is_cuda_array(mask) else np.asarray(mask)
    if np.dtype(arr.dtype) != np.bool_:
        raise TypeError(f"mask must be a bool array of shape {expected} (x of shape {x_shape} "
                        f"without axis {axis}); got dtype {arr.dtype} with shape "
                        f"{tuple(arr.shape)}")
    if tuple(arr.shape) != expected:
        raise ValueError(f"mask must have x's shape without the channel axis, {expected} for x "
                         f"of shape {x_shape} and axis {axis}; got mask of shape "
                         f"{tuple(arr.shape)}")
    if is_cuda_array(mask):
        arr = mask.copy_to_host()  # 1/C of x's size, as bytes: the kernels need counts
    if arr.all():
        return None
    a = math.prod(x_shape[:axis])
    return np.ascontiguousarray(arr).reshape(a, math.prod(x_shape[axis + 1:]))


def masked_count(mask2, x_shape, axis: int) -> int:
    """The valid values per channel of a training call with ``mask2`` (from :func:`mask`);
    ValueError when fewer than 2."""
    valid = int(np.count_nonzero(mask2))
    if valid < 2:
        raise ValueError(
            "expected more than 1 valid value per channel when training; got a mask with "
            f"{valid} True position(s) for x of shape {tuple(x_shape)} and axis {axis}")
    return valid
