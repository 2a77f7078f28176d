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

from ._jit import exact


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
def chan_merge(na, mean_a, m2_a, nb, mean_b, m2_b):
    """Merge two (count, mean, m2) summaries; either count may be zero."""
    if nb == 0:
        return na, mean_a, m2_a
    if na == 0:
        return nb, mean_b, m2_b
    n = na + nb
    fa = np.float64(na)
    fb = np.float64(nb)
    fn = np.float64(n)
    delta = mean_b - mean_a
    mean = mean_a + delta * (fb / fn)
    m2 = m2_a + m2_b + delta * delta * (fa * fb / fn)
    return n, mean, m2


@exact
def rstd_from_m2(m2, n, eps):
    """``1 / sqrt(m2 / n + eps)``: reciprocal std from the biased variance."""
    return 1.0 / np.sqrt(m2 / np.float64(n) + eps)


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
