"""Per-channel statistics of a Dask array: datasets bigger than memory, exactly.

``fastbn.dask.moments(darr, axis=1)`` gives what :func:`fastbn.moments` gives
for the whole array, ``(count, mean, m2)`` per channel in float64, without
ever holding more than a few chunks: each chunk is reduced by fastbn's
kernels (:func:`fastbn.moments`, float64 accumulation, shifted sums), and the
chunks' moments are combined with Chan's exact merge
(:func:`fastbn.merge_moments`) in a binary tree, in a fixed order, as Dask
tasks.  The result equals the in-memory one to float64 rounding, whatever
the chunking, and runs on whichever scheduler is active: the threaded
default, processes, or ``dask.distributed`` (a ``Client`` in scope).  An
array read from disk chunk by chunk (``da.from_array`` of an ``np.memmap``,
``da.from_zarr``) is streamed the same way.

This is how a user gets the mean and standard deviation of every input
channel of a dataset to normalize it, or precise batch-norm statistics at
scale::

    import dask.array as da, fastbn.dask
    x = da.from_array(np.load("images.npy", mmap_mode="r"), chunks=(256, -1, -1, -1))
    count, mean, m2 = fastbn.dask.moments(x, axis=1)
    mean, rstd, unbiased_var = fastbn.moments_to_stats(count, mean, m2)

Needs the ``dask`` extra (``pip install "fastbn[dask]"``).

See Also
--------
fastbn.moments, fastbn.merge_moments, fastbn.distributed.moments
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

import numpy as np

from . import _checks
from . import functional as F

if TYPE_CHECKING:
    import dask.array as da

__all__ = ["moments"]


def _block_moments(block, axis):
    return F.moments(np.asarray(block), axis=axis)


def _merge(a, b):
    return F.merge_moments(a, b)


def _tree(parts: list, merge) -> object:
    """Pairwise merges, level by level, in a fixed order (log2(len) levels deep)."""
    while len(parts) > 1:
        merged = [merge(parts[i], parts[i + 1]) for i in range(0, len(parts) - 1, 2)]
        if len(parts) % 2:
            merged.append(parts[-1])
        parts = merged
    return parts[0]


def moments(darr: da.Array, axis: int = 1, *, compute: bool = True) -> Any:
    """Per-channel ``(count, mean, m2)`` of a Dask array (float64 NumPy results).

    Parameters
    ----------
    darr : dask.array.Array
        float16/32/64, ndim >= 2, any chunking (along the channel axis too).
    axis : int
        The channel axis (1 for ``(N, C, ...)``, -1 for channels-last).
    compute : bool
        False returns a ``dask.delayed`` object of the triple instead (to
        compute together with other work).
    """
    import dask
    import dask.array as da

    if not isinstance(darr, da.Array):
        raise TypeError(f"darr must be a dask.array.Array; got {type(darr).__name__} "
                        "(fastbn.moments takes NumPy arrays)")
    dtype = np.dtype(darr.dtype)
    if dtype not in _checks.FLOAT_DTYPES:
        raise TypeError("darr must be a floating-point array (float16, float32 or float64); "
                        f"got dtype {dtype} with shape {darr.shape}")
    ax = _checks.channel_axis(axis, darr.ndim, darr.shape)
    if any(np.isnan(n) for n in darr.shape):
        raise ValueError(f"darr has unknown chunk sizes (shape {darr.shape}); call "
                         "darr.compute_chunk_sizes() first")
    block_moments = dask.delayed(_block_moments, pure=True)
    merge = dask.delayed(_merge, pure=True)
    blocks = darr.to_delayed()
    per_channel_chunk = []
    for j in range(darr.numblocks[ax]):
        # every block holding this chunk of channels, in C order of the block grid
        parts = [block_moments(b, ax) for b in np.take(blocks, j, axis=ax).ravel()]
        per_channel_chunk.append(_tree(parts, merge))
    result = dask.delayed(_concatenate, pure=True)(per_channel_chunk)
    return result.compute() if compute else result


def _concatenate(parts):
    """Join the channel chunks' moments (their counts are equal: the same rows)."""
    counts = {int(p[0]) for p in parts}
    if len(counts) != 1:  # pragma: no cover  (a block grid always gives equal counts)
        raise RuntimeError(f"channel chunks disagree on the count: {sorted(counts)}")
    return (counts.pop(), np.concatenate([p[1] for p in parts]),
            np.concatenate([p[2] for p in parts]))
