r"""Layer norm and RMS norm on the CPU: Numba kernels.

Inputs reach these kernels as a C-contiguous 3-D view ``x3`` of shape
``(1, R, D)``: ``R`` rows (the leading dimensions) of ``D`` values (the
trailing ``normalized_shape``), the layout of :mod:`._rows` with one row per
"channel".  ``weight`` and ``bias`` are elementwise, shape ``(D,)``, in x's
dtype.  ``center`` selects layer norm (True) or RMS norm (False).

Forward, per row:

.. code-block:: text

    mean, m2 = moments(row)                       # shifted sums, float64
    layer norm: rstd = 1 / sqrt(m2 / D + eps)
    RMS norm:   rstd = 1 / sqrt(m2 / D + mean**2 + eps)   # = mean(x**2), no cancellation
    xhat = ((x - mu_hi) - mu_lo) * rstd           # mu = mean (layer) or 0 (RMS)
    y    = xhat * weight + bias

Backward, per row with ``dy_hat = dy * weight``:

.. code-block:: text

    c1 = sum(dy_hat * xhat) / D = rstd * sum(dy_hat * (x - mu)) / D
    c2 = sum(dy_hat) / D                          # 0 for RMS norm
    dx = (dy_hat - (xhat * c1 + c2)) * rstd
       = dy_hat * k0 + (x - mu) * k1 + k2         # k0 = rstd, k1 = -rstd**2 c1, k2 = -rstd c2
    dweight = sum over rows of dy * xhat,  dbias = sum over rows of dy

Two regimes, chosen by shape:

* short rows (``D * itemsize <= config.SHORT_ROW_MAX_BYTES`` and at least
  ``config.FUSED_MIN_CHANNELS`` rows), and every input of at most
  ``config.SERIAL_MAX_ELEMENTS``: tasks are blocks of whole rows.  A row
  is read once from memory; statistics and output come from L1.  Backward
  keeps per-task ``dweight``/``dbias`` partials (``config.ROW_BLOCK_TASKS``
  tasks at most) summed in task order.
* long rows, above the serial size only: statistics from fixed chunks of
  each row (parallel within a row) merged in chunk order; the output pass
  runs over column blocks that span every row, so ``dweight``/``dbias`` need
  no partials.

See Also
--------
fastbn.cuda.layer_norm (the GPU twin: the same functions, the same signatures),
fastbn.reference.layer_norm, fastbn.reference.rms_norm
"""

import numpy as np
from numba import prange

from .. import config
from ._columns import cols_grad_fold
from ._jit import driver, exact, parallel_driver, worker
from ._moments import rstd_from_m2
from ._rows import chunk_moments, rows_merge, rows_moments


@exact
def _row_rstd(mean, m2, d, eps, center):
    """rstd of a row from its moments: variance (layer norm) or mean square (RMS)."""
    if center:
        return rstd_from_m2(m2, d, eps)
    return 1.0 / np.sqrt(m2 / np.float64(d) + mean * mean + eps)


@exact
def _set_row_coef(coef, r, mu, rstd):
    """Column ``r`` of ``coef`` (rows: mu_hi, mu_lo, rstd) in x's dtype."""
    coef[0, r] = mu
    coef[1, r] = mu - np.float64(coef[0, r])
    coef[2, r] = rstd


@worker
def _apply_span(xs, ys, weight, bias, hi, lo, rstd):
    """``y = ((x - hi) - lo) * rstd * weight + bias`` over aligned 1-D spans."""
    for i in range(xs.size):
        ys[i] = ((xs[i] - hi) - lo) * rstd * weight[i] + bias[i]


@worker
def _weighted_sums(xs, ds, weight, mu):
    """(sum(dy * w), sum(dy * w * (x - mu))) of aligned 1-D spans, in float64."""
    a = 0.0
    s = 0.0
    for i in range(xs.size):
        g = np.float64(ds[i]) * np.float64(weight[i])
        a += g
        s += g * (np.float64(xs[i]) - mu)
    return a, s


@exact
def _row_grad_coef(coef, r, mu, rstd, a, s, d, center):
    """Column ``r`` of ``coef`` (mu_hi, mu_lo, k0, k1, k2) from the row's two sums."""
    fd = np.float64(d)
    c1 = rstd * s / fd
    c2 = a / fd if center else 0.0
    coef[0, r] = mu
    coef[1, r] = mu - np.float64(coef[0, r])
    coef[2, r] = rstd
    coef[3, r] = -rstd * rstd * c1
    coef[4, r] = -rstd * c2


@worker
def _grad_span(xs, ds, gs, weight, pdw, pdb, hi, lo, k0, k1, k2):
    """dx over aligned spans; adds ``dy * xhat`` and ``dy`` to float64 partials.

    ``k0`` is the row's rstd in x's dtype, so ``xhat = ((x - hi) - lo) * k0``.
    Each term is rounded once in x's dtype; the sums are float64.
    """
    for i in range(xs.size):
        xm = (xs[i] - hi) - lo
        gs[i] = ds[i] * weight[i] * k0 + xm * k1 + k2
        pdw[i] += np.float64(ds[i] * (xm * k0))
        pdb[i] += np.float64(ds[i])


@worker
def _grad_span2(xa, da, ga, xb, db, gb, weight, pdw, pdb, ca, cb):
    """:func:`_grad_span` for two rows at once: half the partials' load/store traffic.

    ``ca``/``cb`` are the rows' coefficient columns (mu_hi, mu_lo, k0, k1, k2).
    """
    ha, la, a0, a1, a2 = ca[0], ca[1], ca[2], ca[3], ca[4]
    hb, lb, b0, b1, b2 = cb[0], cb[1], cb[2], cb[3], cb[4]
    for i in range(xa.size):
        xma = (xa[i] - ha) - la
        xmb = (xb[i] - hb) - lb
        ga[i] = da[i] * weight[i] * a0 + xma * a1 + a2
        gb[i] = db[i] * weight[i] * b0 + xmb * b1 + b2
        pdw[i] += np.float64(da[i] * (xma * a0)) + np.float64(db[i] * (xmb * b0))
        pdb[i] += np.float64(da[i]) + np.float64(db[i])


@worker
def _grad_span4(x4, d4, g4, weight, pdw, pdb, c4):
    """:func:`_grad_span2` for four consecutive rows (``x4``, ``d4``, ``g4``: (4, D)
    views; ``c4``: (5, 4) coefficient columns): a quarter of the float64 partials'
    load/store traffic of one row at a time."""
    xa, xb, xc, xd = x4[0], x4[1], x4[2], x4[3]
    da, db, dc, dd = d4[0], d4[1], d4[2], d4[3]
    ga, gb, gc, gd = g4[0], g4[1], g4[2], g4[3]
    ha, la, a0, a1, a2 = c4[0, 0], c4[1, 0], c4[2, 0], c4[3, 0], c4[4, 0]
    hb, lb, b0, b1, b2 = c4[0, 1], c4[1, 1], c4[2, 1], c4[3, 1], c4[4, 1]
    hc, lc, e0, e1, e2 = c4[0, 2], c4[1, 2], c4[2, 2], c4[3, 2], c4[4, 2]
    hd, ld, f0, f1, f2 = c4[0, 3], c4[1, 3], c4[2, 3], c4[3, 3], c4[4, 3]
    for i in range(xa.size):
        w = weight[i]
        xma = (xa[i] - ha) - la
        xmb = (xb[i] - hb) - lb
        xmc = (xc[i] - hc) - lc
        xmd = (xd[i] - hd) - ld
        ga[i] = da[i] * w * a0 + xma * a1 + a2
        gb[i] = db[i] * w * b0 + xmb * b1 + b2
        gc[i] = dc[i] * w * e0 + xmc * e1 + e2
        gd[i] = dd[i] * w * f0 + xmd * f1 + f2
        pdw[i] += ((np.float64(da[i] * (xma * a0)) + np.float64(db[i] * (xmb * b0)))
                   + (np.float64(dc[i] * (xmc * e0)) + np.float64(dd[i] * (xmd * f0))))
        pdb[i] += ((np.float64(da[i]) + np.float64(db[i]))
                   + (np.float64(dc[i]) + np.float64(dd[i])))


# ---------------------------------------------------------------------------
# short rows: whole rows per task


@driver
def short_forward(
    x3,      # (1, R, D) input
    weight,  # (D,) x.dtype
    bias,    # (D,) x.dtype
    eps,     # float
    center,  # bool: layer norm (True) or RMS norm (False)
    rows,    # rows per task
    coef,    # (3, R) x.dtype scratch: mu_hi, mu_lo, rstd
    y3,      # (1, R, D) output
    mean,    # (R,) out (layer norm), any float dtype
    rstd,    # (R,) out, any float dtype
):
    """Forward, blocks of whole rows: statistics, then y while the row is in L1."""
    R, D = x3.shape[1], x3.shape[2]
    for t_ in prange((R + rows - 1) // rows):
        t = np.int64(t_)  # one callee specialization (fastbn.cpu._jit)
        for r in range(t * rows, min(t * rows + rows, R)):
            mu, m2 = chunk_moments(x3, r, np.int64(0), D)
            rs = _row_rstd(mu, m2, D, eps, center)
            mean[r] = mu
            rstd[r] = rs
            _set_row_coef(coef, r, mu if center else 0.0, rs)
            _apply_span(x3[0, r], y3[0, r], weight, bias, coef[0, r], coef[1, r], coef[2, r])


@driver
def short_backward(
    x3,      # (1, R, D) forward input
    dy3,     # (1, R, D) upstream gradient
    mean,    # (R,) float64 saved mean (zeros for RMS norm)
    rstd,    # (R,) float64 saved rstd
    weight,  # (D,) x.dtype
    center,  # bool
    rows,    # rows per task
    coef,    # (5, R) x.dtype scratch
    dx3,     # (1, R, D) output
    pdw,     # (tasks, D) float64 partial dweight
    pdb,     # (tasks, D) float64 partial dbias
):
    """Backward, blocks of whole rows: every row's sums, then dx two rows at a time.

    A task's rows (x and dy) stay in L2 between the two passes.
    """
    R, D = x3.shape[1], x3.shape[2]
    for t_ in prange(pdw.shape[0]):
        t = np.int64(t_)  # one callee specialization (fastbn.cpu._jit)
        pw = pdw[t]
        pb = pdb[t]
        pw[:] = 0.0
        pb[:] = 0.0
        r0 = t * rows
        r1 = min(r0 + rows, R)
        for r in range(r0, r1):
            a, s = _weighted_sums(x3[0, r], dy3[0, r], weight, mean[r])
            _row_grad_coef(coef, r, mean[r], rstd[r], a, s, D, center)
        r = r0
        while r + 4 <= r1:
            _grad_span4(x3[0, r:r + 4], dy3[0, r:r + 4], dx3[0, r:r + 4], weight, pw, pb,
                        coef[:, r:r + 4])
            r += 4
        if r + 2 <= r1:
            _grad_span2(x3[0, r], dy3[0, r], dx3[0, r], x3[0, r + 1], dy3[0, r + 1],
                        dx3[0, r + 1], weight, pw, pb, coef[:, r], coef[:, r + 1])
            r += 2
        if r < r1:
            _grad_span(x3[0, r], dy3[0, r], dx3[0, r], weight, pw, pb, coef[0, r], coef[1, r],
                       coef[2, r], coef[3, r], coef[4, r])


@driver
def sum_partials(p, width, out):
    """``out[d] = sum over t of p[t, d]``, in t order, parallel over column blocks."""
    T, D = p.shape
    for cb_ in prange((D + width - 1) // width):
        cb = np.int64(cb_)  # one callee specialization (fastbn.cpu._jit)
        d0 = cb * width
        acc = out[d0:min(d0 + width, D)]
        acc[:] = 0.0
        for t in range(T):
            row = p[t, d0:min(d0 + width, D)]
            for i in range(row.size):
                acc[i] += row[i]


# ---------------------------------------------------------------------------
# long rows: chunks within rows, output pass over column blocks of all rows


@worker
def finish_rows(mean, m2, d, eps, center, coef, rstd):
    """rstd and (mu_hi, mu_lo, rstd) coefficients per row from merged moments."""
    for r in range(mean.shape[0]):
        rs = _row_rstd(mean[r], m2[r], d, eps, center)
        rstd[r] = rs
        _set_row_coef(coef, r, mean[r] if center else 0.0, rs)


@parallel_driver
def long_apply(x3, coef, weight, bias, width, y3):
    """Forward output pass: tasks are column blocks, each over every row."""
    R, D = x3.shape[1], x3.shape[2]
    for cb_ in prange((D + width - 1) // width):
        cb = np.int64(cb_)  # one callee specialization (fastbn.cpu._jit)
        d0 = cb * width
        d1 = min(d0 + width, D)
        for r in range(R):
            _apply_span(x3[0, r, d0:d1], y3[0, r, d0:d1], weight[d0:d1], bias[d0:d1],
                        coef[0, r], coef[1, r], coef[2, r])


@parallel_driver
def long_grad_sums(x3, dy3, mean, weight, chunk, psa, pss):
    """Per (chunk, row) ``sum(dy * w)`` and ``sum(dy * w * (x - mu))`` into (chunks, R)."""
    R, D = x3.shape[1], x3.shape[2]
    nch = psa.shape[0]
    for t_ in prange(R * nch):
        t = np.int64(t_)  # one callee specialization (fastbn.cpu._jit)
        r = t // nch
        j = t - r * nch
        v0 = j * chunk
        v1 = min(v0 + chunk, D)
        psa[j, r], pss[j, r] = _weighted_sums(x3[0, r, v0:v1], dy3[0, r, v0:v1],
                                              weight[v0:v1], mean[r])


@worker
def long_grad_coef(mean, rstd, sa, ss, d, center, coef):
    for r in range(mean.shape[0]):
        _row_grad_coef(coef, r, mean[r], rstd[r], sa[r], ss[r], d, center)


@parallel_driver
def long_grad_apply(x3, dy3, coef, weight, width, dx3, dweight, dbias):
    """dx over column blocks of every row; dweight/dbias summed over rows in order."""
    R, D = x3.shape[1], x3.shape[2]
    for cb_ in prange((D + width - 1) // width):
        cb = np.int64(cb_)  # one callee specialization (fastbn.cpu._jit)
        d0 = cb * width
        d1 = min(d0 + width, D)
        pw = dweight[d0:d1]
        pb = dbias[d0:d1]
        pw[:] = 0.0
        pb[:] = 0.0
        for r in range(R):
            _grad_span(x3[0, r, d0:d1], dy3[0, r, d0:d1], dx3[0, r, d0:d1], weight[d0:d1],
                       pw, pb, coef[0, r], coef[1, r], coef[2, r], coef[3, r], coef[4, r])


# ---------------------------------------------------------------------------
# launchers


def _short(x3):
    """Whether the short-row kernels take ``x3``: short rows, enough of them to share
    out, or an input small enough for the serial driver, where one task takes every
    row whatever their length (so the long-row drivers need no serial twin)."""
    return (x3.shape[2] * x3.itemsize <= config.SHORT_ROW_MAX_BYTES
            and x3.shape[1] >= config.FUSED_MIN_CHANNELS
            or 0 < x3.size <= config.SERIAL_MAX_ELEMENTS)


def forward(x3, weight, bias, eps, center, y3):
    """Layer norm (``center``) or RMS norm into ``y3``; returns ``(mean, rstd)`` in the
    statistics' dtype (float64 for float64 ``x3``, else float32), rounded once from
    float64."""
    _, r, d = x3.shape
    coef = np.empty((3, r), x3.dtype)
    if _short(x3):  # the kernel only writes the statistics: straight into their dtype
        sdtype = np.float64 if x3.dtype == np.float64 else np.float32
        mean, rstd = np.empty(r, sdtype), np.empty(r, sdtype)
        rows = max(1, config.CHUNK_ELEMENTS // d)
        short_forward(x3.size, x3, weight, bias, eps, center, rows, coef, y3, mean, rstd)
        return mean, rstd
    mean = np.empty(r)
    rstd = np.empty(r)
    chunk = config.CHUNK_ELEMENTS
    nch = -(-d // chunk)
    pmean = np.empty((r, nch))
    pm2 = np.empty((r, nch))
    rows_moments(x3.size, x3, chunk, pmean, pm2)
    m2 = np.empty(r)
    rows_merge(pmean, pm2, d, chunk, mean, m2)
    finish_rows(mean, m2, d, eps, center, coef, rstd)
    long_apply(x3.size, x3, coef, weight, bias, config.COLUMN_BLOCK, y3)
    if x3.dtype != np.float64:
        return mean.astype(np.float32), rstd.astype(np.float32)
    return mean, rstd


def backward(dy3, x3, mean, rstd, weight, center, dx3):
    """dx into ``dx3``; returns float64 ``(dweight, dbias)`` of shape (D,)."""
    _, r, d = x3.shape
    coef = np.empty((5, r), x3.dtype)
    dweight = np.empty(d)
    dbias = np.empty(d)
    if _short(x3):
        # one task when the serial driver runs anyway: its partials are the sums
        tasks = 1 if x3.size <= config.SERIAL_MAX_ELEMENTS else min(r, config.ROW_BLOCK_TASKS)
        rows = -(-r // tasks)
        tasks = -(-r // rows)
        pdw = np.empty((tasks, d))
        pdb = np.empty((tasks, d))
        short_backward(x3.size, x3, dy3, mean, rstd, weight, center, rows, coef, dx3, pdw, pdb)
        if tasks == 1:
            return pdw[0], pdb[0]
        sum_partials(pdw.size, pdw, config.COLUMN_BLOCK, dweight)
        sum_partials(pdb.size, pdb, config.COLUMN_BLOCK, dbias)
        return dweight, dbias
    chunk = config.CHUNK_ELEMENTS
    nch = -(-d // chunk)
    psa = np.empty((1, nch, r))
    pss = np.empty((1, nch, r))
    long_grad_sums(x3.size, x3, dy3, mean, weight, chunk, psa[0], pss[0])
    sa, ss = np.empty((1, r)), np.empty((1, r))
    cols_grad_fold(psa, pss, 1, sa, ss)
    long_grad_coef(mean, rstd, sa[0], ss[0], d, center, coef)
    long_grad_apply(x3.size, x3, dy3, coef, weight, config.COLUMN_BLOCK, dx3, dweight, dbias)
    return dweight, dbias


#: What :mod:`fastbn.functional` calls; :mod:`fastbn.cuda.layer_norm` has the same.
__all__ = ["forward", "backward"]
