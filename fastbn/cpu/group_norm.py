r"""Group norm (and instance norm, ``G = C``) on the CPU: Numba kernels.

Groups are ``C / G`` consecutive channels of one sample, as in PyTorch.
Per group of ``m = C/G * S`` values (``S`` the spatial size):

.. code-block:: text

    mean, m2 = moments(group)                   # shifted sums + Chan merge, float64
    rstd = 1 / sqrt(m2 / m + eps)
    y    = ((x - mean_hi) - mean_lo) * (weight[c] * rstd) + bias[c]

and backward, with ``dy_hat = dy * weight[c]``, per group:

.. code-block:: text

    c1 = sum(dy_hat * xhat) / m = rstd * sum_c weight[c] * sdxc[n, c] / m
    c2 = sum(dy_hat) / m        = sum_c weight[c] * sdy[n, c] / m
    dx = (dy_hat - (xhat * c1 + c2)) * rstd
       = dy * (weight[c] rstd) + (x - mean) * (-rstd**2 c1) + (-rstd c2)
    dbias[c]   = sum_n sdy[n, c]                # sdy  = sum over S of dy
    dweight[c] = sum_n sdxc[n, c] * rstd[n, g]  # sdxc = sum over S of dy * (x - mean)

Both layouts get their own loop order; neither transposes:

* channels first, ``(N, C, S)``: a group is one contiguous run, the row
  kernels of :mod:`._rows` on the views ``(1, N*G, C/G*S)`` (statistics) and
  ``(1, N*C, S)`` (per-channel passes).  When a group fits in L2, one task
  owns it: statistics, then the output from cache.
* channels last, ``(N, S, C)``: the column kernels of :mod:`._columns`, per
  sample, blocks of rows by blocks of channels; a group's statistics fold its
  ``C/G`` adjacent columns.  When they fit in L2, one task owns a block of
  whole groups of one sample (the whole sample for large batches, a few
  groups for N = 1, 2 so every core works): statistics, then the output from
  cache.  Otherwise tasks are blocks of rows by blocks of channels.

Coefficient arrays are ``(R, N*C)`` in x's dtype, index ``n*C + c``
(``(R, N, C)`` for the column kernels).

See Also
--------
fastbn.cuda.group_norm (the GPU twin: the same functions, the same signatures),
fastbn.reference.group_norm, fastbn.reference.group_norm_backward
"""

import numba
import numpy as np
from numba import prange

from .. import config
from ._columns import (
    apply_blocks,
    block_apply,
    block_moments,
    blocks,
    cols_apply,
    cols_fold,
    cols_grad_apply,
    cols_grad_fold,
    cols_grad_sums,
    cols_merge,
    cols_moments,
    fold_sample,
    tree_merge,
)
from ._jit import driver, worker
from ._moments import (
    finish_stats,
    forward_coef,
    rstd_from_m2,
    sample_forward_coef,
    set_backward_coef,
    set_forward_coef,
)
from ._rows import (
    channel_grad_sums,
    channel_moments,
    chunk_apply,
    chunk_grad_apply,
    rows_apply,
    rows_grad_apply,
    rows_grad_sums,
    rows_merge,
    rows_moments,
)

#: Flags for the workers the fused forward drivers share with batch norm, typed
#: ``bool`` as batch norm's calls are: a literal ``False`` would compile each
#: worker a second time (fastbn.cpu._jit); the loops unswitch on the runtime
#: flag alike.  The fused channels-first backward keeps its literals: with
#: runtime flags its small calls ((8, 16, 14, 14), 196 values a channel) took
#: 1.14x the time (asv continuous flagged it), worth the two extra compiles.
_NO = np.bool_(False)


@worker
def _group_coef(c, g, cg, weight, sdy, sdxc, rstd, m):
    """(c1, c2) of group ``g`` from its channels' sums (``c`` = first index of the sample)."""
    a = 0.0
    s = 0.0
    for ci in range(g * cg, g * cg + cg):
        a += weight[ci] * sdy[c + ci]
        s += weight[ci] * sdxc[c + ci]
    fm = np.float64(m)
    return rstd * s / fm, a / fm


# ---------------------------------------------------------------------------
# channels first, one task per group


@driver
def first_forward_fused(
    xg,      # (1, N*G, C/G*S) input, groups as rows
    xc,      # (1, N*C, S) the same memory, channels as rows
    weight,  # (C,) float64
    bias,    # (C,) float64
    eps,     # float
    chunk,   # elements per statistics chunk
    coef,    # (4, N*C) x.dtype scratch
    yc,      # (1, N*C, S) output
    mean,    # (N*G,) float64 out
    rstd,    # (N*G,) float64 out
):
    """Forward, one group per task: statistics, then its channels' y from cache."""
    NG = xg.shape[1]
    C = weight.shape[0]
    S = xc.shape[2]
    cg = xg.shape[2] // S
    G = C // cg
    for ng_ in prange(NG):
        ng = np.int64(ng_)  # one callee specialization (fastbn.cpu._jit)
        mu, s = channel_moments(xg, ng, chunk)
        r = rstd_from_m2(s, cg * S, eps)
        mean[ng] = mu
        rstd[ng] = r
        n = ng // G
        for ci in range((ng % G) * cg, (ng % G) * cg + cg):
            set_forward_coef(coef, n * C + ci, mu, r, weight[ci], bias[ci])
            chunk_apply(xc, yc, coef, n * C + ci, np.int64(0), S, xc, _NO, _NO)


@driver
def first_backward_fused(
    xc,      # (1, N*C, S) forward input
    dyc,     # (1, N*C, S) upstream gradient
    mean,    # (N*G,) float64 saved mean
    rstd,    # (N*G,) float64 saved rstd
    weight,  # (C,) float64
    G,       # groups
    chunk,   # elements per chunk
    coef,    # (5, N*C) x.dtype scratch
    dxc,     # (1, N*C, S) output
    sdy,     # (N*C,) float64 out: sum over S of dy
    sdxc,    # (N*C,) float64 out: sum over S of dy * (x - mean)
):
    """Backward, one group per task: its channels' sums, then their dx from cache."""
    C = weight.shape[0]
    S = xc.shape[2]
    cg = C // G
    for ng_ in prange(xc.shape[1] // cg):
        ng = np.int64(ng_)  # one callee specialization (fastbn.cpu._jit)
        n = ng // G
        g = ng % G
        mu = mean[ng]
        r = rstd[ng]
        for ci in range(g * cg, g * cg + cg):
            sdy[n * C + ci], sdxc[n * C + ci] = channel_grad_sums(xc, dyc, n * C + ci, chunk, mu,
                                                                  xc, False)
        c1, c2 = _group_coef(n * C, g, cg, weight, sdy, sdxc, r, cg * S)
        for ci in range(g * cg, g * cg + cg):
            set_backward_coef(coef, n * C + ci, mu, weight[ci] * r, -r * r * c1, -r * c2)
            chunk_grad_apply(xc, dyc, dxc, coef, n * C + ci, np.int64(0), S, True, xc, False, xc,
                             False)


# ---------------------------------------------------------------------------
# channels last, one task per block of whole groups of one sample


@driver
def last_forward_fused(
    x3,      # (N, S, C) input
    weight,  # (C,) float64
    bias,    # (C,) float64
    eps,     # float
    G,       # groups
    gpb,     # groups per task
    rows,    # rows per statistics block (as the split path's, so results agree)
    pmean,   # (N, blocks, C) float64 scratch
    pm2,     # (N, blocks, C) float64 scratch
    gm2,     # (N*G,) float64 scratch
    coef,    # (4, N*C) x.dtype scratch
    y3,      # (N, S, C) output
    mean,    # (N*G,) float64 out
    rstd,    # (N*G,) float64 out
):
    """Forward, tasks of ``gpb`` whole groups of one sample: column statistics, then
    y while the task's columns are in L2."""
    N, S, C = x3.shape
    nrb = pmean.shape[1]
    cg = C // G
    nblk = (G + gpb - 1) // gpb
    coef3 = coef.reshape(4, N, C)
    for t_ in prange(N * nblk):
        t = np.int64(t_)  # one callee specialization (fastbn.cpu._jit)
        n = t // nblk
        g0 = (t % nblk) * gpb
        g1 = min(g0 + gpb, G)
        k0 = g0 * cg
        k1 = g1 * cg
        for rb in range(nrb):
            block_moments(x3, n, rb * rows, min(rb * rows + rows, S), k0, k1,
                          pmean[n, rb, k0:k1], pm2[n, rb, k0:k1])
        tree_merge(pmean[n], pm2[n], S, rows, k0, k1)
        fold_sample(pmean[n, 0, k0:k1], pm2[n, 0, k0:k1], S, cg, mean[n * G + g0:n * G + g1],
                    gm2[n * G + g0:n * G + g1])
        for g in range(n * G + g0, n * G + g1):
            rstd[g] = rstd_from_m2(gm2[g], cg * S, eps)
        sample_forward_coef(n, k0, k1, mean, rstd, weight, bias, G, np.int64(1), coef)
        block_apply(x3, n, np.int64(0), S, k0, k1, coef3, y3, x3, _NO, _NO)


def _groups_per_task(n, s, c, G, itemsize):
    """Groups per fused channels-last task, or 0 to take the split path.

    Whole samples, when the batch has ``config.FUSED_MIN_CHANNELS`` samples
    (or one per thread) and a sample fits in ``config.FUSED_CHANNEL_MAX_BYTES``.
    The two paths give bit-identical results (the same row blocks, merged in
    the same order), so the choice may depend on the thread count: a batch of
    2 on 2 threads, fused, took 0.90-0.94x the time of the split path
    ((2, 56, 56, 64), (4, 28, 28, 128), (2, 28, 28, 256) float32,
    interleaved).  Narrower blocks (a few groups of a sample) were measured
    slower than the split path: their rows are a few dozen bytes, too short
    to stream.
    """
    enough = n >= min(config.FUSED_MIN_CHANNELS, numba.get_num_threads())
    if enough and s * c * itemsize <= config.FUSED_CHANNEL_MAX_BYTES:
        return G
    return 0


# ---------------------------------------------------------------------------
# serial glue shared by both layouts


@worker
def backward_coef(mean, rstd, weight, sdy, sdxc, G, m, coef, dweight, dbias):
    """``coef`` (5, N*C), dweight and dbias (C,) from per-(sample, channel) sums."""
    C = weight.shape[0]
    cg = C // G
    N = sdy.shape[0] // C
    for n in range(N):
        for g in range(G):
            ng = n * G + g
            r = rstd[ng]
            c1, c2 = _group_coef(n * C, g, cg, weight, sdy, sdxc, r, m)
            for ci in range(g * cg, g * cg + cg):
                set_backward_coef(coef, n * C + ci, mean[ng], weight[ci] * r, -r * r * c1,
                                  -r * c2)
    param_grads(sdy, sdxc, rstd, G, dweight, dbias)


@worker
def param_grads(sdy, sdxc, rstd, G, dweight, dbias):
    """``dbias[c] = sum_n sdy[n, c]``, ``dweight[c] = sum_n sdxc[n, c] * rstd[n, g]``."""
    C = dweight.shape[0]
    cg = C // G
    for c in range(C):
        a = 0.0
        s = 0.0
        for n in range(sdy.shape[0] // C):
            a += sdy[n * C + c]
            s += sdxc[n * C + c] * rstd[n * G + c // cg]
        dbias[c] = a
        dweight[c] = s


# ---------------------------------------------------------------------------
# launchers: x as (N, C, S) (channels first) or (N, S, C) (channels last)


def _fused(n, g, group_elems, itemsize, arrays):
    return (n * g >= config.FUSED_MIN_CHANNELS
            and group_elems * itemsize * arrays <= config.FUSED_CHANNEL_MAX_BYTES)


def forward(x3, G, weight, bias, eps, channels_last, y3):
    """Group norm into ``y3``; returns float64 ``(mean, rstd)`` of shape (N*G,)."""
    if channels_last:
        n, s, c = x3.shape
    else:
        n, c, s = x3.shape
    cg = c // G
    m = cg * s
    mean = np.empty(n * G)
    rstd = np.empty(n * G)
    coef = np.empty((4, n * c), x3.dtype)
    if channels_last:
        rows, width, nrb = blocks(x3)
        pmean = np.empty((n, nrb, c))
        pm2 = np.empty((n, nrb, c))
        m2 = np.empty(n * G)
        gpb = _groups_per_task(n, s, c, G, x3.itemsize)
        if gpb:
            last_forward_fused(x3.size, x3, weight, bias, eps, G, gpb, rows, pmean, pm2, m2,
                               coef, y3, mean, rstd)
            return mean, rstd
        cols_moments(x3.size, x3, rows, width, pmean, pm2)
        cols_merge(pmean.size, pmean, pm2, s, rows, width)
        cols_fold(pmean, pm2, s, cg, mean.reshape(n, G), m2.reshape(n, G))
        finish_stats(m2, m, eps, rstd)
        forward_coef(mean, rstd, weight, bias, G, 1, coef)
        rows, width = apply_blocks(x3)
        cols_apply(x3.size, x3, coef.reshape(4, n, c), rows, width, y3, x3, False, False)
        return mean, rstd
    xg = x3.reshape(1, n * G, m)
    xc = x3.reshape(1, n * c, s)
    yc = y3.reshape(1, n * c, s)
    chunk = config.CHUNK_ELEMENTS
    if _fused(n, G, m, x3.itemsize, 1):
        first_forward_fused(x3.size, xg, xc, weight, bias, eps, chunk, coef, yc, mean, rstd)
        return mean, rstd
    nch = -(-m // chunk)
    pmean = np.empty((n * G, nch))
    pm2 = np.empty((n * G, nch))
    rows_moments(x3.size, xg, chunk, pmean, pm2)
    m2 = np.empty(n * G)
    rows_merge(pmean, pm2, m, chunk, mean, m2)
    finish_stats(m2, m, eps, rstd)
    forward_coef(mean, rstd, weight, bias, G, 1, coef)
    rows_apply(x3.size, xc, coef, chunk, yc, xc, False, False)
    return mean, rstd


def backward(dy3, x3, G, mean, rstd, weight, channels_last, dx3):
    """dx into ``dx3``; returns float64 ``(dweight, dbias)`` of shape (C,)."""
    if channels_last:
        n, s, c = x3.shape
    else:
        n, c, s = x3.shape
    cg = c // G
    m = cg * s
    coef = np.empty((5, n * c), x3.dtype)
    dweight = np.empty(c)
    dbias = np.empty(c)
    sdy = np.empty(n * c)
    sdxc = np.empty(n * c)
    chunk = config.CHUNK_ELEMENTS
    if channels_last:
        rows, width, nrb = blocks(x3)
        psdy = np.empty((n, nrb, c))
        psdxc = np.empty((n, nrb, c))
        colmean = np.repeat(mean.reshape(n, G), cg, axis=1)
        cols_grad_sums(x3.size, x3, dy3, colmean, rows, width, psdy, psdxc, x3, False)
        cols_grad_fold(psdy, psdxc, 1, sdy.reshape(n, c), sdxc.reshape(n, c))
        backward_coef(mean, rstd, weight, sdy, sdxc, G, m, coef, dweight, dbias)
        rows, width = apply_blocks(x3)
        cols_grad_apply(x3.size, x3, dy3, coef.reshape(5, n, c), rows, width, True, dx3, x3,
                        False, x3, False)
        return dweight, dbias
    xc = x3.reshape(1, n * c, s)
    dyc = dy3.reshape(1, n * c, s)
    dxc = dx3.reshape(1, n * c, s)
    if _fused(n, G, m, x3.itemsize, 2):
        first_backward_fused(x3.size, xc, dyc, mean, rstd, weight, G, chunk, coef, dxc, sdy,
                             sdxc)
        param_grads(sdy, sdxc, rstd, G, dweight, dbias)
        return dweight, dbias
    nch = -(-s // chunk)
    psdy = np.empty((1, nch, n * c))
    psdxc = np.empty((1, nch, n * c))
    rows_grad_sums(x3.size, xc, dyc, np.repeat(mean, cg), chunk, psdy[0], psdxc[0], xc, False)
    cols_grad_fold(psdy, psdxc, 1, sdy.reshape(1, n * c), sdxc.reshape(1, n * c))
    backward_coef(mean, rstd, weight, sdy, sdxc, G, m, coef, dweight, dbias)
    rows_grad_apply(x3.size, xc, dyc, coef, chunk, True, dxc, xc, False, xc, False)
    return dweight, dbias


#: What :mod:`fastbn.functional` calls; :mod:`fastbn.cuda.group_norm` has the same.
__all__ = ["forward", "backward"]
