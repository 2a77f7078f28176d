r"""Synchronized batch norm over MPI: the statistics of the global batch.

In data-parallel training each rank holds a slice of the batch.  Batch norm
must still normalize with the statistics of the whole batch, or it changes
with the number of ranks (and degrades at small per-rank batches, as the
tutorial's small-batch experiment shows).  ``comm`` is an mpi4py
communicator (``pip install "fastbn[mpi]"`` brings mpi4py and MPICH, whose
wheel ships ``mpiexec``).

What crosses the network, per call, on every rank:

* **Agreement** (every call): one ``Allgather`` of 3 integers per rank,
  ``(ok, C, count)``.  If any rank's arguments are invalid, every rank
  raises the same exception with the same message (naming the rank), so a
  bad input never leaves the other ranks waiting in a collective.  The
  counts give the global count, so the one-value-per-channel check is made
  on the global batch, identically everywhere.
* **Forward** (training): local ``(mean, m2)`` per channel from fastbn's
  kernels, one ``Allgather`` of ``2C`` float64 per rank, and Chan's exact
  merge of the ranks' moments in rank order, weighted by count (not an
  average of means, which is wrong for uneven slices).  Every rank computes
  the same merge in the same order, so the statistics (and the running
  statistics, updated with the unbiased variance of the global count) are
  bit-for-bit identical on all ranks.  Then the elementwise pass, local.
* **Backward**: local ``sum(dy)`` and ``sum(dy * (x - mean))``, one
  ``Allreduce`` (sum) of ``2C`` float64, then dx from the global sums.
  ``dweight``/``dbias`` are this rank's contributions: an all-reduce sum of
  them (with the other parameters' gradients) gives the global gradient, as
  with PyTorch's ``SyncBatchNorm``.

* **Masks** (padded sequences, ``mask=``): each rank counts its valid
  positions, the agreement's counts are those, and the moments merged are
  those of the valid positions; the backward's sums run over every position
  and one more ``Allgather`` of 1 integer per rank gives the global valid
  count.  Host arrays only.

x never leaves its rank.  Ranks with an empty slice (``N = 0``) join every
collective and contribute count 0.  Device arrays work through the same
calls: the kernels run on the device and only the per-channel statistics
(``2C`` values) are staged through the host for the collective.  (Handing
device buffers to a CUDA-aware MPI directly is not implemented: no such MPI
and GPU were available to test it.)

Inference (``training=False``) uses the running statistics, which are
identical on all ranks, and communicates nothing.

See Also
--------
fastbn.nn.SyncBatchNorm, fastbn.merge_moments
"""

from __future__ import annotations

from typing import TYPE_CHECKING

import numpy as np

from . import _checks
from . import functional as F
from .functional import Array, Moments

if TYPE_CHECKING:
    from mpi4py import MPI

__all__ = ["moments", "sync_batch_norm", "sync_batch_norm_backward"]

_RAISED = {"ValueError": ValueError, "TypeError": TypeError}


def _agree(comm: MPI.Comm, error: BaseException | None, channels: int, count: int) -> np.ndarray:
    """Every rank's ``count``, after checking that every rank's arguments were valid
    and hold the same number of channels; else the same exception on every rank."""
    mine = np.array([error is None, channels, count], np.int64)
    table = np.empty((comm.Get_size(), 3), np.int64)
    comm.Allgather(mine, table)
    bad = np.flatnonzero(table[:, 0] == 0)
    if bad.size:
        # only when something failed: every rank learns the first failing rank's error
        errors = comm.allgather(None if error is None else (type(error).__name__, str(error)))
        rank = int(bad[0])
        kind, message = errors[rank]
        exc = _RAISED.get(kind, RuntimeError)(f"on rank {rank} of {comm.Get_size()}: {message}")
        raise exc from error
    if np.any(table[:, 1] != table[0, 1]):
        raise ValueError("every rank's x must have the same number of channels; got "
                         f"{table[:, 1].tolist()} on ranks 0..{comm.Get_size() - 1}")
    return table[:, 2]


def _check_comm(comm: object) -> None:
    if not all(hasattr(comm, name) for name in ("Allgather", "Allreduce", "Get_size")):
        raise TypeError(f"comm must be an mpi4py communicator; got {type(comm).__name__}")


def _global_moments(comm: MPI.Comm, x: Array, axis: int, counts: np.ndarray,
                    mask: Array | None = None) -> Moments:
    """The global ``(count, mean, m2)``, float64 host arrays, identical on all ranks
    (of the valid positions with a ``mask``)."""
    if mask is None:
        _, mean, m2 = F.moments(x, axis=axis)
    else:
        _, mean, m2 = F._masked_moments(x, mask, axis)
    xp = F._backend(x).arrays
    mine = np.stack([xp.to_host(mean), xp.to_host(m2)])  # 2C values
    gathered = np.empty((comm.Get_size(), *mine.shape))
    comm.Allgather(mine, gathered)
    c = mine.shape[1]
    merged = (0, np.zeros(c), np.zeros(c))
    for rank, n in enumerate(counts.tolist()):  # rank order: the same merge everywhere
        merged = F.merge_moments(merged, (n, gathered[rank, 0], gathered[rank, 1]))
    return merged


def moments(x: Array, *, comm: MPI.Comm, axis: int = 1) -> Moments:
    """The global per-channel ``(count, mean, m2)`` of every rank's slice of the batch,
    identical on all ranks (float64; device arrays for device x)."""
    _check_comm(comm)
    error, c, count = None, -1, 0
    try:
        _, _, _, _, c, count = F._channel_input(x, axis)
    except (TypeError, ValueError) as exc:
        error = exc
    counts = _agree(comm, error, c, count)
    total, mean, m2 = _global_moments(comm, x, axis, counts)
    xp = F._backend(x).arrays
    return total, xp.from_host(mean), xp.from_host(m2)


def sync_batch_norm(x: Array, weight: Array | None = None, bias: Array | None = None,
                    running_mean: Array | None = None, running_var: Array | None = None, *,
                    comm: MPI.Comm, training: bool = True, momentum: float = 0.1,
                    eps: float = 1e-5, axis: int = 1,
                    mask: Array | None = None) -> tuple[Array, Array, Array]:
    """:func:`fastbn.batch_norm` with the statistics of the global batch over ``comm``.

    Returns ``(y, mean, rstd)``: y is this rank's slice; mean and rstd (the global
    batch's, as :func:`fastbn.batch_norm` returns them) are the same on all ranks.
    Running statistics (both or neither) are updated in place with the global
    mean and the unbiased variance of the global count, identically on all ranks.

    ``mask`` (host arrays, as :func:`fastbn.batch_norm`'s): each rank's mask of its
    own slice.  The statistics are those of the valid positions of the global
    batch, the running update uses the global valid count, and fewer than 2 valid
    values over all ranks is a ValueError on every rank; a rank may have none.
    """
    _check_comm(comm)
    if not training:  # the running statistics: the same on every rank, nothing to share
        return F.batch_norm(x, weight, bias, running_mean, running_var, training=False,
                            eps=eps, axis=axis, mask=mask)
    error, c, count = None, -1, 0
    masked = mask is not None
    try:
        be, xv, shape, ax, c, count = F._channel_input(x, axis)
        if masked:
            if _checks.mask(mask, shape, ax) is None:
                masked = False  # all True: the unmasked call
            else:
                count = int(np.count_nonzero(np.asarray(mask)))
        xp = be.arrays
        for name, a in (("weight", weight), ("bias", bias)):
            _checks.channel_vector(a, name, c, shape, xp)
        _checks.running_stats(running_mean, running_var, c, shape, required=False, xp=xp)
        eps = _checks.positive_eps(eps)
        momentum = _checks.unit_momentum(momentum)
        _checks.refuse_running_overlap(True, xv, weight, bias, running_mean, running_var, None,
                                       None)
    except (TypeError, ValueError) as exc:
        error = exc
    counts = _agree(comm, error, c, count)
    total = int(counts.sum())
    if total <= 1:
        kind = "value" if mask is None else "valid value"
        raise ValueError(f"expected more than 1 {kind} per channel when training; got "
                         f"{total} over all {comm.Get_size()} ranks (per rank: "
                         f"{counts.tolist()})")
    total, mean, m2 = _global_moments(comm, x, axis, counts, mask if masked else None)
    # the elementwise pass with the global statistics: batch norm's inference path
    # computes rstd = 1 / sqrt(var + eps) from var = m2 / total, the training formula
    d_mean, d_var = xp.from_host(mean), xp.from_host(m2 / total)
    y, mean_out, rstd = F.batch_norm(x, weight, bias, d_mean, d_var, training=False, eps=eps,
                                     axis=axis)
    if running_mean is not None:
        F._update_running(xp.wrap(running_mean), xp.wrap(running_var), d_mean,
                          xp.from_host(m2), total, momentum, be)
    return y, mean_out, rstd


def sync_batch_norm_backward(dy: Array, x: Array, mean: Array, rstd: Array,
                             weight: Array | None = None, *, comm: MPI.Comm,
                             axis: int = 1,
                             mask: Array | None = None) -> tuple[Array, Array, Array]:
    """:func:`fastbn.batch_norm_backward` for :func:`sync_batch_norm` (training).

    Returns ``(dx, dweight, dbias)``: dx is this rank's slice of the global
    gradient; dweight and dbias are this rank's contributions (sum them over the
    ranks for the global gradient).  ``mask``: the forward's, this rank's slice;
    the gradient of the masked statistics with the global valid count.
    """
    _check_comm(comm)
    error, c, count = None, -1, 0
    masked = mask is not None
    valid = 0
    try:
        be, xv, shape, ax, c, count = F._channel_input(x, axis)
        xp = be.arrays
        dyv = _checks.same_as_x(dy, xv, "dy", xp)
        mean = _checks.stat_vector(mean, "mean", (c,), shape, xp)
        rstd = _checks.stat_vector(rstd, "rstd", (c,), shape, xp)
        weight = _checks.channel_vector(weight, "weight", c, shape, xp)
        if masked:  # even when all True here: every rank must make the same collectives
            _checks.mask(mask, shape, ax)
            valid = int(np.count_nonzero(np.asarray(mask)))
    except (TypeError, ValueError) as exc:
        error = exc
    counts = _agree(comm, error, c, count)
    total = int(counts.sum())
    if masked:
        valids = np.empty(comm.Get_size(), np.int64)
        comm.Allgather(np.array([valid], np.int64), valids)
        mv = int(valids.sum())
        if mv <= 1:
            raise ValueError("expected more than 1 valid value per channel when training; "
                             f"got {mv} over all {comm.Get_size()} ranks (per rank: "
                             f"{valids.tolist()})")

        def comm_sums(local):
            summed = np.empty_like(local)
            comm.Allreduce(local, summed)
            return summed, mv

        return F._masked_backward(dyv, xv, mask, mean, rstd, weight, axis, comm_sums)
    sdtype = _checks.stats_dtype(xv.dtype)
    cdtype = _checks.compute_dtype(xv.dtype)
    rstd64 = xp.to_host(xp.cast(rstd, np.float64))
    if count:
        x3 = _checks.as_3d(xv, ax, xp)
        dy3 = _checks.as_3d(dyv, ax, xp)
        mean_k = xp.param(mean, c, None, cdtype)
        sdy, sdxc = be.batch_norm.grad_sums(dy3, x3, mean_k)
        local = np.stack([xp.to_host(sdy), xp.to_host(sdxc)]).astype(np.float64)
    else:
        local = np.zeros((2, c))
    summed = np.empty_like(local)
    comm.Allreduce(local, summed)  # 2C values: the global sum(dy), sum(dy * (x - mean))
    dweight = xp.cast(xp.from_host(local[1] * rstd64), sdtype)  # this rank's share
    dbias = xp.cast(xp.from_host(local[0]), sdtype)
    if not count:
        return xp.full(shape, 0.0, xv.dtype), dweight, dbias
    dx3 = xp.empty(x3.shape, x3.dtype)
    be.batch_norm.backward_apply(dy3, x3, mean_k, xp.param(rstd, c, None, cdtype),
                                 xp.param(weight, c, 1.0, cdtype), xp.from_host(summed[0]),
                                 xp.from_host(summed[1]), total, True, dx3)
    return xp.cast(dx3.reshape(shape), xv.dtype), dweight, dbias
