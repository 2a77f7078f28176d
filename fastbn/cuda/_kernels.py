r"""CUDA kernels shared by every op: statistics, elementwise passes, gradient sums.

Two views of the data, as on the CPU (:mod:`fastbn.cpu._rows`,
:mod:`fastbn.cpu._columns`):

* row kernels, ``x3`` of shape ``(A, C, B)``: set ``c`` is the ``A`` runs
  ``x3[a, c, :]`` of ``B`` contiguous values.  One block reduces one chunk of
  ``chunk`` values of one set, its threads striding along the runs
  (coalesced); blocks write per-chunk partials.
* column kernels, ``x3`` of shape ``(P, Q, K)``: sets are groups of ``R``
  adjacent columns of one sample ``p`` (channels-last batch norm: ``P = 1``,
  ``R = 1``; channels-last group norm: ``R = C/G``).  A block is a tile of
  ``rows`` rows by ``blockDim`` columns; thread ``k`` walks its column down
  the rows, so a warp reads consecutive addresses.

Launch geometry: every kernel is a :class:`fastbn.cuda.Kernel`, whose grid is
capped at CUDA's limits (``config.CUDA_MAX_GRID_X``/``_Y``) and whose empty
launches are skipped, so every kernel grid-strides along each grid dimension
it uses: blocks loop over ``blockIdx.x + k * gridDim.x`` (chunks of sets) or
``blockIdx.y + k * gridDim.y`` (row blocks of tiles), threads over
``cuda.grid(1) + k * cuda.gridsize(1)`` (items, columns).  Loops over blocks
are uniform across a block, so the block reductions inside them are safe.

Statistics: each thread sums ``d = x - shift`` and ``d*d`` in x's dtype over
its few values (``shift`` = the block's first value), the block adds the
threads' sums in float64 (:func:`._reduce.block_sum2`), and partials of
different blocks are merged with Chan's formula in float64, in a fixed order,
by the finalize kernels.  Gradient sums accumulate in float64 per thread.

Coefficient arrays are in x's dtype so the elementwise passes stay in it:
forward ``(mean_hi, mean_lo, rstd)``, backward ``(mean_hi, mean_lo, k0, k1,
k2)`` with ``dx = dy * k0 [* weight] + ((x - hi) - lo) * k1 + k2``.
"""

import math

from numba import cuda, float64

from .. import config
from . import kernel
from ._reduce import block_sum2

MAX_THREADS = config.CUDA_MAX_THREADS


@cuda.jit(device=True)
def chan_weights(na, nb):
    """``(nb / n, na * nb / n)`` in float64, ``n = na + nb > 0``: the CPU's
    :func:`fastbn.cpu._moments.chan_weights`, operation for operation."""
    fn = float64(na + nb)
    return float64(nb) / fn, float64(na) * float64(nb) / fn


@cuda.jit(device=True)
def chan_step(mean_a, m2_a, mean_b, m2_b, wb, wab):
    """Chan's merge with precomputed weights, in the CPU's order of operations
    (:func:`fastbn.cpu._moments.chan_step`); on hardware the compiler may fuse a
    multiply-add (within one float64 rounding)."""
    delta = mean_b - mean_a
    return mean_a + delta * wb, (m2_a + m2_b) + delta * delta * wab


@cuda.jit(device=True)
def chan_merge(na, mean_a, m2_a, nb, mean_b, m2_b):
    """Merge two (count, mean, m2) summaries; either count may be zero."""
    if nb == 0:
        return na, mean_a, m2_a
    if na == 0:
        return nb, mean_b, m2_b
    wb, wab = chan_weights(na, nb)
    mean, m2 = chan_step(mean_a, m2_a, mean_b, m2_b, wb, wab)
    return na + nb, mean, m2


@cuda.jit(device=True)
def _set_coef(coef, i, mu, r):
    """(mean_hi, mean_lo, rstd) of set ``i`` in x's dtype."""
    coef[0, i] = mu
    coef[1, i] = mu - float64(coef[0, i])
    coef[2, i] = r


@cuda.jit(device=True)
def _finish(mean, m2, total, eps, center):
    """rstd from moments: variance (centred norms) or mean square (RMS norm)."""
    if center:
        return 1.0 / math.sqrt(m2 / total + eps)
    return 1.0 / math.sqrt(m2 / total + mean * mean + eps)


@kernel
def fill(a, value):
    for i in range(cuda.grid(1), a.shape[0], cuda.gridsize(1)):
        a[i] = value


@kernel
def cast(src, dst):
    for i in range(cuda.grid(1), src.shape[0], cuda.gridsize(1)):
        dst[i] = src[i]


# --- statistics ------------------------------------------------------------------------


@kernel
def rows_moments(x3, chunk, zero, pmean, pm2):
    """Block (c, j) -> (mean, m2) of set ``c``'s values ``j*chunk : (j+1)*chunk``.

    ``zero`` is 0 in x's dtype (per-thread sums stay in it); ``pmean``/``pm2``:
    (C, chunks) float64.
    """
    sa = cuda.shared.array(MAX_THREADS, float64)
    sb = cuda.shared.array(MAX_THREADS, float64)
    A, C, B = x3.shape
    nch = pmean.shape[1]
    for blk in range(cuda.blockIdx.x, C * nch, cuda.gridDim.x):
        c = blk // nch
        j = blk % nch
        v0 = j * chunk
        v1 = min(v0 + chunk, A * B)
        shift = x3[v0 // B, c, v0 % B]
        s1 = zero
        s2 = zero
        for v in range(v0 + cuda.threadIdx.x, v1, cuda.blockDim.x):
            d = x3[v // B, c, v % B] - shift
            s1 += d
            s2 += d * d
        t1, t2 = block_sum2(float64(s1), float64(s2), sa, sb)
        if cuda.threadIdx.x == 0:
            n = float64(v1 - v0)
            pmean[c, j] = float64(shift) + t1 / n
            pm2[c, j] = max(t2 - t1 * t1 / n, 0.0)


@kernel
def cols_moments(x3, rows, zero, pmean, pm2):
    """Tile (p, row block, column block) -> per-column (mean, m2) into (P, blocks, K)."""
    P, Q, K = x3.shape
    nqb = pmean.shape[1]
    for by in range(cuda.blockIdx.y, P * nqb, cuda.gridDim.y):
        p = by // nqb
        qb = by % nqb
        q0 = qb * rows
        q1 = min(q0 + rows, Q)
        for k in range(cuda.grid(1), K, cuda.gridsize(1)):
            shift = x3[p, q0, k]
            s1 = zero
            s2 = zero
            for q in range(q0 + 1, q1):
                d = x3[p, q, k] - shift
                s1 += d
                s2 += d * d
            n = float64(q1 - q0)
            t1 = float64(s1)
            pmean[p, qb, k] = float64(shift) + t1 / n
            pm2[p, qb, k] = max(float64(s2) - t1 * t1 / n, 0.0)


@kernel
def rows_finalize(pmean, pm2, total, chunk, eps, center, mean, m2, rstd, coef):
    """Thread per set: merge its chunks in order; mean, m2, rstd and (hi, lo, rstd) coef."""
    for c in range(cuda.grid(1), pmean.shape[0], cuda.gridsize(1)):
        n = 0
        mu = 0.0
        s = 0.0
        for j in range(pmean.shape[1]):
            v0 = j * chunk
            n, mu, s = chan_merge(n, mu, s, min(v0 + chunk, total) - v0, pmean[c, j], pm2[c, j])
        r = _finish(mu, s, float64(total), eps, center)
        mean[c] = mu
        m2[c] = s
        rstd[c] = r
        _set_coef(coef, c, mu if center else 0.0, r)


@kernel
def cols_finalize(pmean, pm2, Q, rows, R, eps, mean, m2, rstd, coef):
    """Thread per (sample, set of ``R`` columns): row blocks in order, then columns."""
    P, nqb, K = pmean.shape
    G = K // R
    for t in range(cuda.grid(1), P * G, cuda.gridsize(1)):
        p = t // G
        g = t % G
        n = 0
        mu = 0.0
        s = 0.0
        for r in range(R):
            k = g * R + r
            nc = 0
            mc = 0.0
            sc = 0.0
            for qb in range(nqb):
                q0 = qb * rows
                nc, mc, sc = chan_merge(nc, mc, sc, min(q0 + rows, Q) - q0, pmean[p, qb, k],
                                        pm2[p, qb, k])
            n, mu, s = chan_merge(n, mu, s, nc, mc, sc)
        r_ = _finish(mu, s, float64(n), eps, True)
        mean[t] = mu
        m2[t] = s
        rstd[t] = r_
        _set_coef(coef, t, mu, r_)


@kernel
def running_coef(running_mean, running_var, eps, mean, rstd, coef):
    """Inference statistics: ``mean = rm``, ``rstd = 1/sqrt(rv + eps)`` and their coef."""
    for c in range(cuda.grid(1), mean.shape[0], cuda.gridsize(1)):
        mu = float64(running_mean[c])
        r = 1.0 / math.sqrt(float64(running_var[c]) + eps)
        mean[c] = mu
        rstd[c] = r
        _set_coef(coef, c, mu, r)


@kernel
def running_update(running_mean, running_var, mean, m2, m, momentum, skipped):
    """PyTorch's rule with the unbiased variance ``m2 / (m - 1)``, on the device.

    A channel whose batch statistics are not finite keeps its running values
    and is counted in ``skipped[0]`` (the host warns).
    """
    for c in range(cuda.grid(1), mean.shape[0], cuda.gridsize(1)):
        if not (math.isfinite(mean[c]) and math.isfinite(m2[c])):
            cuda.atomic.add(skipped, 0, 1)
        else:
            keep = 1.0 - momentum
            running_mean[c] = keep * float64(running_mean[c]) + momentum * mean[c]
            running_var[c] = keep * float64(running_var[c]) + momentum * (m2[c] / (m - 1))


# --- forward elementwise ---------------------------------------------------------------


@cuda.jit(device=True)
def _epilogue(t, r, has_res, relu, zero):
    """``act(t + r)``: the fused residual add and ReLU, as the CPU's
    :func:`fastbn.cpu._moments.epilogue`.  ``zero`` is 0 in the output's dtype (a
    literal 0 would widen float32 to float64; ``t - t`` is NaN for ``t = -inf``);
    NaN stays NaN."""
    if has_res:
        t += r
    if relu and t < zero:
        return zero
    return t


@cuda.jit(device=True)
def relu_mask(g, y, relu):
    """``g`` where the forward's ReLU output ``y`` was positive, else 0."""
    if relu and not y > 0:
        return g - g
    return g


@kernel
def rows_apply(x3, coef, weight, bias, cmod, bdiv, y3, res3, has_res, relu, zero):
    """``y = act(((x - hi) - lo) * rstd * w[p] + b[p] [+ res])``,
    ``p = ((c % cmod) * B + b) // bdiv``."""
    A, C, B = x3.shape
    n = A * C * B
    start, stride = cuda.grid(1), cuda.gridsize(1)
    for i in range(start, n, stride):
        a = i // (C * B)
        c = (i // B) % C
        b = i % B
        p = ((c % cmod) * B + b) // bdiv
        t = ((x3[a, c, b] - coef[0, c]) - coef[1, c]) * coef[2, c] * weight[p] + bias[p]
        y3[a, c, b] = _epilogue(t, res3[a, c, b], has_res, relu, zero)


@kernel
def cols_apply(x3, coef, R, weight, bias, y3, res3, has_res, relu, zero):
    """Channels-last ``y``: set ``p*G + k // R``, parameters per column ``k``."""
    P, Q, K = x3.shape
    G = K // R
    n = P * Q * K
    start, stride = cuda.grid(1), cuda.gridsize(1)
    for i in range(start, n, stride):
        p = i // (Q * K)
        q = (i // K) % Q
        k = i % K
        s = p * G + k // R
        t = ((x3[p, q, k] - coef[0, s]) - coef[1, s]) * coef[2, s] * weight[k] + bias[k]
        y3[p, q, k] = _epilogue(t, res3[p, q, k], has_res, relu, zero)


# --- gradient sums (float64 per thread) ------------------------------------------------


@kernel
def rows_grad_sums(x3, dy3, mean, weight, cmod, bdiv, chunk, psa, pss, y3, relu):
    """Block (c, j): ``sum(dy * w[p])`` and ``sum(dy * w[p] * (x - mean[c]))`` over set
    ``c``'s chunk ``j`` into ``psa``/``pss`` (1, chunks, C)."""
    sa = cuda.shared.array(MAX_THREADS, float64)
    sb = cuda.shared.array(MAX_THREADS, float64)
    A, C, B = x3.shape
    nch = psa.shape[1]
    for blk in range(cuda.blockIdx.x, C * nch, cuda.gridDim.x):
        c = blk // nch
        j = blk % nch
        v0 = j * chunk
        v1 = min(v0 + chunk, A * B)
        mu = mean[c]
        s1 = 0.0
        s2 = 0.0
        for v in range(v0 + cuda.threadIdx.x, v1, cuda.blockDim.x):
            b = v % B
            g = float64(relu_mask(dy3[v // B, c, b], y3[v // B, c, b], relu))
            g *= float64(weight[((c % cmod) * B + b) // bdiv])
            s1 += g
            s2 += g * (float64(x3[v // B, c, b]) - mu)
        t1, t2 = block_sum2(s1, s2, sa, sb)
        if cuda.threadIdx.x == 0:
            psa[0, j, c] = t1
            pss[0, j, c] = t2


@kernel
def cols_grad_sums(x3, dy3, colmean, rows, psdy, psdxc, y3, relu):
    """Tile: per-column ``sum(dy)`` and ``sum(dy * (x - mean))`` into (P, blocks, K)."""
    P, Q, K = x3.shape
    nqb = psdy.shape[1]
    for by in range(cuda.blockIdx.y, P * nqb, cuda.gridDim.y):
        p = by // nqb
        qb = by % nqb
        for k in range(cuda.grid(1), K, cuda.gridsize(1)):
            mu = colmean[p, k]
            s1 = 0.0
            s2 = 0.0
            for q in range(qb * rows, min(qb * rows + rows, Q)):
                g = float64(relu_mask(dy3[p, q, k], y3[p, q, k], relu))
                s1 += g
                s2 += g * (float64(x3[p, q, k]) - mu)
            psdy[p, qb, k] = s1
            psdxc[p, qb, k] = s2


@kernel
def row_param_sums(x3, dy3, coef, rows, psw, psb):
    """Layer norm's dweight/dbias partials: per column ``d`` of the (R, D) rows,
    ``sum(dy * xhat)`` and ``sum(dy)`` over a tile of rows, into (1, blocks, D)."""
    _, R, D = x3.shape
    for qb in range(cuda.blockIdx.y, psw.shape[1], cuda.gridDim.y):
        for d in range(cuda.grid(1), D, cuda.gridsize(1)):
            s1 = 0.0
            s2 = 0.0
            for r in range(qb * rows, min(qb * rows + rows, R)):
                g = dy3[0, r, d]
                s1 += float64(g * (((x3[0, r, d] - coef[0, r]) - coef[1, r]) * coef[2, r]))
                s2 += float64(g)
            psw[0, qb, d] = s1
            psb[0, qb, d] = s2


@kernel
def fold_sums(pa, pb, out_a, out_b):
    """Thread per (p, k): ``out[p*K + k] = sum over blocks of p*[p, :, k]`` in block order."""
    P, nb, K = pa.shape
    for t in range(cuda.grid(1), P * K, cuda.gridsize(1)):
        p = t // K
        k = t % K
        a = 0.0
        b = 0.0
        for j in range(nb):
            a += pa[p, j, k]
            b += pb[p, j, k]
        out_a[t] = a
        out_b[t] = b


# --- backward coefficients -------------------------------------------------------------


@kernel
def group_grad_coef(mean, rstd, weight, sdy, sdxc, G, m, training, coef):
    """Thread per (sample, group) of channels: ``coef`` (5, P*C) per (sample, channel).

    ``c1 = rstd * sum_c w[c] sdxc[p, c] / m`` and ``c2 = sum_c w[c] sdy[p, c] / m``
    over the group's channels; ``dx = dy*(w rstd) + (x - mean)(-rstd^2 c1) - rstd c2``.
    """
    C = weight.shape[0]
    cg = C // G
    for t in range(cuda.grid(1), mean.shape[0], cuda.gridsize(1)):
        p = t // G
        g = t % G
        r = rstd[t]
        a = 0.0
        s = 0.0
        for ci in range(g * cg, g * cg + cg):
            a += weight[ci] * sdy[p * C + ci]
            s += weight[ci] * sdxc[p * C + ci]
        # m == 0 (an empty batch): no dx to scale, and no 0/0 either
        c1 = r * s / m if training and m > 0 else 0.0
        c2 = a / m if training and m > 0 else 0.0
        for ci in range(g * cg, g * cg + cg):
            i = p * C + ci
            coef[0, i] = mean[t]
            coef[1, i] = mean[t] - float64(coef[0, i])
            coef[2, i] = weight[ci] * r
            coef[3, i] = -r * r * c1
            coef[4, i] = -r * c2


@kernel
def expand_groups(mean, cg, out):
    """``out[p*C + c] = mean[p*G + c // cg]``: each channel's group mean."""
    for i in range(cuda.grid(1), out.shape[0], cuda.gridsize(1)):
        out[i] = mean[i // cg]


@kernel
def param_grads(sdy, sdxc, rstd, G, dweight, dbias):
    """Thread per channel: ``dbias = sum_p sdy``, ``dweight = sum_p sdxc * rstd`` in order."""
    C = dweight.shape[0]
    cg = C // G
    for c in range(cuda.grid(1), C, cuda.gridsize(1)):
        a = 0.0
        s = 0.0
        for p in range(sdy.shape[0] // C):
            a += sdy[p * C + c]
            s += sdxc[p * C + c] * rstd[p * G + c // cg]
        dbias[c] = a
        dweight[c] = s


@kernel
def row_grad_coef(mean, rstd, sa, ss, D, center, coef):
    """Thread per layer-norm row: (hi, lo, k0, k1, k2) from its two weighted sums."""
    for r in range(cuda.grid(1), mean.shape[0], cuda.gridsize(1)):
        rs = rstd[r]
        c1 = rs * ss[r] / D
        c2 = sa[r] / D if center else 0.0
        coef[0, r] = mean[r]
        coef[1, r] = mean[r] - float64(coef[0, r])
        coef[2, r] = rs
        coef[3, r] = -rs * rs * c1
        coef[4, r] = -rs * c2


# --- backward elementwise --------------------------------------------------------------


@kernel
def rows_grad_apply(x3, dy3, coef, weight, cmod, bdiv, training, dx3, y3, relu, dres3,
                    has_dres):
    """``dx = g * k0 * w[p] + ((x - hi) - lo) * k1 + k2`` (``g * k0 * w[p]`` if frozen),
    ``g = dy`` masked by the forward's ReLU; ``g`` also goes to ``dres3`` if asked."""
    A, C, B = x3.shape
    n = A * C * B
    start, stride = cuda.grid(1), cuda.gridsize(1)
    for i in range(start, n, stride):
        a = i // (C * B)
        c = (i // B) % C
        b = i % B
        g = relu_mask(dy3[a, c, b], y3[a, c, b], relu)
        if has_dres:
            dres3[a, c, b] = g
        g = g * coef[2, c] * weight[((c % cmod) * B + b) // bdiv]
        if training:
            g += ((x3[a, c, b] - coef[0, c]) - coef[1, c]) * coef[3, c] + coef[4, c]
        dx3[a, c, b] = g


@kernel
def cols_grad_apply(x3, dy3, coef, training, dx3, y3, relu, dres3, has_dres):
    """Channels-last dx with coefficients per (sample, column): index ``p*K + k``."""
    P, Q, K = x3.shape
    n = P * Q * K
    start, stride = cuda.grid(1), cuda.gridsize(1)
    for i in range(start, n, stride):
        p = i // (Q * K)
        q = (i // K) % Q
        k = i % K
        s = p * K + k
        g = relu_mask(dy3[p, q, k], y3[p, q, k], relu)
        if has_dres:
            dres3[p, q, k] = g
        g = g * coef[2, s]
        if training:
            g += ((x3[p, q, k] - coef[0, s]) - coef[1, s]) * coef[3, s] + coef[4, s]
        dx3[p, q, k] = g
