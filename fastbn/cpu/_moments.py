r"""Scalar building blocks for numerically safe statistics.

A chunk of values is summed once, shifted by its first value ``k``:
``s1 = sum(x - k)`` and ``s2 = sum((x - k)**2)`` in float64.  Then

.. code-block:: text

    mean = k + s1 / n
    m2   = s2 - s1 * s1 / n          (sum of squared deviations, >= 0)

The shift keeps ``s2`` and ``s1**2 / n`` of the size of the spread rather than
of the offset, so a channel with mean 1e4 and std 1 loses nothing (unlike
``E[x^2] - E[x]^2``).  Chunks are combined with Chan et al.'s exact merge:

.. code-block:: text

    delta = mean_b - mean_a
    n     = n_a + n_b
    mean  = mean_a + delta * n_b / n
    m2    = m2_a + m2_b + delta**2 * n_a * n_b / n
"""

import numpy as np

from ._jit import exact, inline, worker


@exact
def shifted_moments(n, shift, s1, s2):
    """(mean, m2) of ``n`` values from their sums shifted by ``shift``."""
    fn = np.float64(n)
    mean = shift + s1 / fn
    m2 = s2 - s1 * s1 / fn
    if m2 < 0.0:  # rounding only; a NaN fails the test and stays NaN
        m2 = 0.0
    return mean, m2


@exact
def chan_weights(na, nb):
    """``(nb / n, na * nb / n)`` in float64, ``n = na + nb > 0``: the weights of
    :func:`chan_step`, computed once where many columns share the counts."""
    fa = np.float64(na)
    fb = np.float64(nb)
    fn = np.float64(na + nb)
    return fb / fn, fa * fb / fn


@exact
def chan_step(mean_a, m2_a, mean_b, m2_b, wb, wab):
    """Chan's merge with precomputed :func:`chan_weights`: the one formula of fastbn's CPU.

    Plain arithmetic, so the same source serves scalars in the kernels and
    NumPy vectors on the host (:func:`fastbn.functional.merge_moments` calls
    ``chan_step.py_func``) with the same operations in the same order.
    """
    delta = mean_b - mean_a
    return mean_a + delta * wb, (m2_a + m2_b) + delta * delta * wab


@exact
def chan_merge(na, mean_a, m2_a, nb, mean_b, m2_b):
    """Merge two (count, mean, m2) summaries; either count may be zero."""
    if nb == 0:
        return na, mean_a, m2_a
    if na == 0:
        return nb, mean_b, m2_b
    wb, wab = chan_weights(na, nb)
    mean, m2 = chan_step(mean_a, m2_a, mean_b, m2_b, wb, wab)
    return na + nb, mean, m2


@exact
def rstd_from_m2(m2, n, eps):
    """``1 / sqrt(m2 / n + eps)``: reciprocal std from the biased variance."""
    return 1.0 / np.sqrt(m2 / np.float64(n) + eps)


@worker
def finish_stats(m2, m, eps, rstd):
    """``rstd = 1 / sqrt(m2 / m + eps)`` per statistic (channel or group)."""
    for i in range(m2.shape[0]):
        rstd[i] = rstd_from_m2(m2[i], m, eps)


# Coefficients of the elementwise passes, stored in x's dtype.  The mean is
# split into ``hi`` (rounded to x's dtype) and ``lo`` (the rest), so the
# output pass computes ``(x - hi) - lo`` in x's dtype and stays accurate
# for data with a large offset.


@exact
def set_forward_coef(coef, i, mean, rstd, w, b):
    """Column ``i`` of ``coef`` (rows: mean_hi, mean_lo, scale, bias), in x's dtype."""
    coef[0, i] = mean
    coef[1, i] = mean - np.float64(coef[0, i])
    coef[2, i] = w * rstd
    coef[3, i] = b


@worker
def sample_forward_coef(n, c0, c1, mean, rstd, weight, bias, G, B, coef):
    """Columns ``(n*C + c) * B + b`` (``c0 <= c < c1``, ``b < B``) of ``coef`` (4, N*C*B).

    Channel ``c`` of sample ``n`` takes the statistics of its group
    ``n*G + c // (C // G)`` (batch norm: ``G = C``, one sample) and its own
    weight and bias; each channel's column repeats ``B`` times.
    """
    C = weight.shape[0]
    cg = C // G
    for g in range(c0 // cg, (c1 + cg - 1) // cg):
        mu = mean[n * G + g]
        r = rstd[n * G + g]
        for c in range(max(c0, g * cg), min(c1, g * cg + cg)):
            for b in range(B):
                set_forward_coef(coef, (n * C + c) * B + b, mu, r, weight[c], bias[c])


@worker
def forward_coef(mean, rstd, weight, bias, G, B, coef):
    """``coef`` (4, N*C*B) for every sample: :func:`sample_forward_coef` over all channels."""
    C = weight.shape[0]
    for n in range(coef.shape[1] // (C * B)):
        sample_forward_coef(n, np.int64(0), C, mean, rstd, weight, bias, G, B, coef)


@inline
def relu_mask(g, y, relu):
    """``g``, or 0 where the forward's ReLU output ``y`` was not positive (NaN ``y``
    gives 0); ``g`` unchanged when not ``relu``."""
    if relu and not y > 0:
        return g - g
    return g


@inline
def epilogue(t, r, has_res, relu, zero):
    """``act(t [+ r])``: the fused residual add and ReLU of the forward's output pass.

    ``zero`` is 0 in the output's dtype; NaN stays NaN.
    """
    if has_res:
        t = t + r
    if relu and t < zero:
        return zero
    return t


@inline
def grad_epilogue(g, xv, hi, lo, k0, k1, k2, training):
    """``dx = g * k0 + ((x - mean_hi) - mean_lo) * k1 + k2`` (``g * k0`` when not
    ``training``) for a ``g`` already masked by :func:`relu_mask`."""
    return g * k0 + (((xv - hi) - lo) * k1 + k2 if training else g - g)


@exact
def grad_coef(mean, rstd, w, sdy, sdxc, m, training):
    """(k0, k1, k2) of ``dx = dy * k0 + (x - mean) * k1 + k2``."""
    k0 = w * rstd
    if not training:
        return k0, 0.0, 0.0
    fm = np.float64(m)
    k1 = -k0 * rstd * rstd * (sdxc / fm)
    k2 = -k0 * (sdy / fm)
    return k0, k1, k2


@exact
def set_backward_coef(coef, i, mean, k0, k1, k2):
    """Column ``i`` of ``coef`` (rows: mean_hi, mean_lo, k0, k1, k2), in x's dtype."""
    coef[0, i] = mean
    coef[1, i] = mean - np.float64(coef[0, i])
    coef[2, i] = k0
    coef[3, i] = k1
    coef[4, i] = k2
