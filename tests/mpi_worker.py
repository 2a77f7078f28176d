"""Run under ``mpiexec -n K`` by ``test_distributed.py``: synchronized batch norm
against single-process batch norm on the concatenated batch.

Every rank builds the same global batch from a fixed seed, takes its slice
(the split sizes may be uneven or zero), runs the distributed call, and
compares with :func:`fastbn.batch_norm` on the whole batch.  Any mismatch
raises (a non-zero exit); the last line of each rank is ``OK <rank>``.
``--device`` runs the calls on device arrays (numba-cuda's simulator).
"""

import os
import sys

if "--device" in sys.argv:
    os.environ.setdefault("NUMBA_ENABLE_CUDASIM", "1")

import numpy as np  # noqa: E402
from mpi4py import MPI  # noqa: E402

import fastbn  # noqa: E402
from fastbn import distributed as D  # noqa: E402
from fastbn.nn import BatchNorm, SyncBatchNorm  # noqa: E402

COMM = MPI.COMM_WORLD
RANK, SIZE = COMM.Get_rank(), COMM.Get_size()
DEVICE = "--device" in sys.argv
TOL = {np.float64: 1e-10, np.float32: 2e-5}


def put(a):
    if not DEVICE or a is None:
        return a
    from numba import cuda

    return cuda.to_device(a)


def host(a):
    return a.copy_to_host() if hasattr(a, "copy_to_host") else np.asarray(a)


def close(name, got, want, dtype):
    got, want = host(got).astype(np.float64), np.asarray(want, np.float64)
    assert got.shape == want.shape, (name, got.shape, want.shape)
    err = float(np.max(np.abs(got - want), initial=0.0) / max(1.0, np.max(np.abs(want),
                                                                            initial=0.0)))
    assert err <= TOL[dtype], f"rank {RANK}: {name}: relative error {err:.3g}"
    return err


def splits(n_total):
    """Uneven slices with an empty one (K = 2: [n-1, 1] then [0, n]; K = 3: [2, 0, rest])."""
    if SIZE == 2:
        return [[n_total - 1, 1], [0, n_total]]
    if SIZE == 3:
        return [[2, 0, n_total - 2], [n_total // 3, n_total // 3, n_total - 2 * (n_total // 3)]]
    return [[n_total // SIZE] * (SIZE - 1) + [n_total - (SIZE - 1) * (n_total // SIZE)]]


def mine(a, sizes):
    start = sum(sizes[:RANK])
    return np.ascontiguousarray(a[start:start + sizes[RANK]])


def case(shape, axis, dtype, sizes, seed):
    rng = np.random.default_rng(seed)
    x = rng.normal(3.0, 2.0, shape).astype(dtype)
    dy = rng.normal(size=shape).astype(dtype)
    c = shape[axis]
    w, b = rng.normal(1, 0.1, c).astype(dtype), rng.normal(0, 0.1, c).astype(dtype)
    rm, rv = np.zeros(c, dtype), np.ones(c, dtype)
    want_y, want_mean, want_rstd = fastbn.batch_norm(x, w, b, rm, rv, axis=axis)
    want_dx, want_dw, want_db = fastbn.batch_norm_backward(dy, x, want_mean, want_rstd, w,
                                                           axis=axis)

    lrm, lrv = put(np.zeros(c, dtype)), put(np.ones(c, dtype))
    y, mean, rstd = D.sync_batch_norm(put(mine(x, sizes)), put(w), put(b), lrm, lrv, comm=COMM,
                                      axis=axis)
    errors = [close("y", y, mine(want_y, sizes), dtype), close("mean", mean, want_mean, dtype),
              close("rstd", rstd, want_rstd, dtype),
              close("running_mean", lrm, rm, dtype), close("running_var", lrv, rv, dtype)]
    dx, dw, db = D.sync_batch_norm_backward(put(mine(dy, sizes)), put(mine(x, sizes)), mean,
                                            rstd, put(w), comm=COMM, axis=axis)
    total_dw, total_db = np.empty(c), np.empty(c)
    COMM.Allreduce(host(dw).astype(np.float64), total_dw)
    COMM.Allreduce(host(db).astype(np.float64), total_db)
    errors += [close("dx", dx, mine(want_dx, sizes), dtype),
               close("dweight (summed)", total_dw, want_dw, dtype),
               close("dbias (summed)", total_db, want_db, dtype)]
    # inference: the running statistics, no communication
    yi, _, _ = D.sync_batch_norm(put(mine(x, sizes)), put(w), put(b), lrm, lrv, comm=COMM,
                                 axis=axis, training=False)
    want_yi, _, _ = fastbn.batch_norm(x, w, b, rm, rv, axis=axis, training=False)
    errors.append(close("y (inference)", yi, mine(want_yi, sizes), dtype))
    # the global moments
    count, gmean, gm2 = D.moments(put(mine(x, sizes)), comm=COMM, axis=axis)
    wc, wmean, wm2 = fastbn.moments(x, axis=axis)
    assert count == wc, (count, wc)
    errors += [close("moments mean", gmean, wmean, np.float64),
               close("moments m2", gm2, wm2, np.float64)]
    return max(errors)


def masked_case(shape, axis, dtype, sizes, seed):
    """Masked sync batch norm on the slices == the masked call on the whole batch; one
    rank's mask may be all False."""
    rng = np.random.default_rng(seed)
    x = rng.normal(3.0, 2.0, shape).astype(dtype)
    dy = rng.normal(size=shape).astype(dtype)
    c = shape[axis]
    ax = axis % len(shape)
    mask = rng.random(shape[:ax] + shape[ax + 1:]) < 0.7
    if sizes[0]:
        mask[:sizes[0]] = False  # rank 0 holds padding only
    w, b = rng.normal(1, 0.1, c).astype(dtype), rng.normal(0, 0.1, c).astype(dtype)
    rm, rv = np.zeros(c, dtype), np.ones(c, dtype)
    want_y, want_mean, want_rstd = fastbn.batch_norm(x, w, b, rm, rv, axis=axis, mask=mask)
    want_dx, want_dw, want_db = fastbn.batch_norm_backward(dy, x, want_mean, want_rstd, w,
                                                           axis=axis, mask=mask)
    lrm, lrv = np.zeros(c, dtype), np.ones(c, dtype)
    y, mean, rstd = D.sync_batch_norm(mine(x, sizes), w, b, lrm, lrv, comm=COMM, axis=axis,
                                      mask=mine(mask, sizes))
    errors = [close("masked y", y, mine(want_y, sizes), dtype),
              close("masked mean", mean, want_mean, dtype),
              close("masked rstd", rstd, want_rstd, dtype),
              close("masked running_mean", lrm, rm, dtype),
              close("masked running_var", lrv, rv, dtype)]
    dx, dw, db = D.sync_batch_norm_backward(mine(dy, sizes), mine(x, sizes), mean, rstd, w,
                                            comm=COMM, axis=axis, mask=mine(mask, sizes))
    total_dw, total_db = np.empty(c), np.empty(c)
    COMM.Allreduce(np.asarray(dw, np.float64), total_dw)
    COMM.Allreduce(np.asarray(db, np.float64), total_db)
    errors += [close("masked dx", dx, mine(want_dx, sizes), dtype),
               close("masked dweight (summed)", total_dw, want_dw, dtype),
               close("masked dbias (summed)", total_db, want_db, dtype)]
    # the layer
    full = BatchNorm(c, axis=axis, dtype=dtype)
    sync = SyncBatchNorm(c, axis=axis, comm=COMM, dtype=dtype)
    close("masked layer y", sync(mine(x, sizes), mask=mine(mask, sizes)),
          mine(full(x, mask=mask), sizes), dtype)
    close("masked layer dx", sync.backward(mine(dy, sizes)), mine(full.backward(dy), sizes),
          dtype)
    close("masked layer running_var", sync.buffers["running_var"], full.buffers["running_var"],
          dtype)
    # fewer than 2 valid values over all ranks: the same error everywhere, nothing changed
    few = np.zeros_like(mine(mask, sizes))
    if RANK == SIZE - 1 and few.size:
        few.reshape(-1)[0] = True
    before = lrm.copy(), lrv.copy()
    expect_raise_everywhere(ValueError,
                            lambda: D.sync_batch_norm(mine(x, sizes), w, b, lrm, lrv, comm=COMM,
                                                      axis=axis, mask=few),
                            "more than 1 valid value")
    assert np.array_equal(lrm, before[0]) and np.array_equal(lrv, before[1])
    return max(errors)


def expect_raise_everywhere(kind, call, words):
    """``call`` must raise ``kind`` with the same message on every rank."""
    try:
        call()
    except kind as exc:
        message = str(exc)
    else:
        raise AssertionError(f"rank {RANK}: no {kind.__name__}")
    assert words in message, message
    messages = COMM.allgather(message)
    assert len(set(messages)) == 1, messages


def bad_inputs():
    x = np.random.default_rng(0).normal(size=(4, 3, 5))
    # a wrong weight on one rank only: every rank raises the same error, nothing hangs
    w = np.ones(4 if RANK == SIZE - 1 else 3)
    expect_raise_everywhere(ValueError, lambda: D.sync_batch_norm(put(x), put(w), comm=COMM),
                            f"on rank {SIZE - 1} of {SIZE}: weight must have shape (3,)")
    # one value per channel over all ranks (rank 0 holds the only sample)
    one = np.ones((1 if RANK == 0 else 0, 3))
    rm, rv = np.zeros(3), np.ones(3)
    expect_raise_everywhere(ValueError,
                            lambda: D.sync_batch_norm(put(one), None, None, put(rm), put(rv),
                                                      comm=COMM),
                            "expected more than 1 value per channel")
    assert np.array_equal(rm, np.zeros(3)) and np.array_equal(rv, np.ones(3))
    # a different channel count on one rank
    xc = np.ones((2, 4 if RANK == 0 else 3))
    expect_raise_everywhere(ValueError, lambda: D.sync_batch_norm(put(xc), comm=COMM),
                            "same number of channels")


def layer():
    """SyncBatchNorm on the slices behaves as BatchNorm on the whole batch."""
    rng = np.random.default_rng(5)
    x = rng.normal(2, 3, (7, 4, 3)).astype(np.float64)
    dy = rng.normal(size=x.shape)
    sizes = splits(7)[0]
    full = BatchNorm(4, dtype=np.float64)
    sync = SyncBatchNorm(4, comm=COMM, dtype=np.float64)
    for _ in range(2):
        y = sync(put(mine(x, sizes)))
        close("layer y", y, mine(full(x), sizes), np.float64)
        dx = sync.backward(put(mine(dy, sizes)))
        close("layer dx", dx, mine(full.backward(dy), sizes), np.float64)
        for name in ("weight", "bias"):
            total = np.empty(4)
            COMM.Allreduce(host(sync.grads[name]).astype(np.float64), total)
            close(f"layer d{name}", total, full.grads[name], np.float64)
    for name in ("running_mean", "running_var"):
        close(name, sync.buffers[name], full.buffers[name], np.float64)
    assert int(sync.buffers["num_batches_tracked"]) == 2


def main():
    worst = 0.0
    shapes = [((8, 3, 4, 5), 1), ((8, 4, 5, 3), -1), ((8, 3), 1)]
    dtypes = [np.float64] if DEVICE else [np.float64, np.float32]
    seed = 0
    for shape, axis in shapes[:1] if DEVICE else shapes:
        for dtype in dtypes:
            for sizes in splits(shape[0]):
                seed += 1
                err = case(shape, axis, dtype, sizes, seed)
                worst = max(worst, err) if dtype == np.float64 else worst
    bad_inputs()
    if not DEVICE:
        layer()
        for shape, axis in (((6, 3, 40), 1), ((6, 7, 3), -1)):
            for sizes in splits(shape[0]):
                seed += 1
                worst = max(worst, masked_case(shape, axis, np.float64, sizes, seed))
            masked_case(shape, axis, np.float32, splits(shape[0])[0], seed + 100)
    COMM.Barrier()
    print(f"max float64 relative error {worst:.3g}")
    print(f"OK {RANK}", flush=True)


if __name__ == "__main__":
    main()
