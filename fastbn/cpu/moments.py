"""Mergeable statistics on the host: the compute behind :func:`fastbn.merge_moments`
and :func:`fastbn.moments_to_stats` (``moments`` itself is
:func:`fastbn.cpu.batch_norm.moments`).

The arrays arrive validated, flat, contiguous and float64, and both counts
positive (:mod:`fastbn.functional` handles empty parts).  The merge is the
kernels' own Chan step (:func:`fastbn.cpu._moments.chan_step`, plain
arithmetic), evaluated by NumPy on whole vectors, so merged moments round
exactly as the kernels' in-place merges do.

See Also
--------
fastbn.cuda.moments
"""

import numpy as np

from ._moments import chan_step, chan_weights


def merge(na, mean_a, m2_a, nb, mean_b, m2_b):
    """Chan's merge of ``(na, mean_a, m2_a)`` and ``(nb, mean_b, m2_b)``: new
    float64 ``(mean, m2)``."""
    wb, wab = chan_weights.py_func(na, nb)
    return chan_step.py_func(mean_a, m2_a, mean_b, m2_b, wb, wab)


def to_stats(count, mean, m2, eps):
    """New float64 ``(mean, rstd, unbiased_var)``: ``rstd = 1 / sqrt(m2 / count + eps)``,
    ``unbiased_var = m2 / (count - 1)`` (NaN for a count of 1)."""
    with np.errstate(divide="ignore", invalid="ignore"):
        unbiased = m2 / (count - 1) if count > 1 else np.full_like(m2, np.nan)
    return mean.copy(), 1.0 / np.sqrt(m2 / count + eps), unbiased


__all__ = ["merge", "to_stats"]
