r"""Batch normalization on the CPU: Numba kernels.

Every input reaches these kernels as a C-contiguous 3-D view ``x3`` of shape
``(A, C, B)``: ``A`` the product of the dimensions before the channel axis,
``C`` the channels, ``B`` the product of those after it (NCHW: ``(N, C, H*W)``;
channels-last and 2-D: ``(N*H*W, C, 1)``).  Each channel has ``m = A * B``
values.

Forward (training), per channel, with ``xhat = (x - mean) * rstd``:

.. code-block:: text

    mean, m2 = moments(x)                 # shifted sums + Chan merge, float64
    rstd     = 1 / sqrt(m2 / m + eps)     # biased variance
    y        = ((x - mean_hi) - mean_lo) * (weight * rstd) + bias

``mean_hi`` is the mean rounded to x's dtype and ``mean_lo`` the rest, so that
float32 data with a large offset is centred as accurately as float64 allows
while the output pass stays in float32.

Backward, with ``dy_hat = dy * weight``, ``sdy = sum(dy)`` and
``sdxc = sum(dy * (x - mean))``:

.. code-block:: text

    dbias   = sdy
    dweight = sdxc * rstd                 # = sum(dy * xhat)
    c1 = sum(dy_hat * xhat) / m           # = weight * dweight / m
    c2 = sum(dy_hat) / m                  # = weight * dbias / m
    dx = (dy_hat - (xhat * c1 + c2)) * rstd
       = dy * k0 + (x - mean) * k1 + k2   # k0 = weight*rstd, k1 = -k0*rstd*c1/weight...

Frozen statistics (``training=False``): ``dx = dy * weight * rstd``.

Two loop orders, chosen by ``B`` (``config.ROW_KERNEL_MIN_INNER``):

* row kernels (large ``B``, NCHW): work unit = a run of a channel's values in
  ``(sample, inner)`` order, cut into fixed chunks of
  ``config.CHUNK_ELEMENTS``; per-chunk results are merged per channel in chunk
  order.  When a channel fits in L2 one thread owns it start to finish and
  the second pass reads it from cache (the ``*_fused`` drivers).
* column kernels (small ``B``: channels-last, 2-D): ``x`` as the matrix
  ``(A, C*B)``; tasks are blocks of rows by blocks of columns, each writing
  per-column partials that are merged in row-block order, then folded per
  channel.  Never a ``prange`` over strided columns.

Layers: ``_*`` workers handle one chunk or channel, ``@driver`` functions split
the work into fixed chunks (parallel and serial twins), and
:mod:`fastbn.functional` validates, allocates and calls.

See Also
--------
fastbn.reference.batch_norm_train, fastbn.reference.batch_norm_backward_train
"""

import numpy as np
from numba import prange

from .. import config
from ._jit import driver, exact, worker
from ._moments import chan_merge, rstd_from_m2, shifted_moments

# ---------------------------------------------------------------------------
# per-channel coefficients (exact arithmetic: identical wherever inlined)


@exact
def _set_forward_coef(coef, i, mean, rstd, w, b):
    """Column ``i`` of ``coef`` (rows: mean_hi, mean_lo, scale, bias), in x's dtype."""
    coef[0, i] = mean
    coef[1, i] = mean - np.float64(coef[0, i])
    coef[2, i] = w * rstd
    coef[3, i] = b


@exact
def _grad_coef(mean, rstd, w, sdy, sdxc, m, training):
    """(k0, k1, k2) of ``dx = dy * k0 + (x - mean) * k1 + k2``."""
    k0 = w * rstd
    if not training:
        return k0, 0.0, 0.0
    fm = np.float64(m)
    k1 = -k0 * rstd * rstd * (sdxc / fm)
    k2 = -k0 * (sdy / fm)
    return k0, k1, k2


@exact
def _set_backward_coef(coef, i, mean, k0, k1, k2):
    """Column ``i`` of ``coef`` (rows: mean_hi, mean_lo, k0, k1, k2), in x's dtype."""
    coef[0, i] = mean
    coef[1, i] = mean - np.float64(coef[0, i])
    coef[2, i] = k0
    coef[3, i] = k1
    coef[4, i] = k2


# ---------------------------------------------------------------------------
# row kernels: x3 (A, C, B) with large B


@worker
def _chunk_moments(x3, c, v0, v1):
    """(mean, m2) of channel ``c``'s values ``v0:v1`` in (sample, inner) order."""
    B = x3.shape[2]
    a = v0 // B
    shift = np.float64(x3[a, c, v0 - a * B])
    s1 = 0.0
    s2 = 0.0
    v = v0
    while v < v1:
        a = v // B
        b0 = v - a * B
        b1 = min(B, b0 + (v1 - v))
        row = x3[a, c, b0:b1]  # slices + range(len): indices provably >= 0, loops vectorize
        for i in range(row.size):
            d = np.float64(row[i]) - shift
            s1 += d
            s2 += d * d
        v += b1 - b0
    return shifted_moments(v1 - v0, shift, s1, s2)


@worker
def _chunk_grad_sums(x3, dy3, c, v0, v1, mean):
    """(sum(dy), sum(dy * (x - mean))) over channel ``c``'s values ``v0:v1``."""
    B = x3.shape[2]
    sdy = 0.0
    sdxc = 0.0
    v = v0
    while v < v1:
        a = v // B
        b0 = v - a * B
        b1 = min(B, b0 + (v1 - v))
        xr = x3[a, c, b0:b1]
        dr = dy3[a, c, b0:b1]
        for i in range(xr.size):
            g = np.float64(dr[i])
            sdy += g
            sdxc += g * (np.float64(xr[i]) - mean)
        v += b1 - b0
    return sdy, sdxc


@worker
def _chunk_apply(x3, y3, coef, c, v0, v1):
    """``y = ((x - mean_hi) - mean_lo) * scale + bias`` over channel ``c``'s ``v0:v1``."""
    B = x3.shape[2]
    hi = coef[0, c]
    lo = coef[1, c]
    scale = coef[2, c]
    bias = coef[3, c]
    v = v0
    while v < v1:
        a = v // B
        b0 = v - a * B
        b1 = min(B, b0 + (v1 - v))
        xr = x3[a, c, b0:b1]
        yr = y3[a, c, b0:b1]
        for i in range(xr.size):
            yr[i] = ((xr[i] - hi) - lo) * scale + bias
        v += b1 - b0


@worker
def _chunk_grad_apply(x3, dy3, dx3, coef, c, v0, v1, training):
    """``dx = dy * k0 + ((x - mean_hi) - mean_lo) * k1 + k2`` (``dy * k0`` if frozen)."""
    B = x3.shape[2]
    hi = coef[0, c]
    lo = coef[1, c]
    k0 = coef[2, c]
    k1 = coef[3, c]
    k2 = coef[4, c]
    v = v0
    while v < v1:
        a = v // B
        b0 = v - a * B
        b1 = min(B, b0 + (v1 - v))
        xr = x3[a, c, b0:b1]
        dr = dy3[a, c, b0:b1]
        gr = dx3[a, c, b0:b1]
        if training:
            for i in range(xr.size):
                gr[i] = dr[i] * k0 + ((xr[i] - hi) - lo) * k1 + k2
        else:
            for i in range(xr.size):
                gr[i] = dr[i] * k0
        v += b1 - b0


@worker
def _channel_moments(x3, c, chunk):
    """(mean, m2) of channel ``c``: chunk moments merged in chunk order."""
    total = x3.shape[0] * x3.shape[2]
    n = 0
    mean = 0.0
    m2 = 0.0
    for v0 in range(0, total, chunk):
        v1 = min(v0 + chunk, total)
        mb, m2b = _chunk_moments(x3, c, v0, v1)
        n, mean, m2 = chan_merge(n, mean, m2, v1 - v0, mb, m2b)
    return mean, m2


@worker
def _channel_grad_sums(x3, dy3, c, chunk, mean):
    """(sum(dy), sum(dy * (x - mean))) of channel ``c``, chunk sums added in order."""
    total = x3.shape[0] * x3.shape[2]
    sdy = 0.0
    sdxc = 0.0
    for v0 in range(0, total, chunk):
        a, b = _chunk_grad_sums(x3, dy3, c, v0, min(v0 + chunk, total), mean)
        sdy += a
        sdxc += b
    return sdy, sdxc


@driver
def rows_forward_fused(
    x3,       # (A, C, B) input
    weight,   # (C,) float64
    bias,     # (C,) float64
    eps,      # float
    chunk,    # elements per statistics chunk
    coef,     # (4, C) x.dtype scratch: mean_hi, mean_lo, scale, bias
    y3,       # (A, C, B) output
    mean,     # (C,) float64 out
    m2,       # (C,) float64 out: sum of squared deviations
    rstd,     # (C,) float64 out
):
    """Training forward, one channel per task: statistics, then y from cache."""
    C = x3.shape[1]
    total = x3.shape[0] * x3.shape[2]
    for c in prange(C):
        mu, s = _channel_moments(x3, c, chunk)
        r = rstd_from_m2(s, total, eps)
        mean[c] = mu
        m2[c] = s
        rstd[c] = r
        _set_forward_coef(coef, c, mu, r, weight[c], bias[c])
        _chunk_apply(x3, y3, coef, c, 0, total)


@driver
def rows_moments(x3, chunk, pmean, pm2):
    """Per-chunk (mean, m2) into ``pmean``/``pm2`` of shape (C, chunks per channel)."""
    C = x3.shape[1]
    total = x3.shape[0] * x3.shape[2]
    nch = pmean.shape[1]
    for t in prange(C * nch):
        c = t // nch
        v0 = (t - c * nch) * chunk
        pmean[c, t - c * nch], pm2[c, t - c * nch] = _chunk_moments(
            x3, c, v0, min(v0 + chunk, total))


@worker
def rows_merge(pmean, pm2, total, chunk, mean, m2):
    """Merge per-chunk moments per channel in chunk order (same order as fused)."""
    C, nch = pmean.shape
    for c in range(C):
        n = 0
        mu = 0.0
        s = 0.0
        for j in range(nch):
            v0 = j * chunk
            n, mu, s = chan_merge(n, mu, s, min(v0 + chunk, total) - v0, pmean[c, j], pm2[c, j])
        mean[c] = mu
        m2[c] = s


@driver
def rows_apply(x3, coef, chunk, y3):
    """Elementwise ``y = ((x - mean_hi) - mean_lo) * scale + bias`` over fixed chunks."""
    C = x3.shape[1]
    total = x3.shape[0] * x3.shape[2]
    nch = (total + chunk - 1) // chunk
    for t in prange(C * nch):
        c = t // nch
        v0 = (t - c * nch) * chunk
        _chunk_apply(x3, y3, coef, c, v0, min(v0 + chunk, total))


@driver
def rows_backward_fused(
    x3,        # (A, C, B) forward input
    dy3,       # (A, C, B) upstream gradient
    mean,      # (C,) float64 saved mean
    rstd,      # (C,) float64 saved 1/sqrt(var + eps)
    weight,    # (C,) float64
    training,  # bool: gradient through the batch statistics
    chunk,     # elements per chunk
    coef,      # (5, C) x.dtype scratch: mean_hi, mean_lo, k0, k1, k2
    dx3,       # (A, C, B) output
    dweight,   # (C,) float64 out
    dbias,     # (C,) float64 out
):
    """Backward, one channel per task: both sums, then dx with x and dy from cache."""
    C = x3.shape[1]
    total = x3.shape[0] * x3.shape[2]
    for c in prange(C):
        sdy, sdxc = _channel_grad_sums(x3, dy3, c, chunk, mean[c])
        dbias[c] = sdy
        dweight[c] = sdxc * rstd[c]
        k0, k1, k2 = _grad_coef(mean[c], rstd[c], weight[c], sdy, sdxc, total, training)
        _set_backward_coef(coef, c, mean[c], k0, k1, k2)
        _chunk_grad_apply(x3, dy3, dx3, coef, c, 0, total, training)


@driver
def rows_grad_sums(x3, dy3, mean, chunk, psdy, psdxc):
    """Per-chunk gradient sums into ``psdy``/``psdxc`` of shape (chunks per channel, C).

    The (chunk, channel) layout is that of the column kernels' partials, so
    :func:`cols_grad_fold` (with ``B = 1``) adds them in the same order as
    :func:`rows_backward_fused` does.
    """
    C = x3.shape[1]
    total = x3.shape[0] * x3.shape[2]
    nch = psdy.shape[0]
    for t in prange(C * nch):
        c = t // nch
        j = t - c * nch
        v0 = j * chunk
        psdy[j, c], psdxc[j, c] = _chunk_grad_sums(
            x3, dy3, c, v0, min(v0 + chunk, total), mean[c])


@driver
def rows_grad_apply(x3, dy3, coef, chunk, training, dx3):
    """Elementwise dx over fixed chunks, coefficients from ``coef`` (5, C)."""
    C = x3.shape[1]
    total = x3.shape[0] * x3.shape[2]
    nch = (total + chunk - 1) // chunk
    for t in prange(C * nch):
        c = t // nch
        v0 = (t - c * nch) * chunk
        _chunk_grad_apply(x3, dy3, dx3, coef, c, v0, min(v0 + chunk, total), training)


# ---------------------------------------------------------------------------
# column kernels: x2 (A, K) with K = C * B, B small


@driver
def cols_moments(x2, rows, width, pmean, pm2):
    """Per (row block, column) (mean, m2) into ``pmean``/``pm2`` of shape (blocks, K).

    Task = ``rows`` rows by ``width`` columns; each column is shifted by the
    block's first row and summed down the rows (contiguous, vectorized).
    """
    A, K = x2.shape
    nrb = pmean.shape[0]
    ncb = (K + width - 1) // width
    for t in prange(nrb * ncb):
        rb = t // ncb
        k0 = (t - rb * ncb) * width
        k1 = min(k0 + width, K)
        r0 = rb * rows
        r1 = min(r0 + rows, A)
        s1 = pmean[rb, k0:k1]
        s2 = pm2[rb, k0:k1]
        shift = x2[r0, k0:k1]
        s1[:] = 0.0
        s2[:] = 0.0
        for r in range(r0 + 1, r1):
            xr = x2[r, k0:k1]
            for k in range(xr.size):
                d = np.float64(xr[k]) - np.float64(shift[k])
                s1[k] += d
                s2[k] += d * d
        for k in range(s1.size):
            s1[k], s2[k] = shifted_moments(r1 - r0, np.float64(shift[k]), s1[k], s2[k])


@driver
def cols_merge(pmean, pm2, A, rows, width):
    """Merge row blocks into row 0 of ``pmean``/``pm2`` along a fixed pairwise tree.

    Level ``s`` merges block ``rb + s`` into ``rb`` for every ``rb`` divisible by
    ``2 s``: rounding grows with log(blocks), not with their number, and the
    order never depends on the thread count.
    """
    nrb, K = pmean.shape
    ncb = (K + width - 1) // width
    for cb in prange(ncb):
        k0 = cb * width
        k1 = min(k0 + width, K)
        s = 1
        while s < nrb:
            for rb in range(0, nrb - s, 2 * s):
                na = min(rb * rows + s * rows, A) - rb * rows
                nb = min((rb + s) * rows + s * rows, A) - (rb + s) * rows
                fb = np.float64(nb) / np.float64(na + nb)
                fab = np.float64(na) * fb
                ma = pmean[rb, k0:k1]
                mb = pmean[rb + s, k0:k1]
                qa = pm2[rb, k0:k1]
                qb = pm2[rb + s, k0:k1]
                for k in range(ma.size):
                    delta = mb[k] - ma[k]
                    ma[k] += delta * fb
                    qa[k] += qb[k] + delta * delta * fab
            s *= 2


@worker
def cols_fold(colmean, colm2, A, B, mean, m2):
    """Per-channel (mean, m2) from per-column ones (column ``c*B + b``), in ``b`` order."""
    C = mean.shape[0]
    for c in range(C):
        n = A
        mu = colmean[c * B]
        s = colm2[c * B]
        for b in range(1, B):
            n, mu, s = chan_merge(n, mu, s, A, colmean[c * B + b], colm2[c * B + b])
        mean[c] = mu
        m2[c] = s


@driver
def cols_apply(x2, coef, rows, width, y2):
    """Elementwise ``y = ((x - mean_hi) - mean_lo) * scale + bias``, coef (4, K)."""
    A, K = x2.shape
    nrb = (A + rows - 1) // rows
    ncb = (K + width - 1) // width
    for t in prange(nrb * ncb):
        rb = t // ncb
        k0 = (t - rb * ncb) * width
        k1 = min(k0 + width, K)
        hi = coef[0, k0:k1]
        lo = coef[1, k0:k1]
        scale = coef[2, k0:k1]
        bias = coef[3, k0:k1]
        for r in range(rb * rows, min(rb * rows + rows, A)):
            xr = x2[r, k0:k1]
            yr = y2[r, k0:k1]
            for k in range(xr.size):
                yr[k] = ((xr[k] - hi[k]) - lo[k]) * scale[k] + bias[k]


@driver
def cols_grad_sums(x2, dy2, colmean, rows, width, psdy, psdxc):
    """Per (row block, column) gradient sums into ``psdy``/``psdxc`` (blocks, K)."""
    A, K = x2.shape
    nrb = psdy.shape[0]
    ncb = (K + width - 1) // width
    for t in prange(nrb * ncb):
        rb = t // ncb
        k0 = (t - rb * ncb) * width
        k1 = min(k0 + width, K)
        s1 = psdy[rb, k0:k1]
        s2 = psdxc[rb, k0:k1]
        mu = colmean[k0:k1]
        s1[:] = 0.0
        s2[:] = 0.0
        for r in range(rb * rows, min(rb * rows + rows, A)):
            xr = x2[r, k0:k1]
            dr = dy2[r, k0:k1]
            for k in range(xr.size):
                g = np.float64(dr[k])
                s1[k] += g
                s2[k] += g * (np.float64(xr[k]) - mu[k])


@worker
def cols_grad_fold(psdy, psdxc, B, sdy, sdxc):
    """Per-channel sums: row blocks in order, then the channel's ``B`` columns in order."""
    nrb = psdy.shape[0]
    C = sdy.shape[0]
    for c in range(C):
        a = 0.0
        s = 0.0
        for b in range(B):
            for rb in range(nrb):
                a += psdy[rb, c * B + b]
                s += psdxc[rb, c * B + b]
        sdy[c] = a
        sdxc[c] = s


@driver
def cols_grad_apply(x2, dy2, coef, rows, width, training, dx2):
    """Elementwise ``dx = dy * k0 + ((x - mean_hi) - mean_lo) * k1 + k2``, coef (5, K)."""
    A, K = x2.shape
    nrb = (A + rows - 1) // rows
    ncb = (K + width - 1) // width
    for t in prange(nrb * ncb):
        rb = t // ncb
        k0 = (t - rb * ncb) * width
        k1 = min(k0 + width, K)
        hi = coef[0, k0:k1]
        lo = coef[1, k0:k1]
        c0 = coef[2, k0:k1]
        c1 = coef[3, k0:k1]
        c2 = coef[4, k0:k1]
        for r in range(rb * rows, min(rb * rows + rows, A)):
            xr = x2[r, k0:k1]
            dr = dy2[r, k0:k1]
            gr = dx2[r, k0:k1]
            if training:
                for k in range(xr.size):
                    gr[k] = dr[k] * c0[k] + ((xr[k] - hi[k]) - lo[k]) * c1[k] + c2[k]
            else:
                for k in range(xr.size):
                    gr[k] = dr[k] * c0[k]


# ---------------------------------------------------------------------------
# serial glue shared by both loop orders


@worker
def forward_coef(mean, rstd, weight, bias, B, coef):
    """Fill ``coef`` (4, C*B): each channel's forward coefficients repeated ``B`` times."""
    for c in range(mean.shape[0]):
        for b in range(B):
            _set_forward_coef(coef, c * B + b, mean[c], rstd[c], weight[c], bias[c])


@worker
def finish_stats(mean, m2, m, eps, rstd):
    """``rstd = 1 / sqrt(m2 / m + eps)`` per channel."""
    for c in range(mean.shape[0]):
        rstd[c] = rstd_from_m2(m2[c], m, eps)


@worker
def backward_coef(mean, rstd, weight, sdy, sdxc, m, training, B, coef, dweight, dbias):
    """dweight, dbias and ``coef`` (5, C*B) from the per-channel sums."""
    for c in range(mean.shape[0]):
        dbias[c] = sdy[c]
        dweight[c] = sdxc[c] * rstd[c]
        k0, k1, k2 = _grad_coef(mean[c], rstd[c], weight[c], sdy[c], sdxc[c], m, training)
        for b in range(B):
            _set_backward_coef(coef, c * B + b, mean[c], k0, k1, k2)


@worker
def update_running(running_mean, running_var, mean, m2, m, momentum):
    """PyTorch's rule with the unbiased variance ``m2 / (m - 1)``, in place."""
    keep = 1.0 - momentum
    for c in range(mean.shape[0]):
        running_mean[c] = keep * np.float64(running_mean[c]) + momentum * mean[c]
        running_var[c] = keep * np.float64(running_var[c]) + momentum * (m2[c] / (m - 1))


# ---------------------------------------------------------------------------
# launchers: canonical arrays in, scratch allocated here, kernels chosen by shape


def _fits_fused(x3, arrays):
    a, c, b = x3.shape
    return (c >= config.FUSED_MIN_CHANNELS
            and a * b * x3.itemsize * arrays <= config.FUSED_CHANNEL_MAX_BYTES)


def _col_blocks(x3):
    """(x2, rows per block, columns per block, row blocks) of the column kernels."""
    a, c, b = x3.shape
    k = c * b
    width = max(1, min(k, config.COLUMN_BLOCK))
    rows = max(1, config.CHUNK_ELEMENTS // width)
    return x3.reshape(a, k), rows, width, -(-a // rows)


def _uses_rows(x3):
    return x3.shape[2] >= config.ROW_KERNEL_MIN_INNER


def moments(x3):
    """Per-channel ``(mean, m2)`` in float64 of a canonical ``(A, C, B)`` array."""
    a, c, b = x3.shape
    mean = np.empty(c)
    m2 = np.empty(c)
    chunk = config.CHUNK_ELEMENTS
    if _uses_rows(x3):
        nch = -(-(a * b) // chunk)
        pmean = np.empty((c, nch))
        pm2 = np.empty((c, nch))
        rows_moments(x3.size, x3, chunk, pmean, pm2)
        rows_merge(pmean, pm2, a * b, chunk, mean, m2)
    else:
        x2, rows, width, nrb = _col_blocks(x3)
        pmean = np.empty((nrb, x2.shape[1]))
        pm2 = np.empty((nrb, x2.shape[1]))
        cols_moments(x3.size, x2, rows, width, pmean, pm2)
        cols_merge(x3.size, pmean, pm2, a, rows, width)
        cols_fold(pmean[0], pm2[0], a, b, mean, m2)
    return mean, m2


def forward_train(x3, weight, bias, eps, y3):
    """Training forward into ``y3``; returns float64 ``(mean, m2, rstd)``."""
    a, c, b = x3.shape
    m = a * b
    rstd = np.empty(c)
    if _uses_rows(x3) and _fits_fused(x3, 1):
        mean = np.empty(c)
        m2 = np.empty(c)
        coef = np.empty((4, c), x3.dtype)
        rows_forward_fused(x3.size, x3, weight, bias, eps, config.CHUNK_ELEMENTS, coef, y3,
                           mean, m2, rstd)
        return mean, m2, rstd
    mean, m2 = moments(x3)
    finish_stats(mean, m2, m, eps, rstd)
    forward_apply(x3, mean, rstd, weight, bias, y3)
    return mean, m2, rstd


def forward_apply(x3, mean, rstd, weight, bias, y3):
    """``y = (x - mean) * rstd * weight + bias`` with given float64 per-channel stats."""
    a, c, b = x3.shape
    if _uses_rows(x3):
        coef = np.empty((4, c), x3.dtype)
        forward_coef(mean, rstd, weight, bias, 1, coef)
        rows_apply(x3.size, x3, coef, config.CHUNK_ELEMENTS, y3)
    else:
        x2, rows, width, _ = _col_blocks(x3)
        coef = np.empty((4, c * b), x3.dtype)
        forward_coef(mean, rstd, weight, bias, b, coef)
        cols_apply(x3.size, x2, coef, rows, width, y3.reshape(x2.shape))


def backward(dy3, x3, mean, rstd, weight, training, dx3):
    """dx into ``dx3``; returns float64 ``(dweight, dbias)``."""
    a, c, b = x3.shape
    m = a * b
    chunk = config.CHUNK_ELEMENTS
    dweight = np.empty(c)
    dbias = np.empty(c)
    if _uses_rows(x3):
        coef = np.empty((5, c), x3.dtype)
        if _fits_fused(x3, 2):
            rows_backward_fused(x3.size, x3, dy3, mean, rstd, weight, training, chunk, coef,
                                dx3, dweight, dbias)
            return dweight, dbias
        nch = -(-m // chunk)
        psdy = np.empty((nch, c))
        psdxc = np.empty((nch, c))
        rows_grad_sums(x3.size, x3, dy3, mean, chunk, psdy, psdxc)
        sdy, sdxc = np.empty(c), np.empty(c)
        cols_grad_fold(psdy, psdxc, 1, sdy, sdxc)
        backward_coef(mean, rstd, weight, sdy, sdxc, m, training, 1, coef, dweight, dbias)
        rows_grad_apply(x3.size, x3, dy3, coef, chunk, training, dx3)
        return dweight, dbias
    x2, rows, width, nrb = _col_blocks(x3)
    k = x2.shape[1]
    psdy = np.empty((nrb, k))
    psdxc = np.empty((nrb, k))
    cols_grad_sums(x3.size, x2, dy3.reshape(x2.shape), np.repeat(mean, b), rows, width,
                   psdy, psdxc)
    sdy, sdxc = np.empty(c), np.empty(c)
    cols_grad_fold(psdy, psdxc, b, sdy, sdxc)
    coef = np.empty((5, k), x3.dtype)
    backward_coef(mean, rstd, weight, sdy, sdxc, m, training, b, coef, dweight, dbias)
    cols_grad_apply(x3.size, x2, dy3.reshape(x2.shape), coef, rows, width, training,
                    dx3.reshape(x2.shape))
    return dweight, dbias
