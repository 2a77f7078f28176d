"""Synchronized batch norm over MPI: every rank normalizes with the global batch.

Run with two (or more) processes::

    NUMBA_NUM_THREADS=1 mpiexec -n 2 python docs/examples/sync_bn.py

Each rank builds its own slice of a global batch from a seed, with uneven
slice sizes.  The synchronized call must give the statistics, the running
statistics and the gradients that one process computes on the concatenated
batch with ``fastbn.batch_norm``.
"""

# begin-example
import numpy as np
from mpi4py import MPI

import fastbn
from fastbn import distributed

comm = MPI.COMM_WORLD
rank, size = comm.Get_rank(), comm.Get_size()
C = 8


def slice_of(r):
    """Rank r's slice of the global batch: 3 + r samples of (C, 4, 4).

    Seeded by r, so every rank can rebuild any rank's slice.
    """
    rng = np.random.default_rng(r)
    x = rng.normal(2.0, 3.0, (3 + r, C, 4, 4))
    dy = rng.normal(0.0, 1.0, x.shape)
    return x, dy


x, dy = slice_of(rank)                       # this rank's data only
weight = np.linspace(0.5, 1.5, C)
bias = np.linspace(-1.0, 1.0, C)
running_mean, running_var = np.zeros(C), np.ones(C)

# forward: statistics of all ranks' samples;
# the running statistics are updated on every rank
y, mean, rstd = distributed.sync_batch_norm(
    x, weight, bias, running_mean, running_var, comm=comm)
# backward: this rank's slice of dx, and its share of dweight and dbias
dx, dweight, dbias = distributed.sync_batch_norm_backward(
    dy, x, mean, rstd, weight, comm=comm)
# sum the shares: the global gradient
dweight = comm.allreduce(dweight)
dbias = comm.allreduce(dbias)

# the global moments, the same on every rank
count, gmean, m2 = distributed.moments(x, comm=comm)

# the layer: the same forward, with its own weight (1) and bias (0)
layer = fastbn.nn.SyncBatchNorm(C, comm=comm, dtype=np.float64)
y_layer = layer(x)

# check: one process on the concatenated global batch gives the same numbers
parts = [slice_of(r) for r in range(size)]
x_all = np.concatenate([p[0] for p in parts])
dy_all = np.concatenate([p[1] for p in parts])
rm_all, rv_all = np.zeros(C), np.ones(C)
y_all, mean_all, rstd_all = fastbn.batch_norm(
    x_all, weight, bias, rm_all, rv_all)
y_plain, _, _ = fastbn.batch_norm(x_all)
dx_all, dw_all, db_all = fastbn.batch_norm_backward(
    dy_all, x_all, mean_all, rstd_all, weight)
# where this rank's samples sit in x_all
start = sum(3 + r for r in range(rank))
rows = slice(start, start + x.shape[0])

checks = [(mean, mean_all), (rstd, rstd_all), (gmean, mean_all),
          (running_mean, rm_all), (running_var, rv_all),
          (y, y_all[rows]), (y_layer, y_plain[rows]), (dx, dx_all[rows]),
          (dweight, dw_all), (dbias, db_all)]
for got, want in checks:
    np.testing.assert_allclose(got, want, rtol=1e-12, atol=1e-12)
assert count == x_all.shape[0] * 4 * 4

if rank == 0:
    print(f"{size} ranks, slices of {[3 + r for r in range(size)]} samples, "
          f"{count} values per channel")
    print("mean        ", np.round(mean[:4], 6))
    print("running_var ", np.round(running_var[:4], 6))
    print("dweight     ", np.round(dweight[:4], 6))
    print("equal to batch_norm on the concatenated batch: yes")
# end-example
