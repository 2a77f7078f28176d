r"""Row kernels: channels whose values are contiguous runs of a 3-D view.

``x3`` has shape ``(A, C, B)``: channel ``c`` holds the ``A`` runs
``x3[a, c, :]`` of ``B`` contiguous values (NCHW batch norm: ``(N, C, H*W)``;
group norm: ``(1, N*G, C/G*H*W)`` for statistics and ``(1, N*C, H*W)`` for the
elementwise passes; layer norm: ``(1, rows, D)``).  A channel's ``m = A*B``
values, taken in (a, b) order, are cut into fixed chunks of ``chunk``
elements; per-chunk results are merged per channel in chunk order.

Coefficient arrays are indexed by channel: ``coef[:, c]`` holds
(mean_hi, mean_lo, scale, bias) for the forward and (mean_hi, mean_lo, k0,
k1, k2) for the backward, in x's dtype (:mod:`._moments`).

See Also
--------
fastbn.cpu._columns : the same passes for channels-last data.
"""

import numpy as np
from numba import prange

from ._jit import driver, inline, worker
from ._moments import (
    chan_merge,
    epilogue,
    grad_coef,
    grad_epilogue,
    relu_mask,
    rstd_from_m2,
    set_backward_coef,
    set_forward_coef,
    shifted_moments,
)


@inline
def _run(v, v1, B):
    """``(a, b0, b1)``: the run ``x3[a, c, b0:b1]`` that holds value ``v`` of a channel,
    cut at ``v1``."""
    a = v // B
    b0 = v - a * B
    return a, b0, min(B, b0 + (v1 - v))


@worker
def chunk_moments(x3, c, v0, v1):
    """(mean, m2) of channel ``c``'s values ``v0:v1`` in (sample, inner) order."""
    B = x3.shape[2]
    a = v0 // B
    shift = np.float64(x3[a, c, v0 - a * B])
    s1 = 0.0
    s2 = 0.0
    v = v0
    while v < v1:
        a, b0, b1 = _run(v, v1, B)
        row = x3[a, c, b0:b1]  # slices + range(len): indices provably >= 0, loops vectorize
        for i in range(row.size):
            d = np.float64(row[i]) - shift
            s1 += d
            s2 += d * d
        v += b1 - b0
    return shifted_moments(v1 - v0, shift, s1, s2)


@worker
def chunk_grad_sums(x3, dy3, c, v0, v1, mean, y3, relu):
    """(sum(g), sum(g * (x - mean))) over channel ``c``'s values ``v0:v1``.

    ``g = dy``, or ``dy * (y > 0)`` when the forward applied a ReLU (``relu``)
    whose output ``y3`` was saved.
    """
    B = x3.shape[2]
    sdy = 0.0
    sdxc = 0.0
    v = v0
    while v < v1:
        a, b0, b1 = _run(v, v1, B)
        xr = x3[a, c, b0:b1]
        dr = dy3[a, c, b0:b1]
        if relu:
            yr = y3[a, c, b0:b1]
            for i in range(xr.size):
                g = np.float64(relu_mask(dr[i], yr[i], True))
                sdy += g
                sdxc += g * (np.float64(xr[i]) - mean)
        else:
            for i in range(xr.size):
                g = np.float64(dr[i])
                sdy += g
                sdxc += g * (np.float64(xr[i]) - mean)
        v += b1 - b0
    return sdy, sdxc


@worker
def chunk_apply(x3, y3, coef, c, v0, v1, res3, has_res, relu):
    """``y = act(((x - mean_hi) - mean_lo) * scale + bias [+ residual])`` over ``v0:v1``.

    ``act`` is ReLU when ``relu`` (NaN stays NaN), else the identity.
    """
    B = x3.shape[2]
    hi = coef[0, c]
    lo = coef[1, c]
    scale = coef[2, c]
    bias = coef[3, c]
    zero = lo - lo
    v = v0
    while v < v1:
        a, b0, b1 = _run(v, v1, B)
        xr = x3[a, c, b0:b1]
        yr = y3[a, c, b0:b1]
        rr = res3[a, c, b0:b1]  # x3 itself when there is no residual (not read)
        for i in range(xr.size):
            yr[i] = epilogue(((xr[i] - hi) - lo) * scale + bias, rr[i], has_res, relu, zero)
        v += b1 - b0


@worker
def chunk_grad_apply(x3, dy3, dx3, coef, c, v0, v1, training, y3, relu, dres3, has_dres):
    """``dx = g * k0 + ((x - mean_hi) - mean_lo) * k1 + k2`` (``g * k0`` if frozen).

    ``g`` is ``dy`` masked by the forward's ReLU when ``relu``; with
    ``has_dres`` it is also written to ``dres3`` (the residual's gradient).
    """
    B = x3.shape[2]
    hi = coef[0, c]
    lo = coef[1, c]
    k0 = coef[2, c]
    k1 = coef[3, c]
    k2 = coef[4, c]
    v = v0
    while v < v1:
        a, b0, b1 = _run(v, v1, B)
        xr = x3[a, c, b0:b1]
        dr = dy3[a, c, b0:b1]
        gr = dx3[a, c, b0:b1]
        if relu or has_dres:
            yr = y3[a, c, b0:b1]
            rr = dres3[a, c, b0:b1]
            for i in range(xr.size):
                g = relu_mask(dr[i], yr[i], relu)
                if has_dres:
                    rr[i] = g
                gr[i] = grad_epilogue(g, xr[i], hi, lo, k0, k1, k2, training)
        elif training:
            for i in range(xr.size):
                gr[i] = dr[i] * k0 + ((xr[i] - hi) - lo) * k1 + k2
        else:
            for i in range(xr.size):
                gr[i] = dr[i] * k0
        v += b1 - b0


@worker
def channel_moments(x3, c, chunk):
    """(mean, m2) of channel ``c``: chunk moments merged in chunk order."""
    total = x3.shape[0] * x3.shape[2]
    n = np.int64(0)
    mean = 0.0
    m2 = 0.0
    for v0 in range(0, total, chunk):
        v1 = min(v0 + chunk, total)
        mb, m2b = chunk_moments(x3, c, v0, v1)
        n, mean, m2 = chan_merge(n, mean, m2, v1 - v0, mb, m2b)
    return mean, m2


@worker
def channel_grad_sums(x3, dy3, c, chunk, mean, y3, relu):
    """(sum(dy), sum(dy * (x - mean))) of channel ``c``, chunk sums added in order."""
    total = x3.shape[0] * x3.shape[2]
    sdy = 0.0
    sdxc = 0.0
    for v0 in range(0, total, chunk):
        a, b = chunk_grad_sums(x3, dy3, c, v0, min(v0 + chunk, total), mean, y3, relu)
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
    res3,     # (A, C, B) residual added before the activation (ignored unless has_res)
    has_res,  # bool
    relu,     # bool: apply a ReLU to the output
):
    """Training forward, one channel per task: statistics, then y from cache."""
    C = x3.shape[1]
    total = x3.shape[0] * x3.shape[2]
    for c_ in prange(C):
        c = np.int64(c_)  # one callee specialization (fastbn.cpu._jit)
        mu, s = channel_moments(x3, c, chunk)
        r = rstd_from_m2(s, total, eps)
        mean[c] = mu
        m2[c] = s
        rstd[c] = r
        set_forward_coef(coef, c, mu, r, weight[c], bias[c])
        chunk_apply(x3, y3, coef, c, np.int64(0), total, res3, has_res, relu)


@driver
def rows_moments(x3, chunk, pmean, pm2):
    """Per-chunk (mean, m2) into ``pmean``/``pm2`` of shape (C, chunks per channel)."""
    C = x3.shape[1]
    total = x3.shape[0] * x3.shape[2]
    nch = pmean.shape[1]
    for t_ in prange(C * nch):
        t = np.int64(t_)  # one callee specialization (fastbn.cpu._jit)
        c = t // nch
        v0 = (t - c * nch) * chunk
        pmean[c, t - c * nch], pm2[c, t - c * nch] = chunk_moments(
            x3, c, v0, min(v0 + chunk, total))


@worker
def rows_merge(pmean, pm2, total, chunk, mean, m2):
    """Merge per-chunk moments per channel in chunk order (same order as fused)."""
    C, nch = pmean.shape
    for c in range(C):
        n = np.int64(0)
        mu = 0.0
        s = 0.0
        for j in range(nch):
            v0 = j * chunk
            n, mu, s = chan_merge(n, mu, s, min(v0 + chunk, total) - v0, pmean[c, j], pm2[c, j])
        mean[c] = mu
        m2[c] = s


@driver
def rows_apply(x3, coef, chunk, y3, res3, has_res, relu):
    """Elementwise :func:`chunk_apply` over fixed chunks."""
    C = x3.shape[1]
    total = x3.shape[0] * x3.shape[2]
    nch = (total + chunk - 1) // chunk
    for t_ in prange(C * nch):
        t = np.int64(t_)  # one callee specialization (fastbn.cpu._jit)
        c = t // nch
        v0 = (t - c * nch) * chunk
        chunk_apply(x3, y3, coef, c, v0, min(v0 + chunk, total), res3, has_res, relu)


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
    y3,        # (A, C, B) saved forward output (read when relu)
    relu,      # bool: the forward applied a ReLU; mask dy by y > 0
    dres3,     # (A, C, B) residual gradient out (written when has_dres)
    has_dres,  # bool
):
    """Backward, one channel per task: both sums, then dx with x and dy from cache."""
    C = x3.shape[1]
    total = x3.shape[0] * x3.shape[2]
    for c_ in prange(C):
        c = np.int64(c_)  # one callee specialization (fastbn.cpu._jit)
        sdy, sdxc = channel_grad_sums(x3, dy3, c, chunk, mean[c], y3, relu)
        dbias[c] = sdy
        dweight[c] = sdxc * rstd[c]
        k0, k1, k2 = grad_coef(mean[c], rstd[c], weight[c], sdy, sdxc, total, training)
        set_backward_coef(coef, c, mean[c], k0, k1, k2)
        chunk_grad_apply(x3, dy3, dx3, coef, c, np.int64(0), total, training, y3, relu, dres3,
                         has_dres)


@driver
def rows_grad_sums(x3, dy3, mean, chunk, psdy, psdxc, y3, relu):
    """Per-chunk gradient sums into ``psdy``/``psdxc`` of shape (chunks per channel, C).

    The (chunk, channel) layout is that of the column kernels' partials, so
    :func:`fastbn.cpu._columns.cols_grad_fold` (with ``B = 1``) adds them in the same order as
    :func:`rows_backward_fused` does.
    """
    C = x3.shape[1]
    total = x3.shape[0] * x3.shape[2]
    nch = psdy.shape[0]
    for t_ in prange(C * nch):
        t = np.int64(t_)  # one callee specialization (fastbn.cpu._jit)
        c = t // nch
        j = t - c * nch
        v0 = j * chunk
        psdy[j, c], psdxc[j, c] = chunk_grad_sums(
            x3, dy3, c, v0, min(v0 + chunk, total), mean[c], y3, relu)


@driver
def rows_grad_apply(x3, dy3, coef, chunk, training, dx3, y3, relu, dres3, has_dres):
    """Elementwise dx over fixed chunks, coefficients from ``coef`` (5, C)."""
    C = x3.shape[1]
    total = x3.shape[0] * x3.shape[2]
    nch = (total + chunk - 1) // chunk
    for t_ in prange(C * nch):
        t = np.int64(t_)  # one callee specialization (fastbn.cpu._jit)
        c = t // nch
        v0 = (t - c * nch) * chunk
        chunk_grad_apply(x3, dy3, dx3, coef, c, v0, min(v0 + chunk, total), training, y3, relu,
                         dres3, has_dres)
