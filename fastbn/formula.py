r"""The NumPy formulas a user writes: the honest baseline of ``fastbn bench`` and asv.

:mod:`fastbn.reference` is the float64 oracle the tests trust; it is slow on
purpose (float64 everywhere, copies for clarity).  This module is what a
NumPy user writes instead: the vectorized textbook expression in x's own
dtype, with NumPy's reductions,

.. code-block:: python

    mean = x.mean(axes, keepdims=True)
    y = (x - mean) / np.sqrt(x.var(axes, keepdims=True) + eps) * w + b

and the matching gradient.  Speedups against it are the ones a user of
fastbn sees (``speedup_vs_numpy_formula`` in ``fastbn bench --json``).  The
functions mirror :mod:`fastbn.reference`'s names and signatures.  Not for
accuracy: float32 reductions lose digits at large offsets (fastbn does not).
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np

__all__ = [
    "batch_norm_train",
    "batch_norm_inference",
    "batch_norm_backward_train",
    "layer_norm",
    "layer_norm_backward",
    "rms_norm",
    "rms_norm_backward",
    "group_norm",
    "group_norm_backward",
]

#: What the functions return: a pair or a triple of arrays.
_Pair = tuple[np.ndarray, np.ndarray]
_Triple = tuple[np.ndarray, np.ndarray, np.ndarray]


def _axes(x, axis):
    axis %= x.ndim
    return tuple(i for i in range(x.ndim) if i != axis)


def _bcast(v, x, axis):
    """A (C,) vector shaped to broadcast along ``axis`` of ``x``."""
    shape = [1] * x.ndim
    shape[axis % x.ndim] = -1
    return v.reshape(shape)


def batch_norm_train(x: np.ndarray, weight: np.ndarray | None = None,
                     bias: np.ndarray | None = None, eps: float = 1e-5, axis: int = 1) -> _Triple:
    axes = _axes(x, axis)
    mean = x.mean(axes, keepdims=True)
    var = x.var(axes, keepdims=True)
    rstd = 1 / np.sqrt(var + x.dtype.type(eps))
    y = (x - mean) * rstd
    if weight is not None:
        y = y * _bcast(weight, x, axis) + _bcast(bias, x, axis)
    return y, mean.ravel(), rstd.ravel()


def batch_norm_inference(x: np.ndarray, running_mean: np.ndarray, running_var: np.ndarray,
                         weight: np.ndarray | None = None, bias: np.ndarray | None = None,
                         eps: float = 1e-5, axis: int = 1) -> np.ndarray:
    y = (x - _bcast(running_mean, x, axis)) / np.sqrt(_bcast(running_var, x, axis)
                                                      + x.dtype.type(eps))
    if weight is not None:
        y = y * _bcast(weight, x, axis) + _bcast(bias, x, axis)
    return y


def batch_norm_backward_train(dy: np.ndarray, x: np.ndarray, mean: np.ndarray, rstd: np.ndarray,
                              weight: np.ndarray | None = None, axis: int = 1) -> _Triple:
    axes = _axes(x, axis)
    xhat = (x - _bcast(mean, x, axis)) * _bcast(rstd, x, axis)
    dbias = dy.sum(axes)
    dweight = (dy * xhat).sum(axes)
    g = dy if weight is None else dy * _bcast(weight, x, axis)
    dx = (g - g.mean(axes, keepdims=True) - xhat * (g * xhat).mean(axes, keepdims=True)) \
        * _bcast(rstd, x, axis)
    return dx, dweight, dbias


def layer_norm(x: np.ndarray, normalized_shape: int | Sequence[int],
               weight: np.ndarray | None = None, bias: np.ndarray | None = None,
               eps: float = 1e-5) -> _Triple:
    axes = tuple(range(x.ndim - len(np.atleast_1d(normalized_shape)), x.ndim))
    mean = x.mean(axes, keepdims=True)
    rstd = 1 / np.sqrt(x.var(axes, keepdims=True) + x.dtype.type(eps))
    y = (x - mean) * rstd
    if weight is not None:
        y = y * weight + bias
    return y, mean, rstd


def layer_norm_backward(dy: np.ndarray, x: np.ndarray, normalized_shape: int | Sequence[int],
                        mean: np.ndarray, rstd: np.ndarray,
                        weight: np.ndarray | None = None) -> _Triple:
    k = len(np.atleast_1d(normalized_shape))
    axes = tuple(range(x.ndim - k, x.ndim))
    lead = tuple(range(x.ndim - k))
    mean, rstd = mean.reshape(mean.shape + (1,) * k), rstd.reshape(rstd.shape + (1,) * k)
    xhat = (x - mean) * rstd
    g = dy if weight is None else dy * weight
    dx = (g - g.mean(axes, keepdims=True) - xhat * (g * xhat).mean(axes, keepdims=True)) * rstd
    return dx, (dy * xhat).sum(lead), dy.sum(lead)


def rms_norm(x: np.ndarray, normalized_shape: int | Sequence[int], weight: np.ndarray | None = None,
             eps: float = 1e-6) -> _Pair:
    axes = tuple(range(x.ndim - len(np.atleast_1d(normalized_shape)), x.ndim))
    rstd = 1 / np.sqrt((x * x).mean(axes, keepdims=True) + x.dtype.type(eps))
    y = x * rstd
    return (y if weight is None else y * weight), rstd


def rms_norm_backward(dy: np.ndarray, x: np.ndarray, normalized_shape: int | Sequence[int],
                      rstd: np.ndarray, weight: np.ndarray | None = None) -> _Pair:
    k = len(np.atleast_1d(normalized_shape))
    axes = tuple(range(x.ndim - k, x.ndim))
    rstd = rstd.reshape(rstd.shape + (1,) * k) if rstd.ndim < x.ndim else rstd
    xhat = x * rstd
    g = dy if weight is None else dy * weight
    dx = (g - xhat * (g * xhat).mean(axes, keepdims=True)) * rstd
    return dx, (dy * xhat).sum(tuple(range(x.ndim - k)))


def _grouped(x, num_groups, axis):
    """x as (N, G, C/G, S) (channels first) or (N, S, G, C/G) (last), with the axes
    of one group."""
    n, c = x.shape[0], x.shape[axis]
    if axis % x.ndim == 1:
        return x.reshape(n, num_groups, c // num_groups, -1), (2, 3)
    return x.reshape(n, -1, num_groups, c // num_groups), (1, 3)


def group_norm(x: np.ndarray, num_groups: int, weight: np.ndarray | None = None,
               bias: np.ndarray | None = None, eps: float = 1e-5, axis: int = 1) -> _Triple:
    xg, axes = _grouped(x, num_groups, axis)
    mean = xg.mean(axes, keepdims=True)
    rstd = 1 / np.sqrt(xg.var(axes, keepdims=True) + x.dtype.type(eps))
    y = ((xg - mean) * rstd).reshape(x.shape)
    if weight is not None:
        y = y * _bcast(weight, x, axis) + _bcast(bias, x, axis)
    return y, mean.reshape(x.shape[0], num_groups), rstd.reshape(x.shape[0], num_groups)


def group_norm_backward(dy: np.ndarray, x: np.ndarray, num_groups: int, mean: np.ndarray,
                        rstd: np.ndarray, weight: np.ndarray | None = None,
                        axis: int = 1) -> _Triple:
    n = x.shape[0]
    xg, axes = _grouped(x, num_groups, axis)
    stat = (n, num_groups, 1, 1) if axes == (2, 3) else (n, 1, num_groups, 1)
    xhat = ((xg - mean.reshape(stat)) * rstd.reshape(stat)).reshape(x.shape)
    g = dy if weight is None else dy * _bcast(weight, x, axis)
    gg, _ = _grouped(g, num_groups, axis)
    xh, _ = _grouped(xhat, num_groups, axis)
    dx = ((gg - gg.mean(axes, keepdims=True) - xh * (gg * xh).mean(axes, keepdims=True))
          * rstd.reshape(stat)).reshape(x.shape)
    lead = _axes(x, axis)
    return dx, (dy * xhat).sum(lead), dy.sum(lead)
