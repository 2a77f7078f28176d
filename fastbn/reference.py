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
"""

import numpy as np

__all__ = [
    "batch_norm_train",
    "batch_norm_inference",
    "update_running_stats",
    "batch_norm_backward_train",
    "batch_norm_backward_frozen",
    "moments",
]


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


def moments(x, axis=1):
    r"""Per-channel count, mean and sum of squared deviations (two-pass).

    ``count = m``, ``mean = sum(x) / m``, ``m2 = sum((x - mean)**2)``.
    """
    xc = _per_channel(x, axis)
    mean = xc.mean(axis=1)
    return xc.shape[1], mean, ((xc - mean[:, None]) ** 2).sum(axis=1)


def batch_norm_train(x, weight=None, bias=None, eps=1e-5, axis=1):
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


def batch_norm_inference(x, running_mean, running_var, weight=None, bias=None, eps=1e-5,
                         axis=1):
    r"""Inference-mode batch norm: ``y = weight * (x - rm) / sqrt(rv + eps) + bias``."""
    xc = _per_channel(x, axis)
    rm = np.asarray(running_mean, dtype=np.float64)[:, None]
    rstd = 1.0 / np.sqrt(np.asarray(running_var, dtype=np.float64)[:, None] + eps)
    w, b = _affine(weight, bias, xc.shape[0])
    return _like((xc - rm) * rstd * w + b, x, axis)


def update_running_stats(running_mean, running_var, x, momentum=0.1, axis=1):
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


def batch_norm_backward_train(dy, x, mean, rstd, weight=None, axis=1):
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


def batch_norm_backward_frozen(dy, x, mean, rstd, weight=None, axis=1):
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
