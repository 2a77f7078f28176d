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

import numpy as np

from . import _checks
from .cpu import _moments
from .cpu import batch_norm as _cpu_bn
from .cpu import group_norm as _cpu_gn
from .cpu import layer_norm as _cpu_ln

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


def _gpu(module: str):
    """The GPU implementation module, imported on first use (never at ``import fastbn``)."""
    import importlib

    try:
        return importlib.import_module(f"fastbn.cuda.{module}")
    except ImportError as exc:
        raise ImportError(
            "fastbn got GPU arrays, but its CUDA backend needs numba-cuda: "
            "pip install 'fastbn[cuda]' (pip install numba-cuda)") from exc


def batch_norm(
    x: np.ndarray,
    weight: np.ndarray | None = None,
    bias: np.ndarray | None = None,
    running_mean: np.ndarray | None = None,
    running_var: np.ndarray | None = None,
    *,
    training: bool = True,
    momentum: float = 0.1,
    eps: float = 1e-5,
    axis: int = 1,
    out: np.ndarray | None = None,
    activation: str | None = None,
    residual: np.ndarray | None = None,
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    r"""Batch normalization over every axis of ``x`` but the channel axis.

    Parameters
    ----------
    x : ndarray, shape (N, C, *spatial) for ``axis=1`` or (N, *spatial, C) for ``axis=-1``
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
        training, ``out`` of the wrong shape/dtype or read-only.

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
    if _checks.is_cuda_array(x):
        return _gpu("batch_norm").batch_norm(
            x, weight, bias, running_mean, running_var, training=training, momentum=momentum,
            eps=eps, axis=axis, out=out, activation=activation, residual=residual)
    x = _checks.float_array(x, "x")
    ax = _checks.channel_axis(axis, x.ndim, x.shape)
    c = x.shape[ax]
    m = x.size // c if c else 0
    w = _checks.channel_vector(weight, "weight", c, x.shape, default=1.0)
    b = _checks.channel_vector(bias, "bias", c, x.shape, default=0.0)
    _checks.running_stats(running_mean, running_var, c, x.shape, required=not training)
    eps = _checks.positive_eps(eps)
    momentum = _checks.unit_momentum(momentum)
    if training and m <= 1:
        raise ValueError(
            "expected more than 1 value per channel when training; "
            f"got x of shape {x.shape} with {c} channels along axis {axis}")
    out = _checks.output(out, x.shape, x.dtype)
    relu = _checks.activation(activation)
    res = None if residual is None else _checks.same_as_x(residual, x, "residual")
    sdtype = _checks.stats_dtype(x.dtype)
    _checks.refuse_running_overlap(training, x, weight, bias, running_mean, running_var, res,
                                   out)

    if not training:
        mean = np.empty(c, sdtype)
        rstd = np.empty(c, sdtype)
        if x.size == 0:
            mean[:] = running_mean
            rstd[:] = 1.0 / np.sqrt(np.asarray(running_var, dtype=np.float64) + eps)
            return (_checks.deliver(np.empty(x.shape, x.dtype), out, x.shape, x.dtype), mean,
                    rstd)
        x3 = _checks.as_3d(x, ax)
        y3 = _checks.result_buffer(out, x3, x, res, weight, bias)
        res3 = None if res is None else _checks.as_3d(res, ax)
        rm, rv = (a if a.dtype != np.float16 else a.astype(np.float32)  # numba has no float16
                  for a in (running_mean, running_var))
        _cpu_bn.inference(x3, rm, rv, eps, w, b, y3, mean, rstd, res3, relu)
        return _checks.deliver(y3, out, x.shape, x.dtype), mean, rstd

    x3 = _checks.as_3d(x, ax)
    y3 = _checks.result_buffer(out, x3, x, res, weight, bias)
    res3 = None if res is None else _checks.as_3d(res, ax)
    mean, m2, rstd = _cpu_bn.forward_train(x3, w, b, eps, y3, res3, relu)
    if running_mean is not None:
        _update_running(running_mean, running_var, mean, m2, m, momentum)
    return _checks.deliver(y3, out, x.shape, x.dtype), mean.astype(sdtype), rstd.astype(sdtype)


def _update_running(running_mean, running_var, mean, m2, m, momentum):
    """In place, PyTorch's rule with the unbiased variance (float16 stats via NumPy).

    Channels whose batch statistics are not finite (NaN or inf in the batch)
    keep their running values, with a RuntimeWarning: one bad batch must not
    poison the statistics used at inference.  (PyTorch updates them to NaN.)
    """
    if running_mean.dtype == np.float16 or running_var.dtype == np.float16:
        ok = np.isfinite(mean) & np.isfinite(m2)
        with np.errstate(invalid="ignore", over="ignore"):
            new_mean = (1.0 - momentum) * running_mean + momentum * mean
            new_var = (1.0 - momentum) * running_var + momentum * (m2 / (m - 1))
        running_mean[ok] = new_mean[ok]
        running_var[ok] = new_var[ok]
        skipped = int(ok.size - ok.sum())
    else:
        skipped = _cpu_bn.update_running(running_mean, running_var, mean, m2, m, momentum)
    if skipped:
        _checks.warn_skipped_update(skipped, mean.shape[0])


def batch_norm_backward(
    dy: np.ndarray,
    x: np.ndarray,
    mean: np.ndarray,
    rstd: np.ndarray,
    weight: np.ndarray | None = None,
    *,
    training: bool = True,
    axis: int = 1,
    activation: str | None = None,
    y: np.ndarray | None = None,
    dresidual: np.ndarray | None = None,
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
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
    if _checks.is_cuda_array(x):
        return _gpu("batch_norm").batch_norm_backward(
            dy, x, mean, rstd, weight, training=training, axis=axis, activation=activation, y=y,
            dresidual=dresidual)
    x = _checks.float_array(x, "x")
    dy = _checks.float_array(dy, "dy")
    ax = _checks.channel_axis(axis, x.ndim, x.shape)
    if dy.shape != x.shape:
        raise ValueError(f"dy must have x's shape {x.shape}; got shape {dy.shape}")
    if dy.dtype != x.dtype:
        raise TypeError(f"dy must have x's dtype {x.dtype}; got {dy.dtype}")
    c = x.shape[ax]
    mean64 = _checks.channel_vector(mean, "mean", c, x.shape)
    rstd64 = _checks.channel_vector(rstd, "rstd", c, x.shape)
    w = _checks.channel_vector(weight, "weight", c, x.shape, default=1.0)
    relu = _checks.activation(activation)
    if relu and y is None:
        raise ValueError("activation='relu' needs y, the forward's saved output, for the mask")
    y = None if y is None else _checks.same_as_x(y, x, "y")
    dresidual = _checks.output(dresidual, x.shape, x.dtype, "dresidual")
    sdtype = _checks.stats_dtype(x.dtype)
    if x.size == 0:
        return np.zeros(x.shape, x.dtype), np.zeros(c, sdtype), np.zeros(c, sdtype)

    x3 = _checks.as_3d(x, ax)
    dy3 = _checks.as_3d(dy, ax)
    dx3 = np.empty_like(x3)
    y3 = None if y is None else _checks.as_3d(y, ax)
    # The kernels write dresidual before they read x: any overlap goes through a copy.
    dres3 = None if dresidual is None else _checks.result_buffer(
        dresidual, x3, None, x, dy, y, mean, rstd, weight)
    dweight, dbias = _cpu_bn.backward(dy3, x3, mean64, rstd64, w, bool(training), dx3, y3, relu,
                                      dres3)
    if dresidual is not None:
        _checks.deliver(dres3, dresidual, x.shape, x.dtype)
    return dx3.reshape(x.shape).astype(x.dtype, copy=False), dweight.astype(sdtype), \
        dbias.astype(sdtype)


def moments(x: np.ndarray, axis: int = 1) -> tuple[int, np.ndarray, np.ndarray]:
    """Per-channel ``(count, mean, m2)``: ``m2`` is the sum of squared deviations.

    The mergeable form of the statistics: :func:`merge_moments` combines the
    moments of two pieces of a batch into those of the whole (Chan's formula),
    and :func:`moments_to_stats` turns them into ``(mean, rstd, unbiased_var)``.
    ``mean`` and ``m2`` are float64 whatever x's dtype.  A device array gives
    device results (``count`` an int, ``mean``/``m2`` float64 device arrays), and
    :func:`merge_moments`/:func:`moments_to_stats` take and return device arrays.
    """
    if _checks.is_cuda_array(x):
        return _gpu("moments").moments(x, axis)
    x = _checks.float_array(x, "x")
    ax = _checks.channel_axis(axis, x.ndim, x.shape)
    c = x.shape[ax]
    count = x.size // c if c else 0
    if count == 0:
        return 0, np.zeros(c), np.zeros(c)
    mean, m2 = _cpu_bn.moments(_checks.as_3d(x, ax))
    return count, mean, m2


def merge_moments(a, b) -> tuple[int, np.ndarray, np.ndarray]:
    """Chan's exact merge of two ``(count, mean, m2)`` triples; either may be empty.

    ``delta = mean_b - mean_a``, ``n = n_a + n_b``,
    ``mean = mean_a + delta * n_b / n``, ``m2 = m2_a + m2_b + delta**2 * n_a * n_b / n``.
    """
    na, mean_a, m2_a = a
    nb, mean_b, m2_b = b
    if any(_checks.is_cuda_array(v) for v in (mean_a, m2_a, mean_b, m2_b)):
        # device moments: merged on the device (a part with count 0 is not read)
        return _gpu("moments").merge_moments(a, b)
    mean_a = np.asarray(mean_a, dtype=np.float64)
    mean_b = np.asarray(mean_b, dtype=np.float64)
    m2_a = np.asarray(m2_a, dtype=np.float64)
    m2_b = np.asarray(m2_b, dtype=np.float64)
    if mean_a.shape != mean_b.shape:
        raise ValueError(f"moments to merge must have the same shape; got {mean_a.shape} "
                         f"and {mean_b.shape}")
    na, nb = int(na), int(nb)
    if na < 0 or nb < 0:
        raise ValueError(f"counts must be >= 0; got {na} and {nb}")
    if nb == 0:
        return na, mean_a.copy(), m2_a.copy()
    if na == 0:
        return nb, mean_b.copy(), m2_b.copy()
    # the CPU kernels' formula itself (plain arithmetic, the same operations in
    # the same order), evaluated by NumPy on the vectors
    wb, wab = _moments.chan_weights.py_func(na, nb)
    mean, m2 = _moments.chan_step.py_func(mean_a, m2_a, mean_b, m2_b, wb, wab)
    return na + nb, mean, m2


def moments_to_stats(count, mean, m2, eps: float = 1e-5):
    """``(mean, rstd, unbiased_var)`` from moments: ``rstd = 1/sqrt(m2/count + eps)``.

    ``unbiased_var = m2 / (count - 1)`` (the running-variance convention); it
    is NaN for a count of 1.
    """
    if _checks.is_cuda_array(mean) or _checks.is_cuda_array(m2):
        return _gpu("moments").moments_to_stats(count, mean, m2, eps)
    eps = _checks.positive_eps(eps)
    count = int(count)
    if count <= 0:
        raise ValueError(f"count must be positive; got {count}")
    mean = np.asarray(mean, dtype=np.float64)
    m2 = np.asarray(m2, dtype=np.float64)
    with np.errstate(divide="ignore", invalid="ignore"):
        unbiased = m2 / (count - 1) if count > 1 else np.full_like(m2, np.nan)
    return mean.copy(), 1.0 / np.sqrt(m2 / count + eps), unbiased


# --- layer norm and RMS norm -----------------------------------------------------------


def _rows_forward(x, normalized_shape, weight, bias, eps, out, center):
    """Shared body of :func:`layer_norm` and :func:`rms_norm`."""
    x = _checks.float_array(x, "x")
    shape = _checks.normalized_shape(normalized_shape, x.shape)
    cdtype = _checks.compute_dtype(x.dtype)
    w = _checks.elementwise_param(weight, "weight", shape, x.shape, cdtype, 1.0)
    b = _checks.elementwise_param(bias, "bias", shape, x.shape, cdtype, 0.0)
    eps = _checks.positive_eps(eps)
    out = _checks.output(out, x.shape, x.dtype)
    lead = x.shape[:x.ndim - len(shape)]
    sdtype = _checks.stats_dtype(x.dtype)
    if x.size == 0:
        nan = np.full(lead, np.nan, sdtype)
        return _checks.deliver(np.empty(x.shape, x.dtype), out, x.shape, x.dtype), nan, nan
    x3 = _checks.as_rows(x, math.prod(shape))
    y3 = _checks.result_buffer(out, x3, x, weight, bias)
    mean, rstd = _cpu_ln.forward(x3, w, b, eps, center, y3)
    return (_checks.deliver(y3, out, x.shape, x.dtype), mean.reshape(lead).astype(sdtype),
            rstd.reshape(lead).astype(sdtype))


def _rows_backward(dy, x, normalized_shape, mean, rstd, weight, center):
    """Shared body of :func:`layer_norm_backward` and :func:`rms_norm_backward`."""
    x = _checks.float_array(x, "x")
    dy = _checks.same_as_x(dy, x)
    shape = _checks.normalized_shape(normalized_shape, x.shape)
    lead = x.shape[:x.ndim - len(shape)]
    rstd64 = _checks.stat_vector(rstd, "rstd", lead, x.shape)
    mean64 = (_checks.stat_vector(mean, "mean", lead, x.shape) if center
              else np.zeros(rstd64.shape))
    w = _checks.elementwise_param(weight, "weight", shape, x.shape,
                                  _checks.compute_dtype(x.dtype), 1.0)
    sdtype = _checks.stats_dtype(x.dtype)
    if x.size == 0:
        return np.zeros(x.shape, x.dtype), np.zeros(shape, sdtype), np.zeros(shape, sdtype)
    x3 = _checks.as_rows(x, math.prod(shape))
    dy3 = _checks.as_rows(dy, math.prod(shape))
    dx3 = np.empty_like(x3)
    dweight, dbias = _cpu_ln.backward(dy3, x3, mean64, rstd64, w, center, dx3)
    return (dx3.reshape(x.shape).astype(x.dtype, copy=False),
            dweight.reshape(shape).astype(sdtype), dbias.reshape(shape).astype(sdtype))


def layer_norm(
    x: np.ndarray,
    normalized_shape,
    weight: np.ndarray | None = None,
    bias: np.ndarray | None = None,
    *,
    eps: float = 1e-5,
    out: np.ndarray | None = None,
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
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
    if _checks.is_cuda_array(x):
        return _gpu("layer_norm").forward(x, normalized_shape, weight, bias, eps=eps, out=out,
                                          center=True)
    return _rows_forward(x, normalized_shape, weight, bias, eps, out, True)


def layer_norm_backward(
    dy: np.ndarray,
    x: np.ndarray,
    normalized_shape,
    mean: np.ndarray,
    rstd: np.ndarray,
    weight: np.ndarray | None = None,
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    r"""Gradients of :func:`layer_norm`: ``(dx, dweight, dbias)``.

    With ``xhat = (x - mean) * rstd`` and ``dy_hat = dy * weight`` per row:
    ``dx = (dy_hat - (xhat * c1 + c2)) * rstd``, ``c1 = sum(dy_hat * xhat) / D``,
    ``c2 = sum(dy_hat) / D``.  ``dweight = sum(dy * xhat)`` and ``dbias =
    sum(dy)`` over the leading dims, shape ``normalized_shape`` (float64 for
    float64 x, float32 otherwise).
    """
    if _checks.is_cuda_array(x):
        return _gpu("layer_norm").backward(dy, x, normalized_shape, mean, rstd, weight,
                                           center=True)
    return _rows_backward(dy, x, normalized_shape, mean, rstd, weight, True)


def rms_norm(
    x: np.ndarray,
    normalized_shape,
    weight: np.ndarray | None = None,
    *,
    eps: float = 1e-6,
    out: np.ndarray | None = None,
) -> tuple[np.ndarray, np.ndarray]:
    r"""RMS normalization: ``y = x / sqrt(mean(x**2) + eps) * weight`` per row.

    The mean of squares is accumulated in float64.  Returns ``(y, rstd)``,
    ``rstd`` of shape ``x.shape[:-len(normalized_shape)]``.  See
    :func:`layer_norm` for the parameters; RMS norm has no bias and no
    centring.
    """
    if _checks.is_cuda_array(x):
        y, _, rstd = _gpu("layer_norm").forward(x, normalized_shape, weight, None, eps=eps,
                                                out=out, center=False)
        return y, rstd
    y, _, rstd = _rows_forward(x, normalized_shape, weight, None, eps, out, False)
    return y, rstd


def rms_norm_backward(
    dy: np.ndarray,
    x: np.ndarray,
    normalized_shape,
    rstd: np.ndarray,
    weight: np.ndarray | None = None,
) -> tuple[np.ndarray, np.ndarray]:
    r"""Gradients of :func:`rms_norm`: ``(dx, dweight)``.

    With ``xhat = x * rstd``, ``dy_hat = dy * weight``:
    ``dx = (dy_hat - xhat * sum(dy_hat * xhat) / D) * rstd``,
    ``dweight = sum(dy * xhat)`` over the leading dims.
    """
    if _checks.is_cuda_array(x):
        dx, dweight, _ = _gpu("layer_norm").backward(dy, x, normalized_shape, None, rstd,
                                                     weight, center=False)
        return dx, dweight
    dx, dweight, _ = _rows_backward(dy, x, normalized_shape, None, rstd, weight, False)
    return dx, dweight


# --- group norm and instance norm ------------------------------------------------------


def group_norm(
    x: np.ndarray,
    num_groups: int,
    weight: np.ndarray | None = None,
    bias: np.ndarray | None = None,
    *,
    eps: float = 1e-5,
    axis: int = 1,
    out: np.ndarray | None = None,
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    r"""Group normalization: per sample, over groups of ``C / num_groups`` channels.

    Parameters
    ----------
    x : ndarray, shape (N, C, *spatial) for ``axis=1`` or (N, *spatial, C) for ``axis=-1``
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
    batches.  ``G = 1`` is layer norm over (C, *spatial) with per-channel
    parameters; ``G = C`` is instance norm.  A group must hold more than one
    value.
    """
    if _checks.is_cuda_array(x):
        return _gpu("group_norm").forward(x, num_groups, weight, bias, eps=eps, axis=axis,
                                          out=out)
    x = _checks.float_array(x, "x")
    ax = _checks.group_axis(axis, x.shape)
    c = x.shape[ax]
    g = _checks.groups(num_groups, c, x.shape)
    n = x.shape[0]
    spatial = math.prod(x.shape) // (n * c) if n * c else math.prod(
        d for i, d in enumerate(x.shape) if i not in (0, ax))
    if c // g * spatial <= 1:
        raise ValueError(
            f"expected more than 1 value per group; got x of shape {x.shape} with "
            f"{g} groups of {c // g} channels")
    w = _checks.channel_vector(weight, "weight", c, x.shape, default=1.0)
    b = _checks.channel_vector(bias, "bias", c, x.shape, default=0.0)
    eps = _checks.positive_eps(eps)
    out = _checks.output(out, x.shape, x.dtype)
    sdtype = _checks.stats_dtype(x.dtype)
    if x.size == 0:
        empty = np.empty((n, g), sdtype)
        return _checks.deliver(np.empty(x.shape, x.dtype), out, x.shape, x.dtype), empty, empty
    x3, last = _checks.as_groups(x, ax)
    y3 = _checks.result_buffer(out, x3, x, weight, bias)
    mean, rstd = _cpu_gn.forward(x3, g, w, b, eps, last, y3)
    return (_checks.deliver(y3, out, x.shape, x.dtype), mean.reshape(n, g).astype(sdtype),
            rstd.reshape(n, g).astype(sdtype))


def group_norm_backward(
    dy: np.ndarray,
    x: np.ndarray,
    num_groups: int,
    mean: np.ndarray,
    rstd: np.ndarray,
    weight: np.ndarray | None = None,
    *,
    axis: int = 1,
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    r"""Gradients of :func:`group_norm`: ``(dx, dweight, dbias)``.

    Per group of ``m`` values with ``xhat = (x - mean) * rstd`` and
    ``dy_hat = dy * weight[c]``: ``dx = (dy_hat - (xhat * c1 + c2)) * rstd``,
    ``c1 = sum(dy_hat * xhat) / m``, ``c2 = sum(dy_hat) / m``.  ``dweight`` and
    ``dbias`` have shape (C,): ``sum(dy * xhat)`` and ``sum(dy)`` over every
    axis but the channel axis.
    """
    if _checks.is_cuda_array(x):
        return _gpu("group_norm").backward(dy, x, num_groups, mean, rstd, weight, axis=axis)
    x = _checks.float_array(x, "x")
    dy = _checks.same_as_x(dy, x)
    ax = _checks.group_axis(axis, x.shape)
    c = x.shape[ax]
    g = _checks.groups(num_groups, c, x.shape)
    n = x.shape[0]
    mean64 = _checks.stat_vector(mean, "mean", (n, g), x.shape)
    rstd64 = _checks.stat_vector(rstd, "rstd", (n, g), x.shape)
    w = _checks.channel_vector(weight, "weight", c, x.shape, default=1.0)
    sdtype = _checks.stats_dtype(x.dtype)
    if x.size == 0:
        return np.zeros(x.shape, x.dtype), np.zeros(c, sdtype), np.zeros(c, sdtype)
    x3, last = _checks.as_groups(x, ax)
    dy3, _ = _checks.as_groups(dy, ax)
    dx3 = np.empty_like(x3)
    dweight, dbias = _cpu_gn.backward(dy3, x3, g, mean64, rstd64, w, last, dx3)
    return (dx3.reshape(x.shape).astype(x.dtype, copy=False), dweight.astype(sdtype),
            dbias.astype(sdtype))


def instance_norm(
    x: np.ndarray,
    weight: np.ndarray | None = None,
    bias: np.ndarray | None = None,
    *,
    eps: float = 1e-5,
    axis: int = 1,
    out: np.ndarray | None = None,
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Instance normalization: :func:`group_norm` with one group per channel.

    Returns ``(y, mean, rstd)`` with statistics of shape (N, C).
    """
    x = x if _checks.is_cuda_array(x) else _checks.float_array(x, "x")
    c = x.shape[_checks.group_axis(axis, tuple(x.shape))]
    return group_norm(x, c, weight, bias, eps=eps, axis=axis, out=out)


def instance_norm_backward(
    dy: np.ndarray,
    x: np.ndarray,
    mean: np.ndarray,
    rstd: np.ndarray,
    weight: np.ndarray | None = None,
    *,
    axis: int = 1,
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Gradients of :func:`instance_norm`: :func:`group_norm_backward` with ``G = C``."""
    x = x if _checks.is_cuda_array(x) else _checks.float_array(x, "x")
    c = x.shape[_checks.group_axis(axis, tuple(x.shape))]
    return group_norm_backward(dy, x, c, mean, rstd, weight, axis=axis)
