"""The stateless public API: validate, allocate, dispatch to a backend.

Conventions shared by every function (see the README's "Conventions"):

* ``axis`` is the channel axis: 1 for ``(N, C, *spatial)``, -1 for
  channels-last ``(N, *spatial, C)``.
* Outputs keep x's dtype.  float32 and float64 are native; float16 is
  computed in float32.  ``mean``, ``rstd`` and parameter gradients are float64
  for float64 input and float32 otherwise.
* ``rstd = 1 / sqrt(var + eps)`` with the biased (``1/m``) variance.
* Bad input raises ``ValueError``/``TypeError`` before anything is written.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from types import ModuleType
from typing import Any, NamedTuple, SupportsIndex, TypeAlias

import numpy as np

from . import _checks
from ._device import is_cuda_array
from .cpu import _arrays as _cpu_arrays
from .cpu import _masked as _cpu_masked
from .cpu import batch_norm as _cpu_bn
from .cpu import group_norm as _cpu_gn
from .cpu import layer_norm as _cpu_ln
from .cpu import moments as _cpu_moments

__all__ = [
    "batch_norm",
    "batch_norm_backward",
    "moments",
    "merge_moments",
    "moments_to_stats",
    "layer_norm",
    "layer_norm_backward",
    "rms_norm",
    "rms_norm_backward",
    "group_norm",
    "group_norm_backward",
    "instance_norm",
    "instance_norm_backward",
]

#: The static type of every array argument and result: a NumPy array (or anything
#: ``np.asarray`` takes) on the host; on the GPU a device array (anything with
#: ``__cuda_array_interface__``), results being numba device arrays.  It is ``Any``
#: because the two share no static type and numba-cuda is optional.
Array: TypeAlias = Any

#: A ``(count, mean, m2)`` triple, as :func:`moments` returns it (and, with any
#: integer count, as :func:`merge_moments` takes it).
Moments: TypeAlias = tuple[int, Array, Array]
_MomentsIn: TypeAlias = tuple[SupportsIndex, Array, Array]


class _Backend(NamedTuple):
    """One backend's modules.  :mod:`fastbn.cpu` and :mod:`fastbn.cuda` mirror each
    other: the same module names, and in each the same functions with the same
    signatures, which only compute on inputs validated and prepared here."""

    arrays: ModuleType  # the array primitives (wrap, empty, contiguous, copy, ...)
    batch_norm: ModuleType  # moments, forward_train, update_running, inference, backward
    group_norm: ModuleType  # forward, backward
    layer_norm: ModuleType  # forward, backward (layer norm and RMS norm)
    moments: ModuleType  # merge, to_stats


_CPU = _Backend(_cpu_arrays, _cpu_bn, _cpu_gn, _cpu_ln, _cpu_moments)
_CUDA: list[_Backend] = []


def _cuda() -> _Backend:
    """The GPU backend, imported on first use (never at ``import fastbn``)."""
    if not _CUDA:
        import importlib

        try:
            modules = [importlib.import_module(f"fastbn.cuda.{name}")
                       for name in ("_arrays", *_Backend._fields[1:])]
        except ImportError as exc:
            raise ImportError(
                "fastbn got GPU arrays, but its CUDA backend needs numba-cuda: "
                "pip install 'fastbn[cuda]' (pip install numba-cuda)") from exc
        _CUDA.append(_Backend(*modules))
    from .cuda import _require_gpu

    _require_gpu()
    return _CUDA[0]


def _backend(*arrays) -> _Backend:
    """The backend of a call: the GPU when any of ``arrays`` is a device array (x for
    the ops), else the CPU.  Arrays on the other device are refused by validation."""
    return _cuda() if any(is_cuda_array(a) for a in arrays) else _CPU


# --- the fast path ------------------------------------------------------------------
# The common call (host, C-contiguous float32/float64 x, matching contiguous
# parameters, float eps and momentum, no out=, residual or activation) skips the
# general preparation.  These checks only decide that such a call is valid and
# needs no conversion; every other call, valid or not, takes the general path,
# which validates (and raises) as documented.  Both run the same kernels on the
# same arrays, so results are identical (tests/test_fast_path.py).

_FAST_DTYPES = frozenset((np.dtype(np.float32), np.dtype(np.float64)))
_cpu_param = _cpu_arrays.param
_cpu_elementwise = _cpu_arrays.elementwise


def _plain(a, shape, dtypes) -> bool:
    """``a`` is None or a C-contiguous host array of ``shape`` with a dtype in ``dtypes``."""
    return a is None or (type(a) is np.ndarray and a.shape == shape and a.dtype in dtypes
                         and a.flags.c_contiguous)


def _plain_x(x) -> bool:
    return (type(x) is np.ndarray and x.dtype in _FAST_DTYPES and x.flags.c_contiguous
            and x.size > 0)


def _fast_eps(eps) -> bool:
    return type(eps) is float and 0.0 < eps < math.inf


def _fast_axis(axis, ndim):
    """The channel axis as 0..ndim-1, or None to take the general path."""
    if type(axis) is not int or ndim < 2 or not -ndim <= axis < ndim:
        return None
    return axis + ndim if axis < 0 else axis


def _fast_running(rm, rv, c, x, weight, bias, training, momentum) -> bool:
    """Running statistics the fast path can use: both None (training only), or both
    contiguous float32/float64 (C,) arrays, writeable and apart from everything in
    training; and a float momentum in [0, 1] (anything else takes the general path,
    which validates it)."""
    if type(momentum) is not float or not 0.0 <= momentum <= 1.0:
        return False
    if rm is None and rv is None:
        return training
    shape = (c,)
    if rm is None or rv is None or not (_plain(rm, shape, _FAST_DTYPES)
                                        and _plain(rv, shape, _FAST_DTYPES)):
        return False
    if not training:
        return True
    return rm.flags.writeable and rv.flags.writeable and not any(
        np.may_share_memory(s, o) for s in (rm, rv)
        for o in (x, weight, bias, rv if s is rm else None) if o is not None)


def _fast_batch_norm(x, weight, bias, running_mean, running_var, training, momentum, eps,
                     axis):
    shape = x.shape
    ax = _fast_axis(axis, len(shape))
    if ax is None:
        return None
    c = shape[ax]
    m = x.size // c
    if (training and m <= 1) or not (_plain(weight, (c,), (x.dtype,))
                                     and _plain(bias, (c,), (x.dtype,))):
        return None
    if not _fast_running(running_mean, running_var, c, x, weight, bias, training, momentum):
        return None
    x3 = x.reshape(m // (b := math.prod(shape[ax + 1:])), c, b)
    y3 = np.empty_like(x3)
    sdtype = _checks.stats_dtype(x.dtype)
    small = training and _cpu_bn.small_columns(x3)
    if small or not training:
        # parameters in x's dtype, uncopied: the kernels widen them exactly
        w = _cpu_elementwise(None, c, 1.0, x.dtype) if weight is None else weight
        bk = _cpu_elementwise(None, c, 0.0, x.dtype) if bias is None else bias
        mean, rstd = np.empty(c, sdtype), np.empty(c, sdtype)
        if not training:
            _cpu_bn.inference(x3, running_mean, running_var, eps, w, bk, y3, mean, rstd)
            return y3.reshape(shape), mean, rstd
        skipped = _cpu_bn.train_small(x3, w, bk, eps, momentum, y3, mean, rstd, running_mean,
                                      running_var)
        if skipped:
            _checks.warn_skipped_update(skipped, c)
        return y3.reshape(shape), mean, rstd
    w = _cpu_param(weight, c, 1.0, None)
    bk = _cpu_param(bias, c, 0.0, None)
    mean, m2, rstd = _cpu_bn.forward_train(x3, w, bk, eps, y3)
    if running_mean is not None:
        _update_running(running_mean, running_var, mean, m2, m, momentum, _CPU)
    return y3.reshape(shape), mean.astype(sdtype, copy=False), rstd.astype(sdtype, copy=False)


def _fast_batch_norm_backward(dy, x, mean, rstd, weight, training, axis):
    shape = x.shape
    ax = _fast_axis(axis, len(shape))
    if (ax is None or type(dy) is not np.ndarray or dy.shape != shape or dy.dtype != x.dtype
            or not dy.flags.c_contiguous):
        return None
    c = shape[ax]
    if not (_plain(mean, (c,), _FAST_DTYPES) and mean is not None
            and _plain(rstd, (c,), _FAST_DTYPES) and rstd is not None
            and _plain(weight, (c,), (x.dtype,))):
        return None
    b = math.prod(shape[ax + 1:])
    x3 = x.reshape(x.size // (c * b), c, b)
    dx3 = np.empty_like(x3)
    if _cpu_bn.small_columns(x3):
        sdtype = _checks.stats_dtype(x.dtype)
        dweight, dbias = np.empty(c, sdtype), np.empty(c, sdtype)
        _cpu_bn.backward_small(
            dy.reshape(x3.shape), x3, mean, rstd,
            _cpu_elementwise(None, c, 1.0, x.dtype) if weight is None else weight,
            bool(training), dx3, dweight, dbias)
        return dx3.reshape(shape), dweight, dbias
    dweight, dbias = _cpu_bn.backward(
        dy.reshape(x3.shape), x3, mean, rstd,
        _cpu_elementwise(None, c, 1.0, x.dtype) if weight is None else weight, bool(training),
        dx3)
    sdtype = _checks.stats_dtype(x.dtype)
    return dx3.reshape(shape), dweight.astype(sdtype, copy=False), dbias.astype(sdtype,
                                                                                copy=False)


def _fast_rows_forward(x, normalized_shape, weight, bias, eps, center):
    if x.ndim == 0:
        return None
    d = x.shape[-1]
    if type(normalized_shape) is not int or normalized_shape != d or not (
            _plain(weight, (d,), (x.dtype,)) and _plain(bias, (d,), (x.dtype,))):
        return None
    x3 = x.reshape(1, x.size // d, d)
    y3 = np.empty_like(x3)
    mean, rstd = _cpu_ln.forward(  # statistics come back in their dtype
        x3, _cpu_elementwise(None, d, 1.0, x.dtype) if weight is None else weight,
        _cpu_elementwise(None, d, 0.0, x.dtype) if bias is None else bias, eps, center, y3)
    lead = x.shape[:-1]
    return y3.reshape(x.shape), mean.reshape(lead), rstd.reshape(lead)


def _fast_rows_backward(dy, x, normalized_shape, mean, rstd, weight, center):
    if x.ndim == 0:
        return None
    d = x.shape[-1]
    lead = x.shape[:-1]
    if (type(normalized_shape) is not int or normalized_shape != d or type(dy) is not np.ndarray
            or dy.shape != x.shape or dy.dtype != x.dtype or not dy.flags.c_contiguous
            or not _plain(weight, (d,), (x.dtype,)) or rstd is None
            or not _plain(rstd, lead, _FAST_DTYPES)
            or (center and (mean is None or not _plain(mean, lead, _FAST_DTYPES)))):
        return None
    r = x.size // d
    x3 = x.reshape(1, r, d)
    dx3 = np.empty_like(x3)
    dweight, dbias = _cpu_ln.backward(
        dy.reshape(x3.shape), x3, _cpu_param(mean if center else None, r, 0.0, None),
        _cpu_param(rstd, r, None, None), _cpu_elementwise(weight, d, 1.0, x.dtype), center, dx3)
    sdtype = _checks.stats_dtype(x.dtype)
    return (dx3.reshape(x.shape), dweight.astype(sdtype, copy=False),
            dbias.astype(sdtype, copy=False))


def _channel_input(x, axis):
    """x validated on its backend: ``(backend, x, shape, channel axis, C, values per
    channel)``."""
    be = _backend(x)
    x = _checks.float_array(x, "x", be.arrays)
    shape = tuple(x.shape)
    ax = _checks.channel_axis(axis, len(shape), shape)
    c = shape[ax]
    return be, x, shape, ax, c, (math.prod(shape) // c if c else 0)


def batch_norm(
    x: Array,
    weight: Array | None = None,
    bias: Array | None = None,
    running_mean: Array | None = None,
    running_var: Array | None = None,
    *,
    training: bool = True,
    momentum: float = 0.1,
    eps: float = 1e-5,
    axis: int = 1,
    out: Array | None = None,
    activation: str | None = None,
    residual: Array | None = None,
    mask: Array | None = None,
) -> tuple[Array, Array, Array]:
    r"""Batch normalization over every axis of ``x`` but the channel axis.

    Parameters
    ----------
    x : ndarray, shape ``(N, C, *spatial)`` for ``axis=1`` or ``(N, *spatial, C)`` for ``axis=-1``
        Input, float16/32/64, any ndim >= 2, any strides.
    weight, bias : ndarray of shape (C,), optional
        Per-channel scale (gamma) and shift (beta); ``None`` means 1 and 0.
    running_mean, running_var : ndarray of shape (C,), optional
        Training: updated in place if given (both or neither), so they must
        not share memory with any other argument (ValueError).  Inference:
        required, used as the statistics and left untouched.
    training : bool
        Normalize with the batch's statistics (True) or the running ones.
    momentum : float in [0, 1]
        ``running = (1 - momentum) * running + momentum * batch``.  Keras'
        ``momentum=k`` is ``1 - k`` here (Keras 0.99 -> 0.01).
    eps : float > 0
        Added to the variance before the square root.
    axis : int
        The channel axis.
    out : ndarray, optional
        Where to write y (x's shape and dtype, writeable).  ``out=x`` is
        computed in place.  An ``out`` that overlaps x partly, or residual,
        weight or bias, is computed into a temporary and then copied, so the
        result is exact; one that overlaps a running statistic is refused.
    activation : {None, "relu"}
        Fused epilogue: ``y = act(bn(x) + residual)`` in the same pass over
        memory (the tutorial's Dense -> BN -> ReLU placement).
    residual : ndarray, optional
        Added before the activation (residual blocks); x's shape and dtype.
    mask : ndarray of bool, optional
        Padded sequences (Keras 3's ``mask=``): x's shape without the channel
        axis, True at the positions that count.  In training the statistics and
        the running update (unbiased with the valid count) use those positions
        only, and y is computed at every position.  Inference ignores it.  All
        True is the unmasked call.

    Returns
    -------
    y : ndarray
        Same shape and dtype as ``x``.
    mean, rstd : ndarray of shape (C,)
        The statistics used: ``rstd = 1 / sqrt(var + eps)`` with the biased
        variance in training; ``(running_mean, 1 / sqrt(running_var + eps))``
        in inference.  float64 for float64 x, float32 otherwise.

    Raises
    ------
    TypeError
        Non-float ``x`` or parameters.
    ValueError
        ndim < 2, axis out of range, parameter or running-stat shapes that do not
        match ``C``, eps <= 0, momentum outside [0, 1], one value per channel in
        training, running statistics missing in inference or read-only in
        training, ``out`` of the wrong shape/dtype or read-only, a ``mask`` of the
        wrong shape or with fewer than 2 True positions in training.

    Notes
    -----
    Training, per channel with ``m`` values:

    .. math::

        \mu = \frac{1}{m}\sum x,\quad \sigma^2 = \frac{1}{m}\sum (x-\mu)^2,\quad
        y = \gamma \frac{x-\mu}{\sqrt{\sigma^2+\epsilon}} + \beta

    and the running variance receives the *unbiased* ``m / (m - 1) * var``
    (PyTorch's convention).  Statistics are accumulated in float64 from
    shifted sums merged with Chan's formula, so large offsets are harmless;
    a constant channel gives ``y = beta``.

    Examples
    --------
    >>> import numpy as np, fastbn
    >>> x = np.random.default_rng(0).normal(5, 2, (32, 16, 8, 8)).astype(np.float32)
    >>> rm, rv = np.zeros(16, np.float32), np.ones(16, np.float32)
    >>> y, mean, rstd = fastbn.batch_norm(x, running_mean=rm, running_var=rv)
    >>> bool(abs(y.mean()) < 1e-5)
    True
    """
    if (_plain_x(x) and out is None and residual is None and activation is None
            and mask is None and _fast_eps(eps)):
        fast = _fast_batch_norm(x, weight, bias, running_mean, running_var, training, momentum,
                                eps, axis)
        if fast is not None:
            return fast
    be, x, shape, ax, c, m = _channel_input(x, axis)
    xp = be.arrays
    w = _checks.channel_vector(weight, "weight", c, shape, xp)
    b = _checks.channel_vector(bias, "bias", c, shape, xp)
    _checks.running_stats(running_mean, running_var, c, shape, required=not training, xp=xp)
    eps = _checks.positive_eps(eps)
    momentum = _checks.unit_momentum(momentum)
    if training and m <= 1:
        raise ValueError(
            "expected more than 1 value per channel when training; "
            f"got x of shape {shape} with {c} channels along axis {axis}")
    mask2 = _masked(mask, shape, ax, training, be)
    valid = _checks.masked_count(mask2, shape, axis) if mask2 is not None else m
    out = _checks.output(out, shape, x.dtype, xp=xp)
    relu = _checks.activation(activation)
    res = None if residual is None else _checks.same_as_x(residual, x, "residual", xp)
    rm, rv = (None if a is None else xp.wrap(a) for a in (running_mean, running_var))
    _checks.refuse_running_overlap(training, x, w, b, rm, rv, res, out)

    sdtype = _checks.stats_dtype(x.dtype)
    cdtype = _checks.compute_dtype(x.dtype)
    x3 = _checks.as_3d(x, ax, xp)
    y3 = _checks.result_buffer(xp, out, x3, x, res, w, b)
    res3 = None if res is None else _checks.as_3d(res, ax, xp)
    wk, bk = xp.param(w, c, 1.0, cdtype), xp.param(b, c, 0.0, cdtype)
    if not training:
        mean, rstd = xp.empty(c, sdtype), xp.empty(c, sdtype)
        assert rm is not None and rv is not None  # running_stats(required=True) checked them
        rm, rv = (xp.contiguous(a, np.float32) if a.dtype == np.float16 else a  # read as float32
                  for a in (rm, rv))
        be.batch_norm.inference(x3, rm, rv, eps, wk, bk, y3, mean, rstd, res3, relu)
        return _checks.deliver(xp, y3, out, shape, x.dtype), mean, rstd
    if mask2 is not None:
        mean, m2, rstd = _masked_kernels(be).forward_train(x3, mask2, wk, bk, eps, y3, res3,
                                                           relu)
    else:
        mean, m2, rstd = be.batch_norm.forward_train(x3, wk, bk, eps, y3, res3, relu)
    if rm is not None:
        _update_running(rm, rv, mean, m2, valid, momentum, be)
    return (_checks.deliver(xp, y3, out, shape, x.dtype), xp.cast(mean, sdtype),
            xp.cast(rstd, sdtype))


def _masked(mask, shape, ax, training, be):
    """The validated mask as host bool (A, B), or None where it changes nothing
    (absent, all True, or inference)."""
    mask2 = _checks.mask(mask, shape, ax)
    if mask2 is None or not training:
        return None
    return mask2


def _masked_kernels(be):
    """The masked batch-norm kernels of the backend: ``forward_train`` and ``backward``."""
    if be is _CPU:
        return _cpu_masked
    from .cuda import masked

    return masked


def _masked_moments(x, mask, axis: int) -> tuple[int, np.ndarray, np.ndarray]:
    """The local ``(count, mean, m2)`` (float64) of a masked call's valid positions, for
    synchronized batch norm; ``mask`` checked by :func:`_checks.mask` (host arrays)."""
    be, xv, shape, ax, c, _ = _channel_input(x, axis)
    if be is not _CPU or _checks.is_cuda_array(mask):
        raise TypeError("mask= is not supported on CUDA arrays in synchronized batch norm: "
                        "pass NumPy arrays")
    valid = np.moveaxis(np.asarray(xv), ax, -1)[np.asarray(mask, dtype=bool)]  # (mv, C)
    return moments(valid, axis=1)


def _masked_backward(dy, x, mask, mean, rstd, weight, axis: int, comm_sums):
    """Synchronized masked backward on the host: ``comm_sums(local) -> (global, mv)``
    all-reduces the (2, C) float64 sums and returns the global valid count; returns
    ``(dx, dweight, dbias)`` (this rank's share of dweight and dbias)."""
    be, xv, shape, ax, c, count = _channel_input(x, axis)
    xp = be.arrays
    cdtype = _checks.compute_dtype(xv.dtype)
    sdtype = _checks.stats_dtype(xv.dtype)
    mask2 = np.ascontiguousarray(np.asarray(mask, dtype=bool)).reshape(
        math.prod(shape[:ax]), math.prod(shape[ax + 1:]))
    if count:
        x3 = _checks.as_3d(xv, ax, xp)
        dy3 = _checks.as_3d(dy, ax, xp)
        mean_k = xp.param(mean, c, None, cdtype)
        sdy, sdxc = be.batch_norm.grad_sums(dy3, x3, mean_k)
        local = np.stack([sdy, sdxc]).astype(np.float64)
    else:
        local = np.zeros((2, c))
    summed, valid = comm_sums(local)
    rstd64 = np.asarray(rstd, np.float64)
    dweight = (local[1] * rstd64).astype(sdtype)
    dbias = local[0].astype(sdtype)
    if not count:
        return np.zeros(shape, xv.dtype), dweight, dbias
    dx3 = np.empty(x3.shape, x3.dtype)
    _cpu_masked.backward_apply(dy3, x3, mask2, valid, mean_k, xp.param(rstd, c, None, cdtype),
                               xp.param(weight, c, 1.0, cdtype), summed[0], summed[1], dx3)
    return dx3.reshape(shape).astype(xv.dtype, copy=False), dweight, dbias


def _update_running(running_mean, running_var, mean, m2, m, momentum, be=None):
    """In place, PyTorch's rule with the unbiased variance, on the statistics' device.

    Channels whose batch statistics are not finite (NaN or inf in the batch)
    keep their running values, with a RuntimeWarning: one bad batch must not
    poison the statistics used at inference.  (PyTorch updates them to NaN.)
    """
    be = be or _backend(running_mean)
    skipped = be.batch_norm.update_running(running_mean, running_var, mean, m2, m, momentum)
    if skipped:
        _checks.warn_skipped_update(skipped, mean.shape[0])


def batch_norm_backward(
    dy: Array,
    x: Array,
    mean: Array,
    rstd: Array,
    weight: Array | None = None,
    *,
    training: bool = True,
    axis: int = 1,
    activation: str | None = None,
    y: Array | None = None,
    dresidual: Array | None = None,
    mask: Array | None = None,
) -> tuple[Array, Array, Array]:
    r"""Gradients of :func:`batch_norm` with respect to x, weight and bias.

    Parameters
    ----------
    dy : ndarray
        Gradient of the loss with respect to y; x's shape and dtype.
    x : ndarray
        The forward input.
    mean, rstd : ndarray of shape (C,)
        The statistics returned by the forward call (never recomputed).
    weight : ndarray of shape (C,), optional
        The forward's weight; ``None`` means 1.
    training : bool
        True: the full gradient through the batch statistics.  False: the
        frozen-statistics gradient ``dx = dy * weight * rstd``.
    axis : int
        The channel axis used in the forward call.
    activation : {None, "relu"}
        The forward's fused activation; ``"relu"`` needs ``y``.
    y : ndarray, optional
        The forward's saved output: ``dy`` is masked by ``y > 0`` on the fly.
    dresidual : ndarray, optional
        If given (x's shape and dtype, writeable), receives the gradient with
        respect to the forward's ``residual`` (``dy`` after the activation's
        mask), written in the same pass as ``dx``.  It may be ``dy`` itself or
        overlap any input: then it is written to a temporary first and copied
        once every input has been read.
    mask : ndarray of bool, optional
        The forward's ``mask``: in training the exact gradient of the masked
        statistics (a padded position gets ``dy * weight * rstd``); ignored
        when ``training=False``.

    Returns
    -------
    dx : ndarray
        x's shape and dtype.
    dweight, dbias : ndarray of shape (C,)
        ``sum(dy * xhat)`` and ``sum(dy)`` over every axis but ``axis``, always
        returned (as if weight=1, bias=0 when None); float64 for float64 x,
        float32 otherwise.

    Notes
    -----
    With ``xhat = (x - mean) * rstd``, ``dy_hat = dy * weight`` and ``m``
    values per channel:

    .. code-block:: text

        c1 = sum(dy_hat * xhat) / m
        c2 = sum(dy_hat) / m
        dx = (dy_hat - (xhat * c1 + c2)) * rstd

    One pass reads x and dy for both sums, a second writes dx (from cache
    when a channel fits).
    """
    if _plain_x(x) and activation is None and y is None and dresidual is None and mask is None:
        fast = _fast_batch_norm_backward(dy, x, mean, rstd, weight, training, axis)
        if fast is not None:
            return fast
    be, x, shape, ax, c, _ = _channel_input(x, axis)
    xp = be.arrays
    dy = _checks.same_as_x(dy, x, "dy", xp)
    mean = _checks.stat_vector(mean, "mean", (c,), shape, xp)
    rstd = _checks.stat_vector(rstd, "rstd", (c,), shape, xp)
    w = _checks.channel_vector(weight, "weight", c, shape, xp)
    relu = _checks.activation(activation)
    if relu and y is None:
        raise ValueError("activation='relu' needs y, the forward's saved output, for the mask")
    y = None if y is None else _checks.same_as_x(y, x, "y", xp)
    dres = _checks.output(dresidual, shape, x.dtype, "dresidual", xp)
    mask2 = _masked(mask, shape, ax, training, be)
    valid = _checks.masked_count(mask2, shape, axis) if mask2 is not None else 0
    sdtype = _checks.stats_dtype(x.dtype)
    if x.size == 0:
        return (xp.full(shape, 0.0, x.dtype), xp.full(c, 0.0, sdtype),
                xp.full(c, 0.0, sdtype))

    cdtype = _checks.compute_dtype(x.dtype)
    x3 = _checks.as_3d(x, ax, xp)
    dy3 = _checks.as_3d(dy, ax, xp)
    y3 = None if y is None else _checks.as_3d(y, ax, xp)
    dx3 = xp.empty(x3.shape, x3.dtype)
    # The kernels write dresidual before they read x: any overlap goes through a copy.
    dres3 = None if dres is None else _checks.result_buffer(xp, dres, x3, None, x, dy, y, mean,
                                                            rstd, w)
    if mask2 is not None:
        dweight, dbias = _masked_kernels(be).backward(
            dy3, x3, mask2, valid, xp.param(mean, c, None, cdtype),
            xp.param(rstd, c, None, cdtype), xp.param(w, c, 1.0, cdtype), dx3, y3, relu, dres3)
    else:
        dweight, dbias = be.batch_norm.backward(
            dy3, x3, xp.param(mean, c, None, cdtype), xp.param(rstd, c, None, cdtype),
            xp.param(w, c, 1.0, cdtype), bool(training), dx3, y3, relu, dres3)
    if dres is not None:
        _checks.deliver(xp, dres3, dres, shape, x.dtype)
    return (xp.cast(dx3.reshape(shape), x.dtype), xp.cast(dweight, sdtype),
            xp.cast(dbias, sdtype))


def moments(x: Array, axis: int = 1) -> Moments:
    """Per-channel ``(count, mean, m2)``: ``m2`` is the sum of squared deviations.

    The mergeable form of the statistics: :func:`merge_moments` combines the
    moments of two pieces of a batch into those of the whole (Chan's formula),
    and :func:`moments_to_stats` turns them into ``(mean, rstd, unbiased_var)``.
    ``mean`` and ``m2`` are float64 whatever x's dtype.  A device array gives
    device results (``count`` an int, ``mean``/``m2`` float64 device arrays), and
    :func:`merge_moments`/:func:`moments_to_stats` take and return device arrays.
    """
    be, x, shape, ax, c, count = _channel_input(x, axis)
    xp = be.arrays
    if count == 0:
        return 0, xp.full(c, 0.0, np.float64), xp.full(c, 0.0, np.float64)
    mean, m2 = be.batch_norm.moments(_checks.as_3d(x, ax, xp))
    return count, mean, m2


def merge_moments(a: _MomentsIn, b: _MomentsIn) -> Moments:
    """Chan's exact merge of two ``(count, mean, m2)`` triples; either may be empty.

    ``delta = mean_b - mean_a``, ``n = n_a + n_b``,
    ``mean = mean_a + delta * n_b / n``, ``m2 = m2_a + m2_b + delta**2 * n_a * n_b / n``.
    """
    na, mean_a, m2_a = a
    nb, mean_b, m2_b = b
    be = _backend(mean_a, m2_a, mean_b, m2_b)
    xp = be.arrays
    shapes = [_checks.shape_of(v) for v in (mean_a, m2_a, mean_b, m2_b)]
    if shapes[0] != shapes[2] or shapes[0] != shapes[1] or shapes[2] != shapes[3]:
        raise ValueError(f"moments to merge must have the same shape; got {shapes[0]} "
                         f"and {shapes[2]}")
    na, nb = _checks.count(na, "count"), _checks.count(nb, "count")
    shape = shapes[0]
    k = math.prod(shape)

    def part(mean, m2, tag):
        return [xp.param(_checks.float_array(v, name + tag, xp), k, None, np.float64)
                for v, name in ((mean, "mean"), (m2, "m2"))]

    if na == 0 and nb == 0:
        return 0, xp.full(shape, 0.0, np.float64), xp.full(shape, 0.0, np.float64)
    if na == 0 or nb == 0:
        n, mean, m2 = (na, mean_a, m2_a) if nb == 0 else (nb, mean_b, m2_b)
        return n, *(xp.copy(v.reshape(shape), xp.empty(shape, np.float64))
                    for v in part(mean, m2, "_a" if nb == 0 else "_b"))
    mean, m2 = be.moments.merge(na, *part(mean_a, m2_a, "_a"), nb, *part(mean_b, m2_b, "_b"))
    return na + nb, mean.reshape(shape), m2.reshape(shape)


def moments_to_stats(count: SupportsIndex, mean: Array, m2: Array,
                     eps: float = 1e-5) -> tuple[Array, Array, Array]:
    """``(mean, rstd, unbiased_var)`` from moments: ``rstd = 1/sqrt(m2/count + eps)``.

    ``unbiased_var = m2 / (count - 1)`` (the running-variance convention); it
    is NaN for a count of 1.
    """
    be = _backend(mean, m2)
    xp = be.arrays
    eps = _checks.positive_eps(eps)
    count = _checks.count(count, "count")
    if count <= 0:
        raise ValueError(f"count must be positive; got {count}")
    mean = _checks.float_array(mean, "mean", xp)
    m2 = _checks.float_array(m2, "m2", xp)
    shape = tuple(m2.shape)
    if tuple(mean.shape) != shape:
        raise ValueError(f"mean and m2 must have the same shape; got {tuple(mean.shape)} "
                         f"and {shape}")
    k = math.prod(shape)
    flat = [xp.param(v, k, None, np.float64) for v in (mean, m2)]
    return tuple(v.reshape(shape) for v in be.moments.to_stats(count, *flat, eps))


# --- layer norm and RMS norm -----------------------------------------------------------


def _rows_forward(x, normalized_shape, weight, bias, eps, out, center):
    """Shared body of :func:`layer_norm` and :func:`rms_norm`."""
    if _plain_x(x) and out is None and _fast_eps(eps):
        fast = _fast_rows_forward(x, normalized_shape, weight, bias, eps, center)
        if fast is not None:
            return fast
    be = _backend(x)
    xp = be.arrays
    x = _checks.float_array(x, "x", xp)
    shape = _checks.normalized_shape(normalized_shape, tuple(x.shape))
    w = _checks.elementwise_param(weight, "weight", shape, x.shape, xp)
    b = _checks.elementwise_param(bias, "bias", shape, x.shape, xp)
    eps = _checks.positive_eps(eps)
    out = _checks.output(out, x.shape, x.dtype, xp=xp)
    lead = tuple(x.shape[:len(x.shape) - len(shape)])
    sdtype = _checks.stats_dtype(x.dtype)
    if x.size == 0:
        return (_checks.deliver(xp, xp.empty(x.shape, x.dtype), out, x.shape, x.dtype),
                xp.full(lead, np.nan, sdtype), xp.full(lead, np.nan, sdtype))
    cdtype = _checks.compute_dtype(x.dtype)
    d = math.prod(shape)
    x3 = _checks.as_rows(x, d, xp)
    y3 = _checks.result_buffer(xp, out, x3, x, w, b)
    mean, rstd = be.layer_norm.forward(x3, xp.elementwise(w, d, 1.0, cdtype),
                                       xp.elementwise(b, d, 0.0, cdtype), eps, center, y3)
    return (_checks.deliver(xp, y3, out, x.shape, x.dtype),
            xp.cast(mean.reshape(lead), sdtype), xp.cast(rstd.reshape(lead), sdtype))


def _rows_backward(dy, x, normalized_shape, mean, rstd, weight, center):
    """Shared body of :func:`layer_norm_backward` and :func:`rms_norm_backward`."""
    if _plain_x(x):
        fast = _fast_rows_backward(dy, x, normalized_shape, mean, rstd, weight, center)
        if fast is not None:
            return fast
    be = _backend(x)
    xp = be.arrays
    x = _checks.float_array(x, "x", xp)
    dy = _checks.same_as_x(dy, x, "dy", xp)
    shape = _checks.normalized_shape(normalized_shape, tuple(x.shape))
    lead = tuple(x.shape[:len(x.shape) - len(shape)])
    rstd = _checks.stat_vector(rstd, "rstd", lead, x.shape, xp)
    mean = _checks.stat_vector(mean, "mean", lead, x.shape, xp) if center else None
    w = _checks.elementwise_param(weight, "weight", shape, x.shape, xp)
    sdtype = _checks.stats_dtype(x.dtype)
    if x.size == 0:
        return (xp.full(x.shape, 0.0, x.dtype), xp.full(shape, 0.0, sdtype),
                xp.full(shape, 0.0, sdtype))
    cdtype = _checks.compute_dtype(x.dtype)
    d = math.prod(shape)
    r = math.prod(lead)
    x3 = _checks.as_rows(x, d, xp)
    dy3 = _checks.as_rows(dy, d, xp)
    dx3 = xp.empty(x3.shape, x3.dtype)
    dweight, dbias = be.layer_norm.backward(
        dy3, x3, xp.param(mean, r, 0.0, cdtype), xp.param(rstd, r, None, cdtype),
        xp.elementwise(w, d, 1.0, cdtype), center, dx3)
    return (xp.cast(dx3.reshape(x.shape), x.dtype), xp.cast(dweight.reshape(shape), sdtype),
            xp.cast(dbias.reshape(shape), sdtype))


def layer_norm(
    x: Array,
    normalized_shape: int | Sequence[int],
    weight: Array | None = None,
    bias: Array | None = None,
    *,
    eps: float = 1e-5,
    out: Array | None = None,
) -> tuple[Array, Array, Array]:
    r"""Layer normalization over the trailing ``normalized_shape`` dimensions.

    Parameters
    ----------
    x : ndarray
        Input, float16/32/64, whose trailing dims equal ``normalized_shape``.
    normalized_shape : int or tuple of int
        The trailing dims normalized together (``D`` values per row).
    weight, bias : ndarray of shape ``normalized_shape``, optional
        Elementwise scale and shift; ``None`` means 1 and 0.
    eps : float > 0
        Added to the variance.
    out : ndarray, optional
        Where to write y (x's shape and dtype).  ``out=x`` is computed in
        place; any other overlap with x, weight or bias goes through a
        temporary (exact).

    Returns
    -------
    y : ndarray
        x's shape and dtype.
    mean, rstd : ndarray of shape ``x.shape[:-len(normalized_shape)]``
        Per-row mean and ``1 / sqrt(var + eps)`` (biased variance); float64
        for float64 x, float32 otherwise.

    Notes
    -----
    .. math::

        \mu = \frac{1}{D}\sum_d x_d,\quad
        \sigma^2 = \frac{1}{D}\sum_d (x_d-\mu)^2,\quad
        y_d = \frac{x_d-\mu}{\sqrt{\sigma^2+\epsilon}}\,w_d + b_d

    Many short rows run one row per L1-resident step; few long rows are split
    into chunks so every core works on them.
    """
    return _rows_forward(x, normalized_shape, weight, bias, eps, out, True)


def layer_norm_backward(
    dy: Array,
    x: Array,
    normalized_shape: int | Sequence[int],
    mean: Array,
    rstd: Array,
    weight: Array | None = None,
) -> tuple[Array, Array, Array]:
    r"""Gradients of :func:`layer_norm`: ``(dx, dweight, dbias)``.

    With ``xhat = (x - mean) * rstd`` and ``dy_hat = dy * weight`` per row:
    ``dx = (dy_hat - (xhat * c1 + c2)) * rstd``, ``c1 = sum(dy_hat * xhat) / D``,
    ``c2 = sum(dy_hat) / D``.  ``dweight = sum(dy * xhat)`` and ``dbias =
    sum(dy)`` over the leading dims, shape ``normalized_shape`` (float64 for
    float64 x, float32 otherwise).
    """
    return _rows_backward(dy, x, normalized_shape, mean, rstd, weight, True)


def rms_norm(
    x: Array,
    normalized_shape: int | Sequence[int],
    weight: Array | None = None,
    *,
    eps: float = 1e-6,
    out: Array | None = None,
) -> tuple[Array, Array]:
    r"""RMS normalization: ``y = x / sqrt(mean(x**2) + eps) * weight`` per row.

    The mean of squares is accumulated in float64.  Returns ``(y, rstd)``,
    ``rstd`` of shape ``x.shape[:-len(normalized_shape)]``.  See
    :func:`layer_norm` for the parameters; RMS norm has no bias and no
    centring.
    """
    y, _, rstd = _rows_forward(x, normalized_shape, weight, None, eps, out, False)
    return y, rstd


def rms_norm_backward(
    dy: Array,
    x: Array,
    normalized_shape: int | Sequence[int],
    rstd: Array,
    weight: Array | None = None,
) -> tuple[Array, Array]:
    r"""Gradients of :func:`rms_norm`: ``(dx, dweight)``.

    With ``xhat = x * rstd``, ``dy_hat = dy * weight``:
    ``dx = (dy_hat - xhat * sum(dy_hat * xhat) / D) * rstd``,
    ``dweight = sum(dy * xhat)`` over the leading dims.
    """
    dx, dweight, _ = _rows_backward(dy, x, normalized_shape, None, rstd, weight, False)
    return dx, dweight


# --- group norm and instance norm ------------------------------------------------------


def group_norm(
    x: Array,
    num_groups: int,
    weight: Array | None = None,
    bias: Array | None = None,
    *,
    eps: float = 1e-5,
    axis: int = 1,
    out: Array | None = None,
) -> tuple[Array, Array, Array]:
    r"""Group normalization: per sample, over groups of ``C / num_groups`` channels.

    Parameters
    ----------
    x : ndarray, shape ``(N, C, *spatial)`` for ``axis=1`` or ``(N, *spatial, C)`` for ``axis=-1``
        Input, float16/32/64, ndim >= 2.
    num_groups : int
        Number of groups ``G``; must divide ``C``.  Groups are consecutive
        channels, as in PyTorch.
    weight, bias : ndarray of shape (C,), optional
        Per-channel scale and shift.
    eps : float > 0
    axis : {1, -1}
        The channel axis.
    out : ndarray, optional
        Where to write y.  ``out=x`` is computed in place; any other overlap
        with x, weight or bias goes through a temporary (exact).

    Returns
    -------
    y : ndarray
        x's shape and dtype.
    mean, rstd : ndarray of shape (N, G)
        Per-group statistics, ``rstd = 1 / sqrt(var + eps)`` (biased); float64
        for float64 x, float32 otherwise.

    Notes
    -----
    Group norm does not depend on the batch: the tutorial's answer to small
    batches.  ``G = 1`` is layer norm over ``(C, *spatial)`` with per-channel
    parameters; ``G = C`` is instance norm.  A group must hold more than one
    value.
    """
    be = _backend(x)
    xp = be.arrays
    x = _checks.float_array(x, "x", xp)
    shape = tuple(x.shape)
    ax = _checks.group_axis(axis, shape)
    c = shape[ax]
    g = _checks.groups(num_groups, c, shape)
    n = shape[0]
    spatial = math.prod(shape) // (n * c) if n * c else math.prod(
        d for i, d in enumerate(shape) if i not in (0, ax))
    if c // g * spatial <= 1:
        raise ValueError(
            f"expected more than 1 value per group; got x of shape {shape} with "
            f"{g} groups of {c // g} channels")
    w = _checks.channel_vector(weight, "weight", c, shape, xp)
    b = _checks.channel_vector(bias, "bias", c, shape, xp)
    eps = _checks.positive_eps(eps)
    out = _checks.output(out, shape, x.dtype, xp=xp)
    sdtype = _checks.stats_dtype(x.dtype)
    if x.size == 0:
        return (_checks.deliver(xp, xp.empty(shape, x.dtype), out, shape, x.dtype),
                xp.empty((n, g), sdtype), xp.empty((n, g), sdtype))
    cdtype = _checks.compute_dtype(x.dtype)
    x3, last = _checks.as_groups(x, ax, xp)
    y3 = _checks.result_buffer(xp, out, x3, x, w, b)
    mean, rstd = be.group_norm.forward(x3, g, xp.param(w, c, 1.0, cdtype),
                                       xp.param(b, c, 0.0, cdtype), eps, last, y3)
    return (_checks.deliver(xp, y3, out, shape, x.dtype), xp.cast(mean.reshape(n, g), sdtype),
            xp.cast(rstd.reshape(n, g), sdtype))


def group_norm_backward(
    dy: Array,
    x: Array,
    num_groups: int,
    mean: Array,
    rstd: Array,
    weight: Array | None = None,
    *,
    axis: int = 1,
) -> tuple[Array, Array, Array]:
    r"""Gradients of :func:`group_norm`: ``(dx, dweight, dbias)``.

    Per group of ``m`` values with ``xhat = (x - mean) * rstd`` and
    ``dy_hat = dy * weight[c]``: ``dx = (dy_hat - (xhat * c1 + c2)) * rstd``,
    ``c1 = sum(dy_hat * xhat) / m``, ``c2 = sum(dy_hat) / m``.  ``dweight`` and
    ``dbias`` have shape (C,): ``sum(dy * xhat)`` and ``sum(dy)`` over every
    axis but the channel axis.
    """
    be = _backend(x)
    xp = be.arrays
    x = _checks.float_array(x, "x", xp)
    dy = _checks.same_as_x(dy, x, "dy", xp)
    shape = tuple(x.shape)
    ax = _checks.group_axis(axis, shape)
    c = shape[ax]
    g = _checks.groups(num_groups, c, shape)
    n = shape[0]
    mean = _checks.stat_vector(mean, "mean", (n, g), shape, xp)
    rstd = _checks.stat_vector(rstd, "rstd", (n, g), shape, xp)
    w = _checks.channel_vector(weight, "weight", c, shape, xp)
    sdtype = _checks.stats_dtype(x.dtype)
    if x.size == 0:
        return (xp.full(shape, 0.0, x.dtype), xp.full(c, 0.0, sdtype),
                xp.full(c, 0.0, sdtype))
    cdtype = _checks.compute_dtype(x.dtype)
    x3, last = _checks.as_groups(x, ax, xp)
    dy3, _ = _checks.as_groups(dy, ax, xp)
    dx3 = xp.empty(x3.shape, x3.dtype)
    dweight, dbias = be.group_norm.backward(
        dy3, x3, g, xp.param(mean, n * g, None, cdtype), xp.param(rstd, n * g, None, cdtype),
        xp.param(w, c, 1.0, cdtype), last, dx3)
    return (xp.cast(dx3.reshape(shape), x.dtype), xp.cast(dweight, sdtype),
            xp.cast(dbias, sdtype))


def instance_norm(
    x: Array,
    weight: Array | None = None,
    bias: Array | None = None,
    *,
    eps: float = 1e-5,
    axis: int = 1,
    out: Array | None = None,
) -> tuple[Array, Array, Array]:
    """Instance normalization: :func:`group_norm` with one group per channel.

    Returns ``(y, mean, rstd)`` with statistics of shape (N, C).
    """
    x = _checks.float_array(x, "x", _backend(x).arrays)
    c = x.shape[_checks.group_axis(axis, tuple(x.shape))]
    return group_norm(x, c, weight, bias, eps=eps, axis=axis, out=out)


def instance_norm_backward(
    dy: Array,
    x: Array,
    mean: Array,
    rstd: Array,
    weight: Array | None = None,
    *,
    axis: int = 1,
) -> tuple[Array, Array, Array]:
    """Gradients of :func:`instance_norm`: :func:`group_norm_backward` with ``G = C``."""
    x = _checks.float_array(x, "x", _backend(x).arrays)
    c = x.shape[_checks.group_axis(axis, tuple(x.shape))]
    return group_norm_backward(dy, x, c, mean, rstd, weight, axis=axis)
