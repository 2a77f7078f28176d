"""Host launchers shared by the GPU ops: statistics, coefficients, gradient sums.

Grid sizes come from the problem (one block per chunk of a set, one tile per
rows x columns block) or, for the elementwise passes, from the SM count
(:func:`fastbn.cuda.grid_stride`), always capped at CUDA's grid limits
(``config.CUDA_MAX_GRID_*``; the kernels grid-stride over what is left) and
never launched empty (:class:`fastbn.cuda.Kernel`).  ``config`` is read at
every launch.
"""

import math

import numpy as np
from numba import cuda

from .. import config
from . import _kernels as K
from . import grid_1d, grid_2d, grid_blocks, grid_stride, threads  # noqa: F401  (re-exported)


def _zero(dtype):
    return np.dtype(dtype).type(0)


def rows_stats(d_x3, eps, center):
    """Per-set (mean, m2, rstd) float64 and coef (3, C) in x's dtype of an (A, C, B) view."""
    a, c, b = d_x3.shape
    chunk = config.CUDA_CHUNK
    nch = math.ceil(a * b / chunk)
    d_pmean = cuda.device_array((c, nch))
    d_pm2 = cuda.device_array((c, nch))
    K.rows_moments[grid_blocks(c * nch)](d_x3, chunk, _zero(d_x3.dtype), d_pmean, d_pm2)
    d_mean, d_m2, d_rstd = (cuda.device_array(c) for _ in range(3))
    d_coef = cuda.device_array((3, c), d_x3.dtype)
    K.rows_finalize[grid_1d(c)](d_pmean, d_pm2, a * b, chunk, eps, center, d_mean, d_m2,
                                d_rstd, d_coef)
    return d_mean, d_m2, d_rstd, d_coef


def _tiles(d_x3):
    p, q, k = d_x3.shape
    rows = config.CUDA_TILE_ROWS
    nqb = math.ceil(q / rows)
    grid, tpb = grid_2d(k, p * nqb)
    return rows, nqb, grid, tpb


def cols_stats(d_x3, R, eps):
    """Per-set (mean, m2, rstd) and coef (3, P*G) of a (P, Q, K) view, sets of R columns."""
    p, q, k = d_x3.shape
    rows, nqb, grid, tpb = _tiles(d_x3)
    d_pmean = cuda.device_array((p, nqb, k))
    d_pm2 = cuda.device_array((p, nqb, k))
    K.cols_moments[grid, tpb](d_x3, rows, _zero(d_x3.dtype), d_pmean, d_pm2)
    sets = p * (k // R)
    d_mean, d_m2, d_rstd = (cuda.device_array(sets) for _ in range(3))
    d_coef = cuda.device_array((3, sets), d_x3.dtype)
    K.cols_finalize[grid_1d(sets)](d_pmean, d_pm2, q, rows, R, eps, d_mean, d_m2, d_rstd,
                                   d_coef)
    return d_mean, d_m2, d_rstd, d_coef


def rows_apply(d_x3, d_coef, d_weight, d_bias, cmod, bdiv, d_y3, d_res3=None, relu=False):
    has_res = d_res3 is not None
    K.rows_apply[grid_stride(d_x3.size)](d_x3, d_coef, d_weight, d_bias, cmod, bdiv, d_y3,
                                         d_res3 if has_res else d_x3, has_res, relu,
                                         _zero(d_y3.dtype))


def cols_apply(d_x3, d_coef, R, d_weight, d_bias, d_y3, d_res3=None, relu=False):
    has_res = d_res3 is not None
    K.cols_apply[grid_stride(d_x3.size)](d_x3, d_coef, R, d_weight, d_bias, d_y3,
                                         d_res3 if has_res else d_x3, has_res, relu,
                                         _zero(d_y3.dtype))


def rows_grad_sums(d_x3, d_dy3, d_mean, d_weight, cmod, bdiv, d_y3=None, relu=False):
    """Per-set ``sum(dy * w[p])`` and ``sum(dy * w[p] * (x - mean))``, float64 (C,)."""
    a, c, b = d_x3.shape
    chunk = config.CUDA_CHUNK
    nch = math.ceil(a * b / chunk)
    d_psa = cuda.device_array((1, nch, c))
    d_pss = cuda.device_array((1, nch, c))
    K.rows_grad_sums[grid_blocks(c * nch)](d_x3, d_dy3, d_mean, d_weight, cmod, bdiv, chunk,
                                           d_psa, d_pss, d_x3 if d_y3 is None else d_y3, relu)
    d_sa, d_ss = cuda.device_array(c), cuda.device_array(c)
    K.fold_sums[grid_1d(c)](d_psa, d_pss, d_sa, d_ss)
    return d_sa, d_ss


def cols_grad_sums(d_x3, d_dy3, d_colmean, d_y3=None, relu=False):
    """Per (sample, column) ``sum(dy)`` and ``sum(dy * (x - mean))``, float64 (P*K,)."""
    p, q, k = d_x3.shape
    rows, nqb, grid, tpb = _tiles(d_x3)
    d_psdy = cuda.device_array((p, nqb, k))
    d_psdxc = cuda.device_array((p, nqb, k))
    K.cols_grad_sums[grid, tpb](d_x3, d_dy3, d_colmean, rows, d_psdy, d_psdxc,
                                d_x3 if d_y3 is None else d_y3, relu)
    d_sdy, d_sdxc = cuda.device_array(p * k), cuda.device_array(p * k)
    K.fold_sums[grid_1d(p * k)](d_psdy, d_psdxc, d_sdy, d_sdxc)
    return d_sdy, d_sdxc


def full(n, value, dtype):
    """A device vector filled on the device (no host transfer)."""
    d = cuda.device_array(n, dtype)
    K.fill[grid_1d(n)](d, value)
    return d
