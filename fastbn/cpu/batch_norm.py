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
       = dy * k0 + (x - mean) * k1 + k2

    k0 = weight * rstd
    k1 = -k0 * rstd**2 * sdxc / m
    k2 = -k0 * sdy / m

Frozen statistics (``training=False``): ``dx = dy * weight * rstd``.

Fused epilogue: the output pass may add a residual and apply a ReLU,
``y = relu(bn(x) + residual)``; the backward then uses ``g = dy * (y > 0)`` in
place of ``dy`` in both passes and can write ``g`` (the residual's gradient)
in the pass that writes dx.

Two loop orders, chosen by ``B`` (``config.ROW_KERNEL_MIN_INNER``):

* row kernels (large ``B``, NCHW): work unit = a run of a channel's values in
  ``(sample, inner)`` order, cut into fixed chunks of
  ``config.CHUNK_ELEMENTS``; per-chunk results are merged per channel in chunk
  order.  When a channel fits in L2 one thread owns it start to finish and
  the second pass reads it from cache (the ``*_fused`` drivers).
* column kernels (small ``B``: channels-last, 2-D): ``x`` as the matrix
  ``(A, C*B)``; tasks are blocks of rows by blocks of columns, each writing
  per-column partials that are merged along a fixed pairwise tree, then
  folded per channel.  Never a ``prange`` over strided columns.  Small inputs
  run the whole forward in one serial call (:func:`cols_forward_small`).

Layers: workers in :mod:`._rows`/:mod:`._columns` handle one chunk or block,
their ``@driver`` functions split the work into fixed chunks (parallel and
serial twins), the launchers here pick the loop order and allocate scratch,
and :mod:`fastbn.functional` validates, allocates outputs and calls.

See Also
--------
fastbn.cuda.batch_norm (the GPU twin: the same functions, the same signatures),
fastbn.reference.batch_norm_train, fastbn.reference.batch_norm_backward_train
"""

import numpy as np
from numba import prange

from .. import config
from ._columns import (
    apply_blocks,
    block_apply,
    block_grad_apply,
    block_grad_sums,
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
)
from ._jit import exact, parallel_driver, worker
from ._moments import (
    finish_stats,
    forward_coef,
    grad_coef,
    sample_forward_coef,
    set_backward_coef,
    set_forward_coef,
)
from ._rows import (
    rows_apply,
    rows_backward_fused,
    rows_forward_fused,
    rows_grad_apply,
    rows_grad_sums,
    rows_merge,
    rows_moments,
)

# ---------------------------------------------------------------------------
# serial glue shared by both loop orders


@worker
def running_coef(running_mean, running_var, eps, weight, bias, B, coef, mean, rstd):
    """Inference: ``mean = rm``, ``rstd = 1/sqrt(rv + eps)`` (in the caller's dtype) and the
    forward coefficients (4, C*B), in one call."""
    for c in range(running_mean.shape[0]):
        mu = np.float64(running_mean[c])
        r = 1.0 / np.sqrt(np.float64(running_var[c]) + eps)
        mean[c] = mu
        rstd[c] = r
        for b in range(B):
            set_forward_coef(coef, c * B + b, mu, r, weight[c], bias[c])


@worker
def backward_coef(mean, rstd, weight, sdy, sdxc, m, training, B, coef, dweight, dbias):
    """dweight, dbias and ``coef`` (5, C*B) from the per-channel sums.

    ``mean``, ``rstd`` and ``weight`` of any float dtype are widened to float64
    first, so float32 statistics give the bits of their float64 copies."""
    for c in range(mean.shape[0]):
        mu = np.float64(mean[c])
        r = np.float64(rstd[c])
        dbias[c] = sdy[c]
        dweight[c] = sdxc[c] * r
        k0, k1, k2 = grad_coef(mu, r, np.float64(weight[c]), sdy[c], sdxc[c], m, training)
        for b in range(B):
            set_backward_coef(coef, c * B + b, mu, k0, k1, k2)


@worker
def cols_forward_small(x3, B, weight, bias, eps, coef, y3, res3, has_res, relu, work, mean_out,
                       rstd_out):
    """The whole column-kernel training forward for a small input in one serial call.

    ``x3``: (1, A, C*B); one block of all rows (no partials to merge), then the
    output pass from cache.  Saves the launches and allocations of the
    general path, which dominate a (32, 256) batch.  ``work``: float64 scratch
    of ``2*K + 3*C``, holding ``[s1 | s2 | mean | m2 | rstd]`` afterwards;
    ``mean_out``/``rstd_out`` (any float dtype, or those slices themselves) get
    the mean and rstd rounded once.  Parameters of any float dtype (widened
    where used).
    """
    A, K = x3.shape[1], x3.shape[2]
    C = K // B
    zero = np.int64(0)  # a typed index, not a Literal (fastbn.cpu._jit)
    s1 = work[:K]
    s2 = work[K:2 * K]
    mean = work[2 * K:2 * K + C]
    m2 = work[2 * K + C:2 * K + 2 * C]
    rstd = work[2 * K + 2 * C:2 * K + 3 * C]
    block_moments(x3, zero, zero, A, zero, K, s1, s2)
    fold_sample(s1, s2, A, B, mean, m2)
    finish_stats(m2, A * B, eps, rstd)
    forward_coef(mean, rstd, weight, bias, C, B, coef.reshape((coef.shape[0], K)))
    block_apply(x3, zero, zero, A, zero, K, coef, y3, res3, has_res, relu)
    for c in range(C):
        mean_out[c] = mean[c]
        rstd_out[c] = rstd[c]


@worker
def cols_inference_small(x3, B, running_mean, running_var, eps, weight, bias, coef, y3, res3,
                         has_res, relu, mean, rstd):
    """Inference of a small column-layout input in one serial call: the coefficients
    from the running statistics (:func:`running_coef`), then the output pass."""
    K = x3.shape[2]
    running_coef(running_mean, running_var, eps, weight, bias, B,
                 coef.reshape((coef.shape[0], K)), mean, rstd)
    zero = np.int64(0)
    block_apply(x3, zero, zero, x3.shape[1], zero, K, coef, y3, res3, has_res, relu)


@worker
def cols_backward_small(x3, dy3, B, mean, rstd, weight, training, coef, dx3, y3, relu, dres3,
                        has_dres, colmean, s1, s2, work, dweight, dbias):
    """The whole column-kernel backward for a small input in one serial call: both
    sums over all rows (one block), per-channel coefficients, then dx from cache.

    ``mean``, ``rstd``, ``weight`` and the outputs ``dweight``/``dbias`` may be
    of any float dtype (the fast path passes the caller's): the statistics and
    weight are read into float64 first and the gradients made in float64, so
    the bits are those of float64 inputs.  ``colmean``, ``s1``, ``s2``: float64
    (K,) scratch, arrays of their own (as slices of one buffer the column loops ran
    20% slower on 16 columns); ``work``: float64 scratch of ``7*C``.
    """
    A, K = x3.shape[1], x3.shape[2]
    C = K // B
    o = 0
    mean64 = work[o:o + C]
    rstd64 = work[o + C:o + 2 * C]
    w64 = work[o + 2 * C:o + 3 * C]
    sdy = work[o + 3 * C:o + 4 * C]
    sdxc = work[o + 4 * C:o + 5 * C]
    dw64 = work[o + 5 * C:o + 6 * C]
    db64 = work[o + 6 * C:o + 7 * C]
    for c in range(C):
        mean64[c] = mean[c]
        rstd64[c] = rstd[c]
        w64[c] = weight[c]
        for b in range(B):
            colmean[c * B + b] = mean64[c]
    # literal indices, unlike the rest of the kernels (fastbn.cpu._jit): they fold the
    # slice arithmetic of every short row; (1568, 16) rows: 24.5 -> 17.1 us
    block_grad_sums(x3, dy3, 0, 0, A, 0, K, colmean, s1, s2, y3, relu)
    for c in range(C):
        a = 0.0
        t = 0.0
        for b in range(B):
            a += s1[c * B + b]
            t += s2[c * B + b]
        sdy[c] = a
        sdxc[c] = t
    backward_coef(mean64, rstd64, w64, sdy, sdxc, A * B, training, B,
                  coef.reshape((coef.shape[0], K)), dw64, db64)
    block_grad_apply(x3, dy3, coef, 0, 0, A, 0, K, training, dx3, y3, relu, dres3,
                     has_dres)
    for c in range(C):
        dweight[c] = dw64[c]
        dbias[c] = db64[c]


@parallel_driver
def cols_forward_fused(x3, weight, bias, eps, width, coef, y3, res3, has_res, relu, mean, m2,
                       rstd):
    """Training forward of 2-D and channels-last data (``x3``: (1, A, C), one column
    per channel) in one parallel call.  A task is a block of ``width`` columns over
    all rows: its moments, coefficients, then the output pass while the block is
    still in L2 (one read of x from memory, one write of y)."""
    A, K = x3.shape[1], x3.shape[2]
    zero = np.int64(0)
    coef2 = coef.reshape((coef.shape[0], K))
    for t_ in prange((K + width - 1) // width):
        t = np.int64(t_)  # one callee specialization (fastbn.cpu._jit)
        k0 = t * width
        k1 = min(k0 + width, K)
        block_moments(x3, zero, zero, A, k0, k1, mean[k0:k1], m2[k0:k1])
        finish_stats(m2[k0:k1], A, eps, rstd[k0:k1])
        sample_forward_coef(zero, k0, k1, mean, rstd, weight, bias, K, np.int64(1), coef2)
        block_apply(x3, zero, zero, A, k0, k1, coef, y3, res3, has_res, relu)


@exact
def _update_running(running_mean, running_var, mean, m2, m, momentum):
    """PyTorch's rule with the unbiased variance ``m2 / (m - 1)``, in place.

    Plain IEEE arithmetic: no contraction into fused multiply-adds.

    A channel whose batch statistics are not finite keeps its running values;
    returns how many channels were skipped so (the caller warns).
    """
    keep = 1.0 - momentum
    skipped = 0
    for c in range(mean.shape[0]):
        if not (np.isfinite(mean[c]) and np.isfinite(m2[c])):
            skipped += 1
            continue
        running_mean[c] = keep * np.float64(running_mean[c]) + momentum * mean[c]
        running_var[c] = keep * np.float64(running_var[c]) + momentum * (m2[c] / (m - 1))
    return skipped


# ---------------------------------------------------------------------------
# launchers: canonical arrays in, scratch allocated here, kernels chosen by shape


def update_running(running_mean, running_var, mean, m2, m, momentum):
    """The running statistics updated in place from float64 batch ``(mean, m2)`` of
    ``m`` values per channel; returns how many channels were skipped (not finite).

    float16 running statistics are updated by NumPy (Numba has no float16): the
    same expression, rounded by NumPy's float16 arithmetic.
    """
    if running_mean.dtype != np.float16 and running_var.dtype != np.float16:
        return _update_running(running_mean, running_var, mean, m2, m, momentum)
    ok = np.isfinite(mean) & np.isfinite(m2)
    with np.errstate(invalid="ignore", over="ignore"):
        new_mean = (1.0 - momentum) * running_mean + momentum * mean
        new_var = (1.0 - momentum) * running_var + momentum * (m2 / (m - 1))
    running_mean[ok] = new_mean[ok]
    running_var[ok] = new_var[ok]
    return int(ok.size - ok.sum())


def _fits_fused(x3, arrays):
    a, c, b = x3.shape
    return (c >= config.FUSED_MIN_CHANNELS
            and a * b * x3.itemsize * arrays <= config.FUSED_CHANNEL_MAX_BYTES)


def _fused_columns(x3, arrays):
    """Column-block width for the fused column forward, or 0 when it does not apply:
    one column per channel (``B == 1``), above the serial size, enough blocks for
    the cores, and a block's ``arrays`` x-sized inputs fit in L2.

    (The backward pass gains nothing from the same fusion: at these sizes it is
    bound by its float64 accumulation, not by memory; measured on (256, 1024).)"""
    a, c, b = x3.shape
    width = max(1, min(config.FUSED_COLUMN_WIDTH, config.COLUMN_BLOCK))
    if (b != 1 or x3.size <= config.SERIAL_MAX_ELEMENTS
            or c < config.FUSED_MIN_CHANNELS * width
            or a * width * x3.itemsize * arrays > config.FUSED_CHANNEL_MAX_BYTES // 2):
        return 0
    return width


def _columns(x3):
    """``x3`` (A, C, B) as the column kernels' (1, A, C*B), with its block sizes."""
    a, c, b = x3.shape
    xc = x3.reshape(1, a, c * b)
    return (xc, *blocks(xc))


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
        xc, rows, width, nrb = _columns(x3)
        pmean = np.empty((1, nrb, c * b))
        pm2 = np.empty((1, nrb, c * b))
        cols_moments(x3.size, xc, rows, width, pmean, pm2)
        cols_merge(pmean.size, pmean, pm2, a, rows, width)
        cols_fold(pmean, pm2, a, b, mean.reshape(1, c), m2.reshape(1, c))
    return mean, m2


def forward_train(x3, weight, bias, eps, y3, res3=None, relu=False):
    """Training forward into ``y3`` (epilogue: ``+ res3``, ReLU); returns float64
    ``(mean, m2, rstd)``."""
    a, c, b = x3.shape
    m = a * b
    rstd = np.empty(c)
    if _uses_rows(x3) and _fits_fused(x3, 1):
        mean = np.empty(c)
        m2 = np.empty(c)
        coef = np.empty((4, c), x3.dtype)
        has_res = res3 is not None
        rows_forward_fused(x3.size, x3, weight, bias, eps, config.CHUNK_ELEMENTS, coef, y3,
                           mean, m2, rstd, res3 if has_res else x3, has_res, relu)
        return mean, m2, rstd
    width = 0 if _uses_rows(x3) else _fused_columns(x3, 1)
    if width:
        mean, m2 = np.empty(c), np.empty(c)
        coef = np.empty((4, 1, c), x3.dtype)
        has_res = res3 is not None
        cols_forward_fused(x3.size, x3.reshape(1, a, c), weight, bias, eps, width, coef,
                           y3.reshape(1, a, c), (res3 if has_res else x3).reshape(1, a, c),
                           has_res, relu, mean, m2, rstd)
        return mean, m2, rstd
    if small_columns(x3):
        k = c * b
        xc = x3.reshape(1, a, k)
        has_res = res3 is not None
        work = np.empty(2 * k + 3 * c)
        mean, m2, rstd = work[2 * k:2 * k + c], work[2 * k + c:2 * k + 2 * c], work[2 * k + 2 * c:]
        cols_forward_small(xc, b, weight, bias, eps, np.empty((4, 1, k), x3.dtype),
                           y3.reshape(xc.shape), (res3 if has_res else x3).reshape(xc.shape),
                           has_res, relu, work, mean, rstd)
        return mean, m2, rstd
    mean, m2 = moments(x3)
    finish_stats(m2, m, eps, rstd)
    forward_apply(x3, mean, rstd, weight, bias, y3, res3, relu)
    return mean, m2, rstd


def small_columns(x3) -> bool:
    """Whether :func:`train_small` takes ``x3``: the column layout below the serial size."""
    return not _uses_rows(x3) and x3.size <= config.SERIAL_MAX_ELEMENTS


def train_small(x3, weight, bias, eps, momentum, y3, mean, rstd, running_mean=None,
                running_var=None):
    """Plain training forward of a small column-layout ``x3`` (:func:`small_columns`) in
    one compiled call: ``y3``, ``mean`` and ``rstd`` (in their own dtype) filled, then
    the running statistics (both or neither) updated; returns the channels skipped.
    ``weight``/``bias``: contiguous, in x's dtype.

    (The update stays a call of its own: inlined into the kernel, whose fast-math
    flags let LLVM fuse its multiply-adds, it rounded 1 ulp apart from the general
    path's in float64.)
    """
    a, c, b = x3.shape
    k = c * b
    xc = x3.reshape(1, a, k)
    work = np.empty(2 * k + 3 * c)
    yc = y3.reshape(xc.shape)
    cols_forward_small(xc, b, weight, bias, eps, np.empty((4, 1, k), x3.dtype), yc, yc, False,
                       False, work, mean, rstd)
    if running_mean is None:
        return 0
    return update_running(running_mean, running_var, work[2 * k:2 * k + c],
                          work[2 * k + c:2 * k + 2 * c], a * b, momentum)


def inference(x3, running_mean, running_var, eps, weight, bias, y3, mean, rstd, res3=None,
              relu=False):
    """Inference forward into ``y3``; ``mean``/``rstd`` (any float dtype) are filled."""
    a, c, b = x3.shape
    if x3.size == 0:  # an empty batch: the statistics only
        mean[:] = running_mean
        rstd[:] = 1.0 / np.sqrt(np.asarray(running_var, dtype=np.float64) + eps)
        return
    if small_columns(x3):
        k = c * b
        xc = x3.reshape(1, a, k)
        has_res = res3 is not None
        cols_inference_small(xc, b, running_mean, running_var, eps, weight, bias,
                             np.empty((4, 1, k), x3.dtype), y3.reshape(xc.shape),
                             (res3 if has_res else x3).reshape(xc.shape), has_res, relu, mean,
                             rstd)
        return
    rows = _uses_rows(x3)
    coef = np.empty((4, c) if rows else (4, 1, c * b), x3.dtype)
    running_coef(running_mean, running_var, eps, weight, bias, 1 if rows else b,
                 coef if rows else coef[:, 0], mean, rstd)
    _apply(x3, coef, y3, res3, relu)


def _apply(x3, coef, y3, res3, relu):
    """The output pass with ready coefficients: (4, C) for rows, (4, 1, C*B) for columns."""
    has_res = res3 is not None
    res3 = res3 if has_res else x3
    if _uses_rows(x3):
        rows_apply(x3.size, x3, coef, config.CHUNK_ELEMENTS, y3, res3, has_res, relu)
    else:
        xc = _columns(x3)[0]
        rows, width = apply_blocks(xc)
        cols_apply(x3.size, xc, coef, rows, width, y3.reshape(xc.shape), res3.reshape(xc.shape),
                   has_res, relu)


def forward_apply(x3, mean, rstd, weight, bias, y3, res3=None, relu=False):
    """``y = act((x - mean) * rstd * weight + bias [+ res3])`` with given float64 stats."""
    a, c, b = x3.shape
    if _uses_rows(x3):
        coef = np.empty((4, c), x3.dtype)
        forward_coef(mean, rstd, weight, bias, mean.shape[0], 1, coef)
    else:
        coef = np.empty((4, 1, c * b), x3.dtype)
        forward_coef(mean, rstd, weight, bias, mean.shape[0], b, coef[:, 0])
    _apply(x3, coef, y3, res3, relu)


def backward(dy3, x3, mean, rstd, weight, training, dx3, y3=None, relu=False, dres3=None):
    """dx into ``dx3`` (and the residual's gradient into ``dres3``); returns float64
    ``(dweight, dbias)``.  With ``relu``, ``dy`` is masked by ``y3 > 0`` on the fly.

    ``mean``, ``rstd``, ``weight``: contiguous (C,) of any float dtype (widened to
    float64 where a kernel reads them: the column kernels widen in place)."""
    a, c, b = x3.shape
    m = a * b
    chunk = config.CHUNK_ELEMENTS
    y3 = y3 if y3 is not None else x3
    has_dres = dres3 is not None
    if _uses_rows(x3):
        mean, rstd, weight = (np.asarray(v, np.float64) for v in (mean, rstd, weight))
    if _uses_rows(x3) and _fits_fused(x3, 2):
        dweight, dbias = np.empty(c), np.empty(c)
        coef = np.empty((5, c), x3.dtype)
        rows_backward_fused(x3.size, x3, dy3, mean, rstd, weight, training, chunk, coef, dx3,
                            dweight, dbias, y3, relu, dres3 if has_dres else x3, has_dres)
        return dweight, dbias
    if small_columns(x3):
        dweight, dbias = np.empty(c), np.empty(c)
        backward_small(dy3, x3, mean, rstd, weight, training, dx3, dweight, dbias, y3, relu,
                       dres3)
        return dweight, dbias
    sdy, sdxc = grad_sums(dy3, x3, mean, y3, relu)
    return backward_apply(dy3, x3, mean, rstd, weight, sdy, sdxc, m, training, dx3, y3, relu,
                          dres3)


def backward_small(dy3, x3, mean, rstd, weight, training, dx3, dweight, dbias, y3=None,
                   relu=False, dres3=None):
    """The backward of a small column-layout ``x3`` (:func:`small_columns`) in one
    compiled call, into ``dx3`` and the (C,) ``dweight``/``dbias`` of any float
    dtype; ``mean``/``rstd``/``weight`` contiguous (C,) of any float dtype."""
    a, c, b = x3.shape
    k = c * b
    xc = x3.reshape(1, a, k)
    has_dres = dres3 is not None
    cols_backward_small(xc, dy3.reshape(xc.shape), b, mean, rstd, weight, training,
                        np.empty((5, 1, k), x3.dtype), dx3.reshape(xc.shape),
                        (y3 if y3 is not None else x3).reshape(xc.shape), relu,
                        (dres3 if has_dres else x3).reshape(xc.shape), has_dres,
                        np.empty(k), np.empty(k), np.empty(k), np.empty(7 * c), dweight, dbias)


def grad_sums(dy3, x3, mean, y3=None, relu=False):
    """Per-channel float64 ``(sum(dy), sum(dy * (x - mean)))`` (``dy`` masked by
    ``y3 > 0`` with ``relu``; ``mean`` of any float dtype): the backward pass's first
    phase, on its own for synchronized batch norm, whose sums are all-reduced
    between the phases."""
    a, c, b = x3.shape
    y3 = y3 if y3 is not None else x3
    sdy, sdxc = np.empty(c), np.empty(c)
    if _uses_rows(x3):
        chunk = config.CHUNK_ELEMENTS
        nch = -(-(a * b) // chunk)
        psdy = np.empty((1, nch, c))
        psdxc = np.empty((1, nch, c))
        rows_grad_sums(x3.size, x3, dy3, np.asarray(mean, np.float64), chunk, psdy[0],
                       psdxc[0], y3, relu)
    else:
        xc, rows, width, nrb = _columns(x3)
        k = c * b
        psdy = np.empty((1, nrb, k))
        psdxc = np.empty((1, nrb, k))
        mean64 = np.asarray(mean, np.float64)
        colmean = (mean64 if b == 1 else np.repeat(mean64, b)).reshape(1, k)
        cols_grad_sums(x3.size, xc, dy3.reshape(xc.shape), colmean,
                       rows, width, psdy, psdxc, y3.reshape(xc.shape), relu)
    cols_grad_fold(psdy, psdxc, 1 if _uses_rows(x3) else b, sdy.reshape(1, c),
                   sdxc.reshape(1, c))
    return sdy, sdxc


def backward_apply(dy3, x3, mean, rstd, weight, sdy, sdxc, m, training, dx3, y3=None,
                   relu=False, dres3=None):
    """The backward pass's second phase: dx into ``dx3`` from per-channel sums over
    ``m`` values (:func:`grad_sums`; for synchronized batch norm, the global
    batch's).  Returns float64 ``(dweight, dbias)`` made from those sums."""
    a, c, b = x3.shape
    y3 = y3 if y3 is not None else x3
    has_dres = dres3 is not None
    dres3 = dres3 if has_dres else x3
    dweight, dbias = np.empty(c), np.empty(c)
    if _uses_rows(x3):
        coef = np.empty((5, c), x3.dtype)
        backward_coef(mean, rstd, weight, sdy, sdxc, m, training, 1, coef, dweight, dbias)
        rows_grad_apply(x3.size, x3, dy3, coef, config.CHUNK_ELEMENTS, training, dx3, y3, relu,
                        dres3, has_dres)
        return dweight, dbias
    xc = _columns(x3)[0]
    rows, width = apply_blocks(xc)
    coef = np.empty((5, 1, c * b), x3.dtype)
    backward_coef(mean, rstd, weight, sdy, sdxc, m, training, b, coef[:, 0], dweight, dbias)
    cols_grad_apply(x3.size, xc, dy3.reshape(xc.shape), coef, rows, width, training,
                    dx3.reshape(xc.shape), y3.reshape(xc.shape), relu, dres3.reshape(xc.shape),
                    has_dres)
    return dweight, dbias


#: What :mod:`fastbn.functional` calls; :mod:`fastbn.cuda.batch_norm` has the same.
__all__ = ["moments", "forward_train", "update_running", "inference", "backward", "grad_sums",
           "backward_apply"]
