r"""NumPy reference implementations: the ground truth every kernel is tested against.

Plain, naive and readable on purpose.  Every function computes in float64
whatever the input dtype and returns float64 results; nothing here is tuned.

Notation for batch normalization with channel axis ``axis`` (``C`` channels)
and ``m`` values per channel (the product of every other dimension):

.. math::

    \mu_c = \frac{1}{m}\sum_i x_{ic}, \qquad
    \sigma^2_c = \frac{1}{m}\sum_i (x_{ic} - \mu_c)^2 \quad\text{(biased)}, \qquad
    r_c = \frac{1}{\sqrt{\sigma^2_c + \epsilon}}

    \hat x_{ic} = (x_{ic} - \mu_c)\, r_c, \qquad y_{ic} = \gamma_c \hat x_{ic} + \beta_c

Running statistics follow PyTorch: ``running = (1 - momentum) * running +
momentum * batch`` with the *unbiased* batch variance ``m / (m - 1) * var``.

Layer, RMS, group and instance norm normalize other sets of values with the
same ``xhat``; their gradients share one form.  For a set of ``m`` values
normalized together, with ``dy_hat = dy * weight``:

.. code-block:: text

    c1 = sum(dy_hat * xhat) / m
    c2 = sum(dy_hat) / m              (0 for RMS norm, which does not centre)
    dx = (dy_hat - (xhat * c1 + c2)) * rstd
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
from numpy.typing import ArrayLike

__all__ = [
    "batch_norm_train",
    "batch_norm_inference",
    "update_running_stats",
    "batch_norm_backward_train",
    "batch_norm_backward_frozen",
    "batch_norm_train_masked",
    "update_running_stats_masked",
    "batch_norm_backward_train_masked",
    "moments",
    "layer_norm",
    "layer_norm_backward",
    "rms_norm",
    "rms_norm_backward",
    "group_norm",
    "group_norm_backward",
    "instance_norm",
    "instance_norm_backward",
]

#: What the functions return: a pair or a triple of arrays.
_Pair = tuple[np.ndarray, np.ndarray]
_Triple = tuple[np.ndarray, np.ndarray, np.ndarray]


def _per_channel(a, axis):
    """``a`` as a contiguous float64 (C, m) matrix: one row per channel.

    Reductions then run along a contiguous axis, where NumPy sums pairwise.
    """
    a = np.asarray(a, dtype=np.float64)
    return np.ascontiguousarray(np.moveaxis(a, axis, 0)).reshape(a.shape[axis], -1)


def _like(rows, x, axis):
    """Undo :func:`_per_channel`: a (C, m) matrix back to the shape of ``x``."""
    moved = np.moveaxis(np.empty(np.shape(x), dtype=np.float64), axis, 0).shape
    return np.moveaxis(rows.reshape(moved), 0, axis)


def _affine(weight, bias, channels):
    w = np.ones(channels) if weight is None else np.asarray(weight, dtype=np.float64)
    b = np.zeros(channels) if bias is None else np.asarray(bias, dtype=np.float64)
    return w[:, None], b[:, None]


def moments(x: ArrayLike, axis: int = 1) -> tuple[int, np.ndarray, np.ndarray]:
    r"""Per-channel count, mean and sum of squared deviations (two-pass).

    ``count = m``, ``mean = sum(x) / m``, ``m2 = sum((x - mean)**2)``.
    """
    xc = _per_channel(x, axis)
    mean = xc.mean(axis=1)
    return xc.shape[1], mean, ((xc - mean[:, None]) ** 2).sum(axis=1)


def batch_norm_train(x: ArrayLike, weight: ArrayLike | None = None, bias: ArrayLike | None = None,
                     eps: float = 1e-5, axis: int = 1) -> _Triple:
    r"""Training-mode batch norm with batch statistics.

    Returns ``(y, mean, rstd)`` with ``y = weight * (x - mean) * rstd + bias``
    and ``rstd = 1 / sqrt(var + eps)``, ``var`` the biased (``1/m``) variance.
    """
    count, mean, m2 = moments(x, axis)
    rstd = 1.0 / np.sqrt(m2 / count + eps)
    xc = _per_channel(x, axis)
    w, b = _affine(weight, bias, xc.shape[0])
    y = (xc - mean[:, None]) * rstd[:, None] * w + b
    return _like(y, x, axis), mean, rstd


def batch_norm_inference(x: ArrayLike, running_mean: ArrayLike, running_var: ArrayLike,
                         weight: ArrayLike | None = None, bias: ArrayLike | None = None,
                         eps: float = 1e-5, axis: int = 1) -> np.ndarray:
    r"""Inference-mode batch norm: ``y = weight * (x - rm) / sqrt(rv + eps) + bias``."""
    xc = _per_channel(x, axis)
    rm = np.asarray(running_mean, dtype=np.float64)[:, None]
    rstd = 1.0 / np.sqrt(np.asarray(running_var, dtype=np.float64)[:, None] + eps)
    w, b = _affine(weight, bias, xc.shape[0])
    return _like((xc - rm) * rstd * w + b, x, axis)


def update_running_stats(running_mean: ArrayLike, running_var: ArrayLike, x: ArrayLike,
                         momentum: float = 0.1, axis: int = 1) -> _Pair:
    r"""New running statistics after one training step on ``x`` (PyTorch's rule).

    ``rm' = (1 - momentum) * rm + momentum * mean`` and
    ``rv' = (1 - momentum) * rv + momentum * m2 / (m - 1)`` (unbiased).
    Keras' ``momentum=k`` is ``momentum = 1 - k`` here.
    """
    count, mean, m2 = moments(x, axis)
    rm = np.asarray(running_mean, dtype=np.float64)
    rv = np.asarray(running_var, dtype=np.float64)
    unbiased = m2 / (count - 1)
    return (1 - momentum) * rm + momentum * mean, (1 - momentum) * rv + momentum * unbiased


def batch_norm_backward_train(dy: ArrayLike, x: ArrayLike, mean: ArrayLike, rstd: ArrayLike,
                              weight: ArrayLike | None = None, axis: int = 1) -> _Triple:
    r"""Gradient of training-mode batch norm, through the batch statistics.

    With ``xhat = (x - mean) * rstd`` and ``dy_hat = dy * weight``:

    .. code-block:: text

        dbias   = sum(dy)
        dweight = sum(dy * xhat)
        c1 = sum(dy_hat * xhat) / m
        c2 = sum(dy_hat) / m
        dx = (dy_hat - (xhat * c1 + c2)) * rstd

    Sums run over every axis but ``axis``.  Returns ``(dx, dweight, dbias)``.
    """
    dyc = _per_channel(dy, axis)
    xc = _per_channel(x, axis)
    m = xc.shape[1]
    mean = np.asarray(mean, dtype=np.float64)[:, None]
    rstd = np.asarray(rstd, dtype=np.float64)[:, None]
    w, _ = _affine(weight, None, xc.shape[0])
    xhat = (xc - mean) * rstd
    dy_hat = dyc * w
    c1 = (dy_hat * xhat).sum(axis=1, keepdims=True) / m
    c2 = dy_hat.sum(axis=1, keepdims=True) / m
    dx = (dy_hat - (xhat * c1 + c2)) * rstd
    return _like(dx, x, axis), (dyc * xhat).sum(axis=1), dyc.sum(axis=1)


def batch_norm_backward_frozen(dy: ArrayLike, x: ArrayLike, mean: ArrayLike, rstd: ArrayLike,
                               weight: ArrayLike | None = None, axis: int = 1) -> _Triple:
    r"""Gradient of batch norm with frozen (running) statistics.

    ``mean`` and ``rstd`` are constants, so ``dx = dy * weight * rstd``;
    ``dweight = sum(dy * xhat)`` and ``dbias = sum(dy)`` as in training.
    """
    dyc = _per_channel(dy, axis)
    xc = _per_channel(x, axis)
    mean = np.asarray(mean, dtype=np.float64)[:, None]
    rstd = np.asarray(rstd, dtype=np.float64)[:, None]
    w, _ = _affine(weight, None, xc.shape[0])
    xhat = (xc - mean) * rstd
    return _like(dyc * w * rstd, x, axis), (dyc * xhat).sum(axis=1), dyc.sum(axis=1)


def _valid(mask):
    """The mask as a (1, m) bool row matching :func:`_per_channel`'s columns."""
    return np.asarray(mask, dtype=bool).reshape(1, -1)


def batch_norm_train_masked(x: ArrayLike, mask: ArrayLike, weight: ArrayLike | None = None,
                            bias: ArrayLike | None = None, eps: float = 1e-5,
                            axis: int = 1) -> _Triple:
    r"""Masked training batch norm (Keras 3's ``mask=``).

    ``mask`` has x's shape without ``axis``; the mean and biased variance use the
    True positions only, ``y`` is computed at every position with them.
    """
    xc = _per_channel(x, axis)
    v = _valid(mask)
    mv = int(v.sum())
    mean = np.where(v, xc, 0.0).sum(axis=1) / mv
    var = np.where(v, (xc - mean[:, None]) ** 2, 0.0).sum(axis=1) / mv
    rstd = 1.0 / np.sqrt(var + eps)
    w, b = _affine(weight, bias, xc.shape[0])
    y = (xc - mean[:, None]) * rstd[:, None] * w + b
    return _like(y, x, axis), mean, rstd


def update_running_stats_masked(running_mean: ArrayLike, running_var: ArrayLike, x: ArrayLike,
                                mask: ArrayLike, momentum: float = 0.1,
                                axis: int = 1) -> _Pair:
    r""":func:`update_running_stats` with the valid positions' mean and unbiased
    variance (``m2 / (mv - 1)``, ``mv`` the number of True positions)."""
    xc = _per_channel(x, axis)
    v = _valid(mask)
    mv = int(v.sum())
    mean = np.where(v, xc, 0.0).sum(axis=1) / mv
    m2 = np.where(v, (xc - mean[:, None]) ** 2, 0.0).sum(axis=1)
    rm = np.asarray(running_mean, dtype=np.float64)
    rv = np.asarray(running_var, dtype=np.float64)
    return (1 - momentum) * rm + momentum * mean, (1 - momentum) * rv + momentum * m2 / (mv - 1)


def batch_norm_backward_train_masked(dy: ArrayLike, x: ArrayLike, mask: ArrayLike,
                                     mean: ArrayLike, rstd: ArrayLike,
                                     weight: ArrayLike | None = None, axis: int = 1) -> _Triple:
    r"""The exact gradient of :func:`batch_norm_train_masked`.

    Every position's ``y`` depends on the statistics, so the sums run over every
    position; only the valid positions (``v = 1``) feed the statistics:

    .. code-block:: text

        c1 = sum(dy_hat * xhat) / mv      (all positions; mv = valid count)
        c2 = sum(dy_hat) / mv
        dx = (dy_hat - v * (xhat * c1 + c2)) * rstd

    A padded position gets ``dy * weight * rstd``; dweight and dbias sum every
    position's ``dy``.
    """
    dyc = _per_channel(dy, axis)
    xc = _per_channel(x, axis)
    v = _valid(mask)
    mv = int(v.sum())
    mean = np.asarray(mean, dtype=np.float64)[:, None]
    rstd = np.asarray(rstd, dtype=np.float64)[:, None]
    w, _ = _affine(weight, None, xc.shape[0])
    xhat = (xc - mean) * rstd
    dy_hat = dyc * w
    c1 = (dy_hat * xhat).sum(axis=1, keepdims=True) / mv
    c2 = dy_hat.sum(axis=1, keepdims=True) / mv
    dx = (dy_hat - v * (xhat * c1 + c2)) * rstd
    return _like(dx, x, axis), (dyc * xhat).sum(axis=1), dyc.sum(axis=1)


# --- layer norm and RMS norm: one row per leading index, D = prod(normalized_shape)


def _rows_of(x, normalized_shape):
    """``x`` as float64 (R, D) rows over the trailing ``normalized_shape`` dims."""
    shape = (normalized_shape,) if np.isscalar(normalized_shape) else tuple(normalized_shape)
    x = np.asarray(x, dtype=np.float64)
    d = int(np.prod(shape))
    return x.reshape(-1, d), x.shape[:x.ndim - len(shape)], shape


def _elementwise(a, shape, default):
    return (np.full(int(np.prod(shape)), default) if a is None
            else np.asarray(a, dtype=np.float64).ravel())


def _normalized_backward(dy_hat, xhat, rstd, center):
    """The shared gradient formula, rows of ``m`` values each (see the module docstring)."""
    m = xhat.shape[1]
    c1 = (dy_hat * xhat).sum(axis=1, keepdims=True) / m
    c2 = dy_hat.sum(axis=1, keepdims=True) / m if center else 0.0
    return (dy_hat - (xhat * c1 + c2)) * rstd


def layer_norm(x: ArrayLike, normalized_shape: int | Sequence[int], weight: ArrayLike | None = None,
               bias: ArrayLike | None = None, eps: float = 1e-5) -> _Triple:
    r"""Layer norm over the trailing ``normalized_shape`` dims.

    Per row: ``mean = sum(x) / D``, ``var = sum((x - mean)**2) / D`` (biased),
    ``y = (x - mean) / sqrt(var + eps) * weight + bias`` with elementwise
    ``weight``/``bias`` of shape ``normalized_shape``.  Returns ``(y, mean, rstd)``,
    the statistics of shape ``x.shape[:-len(normalized_shape)]``.
    """
    xr, lead, shape = _rows_of(x, normalized_shape)
    mean = xr.mean(axis=1, keepdims=True)
    rstd = 1.0 / np.sqrt(((xr - mean) ** 2).mean(axis=1, keepdims=True) + eps)
    y = (xr - mean) * rstd * _elementwise(weight, shape, 1.0) + _elementwise(bias, shape, 0.0)
    return y.reshape(np.shape(x)), mean.reshape(lead), rstd.reshape(lead)


def layer_norm_backward(dy: ArrayLike, x: ArrayLike, normalized_shape: int | Sequence[int],
                        mean: ArrayLike, rstd: ArrayLike,
                        weight: ArrayLike | None = None) -> _Triple:
    r"""Gradient of :func:`layer_norm`: ``(dx, dweight, dbias)``.

    ``dweight = sum over rows of dy * xhat``, ``dbias = sum over rows of dy``
    (shape ``normalized_shape``); ``dx`` by the shared formula with ``m = D``.
    """
    xr, _, shape = _rows_of(x, normalized_shape)
    dyr = _rows_of(dy, normalized_shape)[0]
    mean = np.asarray(mean, dtype=np.float64).reshape(-1, 1)
    rstd = np.asarray(rstd, dtype=np.float64).reshape(-1, 1)
    xhat = (xr - mean) * rstd
    dx = _normalized_backward(dyr * _elementwise(weight, shape, 1.0), xhat, rstd, True)
    return (dx.reshape(np.shape(x)), (dyr * xhat).sum(axis=0).reshape(shape),
            dyr.sum(axis=0).reshape(shape))


def rms_norm(x: ArrayLike, normalized_shape: int | Sequence[int], weight: ArrayLike | None = None,
             eps: float = 1e-6) -> _Pair:
    r"""RMS norm: ``y = x / sqrt(mean(x**2) + eps) * weight`` per row; returns ``(y, rstd)``."""
    xr, lead, shape = _rows_of(x, normalized_shape)
    rstd = 1.0 / np.sqrt((xr * xr).mean(axis=1, keepdims=True) + eps)
    y = xr * rstd * _elementwise(weight, shape, 1.0)
    return y.reshape(np.shape(x)), rstd.reshape(lead)


def rms_norm_backward(dy: ArrayLike, x: ArrayLike, normalized_shape: int | Sequence[int],
                      rstd: ArrayLike, weight: ArrayLike | None = None) -> _Pair:
    r"""Gradient of :func:`rms_norm`: ``(dx, dweight)``, with ``xhat = x * rstd``, ``c2 = 0``."""
    xr, _, shape = _rows_of(x, normalized_shape)
    dyr = _rows_of(dy, normalized_shape)[0]
    rstd = np.asarray(rstd, dtype=np.float64).reshape(-1, 1)
    xhat = xr * rstd
    dx = _normalized_backward(dyr * _elementwise(weight, shape, 1.0), xhat, rstd, False)
    return dx.reshape(np.shape(x)), (dyr * xhat).sum(axis=0).reshape(shape)


# --- group norm and instance norm: groups of consecutive channels per sample


def _groups_of(x, num_groups, axis):
    """``x`` as float64 (N, G, C/G * spatial) with the channel axis moved to 1."""
    x = np.asarray(x, dtype=np.float64)
    xc = np.moveaxis(x, axis, 1)
    return np.ascontiguousarray(xc).reshape(x.shape[0], num_groups, -1), xc.shape


def _per_channel_params(a, channels, default, spatial):
    a = np.full(channels, default) if a is None else np.asarray(a, dtype=np.float64)
    return a.reshape((1, channels) + (1,) * spatial)


def group_norm(x: ArrayLike, num_groups: int, weight: ArrayLike | None = None,
               bias: ArrayLike | None = None, eps: float = 1e-5, axis: int = 1) -> _Triple:
    r"""Group norm: statistics per sample over each group of ``C / G`` consecutive
    channels and all spatial positions; per-channel ``weight``/``bias``.

    Returns ``(y, mean, rstd)`` with statistics of shape ``(N, G)``.
    """
    xg, moved = _groups_of(x, num_groups, axis)
    mean = xg.mean(axis=2, keepdims=True)
    rstd = 1.0 / np.sqrt(((xg - mean) ** 2).mean(axis=2, keepdims=True) + eps)
    xhat = ((xg - mean) * rstd).reshape(moved)
    c, spatial = moved[1], len(moved) - 2
    y = (xhat * _per_channel_params(weight, c, 1.0, spatial)
         + _per_channel_params(bias, c, 0.0, spatial))
    return np.moveaxis(y, 1, axis), mean[..., 0], rstd[..., 0]


def group_norm_backward(dy: ArrayLike, x: ArrayLike, num_groups: int, mean: ArrayLike,
                        rstd: ArrayLike, weight: ArrayLike | None = None, axis: int = 1) -> _Triple:
    r"""Gradient of :func:`group_norm`: ``(dx, dweight, dbias)``, dweight/dbias per channel.

    ``dx`` by the shared formula with ``m = C / G * spatial`` values per group.
    """
    xg, moved = _groups_of(x, num_groups, axis)
    dyg, _ = _groups_of(dy, num_groups, axis)
    n, c, spatial = moved[0], moved[1], len(moved) - 2
    mean = np.asarray(mean, dtype=np.float64).reshape(n, num_groups, 1)
    rstd = np.asarray(rstd, dtype=np.float64).reshape(n, num_groups, 1)
    xhat = (xg - mean) * rstd
    w = _per_channel_params(weight, c, 1.0, spatial)
    dy_hat = (dyg.reshape(moved) * w).reshape(n * num_groups, -1)
    dx = _normalized_backward(dy_hat, xhat.reshape(n * num_groups, -1),
                              rstd.reshape(-1, 1), True)
    red = (0,) + tuple(range(2, 2 + spatial))
    dweight = (dyg * xhat).reshape(moved).sum(axis=red)
    dbias = dyg.reshape(moved).sum(axis=red)
    return np.moveaxis(dx.reshape(moved), 1, axis), dweight, dbias


def instance_norm(x: ArrayLike, weight: ArrayLike | None = None, bias: ArrayLike | None = None,
                  eps: float = 1e-5, axis: int = 1) -> _Triple:
    """Instance norm: :func:`group_norm` with one group per channel."""
    return group_norm(x, np.shape(x)[axis], weight, bias, eps, axis)


def instance_norm_backward(dy: ArrayLike, x: ArrayLike, mean: ArrayLike, rstd: ArrayLike,
                           weight: ArrayLike | None = None, axis: int = 1) -> _Triple:
    """Gradient of :func:`instance_norm`."""
    return group_norm_backward(dy, x, np.shape(x)[axis], mean, rstd, weight, axis)
