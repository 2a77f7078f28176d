r"""Masked batch norm on the CPU (Keras 3's ``mask=``): Numba kernels.

``x3`` is the canonical ``(A, C, B)`` view and ``mask2`` the bool ``(A, B)``
mask (x's shape without the channel axis); every channel has the same
``mv`` valid positions.

Forward (training): per channel, shifted sums over the valid positions of
fixed chunks of rows, shifted by the channel's value at the first valid
position, turned into per-chunk ``(mean, m2)`` and merged with Chan's formula
in chunk order; then ``y`` at every position with those statistics.  Chunks
depend on the shape only, so results are bit-identical for any thread count.

Backward: every position's ``y`` depends on the statistics, so the two sums
run over every position (the unmasked kernels' :func:`grad_sums`) and only the
valid positions carry the terms through the statistics:

.. code-block:: text

    dx = dy * k0 + v * ((x - mean) * k1 + k2)      # v = mask, k1, k2 with m = mv

See Also
--------
fastbn.reference.batch_norm_train_masked, fastbn.reference.batch_norm_backward_train_masked
"""

import numpy as np
from numba import prange

from .. import config
from ._columns import block_apply, block_moments
from ._jit import driver, worker
from ._moments import (
    chan_merge,
    finish_stats,
    grad_coef,
    grad_epilogue,
    relu_mask,
    rstd_from_m2,
    sample_forward_coef,
    set_backward_coef,
    set_forward_coef,
    shifted_moments,
)
from ._rows import channel_grad_sums, chunk_apply


@worker
def _chunk_sums(x3, mask2, c, a0, a1, shift):
    """Shifted sums ``(sum(x - shift), sum((x - shift)**2))`` of channel ``c``'s valid
    values in rows ``a0:a1``."""
    s1 = 0.0
    s2 = 0.0
    for a in range(a0, a1):
        xr = x3[a, c, :]
        mr = mask2[a, :]
        for i in range(xr.size):
            d = np.float64(xr[i]) - shift
            if not mr[i]:
                d = 0.0
            s1 += d
            s2 += d * d
    return s1, s2


@driver
def masked_rows_forward(x3, mask2, counts, rows, sa, sb, weight, bias, eps, coef, y3, mean, m2,
                        rstd, res3, has_res, relu):
    """Training forward, one channel per task (large ``B``): masked moments over fixed
    chunks of ``rows`` rows (``counts``: valid positions per chunk) merged in order,
    then y from cache.  ``(sa, sb)``: the first valid position (the shift)."""
    A, C, B = x3.shape
    nch = counts.shape[0]
    for c_ in prange(C):
        c = np.int64(c_)  # one callee specialization (fastbn.cpu._jit)
        shift = np.float64(x3[sa, c, sb])
        n = np.int64(0)
        mu = 0.0
        s = 0.0
        for j in range(nch):
            nb = counts[j]
            if nb == 0:
                continue
            a0 = j * rows
            s1, s2 = _chunk_sums(x3, mask2, c, a0, min(a0 + rows, A), shift)
            mb, m2b = shifted_moments(nb, shift, s1, s2)
            n, mu, s = chan_merge(n, mu, s, nb, mb, m2b)
        r = rstd_from_m2(s, n, eps)
        mean[c] = mu
        m2[c] = s
        rstd[c] = r
        set_forward_coef(coef, c, mu, r, weight[c], bias[c])
        chunk_apply(x3, y3, coef, c, np.int64(0), A * B, res3, has_res, relu)


@driver
def masked_cols_forward_fused(x3, runs, width, scratch, weight, bias, eps, coef, y3, res3,
                              has_res, relu, mean, m2, rstd):
    """Training forward of channels-last and 2-D data (``x3``: (1, A, C), one column
    per channel, a row mask) in one call.  A task is a block of ``width`` columns:
    the moments of each run of valid rows (``runs``: (R, 2) start, stop, in row
    order), merged with Chan's formula in run order, the coefficients, then the
    output pass over every row while the block is in L2 (one read of x, one write
    of y).  ``scratch``: (tasks, 2, width) float64."""
    A, K = x3.shape[1], x3.shape[2]
    zero = np.int64(0)
    coef2 = coef.reshape((coef.shape[0], K))
    for t_ in prange((K + width - 1) // width):
        t = np.int64(t_)  # one callee specialization (fastbn.cpu._jit)
        k0 = t * width
        k1 = min(k0 + width, K)
        bm = scratch[t, 0, :k1 - k0]
        bs = scratch[t, 1, :k1 - k0]
        n = np.int64(0)
        for j in range(runs.shape[0]):
            r0 = runs[j, 0]
            r1 = runs[j, 1]
            block_moments(x3, zero, r0, r1, k0, k1, bm, bs)
            if n == 0:
                for k in range(k1 - k0):
                    mean[k0 + k] = bm[k]
                    m2[k0 + k] = bs[k]
            else:
                for k in range(k1 - k0):
                    _, mean[k0 + k], m2[k0 + k] = chan_merge(n, mean[k0 + k], m2[k0 + k],
                                                             r1 - r0, bm[k], bs[k])
            n += r1 - r0
        finish_stats(m2[k0:k1], n, eps, rstd[k0:k1])
        sample_forward_coef(zero, k0, k1, mean, rstd, weight, bias, K, np.int64(1), coef2)
        block_apply(x3, zero, zero, A, k0, k1, coef, y3, res3, has_res, relu)


def _valid_runs(valid):
    """(R, 2) int64 start, stop of the runs of True in the 1-D bool ``valid``."""
    edges = np.diff(np.concatenate(([0], valid.astype(np.int8), [0])))
    return np.stack([np.flatnonzero(edges == 1), np.flatnonzero(edges == -1)], axis=1)


@driver
def masked_cols_sums(x2, mask2, rows, shift, ps1, ps2):
    """Per-chunk shifted sums of each column of ``x2`` (A, C*B) over its valid rows:
    chunk ``t`` (rows ``t*rows`` on) into ``ps1[t]``, ``ps2[t]`` (K,); ``shift`` (K,)."""
    A, K = x2.shape
    B = mask2.shape[1]
    for t_ in prange(ps1.shape[0]):
        t = np.int64(t_)  # one callee specialization (fastbn.cpu._jit)
        s1 = ps1[t]
        s2 = ps2[t]
        for k in range(K):
            s1[k] = 0.0
            s2[k] = 0.0
        for a in range(t * rows, min(t * rows + rows, A)):
            xr = x2[a]
            if B == 1:
                if mask2[a, 0]:
                    for k in range(K):
                        d = np.float64(xr[k]) - shift[k]
                        s1[k] += d
                        s2[k] += d * d
            else:
                mr = mask2[a]
                for k in range(K):
                    if mr[k % B]:
                        d = np.float64(xr[k]) - shift[k]
                        s1[k] += d
                        s2[k] += d * d


@worker
def masked_cols_merge(ps1, ps2, counts, shift, B, mean, m2):
    """Per channel, the chunks' ``(mean, m2)`` of each of its ``B`` columns merged in
    (chunk, column) order; ``counts`` (chunks, B) the valid rows per chunk and column."""
    C = mean.shape[0]
    for c in range(C):
        n = np.int64(0)
        mu = 0.0
        s = 0.0
        for j in range(ps1.shape[0]):
            for b in range(B):
                nb = counts[j, b]
                if nb == 0:
                    continue
                k = c * B + b
                mb, m2b = shifted_moments(nb, shift[k], ps1[j, k], ps2[j, k])
                n, mu, s = chan_merge(n, mu, s, nb, mb, m2b)
        mean[c] = mu
        m2[c] = s


@driver
def masked_grad_apply(x3, dy3, coef, mask2, rows, dx3, y3, relu, dres3, has_dres, per_channel):
    """``dx = g * k0 + v * (((x - mean_hi) - mean_lo) * k1 + k2)``, coefficients ``coef``
    (5, C).  Tasks: (channel, chunk of ``rows`` rows) when ``per_channel`` (large ``B``),
    else chunks of rows over every channel."""
    A, C, B = x3.shape
    nch = (A + rows - 1) // rows
    ntask = C * nch if per_channel else nch
    for t_ in prange(ntask):
        t = np.int64(t_)  # one callee specialization (fastbn.cpu._jit)
        if per_channel:
            c0 = t // nch
            j = t - c0 * nch
            c1 = c0 + 1
        else:
            c0 = np.int64(0)
            j = t
            c1 = np.int64(C)
        for a in range(j * rows, min(j * rows + rows, A)):
            for c in range(c0, c1):
                hi = coef[0, c]
                lo = coef[1, c]
                k0 = coef[2, c]
                k1 = coef[3, c]
                k2 = coef[4, c]
                xr = x3[a, c, :]
                dr = dy3[a, c, :]
                gr = dx3[a, c, :]
                mr = mask2[a, :]
                if relu or has_dres:
                    yr = y3[a, c, :]
                    rr = dres3[a, c, :]
                    for i in range(xr.size):
                        g = relu_mask(dr[i], yr[i], relu)
                        if has_dres:
                            rr[i] = g
                        gr[i] = grad_epilogue(g, xr[i], hi, lo, k0, k1, k2, mr[i])
                else:
                    for i in range(xr.size):
                        v = ((xr[i] - hi) - lo) * k1 + k2
                        gr[i] = dr[i] * k0 + (v if mr[i] else v - v)


@worker
def _grad_rows(x3, dy3, coef, mask2, c, a0, a1, dx3, y3, relu, dres3, has_dres):
    """Masked dx of channel ``c`` in rows ``a0:a1`` (coefficients ``coef[:, c]``)."""
    hi = coef[0, c]
    lo = coef[1, c]
    k0 = coef[2, c]
    k1 = coef[3, c]
    k2 = coef[4, c]
    for a in range(a0, a1):
        xr = x3[a, c, :]
        dr = dy3[a, c, :]
        gr = dx3[a, c, :]
        mr = mask2[a, :]
        if relu or has_dres:
            yr = y3[a, c, :]
            rr = dres3[a, c, :]
            for i in range(xr.size):
                g = relu_mask(dr[i], yr[i], relu)
                if has_dres:
                    rr[i] = g
                gr[i] = grad_epilogue(g, xr[i], hi, lo, k0, k1, k2, mr[i])
        else:
            for i in range(xr.size):
                v = ((xr[i] - hi) - lo) * k1 + k2
                gr[i] = dr[i] * k0 + (v if mr[i] else v - v)


@driver
def masked_rows_backward(x3, dy3, mean, rstd, weight, mv, chunk, coef, mask2, dx3, dweight,
                         dbias, y3, relu, dres3, has_dres):
    """Masked backward, one channel per task (large ``B``): both sums over every
    position, then dx with x and dy from cache.  ``mean``/``rstd``/``weight`` float64."""
    A, C, B = x3.shape
    for c_ in prange(C):
        c = np.int64(c_)  # one callee specialization (fastbn.cpu._jit)
        sdy, sdxc = channel_grad_sums(x3, dy3, c, chunk, mean[c], y3, relu)
        dbias[c] = sdy
        dweight[c] = sdxc * rstd[c]
        k0, k1, k2 = grad_coef(mean[c], rstd[c], weight[c], sdy, sdxc, mv, True)
        set_backward_coef(coef, c, mean[c], k0, k1, k2)
        _grad_rows(x3, dy3, coef, mask2, c, np.int64(0), A, dx3, y3, relu, dres3, has_dres)


@driver
def masked_cols_grad_apply(x2, dy2, coef, valid, rows, dx2, y2, relu, dres2, has_dres):
    """Masked dx of channels-last data (``B == 1``): ``x2`` (A, C), ``valid`` (A,),
    fixed chunks of ``rows`` rows, the inner loop over the contiguous channels."""
    A, C = x2.shape
    hi = coef[0]
    lo = coef[1]
    k0 = coef[2]
    k1 = coef[3]
    k2 = coef[4]
    for t_ in prange((A + rows - 1) // rows):
        t = np.int64(t_)  # one callee specialization (fastbn.cpu._jit)
        for a in range(t * rows, min(t * rows + rows, A)):
            xr = x2[a]
            dr = dy2[a]
            gr = dx2[a]
            ok = valid[a]
            if relu or has_dres:
                yr = y2[a]
                rr = dres2[a]
                for c in range(C):
                    g = relu_mask(dr[c], yr[c], relu)
                    if has_dres:
                        rr[c] = g
                    gr[c] = grad_epilogue(g, xr[c], hi[c], lo[c], k0[c], k1[c], k2[c], ok)
            elif ok:
                for c in range(C):
                    gr[c] = dr[c] * k0[c] + (((xr[c] - hi[c]) - lo[c]) * k1[c] + k2[c])
            else:
                for c in range(C):
                    gr[c] = dr[c] * k0[c]


# ---------------------------------------------------------------------------
# launchers


def _uses_rows(x3):
    return x3.shape[2] >= config.ROW_KERNEL_MIN_INNER


def _first_valid(mask2):
    return divmod(int(np.argmax(mask2.reshape(-1))), mask2.shape[1])


def _chunk_counts(mask2, rows):
    """Valid positions per (chunk of ``rows`` rows, column b): int64 (chunks, B)."""
    a = mask2.shape[0]
    starts = np.arange(0, a, rows)
    return np.add.reduceat(mask2.astype(np.int64), starts, axis=0)


def forward_train(x3, mask2, weight, bias, eps, y3, res3=None, relu=False):
    """Masked training forward into ``y3``; returns float64 ``(mean, m2, rstd)``.
    ``mask2``: bool (A, B) with at least one True."""
    a, c, b = x3.shape
    mean, m2, rstd = np.empty(c), np.empty(c), np.empty(c)
    sa, sb = _first_valid(mask2)
    has_res = res3 is not None
    if _uses_rows(x3):
        rows = max(1, config.CHUNK_ELEMENTS // b)
        counts = _chunk_counts(mask2, rows).sum(axis=1)
        masked_rows_forward(x3.size, x3, mask2, counts, rows, sa, sb, weight, bias, eps,
                            np.empty((4, c), x3.dtype), y3, mean, m2, rstd,
                            res3 if has_res else x3, has_res, relu)
        return mean, m2, rstd
    from . import batch_norm as _bn

    width = _bn._fused_columns(x3, 1)
    if width:
        runs = _valid_runs(mask2.reshape(a)).astype(np.int64)
        has_res = res3 is not None
        ntask = (c + width - 1) // width
        masked_cols_forward_fused(x3.size, x3.reshape(1, a, c), runs, width,
                                  np.empty((ntask, 2, width)), weight, bias, eps,
                                  np.empty((4, 1, c), x3.dtype), y3.reshape(1, a, c),
                                  (res3 if has_res else x3).reshape(1, a, c), has_res, relu,
                                  mean, m2, rstd)
        return mean, m2, rstd
    k = c * b
    rows = max(1, config.CHUNK_ELEMENTS // k)
    counts = _chunk_counts(mask2, rows)
    shift = np.repeat(x3[sa, :, sb].astype(np.float64), b)
    ps1 = np.empty((counts.shape[0], k))
    ps2 = np.empty((counts.shape[0], k))
    masked_cols_sums(x3.size, x3.reshape(a, k), mask2, rows, shift, ps1, ps2)
    masked_cols_merge(ps1, ps2, counts, shift, b, mean, m2)
    finish_stats(m2, int(counts.sum()), eps, rstd)
    _bn.forward_apply(x3, mean, rstd, weight, bias, y3, res3, relu)
    return mean, m2, rstd


def backward(dy3, x3, mask2, mv, mean, rstd, weight, dx3, y3=None, relu=False, dres3=None):
    """Masked training backward: dx into ``dx3`` (the residual's gradient into ``dres3``);
    returns float64 ``(dweight, dbias)``.  ``mv``: valid positions per channel."""
    from . import batch_norm as _bn

    a, c, b = x3.shape
    has_dres = dres3 is not None
    y3 = x3 if y3 is None else y3
    dres3 = dres3 if has_dres else x3
    if _uses_rows(x3):
        dweight, dbias = np.empty(c), np.empty(c)
        mean, rstd, weight = (np.asarray(v, np.float64) for v in (mean, rstd, weight))
        masked_rows_backward(x3.size, x3, dy3, mean, rstd, weight, mv, config.CHUNK_ELEMENTS,
                             np.empty((5, c), x3.dtype), mask2, dx3, dweight, dbias, y3, relu,
                             dres3, has_dres)
        return dweight, dbias
    sdy, sdxc = _bn.grad_sums(dy3, x3, mean, y3, relu)
    return backward_apply(dy3, x3, mask2, mv, mean, rstd, weight, sdy, sdxc, dx3, y3, relu,
                          dres3 if has_dres else None)


def backward_apply(dy3, x3, mask2, mv, mean, rstd, weight, sdy, sdxc, dx3, y3=None,
                   relu=False, dres3=None):
    """The masked backward's second phase: dx into ``dx3`` from per-channel sums over
    every position (``batch_norm.grad_sums``; for synchronized batch norm, the global
    batch's) and ``mv`` valid positions.  Returns float64 ``(dweight, dbias)`` made
    from those sums."""
    a, c, b = x3.shape
    has_dres = dres3 is not None
    y3 = x3 if y3 is None else y3
    dres3 = dres3 if has_dres else x3
    from . import batch_norm as _bn

    dweight, dbias = np.empty(c), np.empty(c)
    coef = np.empty((5, c), x3.dtype)
    _bn.backward_coef(mean, rstd, weight, sdy, sdxc, mv, True, 1, coef, dweight, dbias)
    rows = max(1, config.CHUNK_ELEMENTS // (c * b))
    if _uses_rows(x3):
        rows = max(1, config.CHUNK_ELEMENTS // b)
        masked_grad_apply(x3.size, x3, dy3, coef, mask2, rows, dx3, y3, relu, dres3, has_dres,
                          True)
    elif b == 1:
        shape2 = (a, c)
        masked_cols_grad_apply(x3.size, x3.reshape(shape2), dy3.reshape(shape2), coef,
                               mask2.reshape(a), rows, dx3.reshape(shape2), y3.reshape(shape2),
                               relu, dres3.reshape(shape2), has_dres)
    else:
        masked_grad_apply(x3.size, x3, dy3, coef, mask2, rows, dx3, y3, relu, dres3, has_dres,
                          False)
    return dweight, dbias
