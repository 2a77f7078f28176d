r"""Column kernels: channels that are columns of row-major blocks.

``x3`` has shape ``(N, A, K)``: ``N`` independent samples (batch norm: 1;
channels-last group norm: the batch), each an ``(A, K)`` matrix whose
columns are reduced down the ``A`` rows.  Batch norm passes channels-last
and 2-D data as ``(1, N*H*W, C)`` (and small-inner NCHW as
``(1, N, C*H*W)``), group norm as ``(N, H*W, C)``.

Tasks are blocks of ``rows`` rows by ``width`` columns within one sample;
each writes per-column partials for its row block, and row blocks are merged
along a fixed pairwise tree, so results never depend on the thread count.
Every inner loop runs along a contiguous row; no ``prange`` over strided
columns.

Coefficient arrays have shape ``(R, N, K)``: per sample and column,
(mean_hi, mean_lo, scale, bias) forward or (mean_hi, mean_lo, k0, k1, k2)
backward, in x's dtype (:mod:`._moments`).  Seen as ``(R, N*K)`` this is the
layout of the row kernels' coefficients, so one glue function fills both.

See Also
--------
fastbn.cpu._rows : the same passes for data whose channels are contiguous runs.
"""

import numpy as np
from numba import prange

from .. import config
from ._jit import driver, worker
from ._moments import chan_merge, shifted_moments


@driver
def cols_moments(x3, rows, width, pmean, pm2):
    """Per (sample, row block, column) (mean, m2) into ``pmean``/``pm2`` (N, blocks, K).

    Each column is shifted by the block's first row and summed down the rows.
    """
    N, A, K = x3.shape
    nrb = pmean.shape[1]
    ncb = (K + width - 1) // width
    for t in prange(N * nrb * ncb):
        n = t // (nrb * ncb)
        rb = (t // ncb) % nrb
        k0 = (t % ncb) * width
        k1 = min(k0 + width, K)
        r0 = rb * rows
        r1 = min(r0 + rows, A)
        s1 = pmean[n, rb, k0:k1]
        s2 = pm2[n, rb, k0:k1]
        shift = x3[n, r0, k0:k1]
        s1[:] = 0.0
        s2[:] = 0.0
        for r in range(r0 + 1, r1):
            xr = x3[n, r, k0:k1]  # slices + range(len): indices provably >= 0, loops vectorize
            for k in range(xr.size):
                d = np.float64(xr[k]) - np.float64(shift[k])
                s1[k] += d
                s2[k] += d * d
        for k in range(s1.size):
            s1[k], s2[k] = shifted_moments(r1 - r0, np.float64(shift[k]), s1[k], s2[k])


@driver
def cols_merge(pmean, pm2, A, rows, width):
    """Merge each sample's row blocks into block 0 along a fixed pairwise tree.

    Level ``s`` merges block ``rb + s`` into ``rb`` for every ``rb`` divisible by
    ``2 s``: rounding grows with log(blocks), not with their number.
    """
    N, nrb, K = pmean.shape
    ncb = (K + width - 1) // width
    for t in prange(N * ncb):
        n = t // ncb
        k0 = (t % ncb) * width
        k1 = min(k0 + width, K)
        s = 1
        while s < nrb:
            for rb in range(0, nrb - s, 2 * s):
                na = min(rb * rows + s * rows, A) - rb * rows
                nb = min((rb + s) * rows + s * rows, A) - (rb + s) * rows
                fb = np.float64(nb) / np.float64(na + nb)
                fab = np.float64(na) * fb
                ma = pmean[n, rb, k0:k1]
                mb = pmean[n, rb + s, k0:k1]
                qa = pm2[n, rb, k0:k1]
                qb = pm2[n, rb + s, k0:k1]
                for k in range(ma.size):
                    delta = mb[k] - ma[k]
                    ma[k] += delta * fb
                    qa[k] += qb[k] + delta * delta * fab
            s *= 2


@worker
def cols_fold(colmean, colm2, A, B, mean, m2):
    """Per (sample, group of ``B`` adjacent columns) (mean, m2), merged in column order.

    ``colmean``/``colm2``: (N, K) column moments over ``A`` rows each;
    ``mean``/``m2``: (N, K // B) out.
    """
    N, G = mean.shape
    for n in range(N):
        for g in range(G):
            cnt = A
            mu = colmean[n, g * B]
            s = colm2[n, g * B]
            for b in range(1, B):
                cnt, mu, s = chan_merge(cnt, mu, s, A, colmean[n, g * B + b], colm2[n, g * B + b])
            mean[n, g] = mu
            m2[n, g] = s


@driver
def cols_apply(x3, coef, rows, width, y3):
    """Elementwise ``y = ((x - mean_hi) - mean_lo) * scale + bias``, coef (4, N, K)."""
    N, A, K = x3.shape
    nrb = (A + rows - 1) // rows
    ncb = (K + width - 1) // width
    for t in prange(N * nrb * ncb):
        n = t // (nrb * ncb)
        rb = (t // ncb) % nrb
        k0 = (t % ncb) * width
        k1 = min(k0 + width, K)
        hi = coef[0, n, k0:k1]
        lo = coef[1, n, k0:k1]
        scale = coef[2, n, k0:k1]
        bias = coef[3, n, k0:k1]
        for r in range(rb * rows, min(rb * rows + rows, A)):
            xr = x3[n, r, k0:k1]
            yr = y3[n, r, k0:k1]
            for k in range(xr.size):
                yr[k] = ((xr[k] - hi[k]) - lo[k]) * scale[k] + bias[k]


@driver
def cols_grad_sums(x3, dy3, colmean, rows, width, psdy, psdxc):
    """Per (sample, row block, column) ``sum(dy)``, ``sum(dy * (x - mean))``.

    ``colmean``: (N, K) float64 mean of each column's group; ``psdy``/``psdxc``:
    (N, blocks, K) out.
    """
    N, A, K = x3.shape
    nrb = psdy.shape[1]
    ncb = (K + width - 1) // width
    for t in prange(N * nrb * ncb):
        n = t // (nrb * ncb)
        rb = (t // ncb) % nrb
        k0 = (t % ncb) * width
        k1 = min(k0 + width, K)
        s1 = psdy[n, rb, k0:k1]
        s2 = psdxc[n, rb, k0:k1]
        mu = colmean[n, k0:k1]
        s1[:] = 0.0
        s2[:] = 0.0
        for r in range(rb * rows, min(rb * rows + rows, A)):
            xr = x3[n, r, k0:k1]
            dr = dy3[n, r, k0:k1]
            for k in range(xr.size):
                g = np.float64(dr[k])
                s1[k] += g
                s2[k] += g * (np.float64(xr[k]) - mu[k])


@worker
def cols_grad_fold(psdy, psdxc, B, sdy, sdxc):
    """Per (sample, group of ``B`` columns) sums: blocks in order, columns in order.

    ``psdy``/``psdxc``: (N, blocks, K); ``sdy``/``sdxc``: (N, K // B) out.
    """
    N, nrb, _ = psdy.shape
    G = sdy.shape[1]
    for n in range(N):
        for g in range(G):
            a = 0.0
            s = 0.0
            for b in range(B):
                for rb in range(nrb):
                    a += psdy[n, rb, g * B + b]
                    s += psdxc[n, rb, g * B + b]
            sdy[n, g] = a
            sdxc[n, g] = s


@driver
def cols_grad_apply(x3, dy3, coef, rows, width, training, dx3):
    """Elementwise ``dx = dy * k0 + ((x - mean_hi) - mean_lo) * k1 + k2``, coef (5, N, K).

    With ``training=False`` only ``dx = dy * k0`` (x is not read).
    """
    N, A, K = x3.shape
    nrb = (A + rows - 1) // rows
    ncb = (K + width - 1) // width
    for t in prange(N * nrb * ncb):
        n = t // (nrb * ncb)
        rb = (t // ncb) % nrb
        k0 = (t % ncb) * width
        k1 = min(k0 + width, K)
        hi = coef[0, n, k0:k1]
        lo = coef[1, n, k0:k1]
        c0 = coef[2, n, k0:k1]
        c1 = coef[3, n, k0:k1]
        c2 = coef[4, n, k0:k1]
        for r in range(rb * rows, min(rb * rows + rows, A)):
            xr = x3[n, r, k0:k1]
            dr = dy3[n, r, k0:k1]
            gr = dx3[n, r, k0:k1]
            if training:
                for k in range(xr.size):
                    gr[k] = dr[k] * c0[k] + ((xr[k] - hi[k]) - lo[k]) * c1[k] + c2[k]
            else:
                for k in range(xr.size):
                    gr[k] = dr[k] * c0[k]


def blocks(x3):
    """(rows per block, columns per block, row blocks) for an (N, A, K) view."""
    _, a, k = x3.shape
    width = max(1, min(k, config.COLUMN_BLOCK))
    rows = max(1, config.CHUNK_ELEMENTS // width)
    return rows, width, -(-a // rows)
