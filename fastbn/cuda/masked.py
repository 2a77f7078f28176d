r"""Masked batch norm on the GPU (Keras 3's ``mask=``): the twin of :mod:`fastbn.cpu._masked`.

``x3`` is the contiguous ``(A, C, B)`` device view and ``mask2`` a bool
``(A, B)`` device array (x's shape without the channel axis); every channel
has the same valid positions, so the per-chunk valid counts are computed
once on the host from the mask and shared by every channel.

Forward (training): block ``(c, j)`` sums ``d = x - shift`` and ``d * d`` in
x's dtype over the valid values of chunk ``j`` of set ``c`` (``shift``: the
channel's value at the first valid position, the same for every chunk), the
block adds the threads' sums in float64, and one thread per channel merges
the chunks' ``(mean, m2)`` with Chan's formula in chunk order.  y is then
batch norm's own elementwise pass, at every position.

Backward: the two sums over every position are batch norm's own
(:func:`fastbn.cuda.batch_norm.grad_sums`); the elementwise pass adds the
terms through the statistics at valid positions only:

.. code-block:: text

    dx = dy * k0 + v * (((x - hi) - lo) * k1 + k2)      # v = mask, k1, k2 with m = mv

Every layout runs these ``(A, C, B)`` kernels; channels-last data (``B ==
1``) reads its chunks with a stride of ``C`` (correct, not yet tuned: no GPU
has timed them).

See Also
--------
fastbn.cpu._masked, fastbn.reference.batch_norm_train_masked
"""

import math

import numpy as np
from numba import cuda, float64

from .. import config
from . import _kernels as K
from . import _stats, grid_1d, grid_blocks, kernel
from . import batch_norm as _bn
from ._kernels import MAX_THREADS, chan_merge, relu_mask
from ._reduce import block_sum2


@kernel
def masked_rows_moments(x3, mask2, chunk, sa_, sb_, counts, zero, pmean, pm2):
    """Block (c, j) -> (mean, m2) of set ``c``'s valid values in ``j*chunk : (j+1)*chunk``
    (``counts[j]`` of them), shifted by ``x3[sa_, c, sb_]``."""
    sa = cuda.shared.array(MAX_THREADS, float64)
    sb = cuda.shared.array(MAX_THREADS, float64)
    A, C, B = x3.shape
    nch = pmean.shape[1]
    for blk in range(cuda.blockIdx.x, C * nch, cuda.gridDim.x):
        c = blk // nch
        j = blk % nch
        v0 = j * chunk
        v1 = min(v0 + chunk, A * B)
        shift = x3[sa_, c, sb_]
        s1 = zero
        s2 = zero
        for v in range(v0 + cuda.threadIdx.x, v1, cuda.blockDim.x):
            a = v // B
            b = v % B
            if mask2[a, b]:
                d = x3[a, c, b] - shift
                s1 += d
                s2 += d * d
        t1, t2 = block_sum2(float64(s1), float64(s2), sa, sb)
        if cuda.threadIdx.x == 0:
            n = float64(counts[j])
            if n > 0:
                pmean[c, j] = float64(shift) + t1 / n
                pm2[c, j] = max(t2 - t1 * t1 / n, 0.0)
            else:
                pmean[c, j] = 0.0
                pm2[c, j] = 0.0


@kernel
def masked_finalize(pmean, pm2, counts, eps, mean, m2, rstd, coef):
    """Thread per channel: merge its chunks in order (empty ones skipped); mean, m2,
    rstd and the forward coefficients (hi, lo, rstd)."""
    for c in range(cuda.grid(1), pmean.shape[0], cuda.gridsize(1)):
        n = 0
        mu = 0.0
        s = 0.0
        for j in range(pmean.shape[1]):
            nb = counts[j]
            if nb > 0:
                n, mu, s = chan_merge(n, mu, s, nb, pmean[c, j], pm2[c, j])
        r = 1.0 / math.sqrt(s / float64(n) + eps)
        mean[c] = mu
        m2[c] = s
        rstd[c] = r
        coef[0, c] = mu
        coef[1, c] = mu - float64(coef[0, c])
        coef[2, c] = r


@kernel
def masked_grad_apply(x3, dy3, coef, mask2, dx3, y3, relu, dres3, has_dres):
    """``dx = g * k0 + v * (((x - hi) - lo) * k1 + k2)``, ``g = dy`` masked by the
    forward's ReLU (and written to ``dres3`` if asked), ``v`` the mask."""
    A, C, B = x3.shape
    n = A * C * B
    for i in range(cuda.grid(1), n, cuda.gridsize(1)):
        a = i // (C * B)
        c = (i // B) % C
        b = i % B
        g = relu_mask(dy3[a, c, b], y3[a, c, b], relu)
        if has_dres:
            dres3[a, c, b] = g
        g = g * coef[2, c]
        if mask2[a, b]:
            g += ((x3[a, c, b] - coef[0, c]) - coef[1, c]) * coef[3, c] + coef[4, c]
        dx3[a, c, b] = g


# ---------------------------------------------------------------------------
# launchers


def _device_mask(mask2):
    """The host (A, B) mask on the device (1/C of x's elements, as bytes)."""
    return cuda.to_device(np.ascontiguousarray(mask2))


def forward_train(x3, mask2, weight, bias, eps, y3, res3=None, relu=False):
    """Masked training forward into ``y3``; returns float64 ``(mean, m2, rstd)`` device
    arrays.  ``mask2``: bool (A, B) host array with at least one True (copied to the
    device: 1/C of x's elements, as bytes)."""
    a, c, b = x3.shape
    chunk = config.CUDA_CHUNK
    flat = mask2.reshape(-1)
    starts = np.arange(0, a * b, chunk)
    counts = np.add.reduceat(flat.astype(np.int64), starts) if flat.size else np.zeros(0)
    sa, sb = divmod(int(np.argmax(flat)), b)
    nch = starts.size
    d_pmean = cuda.device_array((c, nch))
    d_pm2 = cuda.device_array((c, nch))
    d_counts = cuda.to_device(counts.astype(np.int64))
    zero = np.dtype(x3.dtype).type(0)
    masked_rows_moments[grid_blocks(c * nch)](x3, _device_mask(mask2), chunk, sa, sb, d_counts,
                                              zero, d_pmean, d_pm2)
    mean, m2, rstd = (cuda.device_array(c) for _ in range(3))
    coef = cuda.device_array((3, c), x3.dtype)
    masked_finalize[grid_1d(c)](d_pmean, d_pm2, d_counts, eps, mean, m2, rstd, coef)
    _bn._apply(x3, coef, weight, bias, y3, res3, relu)
    return mean, m2, rstd


def backward(dy3, x3, mask2, mv, mean, rstd, weight, dx3, y3=None, relu=False, dres3=None):
    """Masked training backward: dx into ``dx3`` (the residual's gradient into
    ``dres3``); returns ``(dweight, dbias)`` device arrays.  ``mv``: valid positions."""
    a, c, b = x3.shape
    y3 = x3 if y3 is None else y3
    sdy, sdxc = _bn.grad_sums(dy3, x3, mean, y3, relu)
    coef = cuda.device_array((5, c), x3.dtype)
    K.group_grad_coef[grid_1d(c)](mean, rstd, weight, sdy, sdxc, c, float(mv), True, coef)
    dweight, dbias = cuda.device_array(c, x3.dtype), cuda.device_array(c, x3.dtype)
    K.param_grads[grid_1d(c)](sdy, sdxc, rstd, c, dweight, dbias)
    has_dres = dres3 is not None
    masked_grad_apply[_stats.grid_stride(x3.size)](x3, dy3, coef, _device_mask(mask2), dx3, y3,
                                                   relu, dres3 if has_dres else x3, has_dres)
    return dweight, dbias


__all__ = ["forward_train", "backward"]
